"""Exactly-once cells: a worker claims a cell before computing it.

The claim is the cell's own run. A worker about to compute a cell:

1. looks up the cell's active runs (tag ``fennec.cell``): a FINISHED run means the cell is done;
   a *live* claim (RUNNING, owned by a live worker) means another worker is on it;
2. otherwise creates its claim: a RUNNING run tagged ``fennec.owner`` (``host:pid:token``) and
   ``fennec.heartbeat`` (milliseconds since the epoch, refreshed by a background thread every
   quarter of the lease while the worker holds the claim);
3. looks again: the earliest live claim (start time, then run id) wins; a loser deletes its
   claim. The winner deletes (or, for fine-tunes, adopts) the dead claims it found;
4. computes, then finishes its run only if no other run of the cell finished meanwhile. On a
   SQL store (sqlite, PostgreSQL, MySQL) that check and the status change are one statement,
   under a per-cell advisory lock on PostgreSQL; through an MLflow server they are a search and
   ``set_terminated`` right after it.

A claim is *dead* when its run is not RUNNING (FAILED, KILLED), has no owner tag (left by a
version without claims), belongs to a process of this host that no longer exists, or has not
had a heartbeat for the lease (``FENNEC_CLAIM_LEASE_S``, default 300 s): a worker killed
mid-cell releases its claims that way, and another worker redoes those cells. Cells another
live worker holds are waited for (polled every ``FENNEC_CLAIM_POLL_S``, default 2 s) after
the worker's other cells, so a job returns only when every one of its cells is in the store.

Nothing but MLflow runs and tags is used: no coordinator service, no shared file.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from fennec_mlflow.config import env_override
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.store import tracking

OWNER_TAG = "fennec.owner"
HEARTBEAT_TAG = "fennec.heartbeat"
DEFAULT_LEASE_S = 300.0
DEFAULT_POLL_S = 2.0
_HOST = socket.gethostname()
_log = logging.getLogger(__name__)

T = TypeVar("T")


def _seconds(variable: str, default: float) -> float:
    text = os.environ.get(variable)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise InvalidInputError(f"{variable}={text!r} is not a positive number of seconds; unset it for "
                                f"the default ({default:g} s)")
    return value


def lease_seconds() -> float:
    """How long a claim lives without a heartbeat (``FENNEC_CLAIM_LEASE_S``)."""
    return _seconds("FENNEC_CLAIM_LEASE_S", DEFAULT_LEASE_S)


def poll_seconds() -> float:
    """How often a job looks again at cells another worker holds (``FENNEC_CLAIM_POLL_S``)."""
    return _seconds("FENNEC_CLAIM_POLL_S", DEFAULT_POLL_S)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class CellRun:
    """One active run of a cell, as far as claims care."""

    run_id: str
    status: str
    start_time: int
    owner: str | None = None
    heartbeat: int | None = None

    @property
    def order(self) -> tuple[int, str]:
        return (self.start_time, self.run_id)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_live(run: CellRun, now_ms: int | None = None, lease_s: float | None = None) -> bool:
    """Whether ``run`` is a claim held by a live worker (see the module docstring)."""
    if run.status != "RUNNING" or not run.owner:
        return False
    parts = run.owner.rsplit(":", 2)  # host:pid:token
    if len(parts) == 3 and parts[1].isdigit() and parts[0] == _HOST and not _pid_alive(int(parts[1])):
        return False
    now_ms = _now_ms() if now_ms is None else now_ms
    lease_s = lease_seconds() if lease_s is None else lease_s
    last = run.heartbeat if run.heartbeat is not None else run.start_time
    return now_ms - last < lease_s * 1000


def cell_runs(mlflow_client: MlflowClient, experiment_id: str, cell: str) -> list[CellRun]:
    """Every active run of ``cell`` in the experiment, any status, earliest first."""
    engine = tracking._sql_engine(mlflow_client)
    if engine is not None:
        query = ("SELECT r.run_uuid, r.status, r.start_time, o.value, h.value FROM runs r "
                 "JOIN tags c ON c.run_uuid = r.run_uuid AND c.key = :cell_tag AND c.value = :cell "
                 "LEFT JOIN tags o ON o.run_uuid = r.run_uuid AND o.key = :owner_tag "
                 "LEFT JOIN tags h ON h.run_uuid = r.run_uuid AND h.key = :heartbeat_tag "
                 "WHERE r.experiment_id = :experiment AND r.lifecycle_stage = 'active'")
        with engine.connect() as connection:
            rows = connection.execute(sa.text(query), {
                "cell_tag": tracking.CELL_TAG, "cell": cell, "owner_tag": OWNER_TAG,
                "heartbeat_tag": HEARTBEAT_TAG, "experiment": int(experiment_id)}).all()
        runs = [CellRun(run_id, status, int(start or 0), owner, _int(beat))
                for run_id, status, start, owner, beat in rows]
    else:
        runs = [CellRun(run.info.run_id, run.info.status, int(run.info.start_time or 0),
                        run.data.tags.get(OWNER_TAG), _int(run.data.tags.get(HEARTBEAT_TAG)))
                for run in tracking.search_all(mlflow_client, [experiment_id],
                                               f"tags.`{tracking.CELL_TAG}` = {tracking.quote(cell)}")]
    return sorted(runs, key=lambda r: r.order)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class Claim:
    """What :meth:`Claimer.claim` found: the cell ``done`` (``run_id`` is its finished run),
    ``busy`` (a live worker holds it), or ``won`` (``run_id`` is our RUNNING claim; ``dead`` the
    dead claims found, for the caller to delete or adopt)."""

    cell: str
    state: str
    run_id: str | None = None
    dead: list[CellRun] = field(default_factory=list)


class Claimer:
    """Claims cells of one experiment for this worker and keeps their heartbeats going."""

    def __init__(self, mlflow_client: MlflowClient, experiment_id: str, lease_s: float | None = None):
        self.client, self.experiment_id = mlflow_client, experiment_id
        self.lease_s = lease_seconds() if lease_s is None else lease_s
        poll_seconds()  # a bad setting fails here, before any claim
        self.owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- heartbeat
    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            with self._lock:
                held = list(self._held)
            for run_id in held:
                try:
                    self.client.set_tag(run_id, HEARTBEAT_TAG, str(_now_ms()))
                except Exception as exc:  # noqa: BLE001 (a deleted run, a busy sqlite file, a server hiccup: the next beat retries)
                    _log.debug("heartbeat of %s failed: %s", run_id, exc)

    def _hold(self, run_id: str) -> None:
        with self._lock:
            self._held.add(run_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="fennec-claim-heartbeat", daemon=True)
                self._thread.start()

    def release(self, run_id: str) -> None:
        with self._lock:
            self._held.discard(run_id)

    def close(self) -> None:
        self._stop.set()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- claiming
    def _state(self, runs: list[CellRun], mine: str | None = None) -> tuple[str, str | None]:
        finished = [r for r in runs if r.status == "FINISHED" and r.run_id != mine]
        if finished:
            return "done", max(finished, key=lambda r: r.order).run_id
        now = _now_ms()
        live = [r for r in runs if r.run_id == mine or is_live(r, now, self.lease_s)]
        if live and live[0].run_id != mine:
            return "busy", live[0].run_id
        return ("won", mine) if mine else ("free", None)

    def claim(self, record: tracking.RunRecord) -> Claim:
        """Claim ``record.cell``: its run is created RUNNING from ``record`` when no one has it."""
        cell = record.cell
        assert cell, "a claim needs the record's cell key"
        state, run_id = self._state(cell_runs(self.client, self.experiment_id, cell))
        if state != "free":
            return Claim(cell, state, run_id)
        now = str(_now_ms())
        claimed = tracking.RunRecord(**{**record.__dict__, "tags": {**record.tags, OWNER_TAG: self.owner,
                                                                    HEARTBEAT_TAG: now}})
        mine = tracking.start_run(self.client, self.experiment_id, claimed)
        self._hold(mine)
        runs = cell_runs(self.client, self.experiment_id, cell)
        state, run_id = self._state(runs, mine)
        if state != "won":
            self.abandon(mine)
            return Claim(cell, state, run_id)
        now_ms = _now_ms()
        dead = [r for r in runs if r.run_id != mine and r.status != "FINISHED" and not is_live(r, now_ms, self.lease_s)]
        return Claim(cell, "won", mine, dead)

    def abandon(self, run_id: str) -> None:
        """Give a claim up: its run is deleted."""
        self.release(run_id)
        _delete(self.client, run_id)

    def complete(self, claim: Claim, record: tracking.RunRecord) -> tuple[str, bool]:
        """Log ``record``'s params, metrics, inputs and artifacts into the claim's run, then :meth:`finish` it."""
        try:
            tracking.log_record(self.client, claim.run_id, record)
        except BaseException:
            self.fail(claim)
            raise
        return self.finish(claim)

    def finish(self, claim: Claim) -> tuple[str, bool]:
        """Finish the claim's run unless another run of the cell finished first.

        Returns (the cell's finished run id, whether it is ours); a run that lost is deleted.
        """
        run_id = claim.run_id
        assert claim.state == "won" and run_id
        self.release(run_id)
        engine = tracking._sql_engine(self.client)
        if engine is not None:
            finished = _finish_sql(engine, self.experiment_id, claim.cell, run_id)
        else:
            runs = cell_runs(self.client, self.experiment_id, claim.cell)
            state, other = self._state(runs, run_id)
            # lost if another run finished, an earlier live claim exists, or ours was deleted as dead
            finished = state == "won" and any(r.run_id == run_id for r in runs)
            if finished:
                with env_override(MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true"):  # no line per cell
                    self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        if finished:
            return run_id, True
        _delete(self.client, run_id)
        state, other = self._state(cell_runs(self.client, self.experiment_id, claim.cell))
        return other or run_id, False

    def fail(self, claim: Claim) -> None:
        """The computation broke: the claim's run is marked FAILED (a dead claim, redone later)."""
        self.release(claim.run_id)
        try:
            with env_override(MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true"):
                self.client.set_terminated(claim.run_id, RunStatus.to_string(RunStatus.FAILED))
        except MlflowException as exc:  # the store is gone too: the claim dies with its heartbeat
            _log.warning("could not mark the claim %s failed: %s", claim.run_id, exc)


def _delete(mlflow_client: MlflowClient, run_id: str) -> None:
    try:
        mlflow_client.delete_run(run_id)
    except MlflowException as exc:  # already deleted by another worker
        _log.debug("run %s not deleted: %s", run_id, exc)


def delete_runs(mlflow_client: MlflowClient, run_ids) -> None:
    """Delete runs (soft delete), tolerating runs another worker deleted first."""
    for run_id in run_ids:
        _delete(mlflow_client, run_id)


def _finish_sql(engine, experiment_id: str, cell: str, run_id: str) -> bool:
    """Mark ``run_id`` FINISHED in one statement, only if no other active run of ``cell`` finished."""
    other_finished = ("SELECT 1 FROM runs o JOIN tags c ON c.run_uuid = o.run_uuid AND c.key = :cell_tag "
                      "AND c.value = :cell WHERE o.experiment_id = :experiment AND o.status = 'FINISHED' "
                      "AND o.lifecycle_stage = 'active' AND o.run_uuid <> :run_id")
    update = (f"UPDATE runs SET status = 'FINISHED', end_time = :now WHERE run_uuid = :run_id "
              f"AND status = 'RUNNING' AND lifecycle_stage = 'active' AND NOT EXISTS ({other_finished})")
    bind = {"cell_tag": tracking.CELL_TAG, "cell": cell, "experiment": int(experiment_id), "run_id": run_id,
            "now": _now_ms()}
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # serialise the finish of one cell across workers
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:cell))"), {"cell": cell})
        elif engine.dialect.name == "mysql":
            connection.execute(sa.text("SELECT GET_LOCK(:cell, 60)"), {"cell": cell})
        done = connection.execute(sa.text(update), bind).rowcount == 1
        if engine.dialect.name == "mysql":
            connection.execute(sa.text("SELECT RELEASE_LOCK(:cell)"), {"cell": cell})
    return done


