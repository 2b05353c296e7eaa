"""Full fine-tuning of a candidate model on a task: a learning-rate x weight-decay grid with
early stopping; the test accuracy of the grid point with the best validation accuracy is the
ground truth Fennec learns from.

Protocol (the paper's, Bai et al. 2024): every weight is trained (nothing frozen); the
source head is replaced by a fresh ``num_classes`` head; SGD with momentum 0.9, batch 64,
cross-entropy, a constant learning rate; grid lr {0.1, 0.01, 0.001, 0.0001} x weight decay
{0.01, 0.001, 0.0001, 0.00001}. Every grid point starts from the same initial weights (the
source body plus one fresh head) and the same random stream. A trial stops when validation
accuracy has not improved for ``patience`` epochs and keeps its best-validation weights. The
task is split 6:2:2 (train/validation/test, stratified) unless a split is given.

Regimes (``regime``): ``"full"`` is the protocol above. ``"linear-probe"`` trains only the fresh
head: every backbone weight is frozen and the backbone runs in eval mode throughout (BatchNorm
keeps its source statistics, dropout is off), so the probe fits a linear classifier on the
source model's fixed penultimate features, over the same grid, split and early stopping.

Augmentation is off by default. Several built-in domains make flips label-changing (oriented
gratings, glyphs, digits), and the matrix should measure transfer, not an augmentation
policy. ``augment="crop"`` adds random crops with zero padding of 1/8 of the image side
(4 px at 32 px); ``"crop+flip"`` also flips horizontally. Either way every random draw comes
from the seeded generator, so runs repeat exactly on CPU.

This module knows nothing of MLflow. The tracking layer follows a fine-tune through
:class:`FinetuneCallbacks` and resumes a killed job through its ``skip_trial`` hook.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from fennec_mlflow.progress import tqdm

from fennec_mlflow.config import FINETUNE_REGIME, FINETUNE_REGIMES
from fennec_mlflow.data.tasks import Task, split_indices
from fennec_mlflow.data.zoo import ZooModel, find_head, primary_output, replace_head
from fennec_mlflow.errors import InvalidInputError

DEFAULT_LEARNING_RATES = (0.1, 0.01, 0.001, 0.0001)
DEFAULT_WEIGHT_DECAYS = (0.01, 0.001, 0.0001, 0.00001)
DEFAULT_SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
AUGMENTATIONS = ("none", "crop", "crop+flip")
REGIMES = FINETUNE_REGIMES  # "full", "linear-probe" (module docstring)
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
# Images are resized to the model's input size once, in chunks of this many, to bound the
# float buffers at 224 px.
PRELOAD_CHUNK = 256


class FinetuneError(InvalidInputError):
    """A fine-tune cannot run as asked; the message says what to change."""


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune. Defaults follow the paper except the epoch budget, which it leaves open.

    ``seed`` drives the fresh head's initialisation, batch order, augmentation and dropout
    (the caller's global torch RNG is left untouched). On CUDA the seed fixes every draw but
    cuDNN kernels may still differ in the last bits between runs.
    """

    learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS
    batch_size: int = 64
    momentum: float = 0.9
    max_epochs: int = 30
    patience: int = 5
    augment: str = "none"
    regime: str = FINETUNE_REGIME
    device: str = "cpu"
    seed: int = 0
    eval_batch_size: int = 256
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "learning_rates", _checked_grid_axis("learning_rates", self.learning_rates, positive=True))
        object.__setattr__(self, "weight_decays", _checked_grid_axis("weight_decays", self.weight_decays, positive=False))
        for name in ("batch_size", "max_epochs", "patience", "eval_batch_size"):
            _check_positive_int(name, getattr(self, name))
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise FinetuneError(f"seed must be an integer, got {self.seed!r}")
        if not (isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1):
            raise FinetuneError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        if self.augment not in AUGMENTATIONS:
            raise FinetuneError(f"augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
        if self.regime not in REGIMES:
            raise FinetuneError(f"regime must be one of {REGIMES}, got {self.regime!r}")

    def grid(self) -> list["TrialParams"]:
        """Grid points in run order: learning rate major, weight decay minor."""
        points = [(lr, wd) for lr in self.learning_rates for wd in self.weight_decays]
        return [TrialParams(index=i, lr=lr, weight_decay=wd, grid_size=len(points)) for i, (lr, wd) in enumerate(points)]


def _checked_grid_axis(name: str, values: Sequence[float], *, positive: bool) -> tuple[float, ...]:
    if isinstance(values, (int, float)):
        values = (values,)
    values = tuple(values)
    if not values:
        raise FinetuneError(f"{name} is empty: the grid needs at least one value")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value):
            raise FinetuneError(f"{name} must hold finite numbers, got {value!r}")
        if positive and value <= 0:
            raise FinetuneError(f"{name} must be > 0, got {value!r}")
        if value < 0:
            raise FinetuneError(f"{name} must be >= 0, got {value!r}")
    if len(set(values)) != len(values):
        # Duplicates would train the same grid point twice and make resumption ambiguous.
        raise FinetuneError(f"{name} lists a value twice: {values}")
    return tuple(float(v) for v in values)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise FinetuneError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class TrialParams:
    """One grid point: what a trial's callbacks receive and what identifies it on resume."""

    index: int  # position in the grid, 0-based
    lr: float
    weight_decay: float
    grid_size: int

    def as_dict(self) -> dict[str, float]:
        """The hyper-parameters that distinguish this trial, ready to log as run params."""
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def matches(self, result: "TrialResult") -> bool:
        return math.isclose(result.lr, self.lr, rel_tol=1e-9) and math.isclose(
            result.weight_decay, self.weight_decay, rel_tol=1e-9, abs_tol=1e-15)


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TrialResult:
    """The outcome of one grid point.

    ``best_epoch`` is 1-based (0: no usable epoch, the first one diverged). ``history`` holds
    one dict per epoch run: ``epoch`` and the :data:`EPOCH_METRICS`. ``val_loss`` is the
    validation loss at ``best_epoch`` and breaks ties between trials of equal validation
    accuracy. ``diverged``: the training loss became NaN/inf and the trial stopped there.
    ``resumed``: the result came from ``skip_trial`` instead of training.
    """

    lr: float
    weight_decay: float
    best_epoch: int
    epochs_run: int
    val_accuracy: float
    test_accuracy: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    val_loss: float = math.nan
    diverged: bool = False
    resumed: bool = False


