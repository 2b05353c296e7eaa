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

from fennec_mlflow.core.estimators import get_estimator
from fennec_mlflow.data.features import FeatureCache
from fennec_mlflow.data.proxy import task_proxy_features
from fennec_mlflow.data.tasks import DEFAULT_PROBE_SIZE, Probe, Task, sample_probe
from fennec_mlflow.data.zoo import ZooModel, load_model
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.store import tracking
from fennec_mlflow.training.finetune import (
    FinetuneCallbacks,
    FinetuneConfig,
    TrialParams,
    TrialResult,
    check_split,
    default_split,
    finetune,
)

# One task per built-in synthetic family: the offline default of the fda and finetune jobs.
DEFAULT_TASKS = ("digits-color", "shapes-8", "gratings-orient-8", "glyphs-upper-10")


class FeatureError(InvalidInputError):
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
    :mod:`fennec_mlflow.core.estimators.fda`); other estimators write ``fennec.kind=estimator``
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
    stale = tracking.unfinished_cells(mlflow_client, experiment, kind)
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
        tracking.discard_runs(mlflow_client, stale.pop(key, ()))
        run_id = tracking.write_run(mlflow_client, exp_id, record)
        done[key] = run_id
        outcomes.append(CellOutcome(model.name, probe.task.name, run_id, value, False))
    return outcomes


# ----------------------------------------------------------------------------- fine-tunes

TRIAL_RESULT_METRICS = ("best_epoch", "epochs_run", "val_accuracy", "test_accuracy", "seconds", "val_loss")


def finetune_cell_key(model: ZooModel, task: Task, config: FinetuneConfig) -> str:
    return tracking.cell_key(
        "finetune", model=model.name, weights=model.weights, task=task.name, task_fingerprint=task.fingerprint,
        learning_rates=list(config.learning_rates), weight_decays=list(config.weight_decays),
        batch_size=config.batch_size, momentum=config.momentum, max_epochs=config.max_epochs,
        patience=config.patience, augment=config.augment, seed=config.seed,
    )


class _TrackedFinetune(FinetuneCallbacks):
    """Writes each grid point as a ``finetune-trial`` child run; reuses finished ones on resume."""

    def __init__(self, mlflow_client: MlflowClient, exp_id: str, parent_id: str, model: str, task: str,
                 finished: dict[tuple[float, float], TrialResult]):
        self.client, self.exp_id, self.parent_id = mlflow_client, exp_id, parent_id
        self.model, self.task, self.finished = model, task, finished
        self.child_id: str | None = None

    def skip_trial(self, params: TrialParams) -> TrialResult | None:
        return self.finished.get((params.lr, params.weight_decay))

    def on_trial_start(self, params: TrialParams) -> None:
        self.child_id = tracking.start_run(self.client, self.exp_id, tracking.RunRecord(
            kind="finetune-trial", model=self.model, task=self.task, parent_run_id=self.parent_id,
            name=f"lr={params.lr:g} wd={params.weight_decay:g}",
            params={**params.as_dict(), "grid_index": params.index, "grid_size": params.grid_size}))

    def on_epoch_end(self, params: TrialParams, epoch: int, metrics: dict[str, float]) -> None:
        self.client.log_batch(self.child_id, metrics=tracking.epoch_metrics(metrics, epoch))

    def on_trial_end(self, params: TrialParams, result: TrialResult) -> None:
        final = {name: getattr(result, name) for name in TRIAL_RESULT_METRICS}
        final["diverged"] = float(result.diverged)
        self.client.log_batch(self.child_id, metrics=tracking.epoch_metrics(final, result.epochs_run))
        tracking.finish_run(self.client, self.child_id)
        self.child_id = None


def _finished_trials(mlflow_client: MlflowClient, experiment: str, parent_id: str) -> dict[tuple[float, float], TrialResult]:
    """(lr, wd) -> result of every finished grid point already logged under ``parent_id``."""
    runs = tracking.runs_of_kind("finetune-trial", experiment=experiment, mlflow_client=mlflow_client,
                                 extra_filter=f"tags.`mlflow.parentRunId` = '{parent_id}'")
    finished = {}
    for run in runs:
        lr, wd = float(run.data.params["lr"]), float(run.data.params["weight_decay"])
        m = run.data.metrics
        finished[(lr, wd)] = TrialResult(
            lr=lr, weight_decay=wd, best_epoch=int(m["best_epoch"]), epochs_run=int(m["epochs_run"]),
            val_accuracy=m["val_accuracy"], test_accuracy=m["test_accuracy"], seconds=m["seconds"],
            val_loss=m.get("val_loss", float("nan")), diverged=bool(m.get("diverged", 0.0)))
    return finished