@dataclass
class Work(Generic[T]):
    """A cell to do: the item the caller computes, and the record its claim run starts from."""

    item: T
    record: tracking.RunRecord


def claim_each(claimer: Claimer, work: Sequence[Work[T]], known: dict[str, str] | None = None,
               on_wait: Callable[[int], None] | None = None) -> Iterator[tuple[Work[T], Claim]]:
    """Each cell of ``work`` as (work, claim) with claim ``done`` or ``won``; the caller computes a won
    cell and calls :meth:`Claimer.finish` (or :meth:`Claimer.fail`).

    Cells in ``known`` (cell -> finished run id, read in bulk beforehand) are done without a query.
    Cells a live worker holds come last: polled until they finish or their claim dies.
    """
    known = known or {}
    waiting: list[Work[T]] = []
    for unit in work:
        if unit.record.cell in known:
            yield unit, Claim(unit.record.cell, "done", known[unit.record.cell])
            continue
        claim = claimer.claim(unit.record)
        if claim.state == "busy":
            waiting.append(unit)
        else:
            yield unit, claim
    while waiting:
        if on_wait:
            on_wait(len(waiting))
        time.sleep(poll_seconds())
        still = []
        for unit in waiting:
            claim = claimer.claim(unit.record)
            if claim.state == "busy":
                still.append(unit)
            else:
                yield unit, claim
        waiting = still
