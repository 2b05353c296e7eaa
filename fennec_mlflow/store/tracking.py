"""The run schema: how evidence is written to MLflow and read back.

Cell runs (one model on one task) are written only through :func:`write_run` and friends here;
the other ``store`` modules decide *what* to compute, this one *how* it is stored. Runs that
are not cells (``fennec-fit``, ``rank``, ``evaluation``, ``tune``) are opened with
:func:`own_run` by the serving and bench layers.

Every piece of evidence is one run tagged ``fennec.kind`` (plus ``fennec.model`` /
``fennec.task`` for a cell of the performance matrix). A cell run also carries
``fennec.cell``, a hash of everything that determines its value (model, weights, task
content, probe, estimator, ...): writing a cell whose finished run exists is a no-op, a
crashed or killed run (status FAILED or left RUNNING) is ignored by readers and redone. Cell jobs
claim a cell before computing it (:mod:`fennec_mlflow.store.claims`), so overlapping workers
leave one finished run per cell.

Facts travel as params: ``model_*`` params describe the model (``model_parameters``,
``model_source``, ...), ``task_*`` params the task (``task_class_count``, ...). Readers turn
them into the model and task fact tables.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.entities import (DatasetInput, InputTag, LifecycleStage, Metric, Param, Run, RunStatus, RunTag,
                              SourceType)
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE
from mlflow.utils.uri import append_to_uri_path
from mlflow.utils.validation import (MAX_ENTITY_KEY_LENGTH, MAX_TAG_VAL_LENGTH, path_not_unique,
                                     validate_param_and_metric_name)

from fennec_mlflow import config
from fennec_mlflow.config import env_override
from fennec_mlflow.errors import InvalidInputError

KIND_TAG = "fennec.kind"
MODEL_TAG = "fennec.model"
TASK_TAG = "fennec.task"
CELL_TAG = "fennec.cell"
SOURCE_TAG = "fennec.source"
# A fine-tune's regime ("full", "linear-probe"); finetune runs without the tag are "full".
REGIME_TAG = "fennec.regime"
REGIMES = config.FINETUNE_REGIMES
DEFAULT_REGIME = config.FINETUNE_REGIME
KINDS = (
    "finetune", "finetune-trial", "fda", "estimator", "external", "archi2vec", "archi2vec-corpus",
    "task-proxy", "fennec-fit", "rank", "tune", "tune-trial", "evaluation",
)
# The metric that fills the performance matrix, per kind of cell run.
MATRIX_METRIC = {"fda": "fda_score", "finetune": "test_accuracy", "estimator": "score", "external": "score"}
# Every task's best evidence: its fine-tunes where it has them, else its FDA scores (load_best_evidence).
BEST_EVIDENCE = "best"
MATRIX_KINDS = (BEST_EVIDENCE, *MATRIX_METRIC)
REGIME_KINDS = ("finetune", BEST_EVIDENCE)  # the matrix kinds read for one fine-tune regime
DEFAULT_EXPERIMENT = config.DEFAULT_EXPERIMENT
_PAGE = 5000
_MAX_PARAM_LENGTH = 6000
_BATCH_RUNS = 500  # runs per transaction when writing many at once to a SQL store
_WRITER_THREADS = 8  # concurrent writers when writing many runs to a tracking server


@contextlib.contextmanager
def own_run(experiment: str, run_name: str, tags: dict):
    """A new run of our own, even under `mlflow run` (whose MLFLOW_RUN_ID would otherwise be resumed).

    The experiment is passed to ``start_run`` rather than made the active one (``set_experiment``
    would leave it active for the caller's later ``mlflow.start_run()`` and export
    ``MLFLOW_EXPERIMENT_ID`` to subprocesses).
    """
    with env_override(MLFLOW_RUN_ID=None, MLFLOW_EXPERIMENT_ID=os.environ.get("MLFLOW_EXPERIMENT_ID")):
        with mlflow.start_run(experiment_id=experiment_id(client(), experiment), run_name=run_name,
                              tags=tags) as run:
            yield run


class TrackingError(InvalidInputError):
    """The store cannot answer the question as asked."""


def client(tracking_uri: str | None = None) -> MlflowClient:
    """A client on ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's default (sqlite ``mlflow.db``).

    A sqlite store is created and migrated once, under a lock (:func:`open_sqlite_store`), so
    workers started together on a new file do not race through MLflow's schema migration.
    """
    uri = tracking_uri or mlflow.get_tracking_uri()
    path = _sqlite_path(uri) if uri.startswith("sqlite:///") else None
    if path is not None:
        open_sqlite_store(uri, str(path.resolve()))  # once per file and process, wherever the working directory
    return MlflowClient(tracking_uri=uri)


def _sqlite_path(uri: str) -> Path | None:
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


@functools.cache
def open_sqlite_store(uri: str, _resolved: str = "") -> None:
    """Create or migrate the sqlite store at ``uri`` once per process, holding ``<file>.lock``.

    MLflow creates (and migrates) a sqlite store's tables on first use in every process;
    several processes doing that at once on a new file fail ("Online migration expected to
    match one row", "duplicate column name"). Under an exclusive ``flock`` on a lock file next to
    the database, only one process migrates; the others find the tables made. Tables left
    behind by an interrupted migration (``_alembic_tmp_<table>`` next to an intact ``<table>``)
    are dropped first. A store that cannot be opened is one :class:`TrackingError`.
    """
    import fcntl
    import logging
    import sqlite3

    path = _sqlite_path(uri)
    if path is None:
        return
    if not path.parent.is_dir():
        raise TrackingError(f"cannot open the sqlite tracking store {uri!r}: folder {str(path.parent)!r} does not "
                            "exist; create it or point MLFLOW_TRACKING_URI elsewhere")
    lock = path.with_name(path.name + ".lock")
    try:
        handle = open(lock, "a")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise TrackingError(f"cannot open the sqlite tracking store {uri!r}: cannot write the lock file "
                            f"{str(lock)!r} ({exc.strerror}); check the folder's permissions") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if path.exists():
                with contextlib.closing(sqlite3.connect(path)) as db:
                    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                    leftovers = sorted(n for n in names if n.startswith("_alembic_tmp_"))
                    orphans = [n for n in leftovers if n[len("_alembic_tmp_"):] not in names]
                    if orphans:
                        raise TrackingError(
                            f"the sqlite tracking store {str(path)!r} holds {', '.join(orphans)} without the "
                            "table it copies: an interrupted schema migration lost data; restore the file from "
                            "a backup or start a new store")
                    for name in leftovers:
                        db.execute(f'DROP TABLE "{name}"')
                    db.commit()
                    if leftovers:
                        logging.getLogger(__name__).warning(
                            "dropped %s, left in %s by an interrupted MLflow schema migration",
                            ", ".join(leftovers), path)
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # creates and migrates the tables
        except TrackingError:
            raise
        except (sqlite3.Error, mlflow.exceptions.MlflowException, sa.exc.SQLAlchemyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrackingError(f"cannot open the sqlite tracking store {uri!r}: {first}; if another MLflow "
                                "version wrote it, run `mlflow db upgrade` on it, else start a new store") from None
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def artifact_location(mlflow_client: MlflowClient) -> str | None:
    """For a sqlite store, ``mlruns/`` next to the database file, wherever the command runs from.

    MLflow's default is ``./mlruns`` in the working directory, which under ``mlflow run <project>``
    is the project's folder, not the user's. Other stores keep their server's default (None).
    """
    uri = mlflow_client.tracking_uri
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri[len("sqlite:///"):])
    return (database.parent.resolve() / "mlruns").as_uri()


def experiment_id(mlflow_client: MlflowClient, name: str = DEFAULT_EXPERIMENT) -> str:
    """The id of experiment ``name``, created when missing (a deleted one is restored)."""
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return mlflow_client.create_experiment(name, artifact_location=artifact_location(mlflow_client),
                                                   tags={MLFLOW_RUN_NOTE: experiment_description(name)})
        except mlflow.exceptions.MlflowException:  # another worker created it meanwhile
            experiment = mlflow_client.get_experiment_by_name(name)
            assert experiment is not None
            return experiment.experiment_id
    if experiment.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


# By name prefix; the UI shows an experiment's ``mlflow.note.content`` tag as its description.
EXPERIMENT_DESCRIPTIONS = {
    "fennec-eval-": "Leave-one-task-out evaluation of {rest}: one run per estimator (Fennec, its ablations, "
                    "baselines) with the same metric names, so the UI compares them column by column.",
    "fennec-tune-": "Optuna tuning of Fennec on {rest}: a parent run per study, one nested run per trial.",
    "fennec-bench-": "Evidence of the {rest} benchmark: pre-training, fine-tunes, estimator scores, proxies.",
    "fennec": "Fennec's knowledge base: one run per piece of evidence (fine-tunes, FDA and estimator "
              "scores, imported tables, archi2vec embeddings, task proxies), plus fits (fennec-fit) and "
              "rankings (rank). The performance matrix is rebuilt from these runs.",
}


def experiment_description(name: str) -> str:
    for prefix, text in EXPERIMENT_DESCRIPTIONS.items():
        if name.startswith(prefix):
            return text.format(rest=name[len(prefix):] or name)
    return "Runs written by fennec-mlflow."


def cell_key(kind: str, **parts) -> str:
    """A stable hash of what determines a cell's value."""
    payload = json.dumps({"kind": kind, **parts}, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()


def quote(value: str) -> str:
    """``value`` as a string literal of MLflow's search filter.

    The filter parser keeps backslashes and doubled quotes verbatim, so a value holding a single
    quote is written in double quotes (and the other way round); a value holding both cannot be
    written exactly: use :func:`equals`, which falls back on LIKE plus an exact check of the results.
    """
    value = str(value)
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise TrackingError(f"{value!r} holds both kinds of quote; MLflow's search filter cannot match it exactly")


_quote = quote


def equals(field_: str, value: str) -> tuple[str, bool]:
    """A filter condition ``field_ = value``; True when the results still need an exact check
    (``value`` holds both kinds of quote, matched with LIKE and ``_`` in their place)."""
    value = str(value)
    if "'" in value and '"' in value:
        pattern = "".join("_" if c in "'\"" else c for c in value)  # % and _ only widen the match
        return f"{field_} LIKE '{pattern}'", True
    return f"{field_} = {quote(value)}", False


def search_all(mlflow_client: MlflowClient, experiment_ids: list[str], filter_string: str,
               order_by: list[str] | None = None) -> Iterator[Run]:
    """Every run matching ``filter_string``, page by page."""
    token = None
    while True:
        page = mlflow_client.search_runs(experiment_ids, filter_string, max_results=_PAGE,
                                         order_by=order_by, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _cell_runs(mlflow_client: MlflowClient, experiment: str, kind: str, finished: bool) -> list[tuple[str, str]]:
    """(cell key, run id) of the active runs of ``kind`` that did (or did not) finish, newest first.

    SQL-backed stores are read with one query, as in :func:`load_matrix` (a resumed job checks
    thousands of cells; MLflow's search spends ~1 ms materialising each run); others with paged search.
    """
    exp = mlflow_client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    engine = _sql_engine(mlflow_client)
    if engine is None:
        status = "=" if finished else "!="
        runs = search_all(mlflow_client, [exp.experiment_id],
                          f"tags.`{KIND_TAG}` = {_quote(kind)} and attributes.status {status} 'FINISHED'",
                          order_by=["attributes.start_time DESC"])
        return [(run.data.tags[CELL_TAG], run.info.run_id) for run in runs if CELL_TAG in run.data.tags]
    query = ("SELECT c.value, r.run_uuid FROM runs r "
             "JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = :kind_tag AND k.value = :kind "
             "JOIN tags c ON c.run_uuid = r.run_uuid AND c.key = :cell_tag "
             f"WHERE r.experiment_id = :experiment AND r.lifecycle_stage = 'active' "
             f"AND r.status {'=' if finished else '!='} 'FINISHED' ORDER BY r.start_time DESC, r.run_uuid")
    with engine.connect() as connection:
        rows = connection.execute(sa.text(query), {"kind_tag": KIND_TAG, "kind": kind, "cell_tag": CELL_TAG,
                                                   "experiment": int(exp.experiment_id)}).all()
    return [(cell, run_id) for cell, run_id in rows]


def check_task_folders(mlflow_client: MlflowClient, experiment: str, tasks) -> None:
    """Refuse a folder task whose name the store already gives to another folder's cells.

    A folder task is named by its folder, so ``/a/train`` and ``/b/train`` would both be task
    ``train``, and the newer cells would silently replace the older in every matrix. ``tasks``:
    :class:`~fennec_mlflow.data.tasks.Task` objects; one search per folder task.
    """
    sources: dict[str, str] = {}
    for task in tasks:
        if sources.setdefault(task.name, task.source) != task.source:
            raise TrackingError(f"two tasks are named {task.name!r} ({sources[task.name].removeprefix('folder:')} and "
                                f"{task.source.removeprefix('folder:')}); tasks are named by their folder, so rename "
                                "one (or link it under another name)")
    for task in tasks:
        other = other_task_source(mlflow_client, experiment, task)
        if other is not None:
            raise TrackingError(
                f"task {task.name!r}: experiment {experiment!r} already holds cells of another task of that name, "
                f"from {other.removeprefix('folder:')}; tasks are named by their folder, so rename "
                f"{task.source.removeprefix('folder:')} (or link it under another name), or use another --experiment")


def other_task_source(mlflow_client: MlflowClient, experiment: str, task) -> str | None:
    """The ``task_source`` of another task that runs in ``experiment`` file under the name of ``task``
    (a folder task: tasks are named by their folder, so ``/a/train`` and ``/b/train`` share one), else None.

    One search; a task that is not a folder is never another's namesake (built-in names are unique)."""
    exp = mlflow_client.get_experiment_by_name(experiment)
    if exp is None or not task.source.startswith("folder:"):
        return None
    clash = mlflow_client.search_runs(
        [exp.experiment_id], f"tags.`{TASK_TAG}` = {_quote(task.name)} and params.task_source != "
                             f"{_quote(task.source)}", max_results=1)
    return clash[0].data.params["task_source"] if clash else None


def task_names_of_source(mlflow_client: MlflowClient, experiment: str, source: str, limit: int = 10) -> list[str]:
    """The task names that runs in ``experiment`` give the data of ``source`` (``folder:PATH``): a folder
    reached through a link under another name has two. One search per name found, at most ``limit``."""
    exp = mlflow_client.get_experiment_by_name(experiment)
    names: list[str] = []
    while exp is not None and len(names) < limit:
        others = "".join(f" and tags.`{TASK_TAG}` != {_quote(name)}" for name in names)
        found = mlflow_client.search_runs([exp.experiment_id], f"params.task_source = {_quote(source)}{others}",
                                          max_results=1)
        if not found or TASK_TAG not in found[0].data.tags:
            break
        names.append(found[0].data.tags[TASK_TAG])
    return names


def finished_cells(mlflow_client: MlflowClient, experiment: str, kind: str) -> dict[str, str]:
    """cell key -> run id of every finished cell run of ``kind`` in ``experiment`` (the newest per cell)."""
    return {cell: run_ids[0] for cell, run_ids in finished_cell_runs(mlflow_client, experiment, kind).items()}


def finished_cell_runs(mlflow_client: MlflowClient, experiment: str, kind: str) -> dict[str, list[str]]:
    """cell key -> ids of every finished run of that cell, newest first (the one readers read); more than
    one where two writers that are not claimed (two imports at once) both wrote the cell."""
    cells: dict[str, list[str]] = {}
    for cell, run_id in _cell_runs(mlflow_client, experiment, kind, finished=True):
        cells.setdefault(cell, []).append(run_id)
    return cells


def unfinished_cells(mlflow_client: MlflowClient, experiment: str, kind: str) -> dict[str, list[str]]:
    """cell key -> ids of the active runs of ``kind`` in ``experiment`` that never finished.

    A job killed while writing a cell leaves such a run (RUNNING, or FAILED after an exception).
    Writers that are not claimed (imports, evaluations) discard it (:func:`discard_runs`) just
    before writing the cell again, so a cell never has two runs; cell jobs go through claims
    (:mod:`fennec_mlflow.store.claims`), which tell a dead worker's run from a live one's.
    """
    stale: dict[str, list[str]] = {}
    for cell, run_id in _cell_runs(mlflow_client, experiment, kind, finished=False):
        stale.setdefault(cell, []).append(run_id)
    return stale


def discard_runs(mlflow_client: MlflowClient, run_ids) -> None:
    """Delete runs (MLflow's soft delete: every reader here skips deleted runs)."""
    for run_id in run_ids:
        mlflow_client.delete_run(run_id)


def _params(values: Mapping[str, object]) -> list[Param]:
    return [Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in values.items() if v is not None]


def _metrics(values: Mapping[str, float], step: int = 0) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items() if v is not None and np.isfinite(v)]


@dataclass
class RunRecord:
    """Everything one run holds, written in one go so a failure never leaves a half-written finished run."""

    kind: str
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    model: str | None = None
    task: str | None = None
    cell: str | None = None
    name: str | None = None
    parent_run_id: str | None = None
    datasets: list[DatasetInput] = field(default_factory=list)
    # artifact name -> a dict/list (JSON file), a DataFrame (CSV file), a matplotlib figure
    # (image file), or a local Path: a file or folder uploaded INTO the artifact folder ``name``
    artifacts: dict[str, object] = field(default_factory=dict)

    def all_tags(self) -> dict[str, str]:
        tags = {KIND_TAG: self.kind, **{k: str(v) for k, v in self.tags.items()}}
        for key, value in ((MODEL_TAG, self.model), (TASK_TAG, self.task), (CELL_TAG, self.cell),
                           (MLFLOW_PARENT_RUN_ID, self.parent_run_id)):
            if value is not None:
                tags[key] = value
        return tags


def _run_name(record: RunRecord) -> str:
    return record.name or "-".join(x for x in (record.kind, record.model, record.task) if x)


def start_run(mlflow_client: MlflowClient, experiment_id_: str, record: RunRecord) -> str:
    """Create a RUNNING run holding ``record``'s tags, params and inputs; returns its id."""
    run_name = _run_name(record)
    run = mlflow_client.create_run(experiment_id_, tags={**record.all_tags(), MLFLOW_RUN_NAME: run_name},
                                   run_name=run_name)
    run_id = run.info.run_id
    try:
        log_record(mlflow_client, run_id, record)
    except Exception:
        mlflow_client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    return run_id


def log_record(mlflow_client: MlflowClient, run_id: str, record: RunRecord) -> None:
    """``record``'s params, metrics, dataset inputs and artifacts, into an open run (one ``log_batch``)."""
    metrics, params = _metrics(record.metrics), _params(record.params)
    if metrics or params:
        mlflow_client.log_batch(run_id, metrics=metrics, params=params)
    if record.datasets:
        _log_inputs(mlflow_client, run_id, record.datasets)
    log_artifacts(mlflow_client, run_id, record.artifacts)


def _log_inputs(mlflow_client: MlflowClient, run_id: str, datasets: list[DatasetInput]) -> None:
    """``log_inputs``, once more when another worker inserted the same dataset meanwhile.

    MLflow looks a dataset up and then inserts it, so two workers logging one probe at the same
    moment collide on the datasets table's key; the second attempt finds the row and links to it.
    """
    try:
        mlflow_client.log_inputs(run_id, datasets=datasets)
    except mlflow.exceptions.MlflowException as exc:
        if not any(word in str(exc) for word in ("UniqueViolation", "UNIQUE constraint", "dataset_pk",
                                                  "Duplicate entry")):
            raise
        mlflow_client.log_inputs(run_id, datasets=datasets)


def log_artifacts(mlflow_client: MlflowClient, run_id: str, artifacts: Mapping[str, object]) -> None:
    """Log each artifact by kind (see ``RunRecord.artifacts``)."""

    for name, value in artifacts.items():
        if isinstance(value, Path):
            upload = mlflow_client.log_artifacts if value.is_dir() else mlflow_client.log_artifact
            upload(run_id, str(value), artifact_path=name)
        elif isinstance(value, pd.DataFrame):
            mlflow_client.log_text(run_id, value.to_csv(), name)
        elif isinstance(value, (dict, list)):
            mlflow_client.log_dict(run_id, value, name)
        else:
            mlflow_client.log_figure(run_id, value, name)


def download_json(mlflow_client: MlflowClient, run_id: str, path: str):
    """A JSON artifact of a run, parsed (no per-file progress bar: readers fetch many)."""

    with env_override(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"), tempfile.TemporaryDirectory() as tmp:
        with open(mlflow_client.download_artifacts(run_id, path, tmp)) as handle:
            return json.load(handle)


def download_csv(mlflow_client: MlflowClient, run_id: str, path: str) -> pd.DataFrame:
    """A CSV artifact of a run (a DataFrame logged by :func:`log_artifacts`), its first column the index."""

    with env_override(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"), tempfile.TemporaryDirectory() as tmp:
        return pd.read_csv(mlflow_client.download_artifacts(run_id, path, tmp), index_col=0)


def finish_run(mlflow_client: MlflowClient, run_id: str, status: str = "FINISHED") -> None:
    mlflow_client.set_terminated(run_id, status)


def reopen_run(mlflow_client: MlflowClient, run_id: str) -> None:
    """Mark an unfinished run RUNNING again, to resume it in place."""
    mlflow_client.update_run(run_id, status="RUNNING")


def epoch_metrics(values: Mapping[str, float], step: int) -> list[Metric]:
    """Metrics at ``step`` (an epoch), non-finite values left out."""
    return _metrics(values, step)


def runs_with_cell(mlflow_client: MlflowClient, experiment_id_: str, cell: str,
                   statuses: tuple[str, ...] = ("FINISHED",)) -> list[Run]:
    """Runs of one cell with one of ``statuses``, newest first."""
    runs = search_all(mlflow_client, [experiment_id_], f"tags.`{CELL_TAG}` = {_quote(cell)}",
                      order_by=["attributes.start_time DESC"])
    return [run for run in runs if run.info.status in statuses]


def write_run(mlflow_client: MlflowClient, experiment_id_: str, record: RunRecord) -> str:
    """Write ``record`` as a FINISHED run (FAILED if writing breaks midway)."""
    run_id = start_run(mlflow_client, experiment_id_, record)
    mlflow_client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return run_id


def write_runs(mlflow_client: MlflowClient, experiment_id_: str, records: Iterable[RunRecord], *,
               batch_size: int = _BATCH_RUNS, threads: int = _WRITER_THREADS,
               on_written: Callable[[int], None] | None = None) -> list[str]:
    """Write many records as FINISHED runs, as :func:`write_run` does one; returns their ids in order.

    On a SQL-backed store (sqlite, PostgreSQL, MySQL) the runs go in batches of ``batch_size``,
    each batch one transaction of inserts into MLflow's own tables (as MLflow's SQLAlchemy models
    define them, with the values MLflow's create_run, log_batch and set_terminated store): a batch
    is written whole or not at all, so a killed writer leaves no half-written run. Through the
    client each run costs 3 calls and 12 database sessions (about 10 ms on sqlite); a batch of 500
    runs is one commit. Records with artifacts or dataset inputs, and other stores (an MLflow
    server over REST), are written with :func:`write_run`, on ``threads`` threads for a server (a
    killed writer leaves at most ``threads`` unfinished runs, which readers ignore).
    ``on_written(n)`` is called after each ``n`` runs written.
    """
    records = list(records)
    done = on_written or (lambda n: None)
    engine = _sql_engine(mlflow_client)
    if engine is not None and not any(r.artifacts or r.datasets for r in records):
        experiment = mlflow_client.get_experiment(experiment_id_)
        run_ids: list[str] = []
        for start in range(0, len(records), batch_size):
            run_ids += _insert_runs(engine, experiment, records[start:start + batch_size])
            done(len(run_ids) - start)
        return run_ids

    def write(record: RunRecord) -> str:
        run_id = write_run(mlflow_client, experiment_id_, record)
        done(1)
        return run_id

    # sqlite takes one writer at a time: threads only for a server, which would print each run's URL
    with (env_override(MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true"),
          ThreadPoolExecutor(max_workers=1 if engine is not None else max(1, threads)) as pool):
        return list(pool.map(write, records))


def checked_name(key: str) -> str:
    """A param, metric or tag name MLflow accepts (MLflow's own rule), else a clear error."""
    if len(key) > MAX_ENTITY_KEY_LENGTH or not validate_param_and_metric_name(key) or path_not_unique(key):
        raise TrackingError(f"{key!r} is not a valid MLflow param, metric or tag name: at most "
                            f"{MAX_ENTITY_KEY_LENGTH} characters, letters, digits, _ - . / : and spaces, "
                            "not a path with . or .. parts")
    return key


def _insert_runs(engine, experiment, records: list[RunRecord]) -> list[str]:
    """Insert ``records`` as FINISHED runs of ``experiment`` in one transaction; their run ids."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag

    now = int(time.time() * 1000)
    runs, tags, params, metrics = [], [], [], []
    for record in records:
        run_id = uuid.uuid4().hex
        name = _run_name(record)
        runs.append({"run_uuid": run_id, "name": name, "source_type": SourceType.to_string(SourceType.UNKNOWN),
                     "source_name": "", "entry_point_name": "", "user_id": "unknown",
                     "status": RunStatus.to_string(RunStatus.FINISHED), "start_time": now, "end_time": now,
                     "deleted_time": None, "source_version": "", "lifecycle_stage": LifecycleStage.ACTIVE,
                     "artifact_uri": append_to_uri_path(experiment.artifact_location, run_id, "artifacts"),
                     "experiment_id": int(experiment.experiment_id)})
        tags += [{"run_uuid": run_id, "key": checked_name(k), "value": str(v)[:MAX_TAG_VAL_LENGTH]}
                 for k, v in {**record.all_tags(), MLFLOW_RUN_NAME: name}.items()]
        params += [{"run_uuid": run_id, "key": checked_name(p.key), "value": p.value} for p in _params(record.params)]
        metrics += [{"run_uuid": run_id, "key": checked_name(m.key), "value": m.value, "timestamp": m.timestamp,
                     "step": m.step, "is_nan": False} for m in _metrics(record.metrics)]
    with engine.begin() as connection:
        for model, rows in ((SqlRun, runs), (SqlTag, tags), (SqlParam, params), (SqlMetric, metrics),
                            (SqlLatestMetric, metrics)):
            if rows:
                connection.execute(model.__table__.insert(), rows)
    return [run["run_uuid"] for run in runs]


PROJECT_RUN_TAG = "fennec.project_run_id"


def project_run_link() -> dict[str, str]:
    """Under `mlflow run`, a tag linking a run of ours to the project run MLflow started (else nothing)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    return {PROJECT_RUN_TAG: run_id} if run_id else {}


def annotate_project_run(job: str, metrics: Mapping[str, float], mlflow_client: MlflowClient | None = None,
                         result_run_id: str | None = None) -> None:
    """Under `mlflow run`, tag the project's own run with the job it ran and a summary.

    MLflow creates that run (and passes its id in ``MLFLOW_RUN_ID``); the cell runs the job
    writes are separate runs in the knowledge-base experiment.
    """

    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    mlflow_client = mlflow_client or client()
    tags = [RunTag("fennec.job", job)]
    if result_run_id:  # the run that holds the result, one click away in the UI
        tags.append(RunTag("fennec.result_run_id", result_run_id))
    mlflow_client.log_batch(run_id, metrics=_metrics(metrics), tags=tags)


def probe_dataset(task_name: str, task_source: str, indices: np.ndarray, labels: np.ndarray) -> DatasetInput:
    """The probe set (indices into the task and their labels) as an MLflow dataset input."""
    from mlflow.data.code_dataset_source import CodeDatasetSource

    dataset = mlflow.data.from_numpy(
        np.asarray(indices), targets=np.asarray(labels), name=f"{task_name}-probe",
        source=CodeDatasetSource(tags={"task": task_name, "task_source": task_source}),
    )
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "probe")])


# ----------------------------------------------------------------------------- reading


@dataclass
class KnowledgeMatrix:
    """A performance matrix rebuilt from the store, with the facts the runs carried."""

    values: pd.DataFrame  # models x tasks, NaN where unknown
    model_facts: pd.DataFrame  # one row per model, columns from model_* params
    task_facts: pd.DataFrame  # one row per task, columns from task_* params
    run_ids: pd.DataFrame  # models x tasks, the run behind each value
    # each task's weight in Fennec's popularity part (None: all alike); see load_best_evidence
    task_weights: pd.Series | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape


def _facts(rows: list[dict], index_name: str) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(index=pd.Index([], name=index_name))
    frame = pd.DataFrame(rows).drop_duplicates(subset=[index_name], keep="first").set_index(index_name).sort_index()
    return frame.apply(_numeric_if_possible)


def _numeric_if_possible(column: pd.Series) -> pd.Series:
    """Params come back as strings; numbers should be numbers again."""
    try:
        return pd.to_numeric(column)
    except (ValueError, TypeError):
        return column


@dataclass
class _CellRow:
    model: str
    task: str
    value: float
    run_id: str
    params: dict[str, str]


def load_matrix(
    kind: str = "fda",
    *,
    experiment: str | list[str] = DEFAULT_EXPERIMENT,
    metric: str | None = None,
    estimator: str | None = None,
    source: str | None = None,
    regime: str | None = None,
    mlflow_client: MlflowClient | None = None,
) -> KnowledgeMatrix:
    """Rebuild the models x tasks matrix of ``kind`` runs from the store.

    Reads finished, active runs only, keeps the latest run (by start time) per (model, task)
    and ignores failed or unfinished ones. ``estimator`` filters on the ``estimator`` param
    (estimator runs), ``source`` on the ``fennec.source`` tag (imported tables), ``regime`` on
    the ``fennec.regime`` tag of finetune runs (default ``"full"``; a run without the tag is a
    full fine-tune), so the finetune matrix is one regime's.

    On SQL-backed stores (sqlite, PostgreSQL, MySQL) the cells are read with one SQL query per
    table, because MLflow's ORM search spends ~2 ms per run materialising every param and tag
    (20 s for 10,000 runs); any other store (an MLflow server over REST) is read with paged
    ``search_runs``. Both readers return the same matrix (tests/test_tracking.py).
    """
    if kind == BEST_EVIDENCE:
        return load_best_evidence(experiment=experiment, regime=regime, mlflow_client=mlflow_client)
    if kind not in MATRIX_METRIC and metric is None:
        raise TrackingError(f"runs of kind {kind!r} do not fill a matrix; use one of {sorted(MATRIX_METRIC)}")
    metric = metric or MATRIX_METRIC[kind]
    regime = checked_regime(kind, regime)
    mlflow_client = mlflow_client or client()
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    experiments = [mlflow_client.get_experiment_by_name(name) for name in names]
    missing = [n for n, e in zip(names, experiments) if e is None]
    if missing:
        raise TrackingError(f"no experiment named {', '.join(map(repr, missing))} in the store "
                            f"{mlflow_client.tracking_uri!r}; did you log to another experiment or store?")
    experiment_ids = [e.experiment_id for e in experiments]
    engine = _sql_engine(mlflow_client)
    if engine is not None:
        rows = _cell_rows_sql(engine, experiment_ids, kind, metric, estimator, source, regime)
    else:
        rows = _cell_rows_search(mlflow_client, experiment_ids, kind, metric, estimator, source, regime)
    return _assemble(rows)


# A task's fine-tunes replace its FDA scores in the best-evidence matrix from this many models on.
MIN_FINETUNED_MODELS = 3


def load_best_evidence(*, experiment: str | list[str] = DEFAULT_EXPERIMENT, regime: str | None = None,
                       mlflow_client: MlflowClient | None = None) -> KnowledgeMatrix:
    """Every task's best evidence: its fine-tune accuracies (``regime``) where at least
    :data:`MIN_FINETUNED_MODELS` models were fine-tuned on it, else its FDA scores.

    ``task_weights``: 1 for a fine-tuned task, ``config.SCORE_ONLY_TASK_WEIGHT`` for one known only
    through FDA, so Fennec's popularity follows what fine-tuning showed. Each column keeps one
    kind of value (Fennec standardises per task, so accuracies and FDA scores never mix in one).
    """
    mlflow_client = mlflow_client or client()
    finetune = load_matrix("finetune", experiment=experiment, regime=regime, mlflow_client=mlflow_client)
    fda = load_matrix("fda", experiment=experiment, mlflow_client=mlflow_client)
    tuned = [t for t in finetune.values.columns if finetune.values[t].notna().sum() >= MIN_FINETUNED_MODELS]
    scored = [t for t in fda.values.columns if t not in tuned]
    models = sorted(set(finetune.values.index[finetune.values[tuned].notna().any(axis=1)])
                    | set(fda.values.index[fda.values[scored].notna().any(axis=1)]))
    tasks = sorted(tuned + scored)

    def joined(part: str) -> pd.DataFrame:
        tables = [getattr(finetune, part)[tuned], getattr(fda, part)[scored]]
        return pd.concat([t.reindex(models) for t in tables], axis=1).reindex(columns=tasks)

    return KnowledgeMatrix(values=joined("values"), run_ids=joined("run_ids"),
                           model_facts=finetune.model_facts.combine_first(fda.model_facts),
                           task_facts=finetune.task_facts.combine_first(fda.task_facts),
                           task_weights=evidence_weights(tasks, tuned))


def evidence_weights(tasks: Iterable[str], fine_tuned: Iterable[str]) -> pd.Series:
    """Each task's weight in Fennec's popularity part: 1 when fine-tuned, else ``config.SCORE_ONLY_TASK_WEIGHT``."""
    weights = pd.Series(config.SCORE_ONLY_TASK_WEIGHT, index=list(tasks), dtype=float)
    weights[list(fine_tuned)] = 1.0
    return weights


def checked_regime(kind: str, regime: str | None) -> str | None:
    """The regime a matrix of ``kind`` is read for: finetune runs (and the best evidence, which
    reads them) default to ``"full"``; other kinds have none."""
    if kind not in REGIME_KINDS:
        if regime not in (None, DEFAULT_REGIME):
            raise TrackingError(f"regime {regime!r} applies to finetune runs only, not to {kind!r} runs")
        return None
    regime = regime or DEFAULT_REGIME
    if regime not in REGIMES:
        raise TrackingError(f"unknown fine-tune regime {regime!r}; use one of {', '.join(REGIMES)}")
    return regime


def regime_held(kind: str, experiment: str = DEFAULT_EXPERIMENT, mlflow_client: MlflowClient | None = None,
                ) -> str | None:
    """For a matrix kind read by regime: ``"full"`` when the store holds such fine-tunes, else the first
    other regime it holds (a store of linear probes only), else None."""
    for regime in (DEFAULT_REGIME, *(other for other in REGIMES if other != DEFAULT_REGIME)):
        if not load_matrix(kind, experiment=experiment, regime=regime, mlflow_client=mlflow_client).values.empty:
            return regime
    return None


def _assemble(rows: Iterator[_CellRow]) -> KnowledgeMatrix:
    """Rows newest first -> the matrix, keeping the first (latest) row per cell."""
    cells: dict[tuple[str, str], tuple[float, str]] = {}
    model_rows: list[dict] = []
    task_rows: list[dict] = []
    for row in rows:
        if (row.model, row.task) in cells:
            continue
        cells[(row.model, row.task)] = (row.value, row.run_id)
        model_rows.append({"model": row.model, **{k[6:]: v for k, v in row.params.items() if k.startswith("model_")}})
        task_rows.append({"task": row.task, **{k[5:]: v for k, v in row.params.items() if k.startswith("task_")}})
    if cells:
        index = pd.MultiIndex.from_tuples(list(cells), names=["model", "task"])
        long = pd.DataFrame(list(cells.values()), columns=["value", "run_id"], index=index)
        values = long["value"].unstack("task").sort_index().sort_index(axis=1)
        run_ids = long["run_id"].unstack("task").reindex_like(values)
    else:
        values = pd.DataFrame(dtype=float)
        run_ids = pd.DataFrame(dtype=object)
    values.columns.name, values.index.name = "task", "model"
    return KnowledgeMatrix(values=values, model_facts=_facts(model_rows, "model"),
                           task_facts=_facts(task_rows, "task"), run_ids=run_ids)


def _cell_rows_search(mlflow_client: MlflowClient, experiment_ids: list[str], kind: str, metric: str,
                      estimator: str | None, source: str | None, regime: str | None = None) -> Iterator[_CellRow]:
    conditions = [f"tags.`{KIND_TAG}` = {_quote(kind)}", "attributes.status = 'FINISHED'"]
    if regime not in (None, DEFAULT_REGIME):  # "full" also means "no tag": checked below
        conditions.append(f"tags.`{REGIME_TAG}` = {_quote(regime)}")
    if estimator is not None:
        conditions.append(equals("params.estimator", estimator)[0])
    if source is not None:
        conditions.append(equals(f"tags.`{SOURCE_TAG}`", source)[0])
    for run in _search_sliced(mlflow_client, experiment_ids, " and ".join(conditions)):
        tags, data = run.data.tags, run.data
        if estimator is not None and data.params.get("estimator") != estimator:
            continue  # LIKE matched more than the name (a name with both kinds of quote)
        if source is not None and tags.get(SOURCE_TAG) != source:
            continue
        if regime is not None and tags.get(REGIME_TAG, DEFAULT_REGIME) != regime:
            continue
        if MODEL_TAG in tags and TASK_TAG in tags and metric in data.metrics:
            yield _CellRow(tags[MODEL_TAG], tags[TASK_TAG], data.metrics[metric], run.info.run_id, data.params)


_READER_THREADS = 4  # concurrent searches when reading a matrix through a tracking server


def _search_sliced(mlflow_client: MlflowClient, experiment_ids: list[str], filter_string: str,
                   threads: int | None = None) -> list[Run]:
    """Every run matching ``filter_string``, newest first (run id breaking ties, as the SQL reader does).

    A server answers one page after another; the runs are split into ``threads`` start-time
    ranges (two one-run searches find the range) searched at once, so a server with several
    workers materialises them in parallel.
    """
    def edge(direction: str) -> int | None:
        page = mlflow_client.search_runs(experiment_ids, filter_string, max_results=1,
                                         order_by=[f"attributes.start_time {direction}"])
        return int(page[0].info.start_time) if page else None

    threads = threads or _READER_THREADS
    first, last = edge("ASC"), edge("DESC")
    if first is None:
        return []
    step = max(1, -(-(last - first + 1) // threads))
    ranges = [(low, min(low + step, last + 1)) for low in range(first, last + 1, step)]

    def search(bounds: tuple[int, int]) -> list[Run]:
        window = f"attributes.start_time >= {bounds[0]} and attributes.start_time < {bounds[1]}"
        return list(search_all(mlflow_client, experiment_ids, f"{filter_string} and {window}"))

    with ThreadPoolExecutor(max_workers=len(ranges)) as pool:
        runs = [run for part in pool.map(search, ranges) for run in part]
    return sorted(runs, key=lambda run: (-int(run.info.start_time), run.info.run_id))


SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def _sql_engine(mlflow_client: MlflowClient):
    """An SQLAlchemy engine on the client's database-backed store, or None (HTTP, file stores).

    Reading MLflow's tables directly is ~25x faster than paging through ``search_runs``; the
    engine comes from the public tracking URI, never from the client's private store object.
    """
    uri = mlflow_client.tracking_uri
    return _engine_for(uri) if uri.split(":", 1)[0].split("+", 1)[0] in SQL_SCHEMES else None


@functools.lru_cache(maxsize=8)
def _engine_for(uri: str):
    return sa.create_engine(uri)


def _cell_rows_sql(engine, experiment_ids: list[str], kind: str, metric: str,
                   estimator: str | None, source: str | None, regime: str | None = None) -> Iterator[_CellRow]:
    """The same rows as ``_cell_rows_search``, straight from MLflow's tables (runs, tags, params, latest_metrics)."""
    joins = ["JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = :kind_tag AND k.value = :kind",
             "JOIN tags tm ON tm.run_uuid = r.run_uuid AND tm.key = :model_tag",
             "JOIN tags tt ON tt.run_uuid = r.run_uuid AND tt.key = :task_tag",
             "JOIN latest_metrics m ON m.run_uuid = r.run_uuid AND m.key = :metric"]
    bind = {"kind_tag": KIND_TAG, "kind": kind, "model_tag": MODEL_TAG, "task_tag": TASK_TAG, "metric": metric}
    if estimator is not None:
        joins.append("JOIN params pe ON pe.run_uuid = r.run_uuid AND pe.key = 'estimator' AND pe.value = :estimator")
        bind["estimator"] = estimator
    if source is not None:
        joins.append("JOIN tags ts ON ts.run_uuid = r.run_uuid AND ts.key = :source_tag AND ts.value = :source")
        bind.update(source_tag=SOURCE_TAG, source=source)
    wheres = ""
    if regime is not None:  # a finetune run without the tag is a full fine-tune
        joins.append("LEFT JOIN tags tr ON tr.run_uuid = r.run_uuid AND tr.key = :regime_tag")
        wheres = " AND COALESCE(tr.value, :default_regime) = :regime"
        bind.update(regime_tag=REGIME_TAG, regime=regime, default_regime=DEFAULT_REGIME)
    experiments = ", ".join(f":e{i}" for i in range(len(experiment_ids)))
    bind.update({f"e{i}": int(e) for i, e in enumerate(experiment_ids)})
    selected = (f"FROM runs r {' '.join(joins)} WHERE r.experiment_id IN ({experiments}) "
                f"AND r.status = 'FINISHED' AND r.lifecycle_stage = 'active'{wheres}")
    cells_sql = (f"SELECT r.run_uuid, r.start_time, tm.value AS model, tt.value AS task, m.value AS value, "
                 f"m.is_nan AS is_nan {selected}")
    facts_sql = (f"SELECT p.run_uuid, p.key, p.value FROM params p WHERE p.run_uuid IN (SELECT r.run_uuid {selected}) "
                 "AND (SUBSTR(p.key, 1, 6) = 'model_' OR SUBSTR(p.key, 1, 5) = 'task_')")
    with engine.connect() as connection:
        cells = connection.execute(sa.text(cells_sql), bind).all()
        facts: dict[str, dict[str, str]] = {}
        for run_id, key, value in connection.execute(sa.text(facts_sql), bind):
            facts.setdefault(run_id, {})[key] = value
    # newest first; run id breaks start-time ties the same way on every backend
    for run_id, _, model, task, value, is_nan in sorted(cells, key=lambda c: (-c[1], c[0])):
        yield _CellRow(model, task, float("nan") if is_nan else float(value), run_id, facts.get(run_id, {}))


def runs_of_kind(kind: str, *, experiment: str = DEFAULT_EXPERIMENT, extra_filter: str = "",
                 mlflow_client: MlflowClient | None = None) -> list[Run]:
    """Finished runs of ``kind`` in ``experiment``, newest first."""
    mlflow_client = mlflow_client or client()
    exp = mlflow_client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    conditions = [f"tags.`{KIND_TAG}` = {_quote(kind)}", "attributes.status = 'FINISHED'"]
    if extra_filter:
        conditions.append(extra_filter)
    return list(search_all(mlflow_client, [exp.experiment_id], " and ".join(conditions),
                           order_by=["attributes.start_time DESC"]))


def imported_sources(experiment: str = DEFAULT_EXPERIMENT, mlflow_client: MlflowClient | None = None) -> list[str]:
    """The sources (``fennec import --source``) of the finished external runs in ``experiment``, sorted;
    [] when there are none or no such experiment."""
    mlflow_client = mlflow_client or client()
    exp = mlflow_client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    engine = _sql_engine(mlflow_client)
    if engine is None:
        runs = runs_of_kind("external", experiment=experiment, mlflow_client=mlflow_client)
        return sorted({run.data.tags[SOURCE_TAG] for run in runs if SOURCE_TAG in run.data.tags})
    query = ("SELECT DISTINCT ts.value FROM runs r "
             "JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = :kind_tag AND k.value = 'external' "
             "JOIN tags ts ON ts.run_uuid = r.run_uuid AND ts.key = :source_tag "
             "WHERE r.experiment_id = :experiment AND r.status = 'FINISHED' AND r.lifecycle_stage = 'active'")
    with engine.connect() as connection:
        rows = connection.execute(sa.text(query), {"kind_tag": KIND_TAG, "source_tag": SOURCE_TAG,
                                                   "experiment": int(exp.experiment_id)}).all()
    return sorted(str(value) for value, in rows)


@dataclass(frozen=True)
class SourceConflict:
    """Cells (model, task) that two imported sources give different values; ``example`` is one of them:
    (model, task, the first source's value, the second's)."""

    first: str
    second: str
    cells: int
    example: tuple[str, str, float, float]


def source_conflicts(sources: list[str], experiment: str = DEFAULT_EXPERIMENT,
                     mlflow_client: MlflowClient | None = None) -> list[SourceConflict]:
    """The pairs of ``sources`` that give a (model, task) cell different values (one per pair that does)."""
    tables = {s: load_matrix("external", experiment=experiment, source=s, mlflow_client=mlflow_client).values
              for s in sources}
    conflicts = []
    for i, first in enumerate(sources):
        for second in sources[i + 1:]:
            a, b = tables[first], tables[second]
            models, tasks = a.index.intersection(b.index), a.columns.intersection(b.columns)
            a, b = a.loc[models, tasks], b.loc[models, tasks]
            differ = (a.notna() & b.notna() & ~np.isclose(a.fillna(0), b.fillna(0))).stack()
            differ = differ[differ]
            if len(differ):
                model, task = differ.index[0]
                conflicts.append(SourceConflict(first, second, len(differ),
                                                (str(model), str(task), float(a.at[model, task]), float(b.at[model, task]))))
    return conflicts


def missing_runs_message(kind: str, experiment: str = DEFAULT_EXPERIMENT, *, source: str | None = None,
                         mlflow_client: MlflowClient | None = None) -> str:
    """One line saying that ``experiment`` holds no finished runs of ``kind`` (of ``source``, for imported
    tables) and which command makes them; for imported tables, which sources the store does hold."""
    if kind != "external":
        command = "fennec fda or fennec finetune" if kind == BEST_EVIDENCE else f"fennec {kind}"
        return f"no finished {kind} runs in experiment {experiment!r}: run `{command}` first"
    sources = imported_sources(experiment, mlflow_client)
    of = f" of source {source!r}" if source else ""
    held = (f"the imported sources are {', '.join(sources)}: give one as --source NAME, or import another table"
            if sources else "no table is imported yet: import one")
    return f"no finished external runs{of} in experiment {experiment!r}; {held} with `fennec import TABLE --source NAME`"
