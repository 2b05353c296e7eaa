"""Fine-tuning: real torch models on small procedural tasks, no mocks.

One resnet20 fine-tune (shared by a module fixture, marked slow) checks that learning really happens; the
mechanics (callbacks, early stopping, resumption, shared initial weights, errors) run on a
tiny CNN that trains in milliseconds.
"""
from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
from torch import nn

from fennec_mlflow.data import tasks
from fennec_mlflow.data import zoo
from fennec_mlflow.training.finetune import (
    EPOCH_METRICS,
    FinetuneCallbacks,
    FinetuneConfig,
    FinetuneError,
    Split,
    TrialResult,
    best_trial,
    default_split,
    finetune,
)

NUM_CLASSES = 4


def colour_task(per_class: int, *, size: int = 32, seed: int = 0, name: str = "colours") -> tasks.Task:
    """Classes are hues (red, lime, cyan, violet) under random saturation, value, stripes and noise."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), per_class))
    hue = (labels / NUM_CLASSES + rng.normal(0, 0.03, labels.size)) % 1
    base = np.array([colorsys.hsv_to_rgb(h, rng.uniform(0.6, 1), rng.uniform(0.6, 1)) for h in hue])
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, np.pi, labels.size)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, labels.size)[:, None, None]
    stripes = np.sin(2 * np.pi * 4 * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
    images = base[:, None, None] * (0.75 + 0.25 * stripes[..., None])
    images += rng.normal(0, 0.08, images.shape)
    return tasks.from_arrays(np.clip(images, 0, 1), labels, name=name, domain="test")


def tiny_cnn(*, seed: int = 0, source_classes: int = 10, input_size: int = 16, dropout: float = 0.0) -> zoo.ZooModel:
    """A BatchNorm-free CNN: with a vanishing learning rate its predictions cannot move."""
    torch.manual_seed(seed)
    module = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(dropout),
        nn.Linear(128, source_classes),
    )
    # input_size 16 < the tasks' 32 px: every fine-tune here also exercises the resize.
    return zoo.from_module(module, "tiny-cnn", input_size=input_size, mean=(0.5,) * 3, std=(0.25,) * 3)


def tiny_config(**overrides) -> FinetuneConfig:
    settings = dict(learning_rates=(0.05, 0.01), weight_decays=(1e-4,), batch_size=16, max_epochs=3,
                    patience=3, progress=False)
    settings.update(overrides)
    return FinetuneConfig(**settings)


class Recorder(FinetuneCallbacks):
    """Records every hook call; optionally hands back finished trials from ``finished``."""

    def __init__(self, finished: dict[tuple[float, float], TrialResult] | None = None) -> None:
        self.events: list[tuple] = []
        self.finished = finished or {}

    def skip_trial(self, params):
        self.events.append(("skip?", params.index))
        return self.finished.get((params.lr, params.weight_decay))

    def on_trial_start(self, params):
        self.events.append(("start", params.index))

    def on_epoch_end(self, params, epoch, metrics):
        self.events.append(("epoch", params.index, epoch, metrics))

    def on_trial_end(self, params, result):
        self.events.append(("end", params.index, result))

    def calls(self) -> list[tuple]:
        """Events without payloads, for comparing sequences."""
        return [event[:3] if event[0] == "epoch" else event[:2] for event in self.events]


class AlwaysReturn(FinetuneCallbacks):
    """Answers every skip_trial with one fixed value (for the resume hook's error paths)."""

    def __init__(self, value) -> None:
        self.value = value

    def skip_trial(self, params):
        return self.value


def expected_calls(trials: list[TrialResult], skipped: set[int] = frozenset()) -> list[tuple]:
    calls = []
    for index, trial in enumerate(trials):
        calls.append(("skip?", index))
        if index in skipped:
            continue
        calls.append(("start", index))
        calls += [("epoch", index, epoch) for epoch in range(1, trial.epochs_run + 1)]
        calls.append(("end", index))
    return calls


def histories_equal(a: TrialResult, b: TrialResult) -> bool:
    return [sorted(h.items()) for h in a.history] == [sorted(h.items()) for h in b.history]


# ----------------------------------------------------------------------------- real learning


@pytest.fixture(scope="module")
def resnet_run():
    task = colour_task(40, seed=0, name="colours-resnet")
    model = zoo.load_model("resnet20_cifar10", weights="random")
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    recorder = Recorder()
    # Batch 8 instead of the protocol's 64: more SGD steps for the same CPU time.
    config = FinetuneConfig(learning_rates=(0.02, 0.01), weight_decays=(1e-4,), batch_size=8,
                            max_epochs=4, patience=4, progress=False)
    result = finetune(model, task, config, callbacks=recorder)
    return task, model, before, recorder, result


@pytest.mark.slow
def test_resnet_finetune_ends_far_above_chance(resnet_run):
    task, _, _, _, result = resnet_run
    chance = 1 / task.num_classes
    assert result.test_accuracy >= 2 * chance, [(t.lr, t.val_accuracy, t.test_accuracy) for t in result.trials]
    assert result.best.val_accuracy == max(t.val_accuracy for t in result.trials)
    assert result.test_accuracy == result.best.test_accuracy
    # Training really fitted the data: the best trial's training loss fell well below log(K).
    assert min(h["train_loss"] for h in result.best.history) < 0.7 * math.log(task.num_classes)


@pytest.mark.slow
def test_resnet_head_replaced_on_a_copy(resnet_run):
    task, model, before, _, result = resnet_run
    x = torch.zeros(2, 3, 32, 32)
    with torch.inference_mode():
        assert result.module(x).shape == (2, task.num_classes)
        assert model.module(x).shape == (2, 10)  # the caller's model keeps its source head...
    after = model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # ...and its weights


@pytest.mark.slow
def test_resnet_callbacks_sequence(resnet_run):
    _, _, _, recorder, result = resnet_run
    assert recorder.calls() == expected_calls(result.trials)
    ends = [event[2] for event in recorder.events if event[0] == "end"]
    assert ends == result.trials


# ----------------------------------------------------------------------------- mechanics


@pytest.fixture(scope="module")
def small_task():
    return colour_task(15, seed=1, name="colours-small")


def test_callbacks_receive_params_and_epoch_metrics(small_task):
    recorder = Recorder()
    result = finetune(tiny_cnn(), small_task, tiny_config(), callbacks=recorder)
    assert recorder.calls() == expected_calls(result.trials)
    starts = [e for e in recorder.events if e[0] == "start"]
    assert len(starts) == 2
    for (_, index, epoch, metrics), trial_history in zip(
            [e for e in recorder.events if e[0] == "epoch"], [h for t in result.trials for h in t.history]):
        assert set(metrics) == set(EPOCH_METRICS)
        assert 0 <= metrics["train_accuracy"] <= 1 and 0 <= metrics["val_accuracy"] <= 1
        assert metrics["train_loss"] > 0 and metrics["val_loss"] > 0
        assert trial_history == {"epoch": epoch, **metrics}
    trial_ends = [e[2] for e in recorder.events if e[0] == "end"]
    assert [(t.lr, t.weight_decay) for t in trial_ends] == [(0.05, 1e-4), (0.01, 1e-4)]


def test_early_stopping_when_validation_stalls(small_task):
    # A vanishing learning rate on a BatchNorm-free net: validation accuracy can never improve
    # after epoch 1, so the trial must stop after `patience` more epochs and keep epoch 1.
    recorder = Recorder()
    config = tiny_config(learning_rates=(1e-12,), max_epochs=20, patience=2)
    result = finetune(tiny_cnn(), small_task, config, callbacks=recorder)
    trial = result.best
    assert trial.epochs_run == 3 < config.max_epochs
    assert trial.best_epoch == 1
    assert len(trial.history) == 3
    assert len([e for e in recorder.events if e[0] == "epoch"]) == 3


def tiny_cnn_accuracy(module: nn.Module, task: tasks.Task, indices: np.ndarray) -> float:
    """Accuracy of a fine-tuned tiny CNN, preprocessing re-done here independently."""
    images = torch.from_numpy(task.images(indices)).permute(0, 3, 1, 2).float()
    images = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False,
                                             antialias=True).round().clamp(0, 255)
    with torch.inference_mode():
        predicted = module((images / 255 - 0.5) / 0.25).argmax(1).numpy()
    return float(np.mean(predicted == task.labels[indices]))


