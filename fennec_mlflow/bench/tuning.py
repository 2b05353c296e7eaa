"""Tune Fennec with Optuna on a benchmark; every trial a nested MLflow run.

**Objective and search space** (:mod:`fennec_mlflow.serving.selection`, shared with ``build``).
Mean leave-one-task-out Pearson of cold-start Fennec on a benchmark (a public table,
:mod:`fennec_mlflow.bench.public`, whose task vector comes from task meta as these tables have no
images; or the store's own ground truth, :mod:`fennec_mlflow.bench.store`), over ``alpha`` in
[0, 1], ``k`` in [1, min(M, N - 1) - 1] (each fit sees N - 1 tasks), ``nmf_l2`` in [1e-3, 10] on a
log scale and the shrinkage (``auto``, or fixed in [0, 1]). The first trial of a new study is
Fennec's default (k=4, alpha=0.5, nmf_l2=0.1, shrinkage auto), so "tuned" is never worse than
"default" on the objective.

**Runs.** One parent run ``fennec.kind=tune`` per session; each trial is a child run
``fennec.kind=tune-trial`` (tag ``mlflow.parentRunId`` = the parent) with params ``k``, ``alpha``,
``nmf_l2``, ``shrinkage`` and the evaluation metrics (``mean_pearson``, ``pearson.<task>``, ...).
When the study is done the parent gets params ``best_k``, ``best_alpha``, ``best_nmf_l2``,
``best_shrinkage``, ``best_formulation`` where searched (what ``build`` reads through :func:`fennec_mlflow.serving.build.tuned_parameters`),
metrics ``best_mean_pearson`` (optimistic: chosen and measured on the same targets),
``default_mean_pearson``, ``popularity_mean_pearson`` and, with nested cross-validation,
``nested_cv_mean_pearson``: the honest figure. Artifacts: ``trials.csv``,
``optimization_history.png``, ``nested_cv.csv``.

**Nested cross-validation.** For each outer target t: a fresh study tunes on the history only
(P without t's column, t's task facts dropped too; inner leave-one-task-out over the remaining
targets), then Fennec with the inner study's best params is fitted on that same history and
ranks t. ``nested_cv_mean_pearson`` is the mean of those outer Pearsons: no choice made on it
ever saw t's accuracies. Inner studies are small (``inner_trials``) and live in memory.

**Why not MLflow's or optuna-integration's Optuna glue.** MLflow 3.17 ships
``mlflow.optuna.MlflowStorage``: an Optuna *storage* that keeps the study as a run and each trial
as a child run. It would make the tracking store Optuna's database: every sampler step becomes
``search_runs`` calls (unpaged: at most 1,000 trials are seen), writes are batched on a background
thread, the runs carry Optuna's bookkeeping tags (``param_internal_val_*``, ``sys_*``) instead of
ours, and it is built for its Spark driver (``mlflow.pyspark.optuna``). optuna-integration's
``MLflowCallback`` is deprecated since Optuna 4.9, is not installed here, and logs through the
fluent API (which under ``mlflow run`` would resume the project run). So Optuna keeps its own
storage (in memory by default; a journal file or an RDB URL for parallel workers), and the
objective logs each trial with the plain MLflow client, tagged with our schema. MLflow and
Optuna never share one SQLite file: :func:`optuna_storage` refuses the tracking store's file.

**Parallel workers.** Give a shared storage (a journal file path, or an RDB URL such as
``postgresql://...``) and the same ``study_name`` to several ``fennec tune`` processes or
machines: they sample into one study (TPE with constant liar; a worker joining an existing
study offsets its seed by its process id), log trials under one parent run
(its id is kept in the study's user attrs), and the last one to finish writes the best params.
``workers=N`` does that with N local processes (spawned; a temporary journal file when no
storage is given), splitting ``n_trials`` between them, each making its trials' fits in turn.
With one worker a trial's fits spread over the cores instead, and the nested-CV folds always do
(forked workers, :func:`~fennec_mlflow.parallel.forked_map`).
"""
from __future__ import annotations

