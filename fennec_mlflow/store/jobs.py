"""Batch jobs over (model, task) cells: each cell computed once, written as one run.

Validation happens before any run is written (unknown models, bad tasks, probes that cannot
cover the classes), so bad input never leaves a half-written run. Every cell is claimed before
it is computed (:mod:`fennec_mlflow.store.claims`): any number of jobs over overlapping slices,
on one sqlite file or a tracking server, leave exactly one finished run per cell, and a job
returns once each of its cells is in the store (cells another live job holds are waited for).
A killed job loses at most the cells in flight: their claims die with it and are redone.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from mlflow import MlflowClient
from fennec_mlflow.progress import tqdm

from fennec_mlflow.core.estimators import get_estimator
from fennec_mlflow.data.features import FeatureCache
from fennec_mlflow.data.proxy import task_proxy_features
from fennec_mlflow.data.tasks import DEFAULT_PROBE_SIZE, Probe, Task, sample_probe
from fennec_mlflow.data.zoo import ZooModel, load_model
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.store import claims, tracking
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
    tracking.check_task_folders(mlflow_client, experiment, tasks)
    exp_id = tracking.experiment_id(mlflow_client, experiment)
    done = tracking.finished_cells(mlflow_client, experiment, kind)
    cache = cache or FeatureCache()
    outcomes: list[CellOutcome] = []
    work = []
    for model in models.values():
        for probe in probes:
            key = score_cell_key(estimator, model, probe, scorer.get_params())
            work.append(claims.Work((model, probe), tracking.RunRecord(
                kind=kind, model=model.name, task=probe.task.name, cell=key)))
    bar = tqdm(total=len(work), desc=f"{estimator} cells", disable=not progress, unit="cell")
    with claims.Claimer(mlflow_client, exp_id) as claimer, bar:
        waiting = functools.partial(_note_waiting, bar)
        for unit, claim in claims.claim_each(claimer, work, known=done, on_wait=waiting):
            model, probe = unit.item
            bar.set_postfix_str(f"{model.name} x {probe.task.name}")
            bar.update()
            if claim.state == "done":
                outcomes.append(CellOutcome(model.name, probe.task.name, claim.run_id, None, True))
                continue
            try:
                claims.delete_runs(mlflow_client, [run.run_id for run in claim.dead])
                record = _score_record(scorer, estimator, kind, metric, model, probe, cache, device, batch_size)
            except BaseException:  # nothing of value in the claim: gone, so bad input leaves no run
                claimer.abandon(claim.run_id)
                raise
            run_id, ours = claimer.complete(claim, record)
            value = record.metrics[metric]
            outcomes.append(CellOutcome(model.name, probe.task.name, run_id, value if ours else None, not ours))
    return outcomes


def _note_waiting(bar, count: int) -> None:
    bar.set_postfix_str(f"waiting for {count} cell(s) another worker holds")


def _score_record(scorer, estimator: str, kind: str, metric: str, model: ZooModel, probe: Probe,
                  cache: FeatureCache, device: str, batch_size: int) -> tracking.RunRecord:
    """The params, metrics and probe dataset of one scored cell (its tags are on the claim)."""
    feats = cache.get_or_compute(model, probe, device=device, batch_size=batch_size)
    check_features(feats.features, model.name, probe.task.name)
    start = time.perf_counter()
    value = float(scorer.score(feats.features, probe.labels, source_logits=feats.logits))
    score_seconds = time.perf_counter() - start
    metrics = {metric: value, "feature_seconds": feats.seconds, "score_seconds": score_seconds}
    if kind == "fda":
        metrics["fda_score_sum"] = value * len(probe.indices)  # the paper's eq. 3 sums over the probe
    facts = probe.task.facts()
    return tracking.RunRecord(
        kind=kind,
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


# ----------------------------------------------------------------------------- fine-tunes

TRIAL_RESULT_METRICS = ("best_epoch", "epochs_run", "val_accuracy", "test_accuracy", "seconds", "val_loss")


def finetune_cell_key(model: ZooModel, task: Task, config: FinetuneConfig) -> str:
    """The cell's identity: everything that determines its accuracy, the regime included.

    A full fine-tune's key leaves the regime out, so it equals the key written before regimes
    existed (stores of that time resume and reuse their cells); any other regime is hashed in.
    """
    regime = {} if config.regime == tracking.DEFAULT_REGIME else {"regime": config.regime}
    return tracking.cell_key(
        "finetune", model=model.name, weights=model.weights, task=task.name, task_fingerprint=task.fingerprint,
        learning_rates=list(config.learning_rates), weight_decays=list(config.weight_decays),
        batch_size=config.batch_size, momentum=config.momentum, max_epochs=config.max_epochs,
        patience=config.patience, augment=config.augment, seed=config.seed, **regime,
    )


class _TrackedFinetune(FinetuneCallbacks):
    """Writes each grid point as a ``finetune-trial`` child run; reuses finished ones on resume."""

    def __init__(self, mlflow_client: MlflowClient, exp_id: str, parent_id: str, model: str, task: str,
                 finished: dict[tuple[float, float], TrialResult], regime: str = tracking.DEFAULT_REGIME):
        self.client, self.exp_id, self.parent_id = mlflow_client, exp_id, parent_id
        self.model, self.task, self.finished, self.regime = model, task, finished, regime
        self.child_id: str | None = None

    def skip_trial(self, params: TrialParams) -> TrialResult | None:
        return self.finished.get((params.lr, params.weight_decay))

    def on_trial_start(self, params: TrialParams) -> None:
        self.child_id = tracking.start_run(self.client, self.exp_id, tracking.RunRecord(
            kind="finetune-trial", model=self.model, task=self.task, parent_run_id=self.parent_id,
            tags={tracking.REGIME_TAG: self.regime},
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

    ``config.regime`` (``"full"`` or ``"linear-probe"``) is part of each cell's identity and is
    written as param ``regime`` and tag ``fennec.regime``: a probe and a full fine-tune of the same
    (model, task) are two cells, each finished or resumed on its own. A finished cell is skipped. A cell whose earlier run was killed midway is resumed under a new
    parent run: its finished grid points (trial runs) are moved under it and reused, the rest are
    trained, and the dead parent is deleted.
    """
    config = config or FinetuneConfig(progress=progress)
    config.grid()  # validates the grid before anything is written
    models_ = [m if isinstance(m, ZooModel) else load_model(m, weights) for m in models]
    for task in tasks:
        check_split(task, default_split(task, seed=config.seed))
    mlflow_client = mlflow_client or tracking.client()
    tracking.check_task_folders(mlflow_client, experiment, tasks)
    exp_id = tracking.experiment_id(mlflow_client, experiment)
    done = tracking.finished_cells(mlflow_client, experiment, "finetune")
    work = [claims.Work((model, task), _finetune_parent(model, task, config))
            for model in models_ for task in tasks]
    outcomes: list[CellOutcome] = []
    bar = tqdm(total=len(work), desc="finetune cells", disable=not progress, unit="cell")
    with claims.Claimer(mlflow_client, exp_id) as claimer, bar:
        for unit, claim in claims.claim_each(claimer, work, known=done, on_wait=functools.partial(_note_waiting, bar)):
            model, task = unit.item
            bar.set_postfix_str(f"{model.name} x {task.name}" + (" (done before)" if claim.state == "done" else ""))
            if claim.state == "done":
                outcomes.append(CellOutcome(model.name, task.name, claim.run_id, None, True))
            else:
                outcomes.append(_finetune_cell(mlflow_client, claimer, claim, experiment, model, task, config))
            bar.update()
    return outcomes


