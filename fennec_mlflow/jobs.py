"""Batch jobs over (model, task) cells: each cell computed once, written as one run.

Validation happens before any run is written (unknown models, bad tasks, probes that cannot
cover the classes), so bad input never leaves a half-written run. A killed job loses at most
the cell in flight: finished cells are found in the store and skipped on the next start.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from mlflow import MlflowClient
from tqdm.auto import tqdm

from fennec_mlflow import tracking
from fennec_mlflow.estimators import get_estimator
from fennec_mlflow.features import FeatureCache
from fennec_mlflow.tasks import DEFAULT_PROBE_SIZE, Probe, Task, sample_probe
from fennec_mlflow.zoo import ZooModel, load_model

# One task per built-in synthetic family: the offline default of the fda and finetune jobs.
DEFAULT_TASKS = ("digits-color", "shapes-8", "gratings-orient-8", "glyphs-upper-10")


class FeatureError(ValueError):
    """A model produced features an estimator cannot score."""


@dataclass(frozen=True)
class CellOutcome:
    model: str
    task: str
    run_id: str
    score: float | None  # None when the cell was already in the store
    reused: bool


def score_cell_key(estimator: str, model: ZooModel, probe: Probe, estimator_params: dict | None = None) -> str:
    return tracking.cell_key(
        "fda" if estimator == "fda" else "estimator", estimator=estimator,
        estimator_params=estimator_params or {}, model=model.name,
        weights=model.weights, task=probe.task.name, task_fingerprint=probe.task.fingerprint,
        probe_seed=probe.seed, probe_size=probe.size,
    )


def check_features(features: np.ndarray, model: str, task: str) -> None:
    if not np.isfinite(features).all():
        bad_rows = int((~np.isfinite(features)).any(axis=1).sum())
        raise FeatureError(
            f"model {model!r} produced NaN/inf features for {bad_rows} of {len(features)} probe images "
            f"of task {task!r}; check the model's weights and input normalisation"
        )


def score_cells(
    models: Sequence[str | ZooModel],
    tasks: Sequence[Task],
    *,
    estimator: str = "fda",
    weights: str = "auto",
    probe_size: int = DEFAULT_PROBE_SIZE,
    probe_seed: int = 0,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    mlflow_client: MlflowClient | None = None,
    cache: FeatureCache | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    progress: bool = True,
) -> list[CellOutcome]:
    """Score every (model, task) cell with ``estimator`` and log one run per cell.

    FDA cells are ``fennec.kind=fda`` runs with metric ``fda_score`` (the per-sample mean, see
    :mod:`fennec_mlflow.estimators.fda`); other estimators write ``fennec.kind=estimator``
    runs with metric ``score`` and param ``estimator``.
    """
    scorer = get_estimator(estimator)
    kind = "fda" if estimator == "fda" else "estimator"
    metric = tracking.MATRIX_METRIC[kind]
    probes = [sample_probe(task, probe_size, probe_seed) for task in tasks]  # validates every task up front
    # unknown names fail here, before any run is written
    models = {m.name: m for m in (m if isinstance(m, ZooModel) else load_model(m, weights) for m in models)}
    mlflow_client = mlflow_client or tracking.client()
    exp_id = tracking.experiment_id(mlflow_client, experiment)
    done = tracking.finished_cells(mlflow_client, experiment, kind)
    cache = cache or FeatureCache()
    outcomes: list[CellOutcome] = []
    cells = [(m, p) for m in models.values() for p in probes]
    bar = tqdm(cells, desc=f"{estimator} cells", disable=not progress, unit="cell")
    for model, probe in bar:
        bar.set_postfix_str(f"{model.name} x {probe.task.name}")
        key = score_cell_key(estimator, model, probe, scorer.get_params())
        if key in done:
            outcomes.append(CellOutcome(model.name, probe.task.name, done[key], None, True))
            continue
        feats = cache.get_or_compute(model, probe, device=device, batch_size=batch_size)
        check_features(feats.features, model.name, probe.task.name)
        start = time.perf_counter()
        value = float(scorer.score(feats.features, probe.labels, source_logits=feats.logits))
        score_seconds = time.perf_counter() - start
        metrics = {metric: value, "feature_seconds": feats.seconds, "score_seconds": score_seconds}
        if kind == "fda":
            metrics["fda_score_sum"] = value * len(probe.indices)  # the paper's eq. 3 sums over the probe
        facts = probe.task.facts()
        record = tracking.RunRecord(
            kind=kind, model=model.name, task=probe.task.name, cell=key,
            params={
                "estimator": estimator, "weights": model.weights, "probe_size": len(probe.indices),
                "probe_seed": probe.seed, "feature_dim": feats.dim,
                **{f"estimator_{k}": v for k, v in scorer.get_params().items()}, "feature_cache_hit": feats.cached,
                "task_fingerprint": probe.task.fingerprint, "device": device,
                "model_parameters": model.parameter_count, "model_source": model.source,
                "model_input_size": model.input_size,
                **{f"task_{k}": v for k, v in facts.items()},
            },
            metrics=metrics,
            datasets=[tracking.probe_dataset(probe.task.name, probe.task.source, probe.indices, probe.labels)],
        )
        run_id = tracking.write_run(mlflow_client, exp_id, record)
        done[key] = run_id
        outcomes.append(CellOutcome(model.name, probe.task.name, run_id, value, False))
    return outcomes