def test_best_validation_weights_are_kept(small_task):
    # lr=1.0 overshoots: validation accuracy peaks mid-run and then collapses, so keeping the
    # last epoch's weights instead of the best ones would change both accuracies below.
    result = finetune(tiny_cnn(), small_task, tiny_config(learning_rates=(1.0,), max_epochs=6, patience=6))
    trial = result.best
    best_row = trial.history[trial.best_epoch - 1]
    assert trial.best_epoch < trial.epochs_run
    assert trial.history[-1]["val_accuracy"] < trial.val_accuracy
    assert trial.val_accuracy == best_row["val_accuracy"] == max(h["val_accuracy"] for h in trial.history)
    assert trial.val_loss == best_row["val_loss"]
    assert tiny_cnn_accuracy(result.module, small_task, result.split.val) == pytest.approx(trial.val_accuracy)
    assert tiny_cnn_accuracy(result.module, small_task, result.split.test) == pytest.approx(trial.test_accuracy)


def test_skip_trial_reuses_finished_trial(small_task):
    first = finetune(tiny_cnn(), small_task, tiny_config())
    finished = first.trials[0]
    recorder = Recorder(finished={(finished.lr, finished.weight_decay): finished})
    second = finetune(tiny_cnn(), small_task, tiny_config(), callbacks=recorder)
    assert recorder.calls() == expected_calls(second.trials, skipped={0})
    assert second.trials[0].resumed and not second.trials[1].resumed
    assert second.trials[0].history == finished.history
    # The grid point that did train is the same as in the first run (same weights, same stream).
    assert histories_equal(second.trials[1], first.trials[1])
    assert second.best == best_trial(second.trials)
    assert (second.module is None) == (second.best is second.trials[0])


