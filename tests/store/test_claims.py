"""Exactly-once cells on a real sqlite store: overlapping worker processes, dead and live claims,
concurrent fine-tunes of one cell, concurrent first use of a new store."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from fennec_mlflow.core.estimators import get_estimator
from fennec_mlflow.data import zoo
from fennec_mlflow.data.features import FeatureCache
from fennec_mlflow.data.synthetic import synthetic_task
from fennec_mlflow.data.tasks import sample_probe
from fennec_mlflow.store import claims, tracking
from fennec_mlflow.store.jobs import score_cell_key, score_cells
from tests.helpers import REPO, store_env

MODELS = ("resnet20_cifar10", "nin_cifar10")
TASKS = ("shapes-4", "digits-5class")


def start_worker(tmp_path, *args, env=None):
    environment = {**os.environ, **store_env(tmp_path), "PYTHONPATH": str(REPO), "FENNEC_CLAIM_POLL_S": "0.3",
                   **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "tests.store.workers", *args], cwd=tmp_path, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcomes_of(process) -> list[dict]:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def active_runs(client, kind):
    exp = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    return [r for r in client.search_runs([exp.experiment_id], f"tags.`fennec.kind` = '{kind}'", max_results=1000)]


@pytest.mark.slow
def test_overlapping_workers_on_a_new_store_compute_each_cell_once(tmp_path):
    """Four workers started together on a new sqlite file, over overlapping slices in different orders."""
    slices = [(MODELS, TASKS), (MODELS[::-1], TASKS[::-1]), (MODELS[:1], TASKS), (MODELS[1:], TASKS[::-1])]
    workers = [start_worker(tmp_path, "fda", ",".join(m), ",".join(t)) for m, t in slices]
    results = [outcomes_of(w) for w in workers]
    client = tracking.client(store_env(tmp_path)["MLFLOW_TRACKING_URI"])
    runs = active_runs(client, "fda")
    cells = {(r.data.tags["fennec.model"], r.data.tags["fennec.task"]) for r in runs}
    assert len(runs) == len(cells) == len(MODELS) * len(TASKS)  # one run per cell, no duplicate
    assert {r.info.status for r in runs} == {"FINISHED"}
    computed = [o for result in results for o in result if not o["reused"]]
    assert len(computed) == len(cells)  # every cell computed by exactly one worker
    by_run = {r.info.run_id: r for r in runs}
    for result in results:  # every worker reports the one run of each of its cells
        for o in result:
            assert by_run[o["run_id"]].data.tags["fennec.model"] == o["model"]
    km = tracking.load_matrix("fda", mlflow_client=client)
    assert km.shape == (2, 2) and int(km.values.notna().sum().sum()) == 4
    for o in computed:
        assert km.values.loc[o["model"], o["task"]] == pytest.approx(o["score"])
    assert not (tmp_path / "mlflow.db").read_bytes().count(b"_alembic_tmp_")
    # the same grid by one worker, in this process, with its own store and an empty feature cache
    (tmp_path / "single").mkdir()
    single = tracking.client(store_env(tmp_path / "single")["MLFLOW_TRACKING_URI"])
    score_cells(list(MODELS), [synthetic_task(t, samples_per_class=20) for t in TASKS], probe_size=40,
                weights="random", mlflow_client=single, cache=FeatureCache(tmp_path / "single" / "cache"),
                progress=False)
    alone = tracking.load_matrix("fda", mlflow_client=single)
    assert alone.values.equals(km.values)  # exactly: every cell is seeded from its own identity


@pytest.fixture()
def tiny(store):
    task = synthetic_task("shapes-4", samples_per_class=20)
    models = [zoo.load_model(name, weights="random") for name in MODELS]
    probe = sample_probe(task, 40, 0)
    keys = {m.name: score_cell_key("fda", m, probe, get_estimator("fda").get_params()) for m in models}
    return store, task, models, keys


def claim_run(client, model, task, key, owner, heartbeat):
    return tracking.start_run(client, tracking.experiment_id(client), tracking.RunRecord(
        kind="fda", model=model, task=task, cell=key,
        tags={claims.OWNER_TAG: owner, claims.HEARTBEAT_TAG: str(heartbeat)}))


def test_dead_claims_are_taken_over(tiny):
    store, task, models, keys = tiny
    finished_process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                      capture_output=True, text=True, check=True)
    dead_pid = int(finished_process.stdout)  # a process of this host that has exited
    now = int(time.time() * 1000)
    killed_here = claim_run(store, models[0].name, task.name, keys[models[0].name],
                            f"{claims._HOST}:{dead_pid}:aaaa", now)
    silent_elsewhere = claim_run(store, models[1].name, task.name, keys[models[1].name],
                                 "another-host:12:bbbb", now - 3_600_000)  # no heartbeat for an hour
    outcomes = score_cells(list(models), [task], probe_size=40, mlflow_client=store, progress=False)
    assert not any(o.reused for o in outcomes)
    for dead in (killed_here, silent_elsewhere):
        assert store.get_run(dead).info.lifecycle_stage == "deleted"
    runs = active_runs(store, "fda")
    assert sorted(r.info.run_id for r in runs) == sorted(o.run_id for o in outcomes)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(claims.OWNER_TAG in r.data.tags for r in runs)


def test_a_live_claim_is_waited_for_and_its_run_reported(tiny, monkeypatch):
    store, task, models, keys = tiny
    monkeypatch.setenv("FENNEC_CLAIM_POLL_S", "0.2")
    model = models[0]
    other = claim_run(store, model.name, task.name, keys[model.name], "another-host:7:cccc", int(time.time() * 1000))
    result = {}
    job = threading.Thread(target=lambda: result.update(out=score_cells(
        list(models), [task], probe_size=40, mlflow_client=store, progress=False)))
    job.start()
    # the job computes the free cell, then waits for the held one
    while not [r for r in active_runs(store, "fda") if r.info.status == "FINISHED"]:
        job.join(0.2)
        assert job.is_alive()
    assert job.is_alive()
    store.log_metric(other, "fda_score", 0.5)  # the other worker finishes its cell
    store.set_terminated(other)
    job.join()
    by_model = {o.model: o for o in result["out"]}
    assert by_model[model.name].reused and by_model[model.name].run_id == other
    assert not by_model[models[1].name].reused
    assert len(active_runs(store, "fda")) == 2


@pytest.mark.slow
def test_two_finetunes_of_one_cell_share_no_parent(tmp_path):
    workers = [start_worker(tmp_path, "finetune", MODELS[0], TASKS[0]) for _ in range(2)]
    results = [outcomes_of(w) for w in workers]
    client = tracking.client(store_env(tmp_path)["MLFLOW_TRACKING_URI"])
    [parent] = active_runs(client, "finetune")
    assert parent.info.status == "FINISHED"
    trials = active_runs(client, "finetune-trial")
    assert len(trials) == 2  # the grid's two points, once each
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {parent.info.run_id}
    assert sorted(o["reused"] for result in results for o in result) == [False, True]
    assert {o["run_id"] for result in results for o in result} == {parent.info.run_id}


FIRST_USE = """
import sys
from fennec_mlflow.store import tracking
client = tracking.client()
tracking.experiment_id(client)
print("ok")
"""


@pytest.mark.slow
def test_six_processes_open_a_new_sqlite_store_together(tmp_path):
    env = {**os.environ, **store_env(tmp_path), "PYTHONPATH": str(REPO)}
    processes = [subprocess.Popen([sys.executable, "-c", FIRST_USE], cwd=tmp_path, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0 and out.strip() == "ok", err[-2000:]
    client = tracking.client(store_env(tmp_path)["MLFLOW_TRACKING_URI"])
    assert [e.name for e in client.search_experiments()].count(tracking.DEFAULT_EXPERIMENT) == 1


def test_leftovers_of_an_interrupted_migration_are_dropped_or_refused(tmp_path, monkeypatch):
    uri = store_env(tmp_path)["MLFLOW_TRACKING_URI"]
    tracking.client(uri)
    database = tmp_path / "mlflow.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE _alembic_tmp_runs (x INTEGER)")
    tracking.open_sqlite_store.cache_clear()
    tracking.client(uri)  # dropped, with a warning
    with sqlite3.connect(database) as db:
        assert not db.execute("SELECT name FROM sqlite_master WHERE name LIKE '_alembic_tmp_%'").fetchall()
        db.execute("CREATE TABLE _alembic_tmp_gone (x INTEGER)")  # copies a table that no longer exists
    tracking.open_sqlite_store.cache_clear()
    with pytest.raises(tracking.TrackingError, match="_alembic_tmp_gone without the table it copies"):
        tracking.client(uri)
    tracking.open_sqlite_store.cache_clear()
    with pytest.raises(tracking.TrackingError, match="folder .* does not exist"):
        tracking.client(f"sqlite:///{tmp_path / 'nope' / 'mlflow.db'}")


@pytest.mark.parametrize("reader", ["sql", "search"])
def test_a_claim_finishes_only_when_no_other_run_of_its_cell_did(store, monkeypatch, reader):
    if reader == "search":  # the path taken through a tracking server: search, then set_terminated
        monkeypatch.setattr(tracking, "_sql_engine", lambda client: None)
    exp_id = tracking.experiment_id(store)
    with claims.Claimer(store, exp_id) as claimer:
        claim = claimer.claim(tracking.RunRecord(kind="fda", model="m", task="t", cell="c1"))
        assert claim.state == "won" and store.get_run(claim.run_id).info.status == "RUNNING"
        assert claimer.claim(tracking.RunRecord(kind="fda", model="m", task="t", cell="c1")).state == "busy"
        other = tracking.write_run(store, exp_id, tracking.RunRecord(kind="fda", model="m", task="t", cell="c1",
                                                                     metrics={"fda_score": 0.1}))
        assert claimer.complete(claim, tracking.RunRecord(kind="fda", metrics={"fda_score": 0.9})) == (other, False)
        assert store.get_run(claim.run_id).info.lifecycle_stage == "deleted"
        mine = claimer.claim(tracking.RunRecord(kind="fda", model="m", task="u", cell="c2"))
        assert claimer.complete(mine, tracking.RunRecord(kind="fda", metrics={"fda_score": 0.5})) == (mine.run_id, True)
        assert claimer.claim(tracking.RunRecord(kind="fda", model="m", task="u", cell="c2")).state == "done"
    km = tracking.load_matrix("fda", mlflow_client=store)
    assert km.values.to_dict() == {"t": {"m": 0.1}, "u": {"m": 0.5}}


def test_which_claims_are_live():
    now = int(time.time() * 1000)
    me = f"{claims._HOST}:{os.getpid()}:t"
    live = claims.CellRun("a", "RUNNING", now, me, now)
    assert claims.is_live(live, now, 300)
    assert not claims.is_live(claims.CellRun("a", "FAILED", now, me, now), now, 300)
    assert not claims.is_live(claims.CellRun("a", "RUNNING", now), now, 300)  # no owner: an older version's
    assert claims.is_live(claims.CellRun("a", "RUNNING", now, "elsewhere:1:t", now - 299_000), now, 300)
    assert not claims.is_live(claims.CellRun("a", "RUNNING", now, "elsewhere:1:t", now - 301_000), now, 300)
    assert not claims.is_live(claims.CellRun("a", "RUNNING", now - 301_000, "elsewhere:1:t"), now, 300)


def test_a_held_claim_keeps_its_heartbeat_going(store):
    exp_id = tracking.experiment_id(store)
    with claims.Claimer(store, exp_id, lease_s=0.4) as claimer:  # a beat every 0.1 s
        claim = claimer.claim(tracking.RunRecord(kind="fda", model="m", task="t", cell="beat"))
        first = store.get_run(claim.run_id).data.tags[claims.HEARTBEAT_TAG]
        for _ in range(600):
            if store.get_run(claim.run_id).data.tags[claims.HEARTBEAT_TAG] != first:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the heartbeat tag never changed")
        claimer.release(claim.run_id)