@dataclass(frozen=True)
class FinetuneResult:
    """All grid points and the chosen one.

    ``module`` is the best trial's network with its best-validation weights (on the device it
    was trained on), or None when that trial was resumed rather than trained in this call.
    """

    best: TrialResult
    trials: list[TrialResult]
    test_accuracy: float
    split: "Split"
    module: nn.Module | None = field(default=None, repr=False, compare=False)


def best_trial(trials: Sequence[TrialResult]) -> TrialResult:
    """Highest validation accuracy; ties go to the lower validation loss, then to grid order."""
    if not trials:
        raise FinetuneError("no trials to choose from")

    def loss_rank(trial: TrialResult) -> float:
        return trial.val_loss if math.isfinite(trial.val_loss) else math.inf

    return min(trials, key=lambda t: (-t.val_accuracy, loss_rank(t)))


# ----------------------------------------------------------------------------- callbacks


class FinetuneCallbacks:
    """Hooks through which a caller (the MLflow tracking layer) follows a fine-tune.

    Subclass and override what you need; every default does nothing. Order, per grid point:

    1. ``skip_trial(params)``: return a finished :class:`TrialResult` for this grid point to
       reuse it (a killed job resumes without redoing finished points); None to train it.
       A reused trial gets none of the calls below and comes back with ``resumed=True``.
    2. ``on_trial_start(params)``
    3. ``on_epoch_end(params, epoch, metrics)`` after every epoch (``epoch`` 1-based,
       ``metrics`` a dict with the keys of :data:`EPOCH_METRICS`, accuracies in [0, 1]).
    4. ``on_trial_end(params, result)``

    An exception raised by a hook aborts the fine-tune; it is not swallowed.
    """

    def skip_trial(self, params: TrialParams) -> TrialResult | None:
        return None

    def on_trial_start(self, params: TrialParams) -> None:
        pass

    def on_epoch_end(self, params: TrialParams, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def on_trial_end(self, params: TrialParams, result: TrialResult) -> None:
        pass


# ----------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Split:
    """Indices into a task's samples: train, validation and test, disjoint."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train_size": int(self.train.size), "val_size": int(self.val.size), "test_size": int(self.test.size)}


def default_split(task: Task, seed: int = 0) -> Split:
    """The paper's stratified 6:2:2 split; the same seed gives every model the same split."""
    return Split(*split_indices(task.labels, DEFAULT_SPLIT_FRACTIONS, seed))


def check_split(task: Task, split: Split | Sequence[np.ndarray]) -> Split:
    """``split`` as a :class:`Split`, after checking it fits ``task`` and can train every class."""
    if not isinstance(split, Split):
        if len(split) != 3:
            raise FinetuneError(f"a split is three index arrays (train, val, test), got {len(split)}")
        split = Split(*split)
    parts = {}
    for part in ("train", "val", "test"):
        indices = np.asarray(getattr(split, part))
        if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
            raise FinetuneError(f"the {part} split must be a 1-D array of integer indices, got {indices.dtype} {indices.shape}")
        if indices.size == 0:
            raise FinetuneError(f"the {part} split of task {task.name!r} is empty "
                                f"({task.num_samples} samples in all); give the task more samples")
        if indices.min() < 0 or indices.max() >= task.num_samples:
            raise FinetuneError(f"the {part} split has indices outside [0, {task.num_samples}) for task {task.name!r}")
        parts[part] = indices.astype(np.int64)
    everything = np.concatenate(list(parts.values()))
    if np.unique(everything).size != everything.size:
        raise FinetuneError("the train, val and test splits overlap or repeat an index; they must be disjoint")
    untrained = np.setdiff1d(np.unique(task.labels), task.labels[parts["train"]])
    if untrained.size:
        names = ", ".join(repr(task.class_names[c]) for c in untrained[:5])
        raise FinetuneError(f"the train split of task {task.name!r} has no samples of class(es) {names}; "
                            "every class with samples needs at least one training sample")
    return Split(**parts)


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class _Data:
    """One split part pre-loaded on the device: uint8 NCHW at the model's size, and labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())


def _resize_to_uint8(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 NHWC -> uint8 NCHW at ``size`` (antialiased bilinear, as features.preprocess does)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if x.shape[-2:] == (size, size):
        return x.contiguous()
    resized = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def _preload(task: Task, indices: np.ndarray, size: int, device: torch.device) -> _Data:
    # Kept as uint8 (a quarter of float32's memory) and normalised per batch on the device.
    chunks = [_resize_to_uint8(task.images(indices[lo:lo + PRELOAD_CHUNK]), size)
              for lo in range(0, indices.size, PRELOAD_CHUNK)]
    return _Data(torch.cat(chunks).to(device), torch.from_numpy(task.labels[indices]).to(device))


class _Normaliser:
    def __init__(self, model: ZooModel, device: torch.device) -> None:
        self.mean = torch.tensor(model.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(model.std, device=device).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float().div_(255.0) - self.mean) / self.std


def _augment(batch: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Random zero-padded crop (and optional horizontal flip) of a normalised NCHW batch."""
    n, _, size, _ = batch.shape
    pad = max(1, size // 8)
    padded = F.pad(batch, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(batch.device)
    span = torch.arange(size, device=batch.device)
    rows = (offsets[0][:, None] + span)[:, :, None]  # (n, size, 1)
    cols = (offsets[1][:, None] + span)[:, None, :]  # (n, 1, size)
    out = padded[torch.arange(n, device=batch.device)[:, None, None], :, rows, cols]  # (n, size, size, C)
    out = out.permute(0, 3, 1, 2).contiguous()
    if mode == "crop+flip":
        flip = (torch.rand(n, generator=generator) < 0.5).to(batch.device)
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out


# ----------------------------------------------------------------------------- training


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train_epoch(module: nn.Module, optimizer: torch.optim.Optimizer, data: _Data, normalise: _Normaliser,
                 config: FinetuneConfig, generator: torch.Generator, head: nn.Module | None = None) -> tuple[float, float]:
    """One pass over the shuffled training data: mean loss and accuracy seen while training.

    ``head``: a linear probe's head, the only part in train mode (the frozen backbone stays in eval mode).
    """
    if head is None:
        module.train()
    else:
        module.eval()
        head.train()
    order = torch.randperm(len(data), generator=generator).to(data.labels.device)
    loss_sum = torch.zeros((), device=data.labels.device)
    correct = torch.zeros((), dtype=torch.long, device=data.labels.device)
    seen = 0
    for lo in range(0, len(data), config.batch_size):
        idx = order[lo:lo + config.batch_size]
        if idx.numel() < 2 and seen:
            break  # BatchNorm cannot train on a single sample; it rejoins the shuffle next epoch
        x = normalise(data.images[idx])
        if config.augment != "none":
            x = _augment(x, config.augment, generator)
        y = data.labels[idx]
        logits = primary_output(module(x)).flatten(1)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * y.numel()
        correct += (logits.detach().argmax(1) == y).sum()
        seen += y.numel()
    return float(loss_sum) / seen, int(correct) / seen


def _evaluate(module: nn.Module, data: _Data, normalise: _Normaliser, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode."""
    module.eval()
    loss_sum = torch.zeros((), device=data.labels.device)
    correct = torch.zeros((), dtype=torch.long, device=data.labels.device)
    with torch.inference_mode():
        for lo in range(0, len(data), batch_size):
            y = data.labels[lo:lo + batch_size]
            logits = primary_output(module(normalise(data.images[lo:lo + batch_size]))).flatten(1)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    return float(loss_sum) / len(data), int(correct) / len(data)


@dataclass
class _Trainer:
    """Everything a trial needs besides its grid point; built once per fine-tune."""

    module: nn.Module
    initial_state: dict[str, torch.Tensor]
    train: _Data
    val: _Data
    test: _Data
    normalise: _Normaliser
    config: FinetuneConfig
    callbacks: FinetuneCallbacks
    progress_label: str
    head: nn.Module | None = None  # linear probe: the one trained part

    def trained_parameters(self) -> list[nn.Parameter]:
        return list((self.module if self.head is None else self.head).parameters())

    def run_trial(self, params: TrialParams) -> tuple[TrialResult, dict[str, torch.Tensor] | None]:
        """Train one grid point from the shared initial weights; its result and best weights."""
        config, module = self.config, self.module
        start = time.perf_counter()
        module.load_state_dict(self.initial_state)
        # Same random stream for every grid point: only lr and weight decay differ between them.
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        optimizer = torch.optim.SGD(self.trained_parameters(), lr=params.lr, momentum=config.momentum,
                                    weight_decay=params.weight_decay)
        self.callbacks.on_trial_start(params)
        history: list[dict[str, float]] = []
        best_epoch, best_val, best_val_loss, best_state = 0, -1.0, math.inf, None
        diverged = False
        epochs = tqdm(range(1, config.max_epochs + 1), desc=f"{self.progress_label} lr={params.lr:g} wd={params.weight_decay:g}",
                      disable=not config.progress, leave=False)
        for epoch in epochs:
            train_loss, train_accuracy = _train_epoch(module, optimizer, self.train, self.normalise, config, generator,
                                                      self.head)
            val_loss, val_accuracy = _evaluate(module, self.val, self.normalise, config.eval_batch_size)
            metrics = {"train_loss": train_loss, "train_accuracy": train_accuracy,
                       "val_loss": val_loss, "val_accuracy": val_accuracy}
            history.append({"epoch": epoch, **metrics})
            self.callbacks.on_epoch_end(params, epoch, dict(metrics))
            epochs.set_postfix(val_acc=f"{val_accuracy:.3f}", refresh=False)
            if not math.isfinite(train_loss):
                diverged = True  # the weights are NaN/inf from here on: this epoch and later ones are useless
                break
            if val_accuracy > best_val:
                best_epoch, best_val, best_val_loss, best_state = epoch, val_accuracy, val_loss, _clone_state(module)
            elif epoch - best_epoch >= config.patience:
                break
        epochs.close()
        if best_state is None:
            result = TrialResult(params.lr, params.weight_decay, 0, len(history), 0.0, 0.0,
                                 time.perf_counter() - start, history, math.inf, diverged=True)
        else:
            module.load_state_dict(best_state)
            _, test_accuracy = _evaluate(module, self.test, self.normalise, config.eval_batch_size)
            result = TrialResult(params.lr, params.weight_decay, best_epoch, len(history), best_val, test_accuracy,
                                 time.perf_counter() - start, history, best_val_loss, diverged=diverged)
        self.callbacks.on_trial_end(params, result)
        return result, best_state


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise FinetuneError(f"unknown device {name!r}; use 'cpu', 'cuda' or 'cuda:N'") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FinetuneError(f"device {name!r} asked for, but torch sees no CUDA GPU here; use device='cpu'")
    return device


def _resumed(callbacks: FinetuneCallbacks, params: TrialParams) -> TrialResult | None:
    previous = callbacks.skip_trial(params)
    if previous is None:
        return None
    if not isinstance(previous, TrialResult):
        raise FinetuneError(f"skip_trial must return a TrialResult or None, got {type(previous).__name__}")
    if not params.matches(previous):
        raise FinetuneError(f"skip_trial returned the result of lr={previous.lr:g} wd={previous.weight_decay:g} "
                            f"for grid point lr={params.lr:g} wd={params.weight_decay:g}")
    return replace(previous, resumed=True)


def finetune(
    model: ZooModel,
    task: Task,
    config: FinetuneConfig | None = None,
    *,
    split: Split | Sequence[np.ndarray] | None = None,
    callbacks: FinetuneCallbacks | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` on ``task`` over the config's grid; the best trial's test accuracy.

    ``split``: explicit (train, val, test) indices into the task; default: the stratified
    6:2:2 :func:`default_split` with seed 0, the same for every model. ``model`` is left
    untouched: training happens on a copy whose head is replaced by a ``task.num_classes`` one.
    ``config.regime="linear-probe"`` trains that head alone on the frozen backbone (module docstring).
    """
    config = config or FinetuneConfig()
    callbacks = callbacks or FinetuneCallbacks()
    split = check_split(task, default_split(task) if split is None else split)
    device = _device(config.device)
    grid = config.grid()
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):  # seed locally, leave the caller's RNG alone
        torch.manual_seed(config.seed)
        work = replace(model, module=copy.deepcopy(model.module))
        head_path = find_head(work) if config.regime == "linear-probe" else None
        module = replace_head(work, task.num_classes).to(device)
        head = None
        if head_path is not None:
            head = module.get_submodule(head_path)
            for parameter in module.parameters():
                parameter.requires_grad_(False)  # the backbone: no gradients, no weight decay, no momentum
            for parameter in head.parameters():
                parameter.requires_grad_(True)
        trainer = _Trainer(
            module=module,
            initial_state=_clone_state(module),
            train=_preload(task, split.train, model.input_size, device),
            val=_preload(task, split.val, model.input_size, device),
            test=_preload(task, split.test, model.input_size, device),
            normalise=_Normaliser(model, device),
            config=config,
            callbacks=callbacks,
            progress_label=f"{model.name}/{task.name}" + ("" if head is None else " (linear probe)"),
            head=head,
        )
        trials: list[TrialResult] = []
        best_state, best_state_trial = None, None
        for params in tqdm(grid, desc=f"finetune {model.name} on {task.name}", disable=not config.progress):
            result = _resumed(callbacks, params)
            if result is None:
                result, state = trainer.run_trial(params)
                if state is not None and (best_state_trial is None or best_trial([best_state_trial, result]) is result):
                    best_state, best_state_trial = state, result
            trials.append(result)
    best = best_trial(trials)
    best_module = None
    if best is best_state_trial:
        module.load_state_dict(best_state)
        best_module = module.eval()
    return FinetuneResult(best=best, trials=trials, test_accuracy=best.test_accuracy, split=split, module=best_module)