def test_skip_trial_must_return_the_asked_grid_point(small_task):
    wrong = TrialResult(lr=0.5, weight_decay=1e-4, best_epoch=1, epochs_run=1, val_accuracy=1.0,
                        test_accuracy=1.0, seconds=0.0)
    with pytest.raises(FinetuneError, match="skip_trial returned the result of lr=0.5"):
        finetune(tiny_cnn(), small_task, tiny_config(), callbacks=AlwaysReturn(wrong))


def test_skip_trial_must_return_a_trial_result(small_task):
    with pytest.raises(FinetuneError, match="must return a TrialResult or None"):
        finetune(tiny_cnn(), small_task, tiny_config(), callbacks=AlwaysReturn({"lr": 0.05}))


def test_every_grid_point_starts_from_the_same_initial_weights(small_task):
    # Were the second grid point to continue from the first one's weights, or to draw its
    # dropout masks further down the first one's random stream, its run would differ from the
    # same grid point trained alone.
    pair = finetune(tiny_cnn(dropout=0.3), small_task, tiny_config(learning_rates=(0.05, 0.01)))
    alone = finetune(tiny_cnn(dropout=0.3), small_task, tiny_config(learning_rates=(0.01,)))
    assert histories_equal(pair.trials[1], alone.trials[0])
    assert not histories_equal(pair.trials[0], pair.trials[1])


def test_same_seed_repeats_and_leaves_global_rng_alone(small_task):
    model = tiny_cnn()  # seeds the global RNG itself, so build it before taking the state
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    a = finetune(model, small_task, tiny_config(augment="crop+flip"))
    assert torch.equal(torch.random.get_rng_state(), state)
    b = finetune(tiny_cnn(), small_task, tiny_config(augment="crop+flip"))
    plain = finetune(tiny_cnn(), small_task, tiny_config())
    other_seed = finetune(tiny_cnn(), small_task, tiny_config(augment="crop+flip", seed=1))
    assert all(histories_equal(x, y) for x, y in zip(a.trials, b.trials))
    assert not histories_equal(a.trials[0], plain.trials[0])  # augmentation is applied
    assert not histories_equal(a.trials[0], other_seed.trials[0])  # the seed matters