import math
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from fennec_mlflow.progress import tqdm

from fennec_mlflow import config
from fennec_mlflow.bench.public import Benchmark, load_benchmark
from fennec_mlflow.errors import FennecError, InvalidInputError
from fennec_mlflow.parallel import in_this_process
from fennec_mlflow.serving.selection import (
    DEFAULT_INNER_TRIALS,
    NMF_L2_RANGE,
    NestedCVResult,
    TuningData,
    chosen_trial,
    default_params,
    fennec_params,
    loto_evaluation,
    make_sampler,
    nested_cross_validation,
    popularity_evaluation,
    record_per_target,
    suggest,
)
from fennec_mlflow.store import tracking

DEFAULT_N_TRIALS = config.TUNE_N_TRIALS
PARENT_ATTR = "mlflow_parent_run_id"
_PARENT_WAIT_SECONDS = 120.0


def experiment_name(benchmark: str) -> str:
    """The default experiment of a benchmark's tune runs (pass ``experiment`` to log where ``build`` reads)."""
    return f"fennec-tune-{benchmark}"


# --------------------------------------------------------------------------- Optuna storage

def _sqlite_file(uri: str | None) -> Path | None:
    if not uri or not uri.startswith("sqlite:"):
        return None
    path = uri.split(":///", 1)[1] if ":///" in uri else ""
    return Path(path).resolve() if path and path != ":memory:" else None


def optuna_storage(spec: str | None, tracking_uri: str | None = None):
    """Optuna storage from a user's spec: None or '' = in memory; ``journal:PATH`` or a plain path =
    a journal file (safe for several processes); a URL with ``://`` = an RDB storage.

    Refuses the SQLite file of the MLflow tracking store (``tracking_uri``): the two never share a file.
    """
    if not spec:
        return None
    import mlflow

    mlflow_file = _sqlite_file(tracking_uri or mlflow.get_tracking_uri())
    if "://" in spec:
        if mlflow_file is not None and _sqlite_file(spec) == mlflow_file:
            raise InvalidInputError(f"Optuna storage {spec!r} is the MLflow tracking store's SQLite file; "
                             "give Optuna its own file (e.g. sqlite:///optuna.db or a journal file)")
        engine_kwargs = {"connect_args": {"timeout": 60}} if spec.startswith("sqlite") else None
        return optuna.storages.RDBStorage(spec, engine_kwargs=engine_kwargs)
    path = Path(spec[len("journal:"):] if spec.startswith("journal:") else spec)
    if mlflow_file is not None and path.resolve() == mlflow_file:
        raise InvalidInputError(f"Optuna journal {str(path)!r} is the MLflow tracking store's SQLite file")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # optuna < 4.0
        from optuna.storages import JournalFileStorage as JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _describe_storage(spec: str | None) -> str:
    if not spec:
        return "in-memory"
    if "://" in spec and "@" in spec.split("://", 1)[1]:  # hide credentials of an RDB URL
        scheme, rest = spec.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return spec


def _create_or_load(storage, study_name: str, n_trials: int, seed: int | None,
                    data: TuningData) -> tuple[optuna.Study, bool]:
    """(study, created): creation is atomic in every shared storage, so one worker only is the creator.

    A worker joining an existing study offsets its sampler seed by its process id, so two
    workers started with the same ``seed`` do not replay the same random start.
    """
    try:
        study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize",
                                    sampler=make_sampler(n_trials, seed))
    except optuna.exceptions.DuplicatedStudyError:
        joined_seed = None if seed is None else seed + os.getpid()
        return optuna.load_study(study_name=study_name, storage=storage,
                                 sampler=make_sampler(n_trials, joined_seed)), False
    study.enqueue_trial(default_params(data))
    return study, True


# --------------------------------------------------------------------------- MLflow logging