def _finetune_parent(model: ZooModel, task: Task, config: FinetuneConfig) -> tracking.RunRecord:
    split = default_split(task, seed=config.seed)
    return tracking.RunRecord(
        kind="finetune", model=model.name, task=task.name, cell=finetune_cell_key(model, task, config),
        tags={tracking.REGIME_TAG: config.regime},
        params={"regime": config.regime,
            "weights": model.weights, "learning_rates": ",".join(f"{v:g}" for v in config.learning_rates),
            "weight_decays": ",".join(f"{v:g}" for v in config.weight_decays), "batch_size": config.batch_size,
            "momentum": config.momentum, "max_epochs": config.max_epochs, "patience": config.patience,
            "augment": config.augment, "seed": config.seed, "device": config.device,
            "task_fingerprint": task.fingerprint, **split.sizes(),
            "model_parameters": model.parameter_count, "model_source": model.source,
            **{f"task_{k}": v for k, v in task.facts().items()},
        })


def _adopt_trials(mlflow_client: MlflowClient, experiment: str, parent_id: str, dead: list[claims.CellRun]) -> None:
    """Move the finished grid points of dead parents of the cell under ``parent_id``; delete the rest.

    Only the worker that won the cell's claim adopts, so two live workers never share a parent
    or its trials: a dead parent's finished trials are reused, its unfinished ones redone.
    """
    exp_id = tracking.experiment_id(mlflow_client, experiment)
    for dead_parent in dead:
        children = tracking.search_all(mlflow_client, [exp_id],
                                       f"tags.`mlflow.parentRunId` = {tracking.quote(dead_parent.run_id)}")
        for child in children:
            if child.info.status == "FINISHED" and child.data.tags.get(tracking.KIND_TAG) == "finetune-trial":
                mlflow_client.set_tag(child.info.run_id, "mlflow.parentRunId", parent_id)
            else:
                claims.delete_runs(mlflow_client, [child.info.run_id])
        claims.delete_runs(mlflow_client, [dead_parent.run_id])