def test_augmentation_is_a_padded_crop_and_a_flip():
    from fennec_mlflow.training.finetune import _augment

    batch = torch.randn(40, 3, 32, 32)
    padded = torch.nn.functional.pad(batch, (4, 4, 4, 4))  # 1/8 of the side, zeros
    out = _augment(batch, "crop+flip", torch.Generator().manual_seed(0))
    flipped = 0
    for image, source in zip(out, padded):
        windows = [source[:, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        plain = any(torch.equal(image, w) for w in windows)
        mirrored = any(torch.equal(image, w.flip(-1)) for w in windows)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 5 < flipped < 35


def test_diverging_trial_stops_and_is_not_chosen(small_task):
    # lr=1e9 blows up in epoch 1 (no usable epoch); lr=1e4 after one finite epoch.
    result = finetune(tiny_cnn(), small_task, tiny_config(learning_rates=(1e9, 1e4, 0.05), max_epochs=4))
    at_once, later, sane = result.trials
    for exploded in (at_once, later):
        assert exploded.diverged and exploded.epochs_run < 4
        assert not math.isfinite(exploded.history[-1]["train_loss"])
    assert (at_once.best_epoch, at_once.val_accuracy, at_once.test_accuracy) == (0, 0.0, 0.0)
    assert later.best_epoch == 1 and not sane.diverged
    assert result.best is sane


def test_head_gets_task_class_count(small_task):
    result = finetune(tiny_cnn(source_classes=7), small_task, tiny_config(learning_rates=(0.05,), max_epochs=1))
    assert result.module[-1].out_features == small_task.num_classes != 7
    assert result.module[-1].in_features == 128


def test_lone_last_batch_is_skipped_for_batchnorm(small_task):
    # 17 training samples in batches of 16 leave one sample, which BatchNorm1d cannot train on.
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                           nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    model = zoo.from_module(module, "tiny-bn", input_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    split = default_split(small_task)
    train = np.sort(np.concatenate([split.train[:16], split.train[-1:]]))
    if np.unique(small_task.labels[train]).size < NUM_CLASSES:
        pytest.fail("test setup: the train split must cover every class")
    result = finetune(model, small_task, tiny_config(learning_rates=(0.05,), max_epochs=2),
                      split=(train, split.val, split.test))
    assert result.best.epochs_run == 2


def test_default_split_is_stratified_622(small_task):
    split = default_split(small_task)
    assert (split.train.size, split.val.size, split.test.size) == (36, 12, 12)
    for part in (split.train, split.val, split.test):
        assert np.bincount(small_task.labels[part], minlength=NUM_CLASSES).min() == part.size // NUM_CLASSES
    result = finetune(tiny_cnn(), small_task, tiny_config(learning_rates=(0.05,), max_epochs=1))
    assert all(np.array_equal(getattr(result.split, p), getattr(split, p)) for p in ("train", "val", "test"))


def test_explicit_split_is_used(small_task):
    order = np.random.default_rng(3).permutation(small_task.num_samples)
    explicit = (order[:40], order[40:50], order[50:])
    if np.unique(small_task.labels[explicit[0]]).size < NUM_CLASSES:
        pytest.fail("test setup: the explicit train split must cover every class")
    result = finetune(tiny_cnn(), small_task, tiny_config(learning_rates=(0.05,), max_epochs=1), split=explicit)
    assert result.split.sizes() == {"train_size": 40, "val_size": 10, "test_size": 10}


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("overrides, message", [
    ({"learning_rates": ()}, "learning_rates is empty"),
    ({"weight_decays": []}, "weight_decays is empty"),
    ({"learning_rates": (0.0,)}, "learning_rates must be > 0"),
    ({"learning_rates": (-0.1,)}, "learning_rates must be > 0"),
    ({"learning_rates": (float("nan"),)}, "finite numbers"),
    ({"weight_decays": (-1e-4,)}, "weight_decays must be >= 0"),
    ({"learning_rates": (0.1, 0.1)}, "lists a value twice"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"max_epochs": 2.5}, "max_epochs must be a positive integer"),
    ({"patience": 0}, "patience must be a positive integer"),
    ({"momentum": 1.0}, "momentum must lie in"),
    ({"augment": "rotate"}, "augment must be one of"),
])
def test_bad_config_is_rejected(overrides, message):
    with pytest.raises(FinetuneError, match=message):
        tiny_config(**overrides)


def test_split_missing_a_training_class_is_rejected(small_task):
    labels = small_task.labels
    train = np.flatnonzero(labels != 3)[:30]
    rest = np.setdiff1d(np.arange(labels.size), train)
    with pytest.raises(FinetuneError, match=r"no samples of class\(es\) '3'"):
        finetune(tiny_cnn(), small_task, tiny_config(), split=(train, rest[:10], rest[10:]))


@pytest.mark.parametrize("make_split, message", [
    (lambda n: (np.arange(0, 40), np.arange(35, 50), np.arange(50, n)), "overlap"),
    (lambda n: (np.arange(0, 40), np.arange(40, 50), np.arange(50, n + 1)), "outside"),
    (lambda n: (np.arange(0, 50), np.array([], dtype=int), np.arange(50, n)), "val split .* is empty"),
    (lambda n: (np.arange(0, 40), np.arange(40, 50)), "three index arrays"),
    (lambda n: (np.arange(0, 40) * 1.0, np.arange(40, 50), np.arange(50, n)), "integer indices"),
])
def test_malformed_split_is_rejected(small_task, make_split, message):
    with pytest.raises(FinetuneError, match=message):
        finetune(tiny_cnn(), small_task, tiny_config(), split=make_split(small_task.num_samples))


def test_task_too_small_for_a_validation_split_is_rejected():
    task = tasks.from_arrays(np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 0, 1, 1]), name="four")
    with pytest.raises(FinetuneError, match="val split of task 'four' is empty"):
        finetune(tiny_cnn(), task, tiny_config())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_gpu_is_a_clear_error(small_task):
    with pytest.raises(FinetuneError, match="no CUDA GPU"):
        finetune(tiny_cnn(), small_task, tiny_config(device="cuda"))


def test_unknown_device_is_a_clear_error(small_task):
    with pytest.raises(FinetuneError, match="unknown device 'gpu0'"):
        finetune(tiny_cnn(), small_task, tiny_config(device="gpu0"))


def test_explicit_split_object_round_trips(small_task):
    split = default_split(small_task, seed=5)
    result = finetune(tiny_cnn(), small_task, tiny_config(learning_rates=(0.05,), max_epochs=1), split=split)
    assert isinstance(result.split, Split)
    assert np.array_equal(result.split.test, split.test)