def _trial_objective(data: TuningData, mlflow_client, experiment_id: str, parent_run_id: str, study_name: str,
                     fennec_seed: int):
    from mlflow.entities import RunStatus


    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, data)
        record = tracking.RunRecord(
            kind="tune-trial", name=f"trial-{trial.number}", parent_run_id=parent_run_id,
            params={**params, "trial_number": trial.number, "study_name": study_name, "fennec_seed": fennec_seed},
            tags={"fennec.study": study_name})
        run_id = tracking.start_run(mlflow_client, experiment_id, record)
        try:
            start = time.perf_counter()
            result = loto_evaluation(data, params, fennec_seed)
            metrics = {**result.as_metrics(), "trial_seconds": time.perf_counter() - start}
            mlflow_client.log_batch(run_id, metrics=tracking.epoch_metrics(metrics, step=0))
        except BaseException:
            tracking.finish_run(mlflow_client, run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        tracking.finish_run(mlflow_client, run_id)
        trial.set_user_attr("mlflow_run_id", run_id)
        return record_per_target(trial, result)
    return objective


def _parent_run_id(study: optuna.Study, created: bool, mlflow_client, experiment_id: str, record) -> str:
    """The session's parent run: made by the study's creator (or by a worker resuming a finished
    study); other workers wait for its id in the study's user attrs."""

    deadline = time.monotonic() + _PARENT_WAIT_SECONDS
    while True:
        known = None if created else study.user_attrs.get(PARENT_ATTR)
        status = mlflow_client.get_run(known).info.status if known else None
        if status == "RUNNING":
            return known
        # the creator, a worker resuming a finished session, or nobody made one in time: make it
        if created or status is not None or time.monotonic() > deadline:
            run_id = tracking.start_run(mlflow_client, experiment_id, record)
            study.set_user_attr(PARENT_ATTR, run_id)
            return run_id
        time.sleep(0.5)


def _optimize_worker(args) -> int:
    """One worker process: join the study and run its share of the trials."""
    (storage_spec, study_name, data, n_trials, seed, parent_run_id, experiment_id, tracking_uri, fennec_seed) = args

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna_storage(storage_spec, tracking_uri)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=make_sampler(n_trials, seed))
    client = tracking.client(tracking_uri)
    with in_this_process():  # the --workers processes already fill the cores: each trial's fits in turn
        study.optimize(_trial_objective(data, client, experiment_id, parent_run_id, study_name, fennec_seed),
                       n_trials=n_trials)
    return n_trials