def finetune_cells(
    models: Sequence[str | ZooModel],
    tasks: Sequence[Task],
    *,
    config: FinetuneConfig | None = None,
    weights: str = "auto",
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    mlflow_client: MlflowClient | None = None,
    progress: bool = True,
) -> list[CellOutcome]:
    """Fine-tune every model on every task; one ``finetune`` run per cell, one child run per grid point.

    A finished cell is skipped. A cell whose earlier run was killed midway is resumed in that
    same run: its finished grid points are reused, the rest are trained.
    """
    config = config or FinetuneConfig(progress=progress)
    config.grid()  # validates the grid before anything is written
    models_ = [m if isinstance(m, ZooModel) else load_model(m, weights) for m in models]
    for task in tasks:
        check_split(task, default_split(task, seed=config.seed))
    mlflow_client = mlflow_client or tracking.client()
    exp_id = tracking.experiment_id(mlflow_client, experiment)
    done = tracking.finished_cells(mlflow_client, experiment, "finetune")
    outcomes: list[CellOutcome] = []
    for model in models_:
        for task in tasks:
            key = finetune_cell_key(model, task, config)
            if key in done:
                outcomes.append(CellOutcome(model.name, task.name, done[key], None, True))
                continue
            outcomes.append(_finetune_cell(mlflow_client, exp_id, experiment, model, task, config, key))
    return outcomes


def _finetune_cell(mlflow_client: MlflowClient, exp_id: str, experiment: str, model: ZooModel, task: Task,
                   config: FinetuneConfig, key: str) -> CellOutcome:
    unfinished = tracking.runs_with_cell(mlflow_client, exp_id, key, statuses=("RUNNING", "FAILED", "KILLED"))
    split = default_split(task, seed=config.seed)
    if unfinished:
        parent_id = unfinished[0].info.run_id
        tracking.reopen_run(mlflow_client, parent_id)
    else:
        facts = task.facts()
        parent_id = tracking.start_run(mlflow_client, exp_id, tracking.RunRecord(
            kind="finetune", model=model.name, task=task.name, cell=key,
            params={
                "weights": model.weights, "learning_rates": ",".join(f"{v:g}" for v in config.learning_rates),
                "weight_decays": ",".join(f"{v:g}" for v in config.weight_decays), "batch_size": config.batch_size,
                "momentum": config.momentum, "max_epochs": config.max_epochs, "patience": config.patience,
                "augment": config.augment, "seed": config.seed, "device": config.device,
                "task_fingerprint": task.fingerprint, **split.sizes(),
                "model_parameters": model.parameter_count, "model_source": model.source,
                **{f"task_{k}": v for k, v in facts.items()},
            }))
    callbacks = _TrackedFinetune(mlflow_client, exp_id, parent_id, model.name, task.name,
                                 _finished_trials(mlflow_client, experiment, parent_id))
    try:
        result = finetune(model, task, config, split=split, callbacks=callbacks)
    except BaseException:  # Ctrl-C included: mark what was in flight as failed, resume later
        for run_id in (callbacks.child_id, parent_id):
            if run_id:
                tracking.finish_run(mlflow_client, run_id, status="FAILED")
        raise
    mlflow_client.log_batch(parent_id, metrics=tracking.epoch_metrics({
        "test_accuracy": result.test_accuracy, "best_val_accuracy": result.best.val_accuracy,
        "best_lr": result.best.lr, "best_weight_decay": result.best.weight_decay,
        "best_epoch": result.best.best_epoch, "trials_resumed": sum(t.resumed for t in result.trials),
        "seconds": sum(t.seconds for t in result.trials if not t.resumed)}, 0))
    tracking.finish_run(mlflow_client, parent_id)
    return CellOutcome(model.name, task.name, parent_id, result.test_accuracy, False)


# ----------------------------------------------------------------------------- task proxies


def proxy_cells(
    encoder,
    tasks: Sequence[Task],
    *,
    sample_size: int = DEFAULT_PROBE_SIZE,
    seed: int = 0,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    mlflow_client: MlflowClient | None = None,
    progress: bool = True,
) -> list[CellOutcome]:
    """Proxy features (paper eq. 6 input) of each task, one ``task-proxy`` run per (encoder, task); reused when present."""

    mlflow_client = mlflow_client or tracking.client()
    exp_id = tracking.experiment_id(mlflow_client, experiment)
    done = tracking.finished_cells(mlflow_client, experiment, "task-proxy")
    stale = tracking.unfinished_cells(mlflow_client, experiment, "task-proxy")
    outcomes = []
    for task in tqdm(tasks, desc=f"proxy {encoder.name}", disable=not progress, unit="task"):
        key = tracking.cell_key("task-proxy", encoder=encoder.name, task=task.name, fingerprint=task.fingerprint,
                                sample_size=sample_size, seed=seed)
        if key in done:
            outcomes.append(CellOutcome("", task.name, done[key], None, True))
            continue
        start = time.perf_counter()
        vector = task_proxy_features(encoder, task, sample_size=sample_size, seed=seed)
        seconds = time.perf_counter() - start
        tracking.discard_runs(mlflow_client, stale.pop(key, ()))
        run_id = tracking.write_run(mlflow_client, exp_id, tracking.RunRecord(
            kind="task-proxy", task=task.name, cell=key,
            params={"encoder": encoder.name, "sample_size": sample_size, "seed": seed, "dim": len(vector),
                    **{f"task_{k}": v for k, v in task.facts().items()}},
            metrics={"seconds": seconds}, artifacts={"proxy.json": [float(v) for v in vector]}))
        outcomes.append(CellOutcome("", task.name, run_id, None, False))
    return outcomes