def _finetune_cell(mlflow_client: MlflowClient, claimer: claims.Claimer, claim: claims.Claim, experiment: str,
                   model: ZooModel, task: Task, config: FinetuneConfig) -> CellOutcome:
    parent_id = claim.run_id
    exp_id = claimer.experiment_id
    callbacks = None
    try:
        _adopt_trials(mlflow_client, experiment, parent_id, claim.dead)
        callbacks = _TrackedFinetune(mlflow_client, exp_id, parent_id, model.name, task.name,
                                     _finished_trials(mlflow_client, experiment, parent_id), config.regime)
        result = finetune(model, task, config, split=default_split(task, seed=config.seed), callbacks=callbacks)
    except BaseException:  # Ctrl-C included: mark what was in flight as failed, resumed by the next claim
        if callbacks is not None and callbacks.child_id:
            tracking.finish_run(mlflow_client, callbacks.child_id, status="FAILED")
        claimer.fail(claim)
        raise
    run_id, ours = claimer.complete(claim, tracking.RunRecord(kind="finetune", metrics={
        "test_accuracy": result.test_accuracy, "best_val_accuracy": result.best.val_accuracy,
        "best_lr": result.best.lr, "best_weight_decay": result.best.weight_decay,
        "best_epoch": result.best.best_epoch, "trials_resumed": sum(t.resumed for t in result.trials),
        "seconds": sum(t.seconds for t in result.trials if not t.resumed)}))
    if not ours:  # another worker finished the cell first: our trials go with our deleted parent
        children = tracking.search_all(mlflow_client, [exp_id], f"tags.`mlflow.parentRunId` = {tracking.quote(parent_id)}")
        tracking.discard_runs(mlflow_client, [child.info.run_id for child in children])
    return CellOutcome(model.name, task.name, run_id, result.test_accuracy if ours else None, not ours)


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
    tracking.check_task_folders(mlflow_client, experiment, tasks)
    exp_id = tracking.experiment_id(mlflow_client, experiment)
    done = tracking.finished_cells(mlflow_client, experiment, "task-proxy")
    work = [claims.Work(task, tracking.RunRecord(
        kind="task-proxy", task=task.name, cell=tracking.cell_key(
            "task-proxy", encoder=encoder.name, task=task.name, fingerprint=task.fingerprint,
            sample_size=sample_size, seed=seed))) for task in tasks]
    outcomes = []
    bar = tqdm(total=len(work), desc=f"proxy {encoder.name}", disable=not progress, unit="task")
    with claims.Claimer(mlflow_client, exp_id) as claimer, bar:
        for unit, claim in claims.claim_each(claimer, work, known=done):
            task = unit.item
            bar.update()
            if claim.state == "done":
                outcomes.append(CellOutcome("", task.name, claim.run_id, None, True))
                continue
            try:
                claims.delete_runs(mlflow_client, [run.run_id for run in claim.dead])
                start = time.perf_counter()
                vector = task_proxy_features(encoder, task, sample_size=sample_size, seed=seed)
                seconds = time.perf_counter() - start
            except BaseException:
                claimer.abandon(claim.run_id)
                raise
            run_id, ours = claimer.complete(claim, tracking.RunRecord(
                kind="task-proxy",
                params={"encoder": encoder.name, "sample_size": sample_size, "seed": seed, "dim": len(vector),
                        **{f"task_{k}": v for k, v in task.facts().items()}},
                metrics={"seconds": seconds}, artifacts={"proxy.json": [float(v) for v in vector]}))
            outcomes.append(CellOutcome("", task.name, run_id, None, not ours))
    return outcomes