def history_figure(trials: pd.DataFrame, references: dict[str, float], title: str):
    """Trial values and the best so far (x 100), with reference lines (default, popularity, nested CV)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = trials[trials["state"] == "COMPLETE"].sort_values("number")
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.scatter(done["number"], 100 * done["value"], s=14, color="#4C72B0", label="trial")
    axes.step(done["number"], 100 * done["value"].cummax(), where="post", color="#4C72B0", label="best so far")
    colours = iter(["#DD8452", "#55A868", "#C44E52", "#8172B3"])
    for name, value in references.items():
        if value is not None and np.isfinite(value):
            axes.axhline(100 * value, linestyle="--", linewidth=1, color=next(colours), label=f"{name} {100 * value:.1f}")
    axes.set_xlabel("trial")
    axes.set_ylabel("mean leave-one-task-out Pearson x 100")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


@dataclass
class TuningOutcome:
    """What :func:`run_tuning` did."""

    benchmark: str
    experiment: str
    study_name: str
    parent_run_id: str
    best_params: dict
    best_value: float
    default_value: float | None
    popularity_value: float
    n_trials: int
    nested: NestedCVResult | None = None
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)
    highest_value: float | None = None  # the study's best trial, above best_value when not beyond doubt

    @property
    def nested_mean_pearson(self) -> float | None:
        return None if self.nested is None else self.nested.mean_pearson


def _finalise(study: optuna.Study, data: TuningData, mlflow_client, parent_run_id: str, *, nested_cv: bool,
              inner_trials: int, seed: int | None, fennec_seed: int, benchmark: str,
              experiment: str, progress: bool = False) -> TuningOutcome:
    import matplotlib.pyplot as plt
    from mlflow.entities import Param


    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        tracking.finish_run(mlflow_client, parent_run_id, "FAILED")
        raise FennecError(f"study {study.study_name!r} has no complete trial; see the failed tune-trial runs")
    defaults = default_params(data)
    best = chosen_trial(study, defaults)
    default_trials = [t for t in complete if t.params == defaults]
    default_value = default_trials[0].value if default_trials else None
    popularity = popularity_evaluation(data).summary["mean_pearson"]
    nested = None
    if nested_cv:
        with tqdm(total=len(data.targets), desc=f"nested CV ({inner_trials} trials per target)", unit="target",
                  disable=not progress) as bar:
            nested = nested_cross_validation(data, inner_trials=inner_trials, seed=seed, fennec_seed=fennec_seed,
                                             on_fold=bar.update)  # its folds on every core, whatever --workers
    metrics = {"best_mean_pearson": best.value, "popularity_mean_pearson": popularity,
               "n_trials_complete": len(complete), "n_trials": len(study.trials), "best_trial_number": best.number}
    if default_value is not None:
        metrics["default_mean_pearson"] = default_value
    if nested is not None:
        metrics["nested_cv_mean_pearson"] = nested.mean_pearson
        metrics["nested_cv_std_pearson"] = nested.std_pearson
        metrics.update({f"nested_cv_pearson.{f.target}": f.pearson for f in nested.folds})
        metrics["nested_cv_mean_top1_regret"] = float(np.nanmean([f.metrics["top1_regret"] for f in nested.folds]))
    best_params = fennec_params(best.params)
    existing = mlflow_client.get_run(parent_run_id).data.params
    params = [Param(f"best_{k}", str(v)) for k, v in best_params.items() if f"best_{k}" not in existing]
    params.append(Param("best_trial_run_id", str(best.user_attrs.get("mlflow_run_id", ""))))
    params = [p for p in params if p.key not in existing]
    mlflow_client.log_batch(parent_run_id, metrics=tracking.epoch_metrics(metrics, step=0), params=params)
    trials = study.trials_dataframe(attrs=("number", "value", "params", "state", "user_attrs"))
    trials["state"] = trials["state"].astype(str)
    references = {"default": default_value, "popularity": popularity,
                  "nested CV": nested.mean_pearson if nested is not None else None}
    figure = history_figure(trials, references, f"{benchmark}: Optuna study {study.study_name}")
    artifacts = {"trials.csv": trials, "optimization_history.png": figure}
    if nested is not None:
        artifacts["nested_cv.csv"] = nested.table()
    tracking.log_artifacts(mlflow_client, parent_run_id, artifacts)
    plt.close(figure)
    tracking.finish_run(mlflow_client, parent_run_id)
    return TuningOutcome(benchmark, experiment, study.study_name, parent_run_id, best_params, float(best.value),
                         default_value, float(popularity), len(study.trials), nested, trials, float(study.best_value))


def _split_trials(n_trials: int, workers: int) -> list[int]:
    return [n_trials // workers + (i < n_trials % workers) for i in range(workers)]


def run_tuning(benchmark, *, n_trials: int = DEFAULT_N_TRIALS, storage: str | None = None,
               study_name: str | None = None, nested_cv: bool = True, inner_trials: int = DEFAULT_INNER_TRIALS,
               experiment: str | None = None, workers: int = 1, seed: int | None = 0, fennec_seed: int = 0,
               progress: bool = True) -> TuningOutcome:
    """Tune Fennec on ``benchmark`` with Optuna and log the study (see the module docstring).

    benchmark: a name of :data:`fennec_mlflow.bench.public.BENCHMARK_NAMES` or a ``Benchmark``.
    n_trials: trials of this call (split between ``workers`` local processes). storage: Optuna
    storage spec (None: in memory; a path or ``journal:PATH``; an RDB URL), never the MLflow
    store's file. study_name: default ``fennec-tune-<benchmark>``; an existing study of that name
    in ``storage`` is resumed. nested_cv: also compute the nested-CV figure with ``inner_trials``
    per fold. experiment: default ``fennec-tune-<benchmark>``; give ``build``'s experiment (e.g.
    ``fennec``) for ``build`` to use the best params. seed: sampler seed (worker i uses seed + i).
    fennec_seed: Fennec's random_state inside the objective.
    """

    if n_trials < 1:
        raise InvalidInputError(f"n_trials must be at least 1, got {n_trials}")
    if workers < 1:
        raise InvalidInputError(f"workers must be at least 1, got {workers}")
    if nested_cv and inner_trials < 1:
        raise InvalidInputError(f"inner_trials must be at least 1, got {inner_trials}")
    if not progress:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    bench = benchmark if isinstance(benchmark, Benchmark) else load_benchmark(benchmark)
    benchmark = bench.name
    data = bench.tuning_data()
    experiment = experiment or experiment_name(benchmark)
    study_name = study_name or f"fennec-tune-{benchmark}"
    import mlflow

    tracking_uri = mlflow.get_tracking_uri()
    client = tracking.client(tracking_uri)
    experiment_id = tracking.experiment_id(client, experiment)

    with tempfile.TemporaryDirectory() as scratch:
        storage_spec = storage or (os.path.join(scratch, "optuna-journal.log") if workers > 1 else None)
        optuna_store = optuna_storage(storage_spec, tracking_uri)
        study, created = _create_or_load(optuna_store, study_name, n_trials, seed, data)
        record = tracking.RunRecord(
            kind="tune", name=f"tune-{benchmark}", tags={"fennec.study": study_name, "fennec.benchmark": benchmark},
            params={**bench.summary(), "n_trials": n_trials, "nested_cv": nested_cv,
                    "inner_trials": inner_trials if nested_cv else None, "study_name": study_name,
                    "optuna_storage": _describe_storage(storage), "workers": workers, "sampler": "TPESampler",
                    "seed": seed, "fennec_seed": fennec_seed, "k_range": f"1..{data.k_max}",
                    "alpha_range": "0..1", "nmf_l2_range": f"{NMF_L2_RANGE[0]}..{NMF_L2_RANGE[1]} (log)",
                    "shrinkage_range": "auto or 0..1", "history_sources": ",".join(data.sources),
                    "objective": f"mean leave-one-task-out Pearson, cold start from {bench.task_vector_source}"})
        parent_run_id = _parent_run_id(study, created, client, experiment_id, record)
        try:
            if workers == 1:
                study.optimize(_trial_objective(data, client, experiment_id, parent_run_id, study_name, fennec_seed),
                               n_trials=n_trials, show_progress_bar=False)
            else:
                jobs = [(storage_spec, study_name, data, share, None if seed is None else seed + i, parent_run_id,
                         experiment_id, tracking_uri, fennec_seed)
                        for i, share in enumerate(_split_trials(n_trials, workers)) if share]
                with ProcessPoolExecutor(max_workers=len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
                    list(pool.map(_optimize_worker, jobs))
                study = optuna.load_study(study_name=study_name, storage=optuna_store)
        except BaseException:
            tracking.finish_run(client, parent_run_id, "FAILED")
            raise
        running = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
        if running:  # other machines still work on this study: the last one to finish finalises
            chosen = chosen_trial(study, default_params(data))
            return TuningOutcome(benchmark, experiment, study_name, parent_run_id, fennec_params(chosen.params),
                                 float(chosen.value), None, math.nan, len(study.trials))
        outcome = _finalise(study, data, client, parent_run_id, nested_cv=nested_cv, inner_trials=inner_trials,
                            seed=seed, fennec_seed=fennec_seed, benchmark=benchmark,
                            experiment=experiment, progress=progress)
    tracking.annotate_project_run("tune", {"best_mean_pearson": outcome.best_value,
                                           **({"nested_cv_mean_pearson": outcome.nested_mean_pearson}
                                              if outcome.nested is not None else {})})
    return outcome
