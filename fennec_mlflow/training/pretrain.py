"""A small demo zoo that really differs: CIFAR-size pytorchcv architectures, randomly
initialised, briefly pre-trained on different synthetic *source* domains.

Offline there are no published weights, and a zoo of randomly initialised networks has
nothing to recommend: every model transfers about equally badly. Like PARC's grid of
architectures x source datasets, the demo zoo crosses a few cheap architecture families
with source tasks from different synthetic families (:data:`DEMO_ZOO`), so two models can
differ by architecture, by what they were trained on, or both. Each model is named
``"{arch}@{source}"``; its weights tag (``ZooModel.weights``) names the recipe, e.g.
``synthetic:shapes-8:e6:s0:1a2b3c4d``, with a hash over everything that shaped the weights.

Pre-training is :func:`fennec_mlflow.training.finetune.finetune` with a one-point grid on a random
init; the source task is split 70/15/15 (train / validation for keeping the best epoch /
held-out test, whose accuracy is reported as the source accuracy).

Sources are rendered with :data:`SOURCE_RENDER_SEED`, not the synthetic default seed 0 that
historical and target tasks use, so pre-training never sees the images the knowledge base
later scores the models on.

Models are saved in the checkpoint format of :mod:`fennec_mlflow.data.checkpoints`.

This module knows nothing of MLflow.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from fennec_mlflow.data.checkpoints import (
    PRETRAIN_FORMAT_VERSION,
    PretrainedModel,
    PretrainError,
    PretrainInfo,
    as_zoo_model,
    random_init,
    read_pretrained_info,
    save_pretrained,
)
from fennec_mlflow.data.synthetic import SYNTHETIC_TASKS, default_mix, synthetic_mix, synthetic_task
from fennec_mlflow.data.tasks import Task, split_indices
from fennec_mlflow.training.finetune import FinetuneConfig, Split, finetune

SOURCE_RENDER_SEED = 1
PRETRAIN_SPLIT = (0.7, 0.15, 0.15)
MIX_SOURCE = "mix"  # the source label of the broad synthetic mix (see synthetic.default_mix)

# Cheapest distinct CIFAR-size families (measured cost of one training step of 64 images at
# 32 px on one CPU thread, relative to resnet20: preresnet20 1.0x, seresnet20 1.25x,
# diaresnet20 1.2x; shakeshakeresnet20_2x16d 2.1x, densenet40_k12_bc and nin_cifar10 over 4x
# were left out for time): post-activation residual, pre-activation residual,
# squeeze-and-excitation attention, and DIA attention (one LSTM shared across blocks).
# Their autograd graphs differ, which archi2vec sees.
DEMO_ARCHS = (
    "resnet20_cifar10",
    "preresnet20_cifar10",
    "seresnet20_cifar10",
    "diaresnet20_cifar10",
)
# Three visually distinct families (letters, oriented periodic patterns, soft blobs), each a
# task that all four architectures learn to 2-8x chance within the demo budget; shapes,
# digits, textures and blob counting stayed near chance for some of them. None is a task of
# synthetic.default_mix, the proxy's source.
DEMO_SOURCES = ("glyphs-lower-10", "gratings-orient-8", "blobs-size-4")
DEMO_ZOO: tuple[tuple[str, str], ...] = tuple((arch, source) for arch in DEMO_ARCHS for source in DEMO_SOURCES)
PROXY_ARCH = "resnet20_cifar10"


@dataclass(frozen=True)
class PretrainBudget:
    """How much work each demo model gets: source size and training schedule.

    Every source gets about ``images_per_source`` images (classes balanced, at least
    :data:`MIN_SAMPLES_PER_CLASS` each), so sources with few classes are not starved.
    """

    images_per_source: int
    epochs: int
    lr: float = 0.05
    weight_decay: float = 5e-4
    # Small batches: from a random init, the number of SGD steps limits learning more than
    # the noise of each step does.
    batch_size: int = 16
    mix_images: int = 930  # the proxy's broad mix: 30 per class of its 31 classes by default
    mix_epochs: int | None = None  # defaults to ``epochs``

    def __post_init__(self) -> None:
        for name in ("images_per_source", "epochs", "batch_size", "mix_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PretrainError(f"budget {name} must be a positive integer, got {value!r}")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise PretrainError(f"budget lr must be > 0 and weight_decay >= 0, got {self.lr!r}, {self.weight_decay!r}")


# The 70/15/15 split rounds per class: 6 samples are the fewest that leave one for validation
# and one for test.
MIN_SAMPLES_PER_CLASS = 6

BUDGETS: dict[str, PretrainBudget] = {
    # The embedded default: the whole zoo plus the proxy in well under 2.5 minutes on 2 cores.
    "demo": PretrainBudget(images_per_source=300, epochs=6, mix_images=930, mix_epochs=8),
    # A sturdier zoo when a few more minutes are fine.
    "full": PretrainBudget(images_per_source=1000, epochs=15, mix_images=1500, mix_epochs=15),
}


def _check_source_label(label: str) -> str:
    # The label ends up in model names, file names and weights tags, which use ':' and '/'
    # as separators (zoo names like "torchvision:resnet18", encoder specs, paths).
    if not label or any(ch in label for ch in ":/\\ @"):
        raise PretrainError(f"source label {label!r} must be non-empty and contain none of ': / \\ @' or spaces; "
                            "pass source_label= to pretrain()")
    return label


def _recipe_hash(recipe: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]


def weights_tag(source_task: Task, recipe: Mapping[str, Any]) -> str:
    """``{kind of source}:{source label}:e{epochs}:s{seed}:{hash}``, e.g.
    ``synthetic:shapes-8:e8:s0:1a2b3c4d``; the hash covers the whole recipe, source images included."""
    kind = source_task.source.split(":", 1)[0]
    return f"{kind}:{recipe['source']}:e{recipe['epochs']}:s{recipe['seed']}:{_recipe_hash(recipe)}"


# ----------------------------------------------------------------------------- pre-training


def _pretrain_split(task: Task, seed: int) -> Split:
    return Split(*split_indices(task.labels, PRETRAIN_SPLIT, seed))


def pretrain(
    arch: str,
    source_task: Task,
    *,
    epochs: int = BUDGETS["demo"].epochs,
    lr: float = BUDGETS["demo"].lr,
    weight_decay: float = BUDGETS["demo"].weight_decay,
    batch_size: int = BUDGETS["demo"].batch_size,
    seed: int = 0,
    device: str = "cpu",
    source_label: str | None = None,
    source_build: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> PretrainedModel:
    """Train ``arch`` (a pytorchcv/torchvision name) from a seeded random init on ``source_task``.

    Every weight is trained for ``epochs`` epochs (SGD, constant ``lr``; the epoch with the best
    validation accuracy is kept). ``source_label`` names the source in the model name
    (default: the task's name); ``source_build`` records how the task was made, for the recipe.
    """
    label = _check_source_label(source_label or source_task.name)
    base = random_init(arch, seed)
    config = FinetuneConfig(learning_rates=(lr,), weight_decays=(weight_decay,), batch_size=batch_size,
                            max_epochs=epochs, patience=epochs, seed=seed, device=device, progress=progress)
    recipe = {
        "format_version": PRETRAIN_FORMAT_VERSION,
        "arch": arch,
        "source": label,
        "source_task": source_task.name,
        "source_fingerprint": source_task.fingerprint,
        "source_build": dict(source_build or {}),
        "epochs": epochs,
        "lr": lr,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "seed": seed,
        "split": list(PRETRAIN_SPLIT),
    }
    start = time.perf_counter()
    result = finetune(base, source_task, config, split=_pretrain_split(source_task, seed))
    if result.module is None or result.best.best_epoch == 0:
        raise PretrainError(f"pre-training {arch} on {source_task.name} diverged at lr={lr:g}; use a smaller lr")
    info = PretrainInfo(
        arch=arch,
        source=label,
        source_task=source_task.name,
        source_classes=source_task.num_classes,
        source_samples=source_task.num_samples,
        recipe=recipe,
        weights=weights_tag(source_task, recipe),
        input_size=base.input_size,
        mean=tuple(base.mean),
        std=tuple(base.std),
        source_test_accuracy=float(result.best.test_accuracy),
        source_val_accuracy=float(result.best.val_accuracy),
        best_epoch=int(result.best.best_epoch),
        seconds=time.perf_counter() - start,
    )
    return PretrainedModel(model=as_zoo_model(result.module.cpu().eval(), info), info=info)


# ----------------------------------------------------------------------------- demo zoo


def _budget(budget: str | PretrainBudget) -> PretrainBudget:
    if isinstance(budget, PretrainBudget):
        return budget
    if budget not in BUDGETS:
        raise PretrainError(f"unknown budget {budget!r}; use one of {', '.join(BUDGETS)} or a PretrainBudget")
    return BUDGETS[budget]


@dataclass(frozen=True)
class _Job:
    """One model to make: architecture, source, how to render the source, how to train."""

    arch: str
    source: str
    images: int
    epochs: int
    budget: PretrainBudget

    @property
    def name(self) -> str:
        return f"{self.arch}@{self.source}"

    def source_build(self) -> dict[str, Any]:
        names = default_mix() if self.source == MIX_SOURCE else [self.source]
        classes = sum(SYNTHETIC_TASKS[name].num_classes for name in names)
        per_class = max(MIN_SAMPLES_PER_CLASS, math.ceil(self.images / classes))
        return {"tasks": names, "samples_per_class": per_class, "image_size": 32, "render_seed": SOURCE_RENDER_SEED}

    def expected_recipe(self) -> dict[str, Any]:
        """The recipe a finished model of this job has, except the source fingerprint (which
        needs the images rendered; rendering is deterministic in source_build)."""
        b = self.budget
        return {"format_version": PRETRAIN_FORMAT_VERSION, "arch": self.arch, "source": self.source,
                "source_build": self.source_build(), "epochs": self.epochs, "lr": b.lr,
                "weight_decay": b.weight_decay, "batch_size": b.batch_size, "seed": 0,
                "split": list(PRETRAIN_SPLIT)}

    def source_task(self) -> Task:
        build = self.source_build()
        options = {"samples_per_class": build["samples_per_class"], "image_size": build["image_size"],
                   "seed": build["render_seed"]}
        if self.source == MIX_SOURCE:
            return synthetic_mix(build["tasks"], **options)
        return synthetic_task(self.source, **options)

    def run(self) -> PretrainedModel:
        b = self.budget
        return pretrain(self.arch, self.source_task(), epochs=self.epochs, lr=b.lr, weight_decay=b.weight_decay,
                        batch_size=b.batch_size, seed=0, source_label=self.source,
                        source_build=self.source_build())


def _is_done(path: Path, job: _Job) -> bool:
    """True when ``path`` holds a readable model made by exactly this job's recipe."""
    if not path.is_file():
        return False
    try:
        recipe = dict(read_pretrained_info(path).recipe)
    except (PretrainError, TypeError, KeyError, ValueError):
        return False  # unreadable or foreign: make it again
    recipe.pop("source_fingerprint", None)
    recipe.pop("source_task", None)
    return recipe == job.expected_recipe()


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _run_jobs(jobs: Sequence[_Job], out_dir: str | Path, progress: bool) -> list[Path]:
    out = Path(out_dir).expanduser()
    paths = []
    for number, job in enumerate(jobs, 1):
        path = out / f"{job.name}.pt"
        if _is_done(path, job):
            _say(progress, f"[{number}/{len(jobs)}] {job.name}: already pre-trained with this recipe, skipped")
        else:
            made = job.run()
            save_pretrained(made, path)
            info = made.info
            _say(progress, f"[{number}/{len(jobs)}] {job.name}: {info.source_samples} images, {job.epochs} epochs, "
                           f"source test accuracy {info.source_test_accuracy:.2f} (chance {info.chance_accuracy:.2f}), "
                           f"{info.seconds:.1f} s")
        paths.append(path)
    return paths


def pretrain_demo_zoo(
    out_dir: str | Path,
    *,
    budget: str | PretrainBudget = "demo",
    progress: bool = True,
    models: Sequence[tuple[str, str]] = DEMO_ZOO,
) -> list[Path]:
    """Pre-train every ``(arch, source)`` of ``models`` into ``out_dir/{arch}@{source}.pt``.

    Idempotent: a file already holding the same recipe is kept, so a killed run resumes and
    loses at most the model in flight. Returns the paths in ``models`` order.
    """
    spec = _budget(budget)
    for arch, source in models:
        _check_source_label(source)
    unknown = sorted({source for _, source in models if source not in SYNTHETIC_TASKS and source != MIX_SOURCE})
    if unknown:
        raise PretrainError(f"unknown source(s) {', '.join(unknown)}: use synthetic task names "
                            f"(fennec_mlflow.data.synthetic.SYNTHETIC_TASKS) or {MIX_SOURCE!r}")
    jobs = [_Job(arch, source, spec.images_per_source, spec.epochs, spec) for arch, source in models]
    return _run_jobs(jobs, out_dir, progress)


def pretrain_proxy(
    out_dir: str | Path,
    *,
    budget: str | PretrainBudget = "demo",
    progress: bool = True,
    arch: str = PROXY_ARCH,
) -> Path:
    """Pre-train the fallback proxy encoder (``arch`` on the broad synthetic mix) into
    ``out_dir/{arch}@mix.pt``; load it with ``proxy.load_encoder("file:" + path)``."""
    spec = _budget(budget)
    job = _Job(arch, MIX_SOURCE, spec.mix_images, spec.mix_epochs or spec.epochs, spec)
    return _run_jobs([job], out_dir, progress)[0]


def demo_model_names(models: Sequence[tuple[str, str]] = DEMO_ZOO) -> list[str]:
    return [f"{arch}@{source}" for arch, source in models]
