"""A real shared tracking server: PostgreSQL (Debian's package, a cluster of the test's own on
127.0.0.1) behind ``mlflow server``, written by overlapping worker processes over HTTP, read back
over HTTP and by SQL. The recipe is docs/scale-out.md's."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from fennec_mlflow.data.features import FeatureCache
from fennec_mlflow.data.synthetic import synthetic_task
from fennec_mlflow.serving import selection
from fennec_mlflow.store import claims, external, tracking
from fennec_mlflow.store.jobs import score_cells
from tests.helpers import planted_benchmark, sqlite_store
from tests.store.test_claims import MODELS, TASKS, outcomes_of, start_worker


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    for _ in range(600):
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            local = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP(S)_PROXY
            with local.open(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer at {url}: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def tracking_server():
    """(HTTP URI, PostgreSQL URI) of an `mlflow server` on a fresh PostgreSQL cluster, both on 127.0.0.1."""
    pg_bin = _postgres_bin()
    if pg_bin is None:
        pytest.skip("PostgreSQL is not installed (no initdb); on Debian: apt-get install postgresql")
    pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed (pip install -e '.[dev]')")
    root = Path(tempfile.mkdtemp(prefix="fennec-pg-"))
    # PostgreSQL refuses to run as root: the cluster then belongs to `nobody`
    user = "nobody" if os.geteuid() == 0 else None
    if user:
        shutil.chown(root, user)
    pg_port, http_port = _free_port(), _free_port()

    def pg(tool: str, *args: str) -> None:
        done = subprocess.run([str(pg_bin / tool), *args], user=user, cwd=root, capture_output=True, text=True, check=False,
                              timeout=120)
        assert done.returncode == 0, f"{tool}: {done.stdout[-2000:]}{done.stderr[-2000:]}"

    data = root / "data"
    pg("initdb", "-D", str(data), "-U", "fennec", "--auth=trust", "-E", "UTF8")
    pg("pg_ctl", "-D", str(data), "-l", str(root / "postgres.log"), "-w", "-o",
       f"-h 127.0.0.1 -p {pg_port} -k {root}", "start")
    server = None
    try:
        pg("createdb", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "fennec", "mlflow")
        sql_uri = f"postgresql+psycopg2://fennec@127.0.0.1:{pg_port}/mlflow"
        log = root / "server.log"
        with open(log, "w") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", sql_uri,
                 "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                 "--port", str(http_port), "--workers", "2"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        http_uri = f"http://127.0.0.1:{http_port}"
        _wait_until_up(http_uri, server, log)
        yield http_uri, sql_uri
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)  # the server and its workers; nothing to flush
            server.wait(timeout=60)
        pg("pg_ctl", "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(root, ignore_errors=True)


FDA_SLICES = [(MODELS, TASKS), (MODELS[::-1], TASKS[::-1]), (MODELS[:1], TASKS), (MODELS[1:], TASKS[::-1]),
              (MODELS, TASKS[:1]), (MODELS[::-1], TASKS[1:]), (MODELS[:1], TASKS[::-1])]


@pytest.mark.slow
def test_overlapping_workers_and_finetunes_through_a_postgresql_tracking_server(tracking_server, tmp_path,
                                                                                   monkeypatch):
    http_uri, sql_uri = tracking_server
    env = {"MLFLOW_TRACKING_URI": http_uri, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    # a first worker is killed as soon as it holds a claim: its cell is redone by the others
    (tmp_path / "victim").mkdir()
    victim = start_worker(tmp_path / "victim", "fda", ",".join(MODELS), ",".join(TASKS), env=env)
    http = tracking.client(http_uri)
    while not _claims_of(http, victim.pid) and victim.poll() is None:
        time.sleep(0.2)
    victim.kill()
    assert victim.wait() == -signal.SIGKILL, "the victim finished before it could be killed holding a claim"
    # with the victim, eight FDA workers over overlapping slices in different orders
    workers = [start_worker(tmp_path, "fda", ",".join(m), ",".join(t), env=env) for m, t in FDA_SLICES]
    finetunes = [start_worker(tmp_path, "finetune", MODELS[0], TASKS[0], env=env) for _ in range(2)]
    results = [outcomes_of(w) for w in workers]
    tuned = [o for w in finetunes for o in outcomes_of(w)]
    exp = http.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    runs = http.search_runs([exp.experiment_id], "tags.`fennec.kind` = 'fda'")
    cells = {(r.data.tags["fennec.model"], r.data.tags["fennec.task"]) for r in runs}
    assert len(runs) == len(cells) == len(MODELS) * len(TASKS)  # one run per cell, none left RUNNING
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert [len(result) for result in results] == [len(m) * len(t) for m, t in FDA_SLICES]
    assert len([o for result in results for o in result if not o["reused"]]) == len(cells)  # each computed once
    # two concurrent fine-tunes of one cell: one parent, trained once, reported by both
    [parent] = http.search_runs([exp.experiment_id], "tags.`fennec.kind` = 'finetune'")
    trials = http.search_runs([exp.experiment_id], "tags.`fennec.kind` = 'finetune-trial'")
    assert parent.info.status == "FINISHED" and len(trials) == 2
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {parent.info.run_id}
    assert sorted(o["reused"] for o in tuned) == [False, True]
    assert {o["run_id"] for o in tuned} == {parent.info.run_id}
    over_http = tracking.load_matrix("fda", mlflow_client=http)
    by_sql = tracking.load_matrix("fda", mlflow_client=tracking.client(sql_uri))
    assert over_http.values.equals(by_sql.values) and over_http.run_ids.equals(by_sql.run_ids)
    assert int(over_http.values.notna().sum().sum()) == len(cells)
    computed = {(o["model"], o["task"]): o["score"] for result in results for o in result if not o["reused"]}
    for (model, task), score in computed.items():
        assert over_http.values.loc[model, task] == pytest.approx(score)
    # the same grid by one worker, in this process, on its own sqlite store with an empty feature cache
    (tmp_path / "single").mkdir()
    with sqlite_store(tmp_path / "single", monkeypatch) as single:
        score_cells(list(MODELS), [synthetic_task(t, samples_per_class=20) for t in TASKS], probe_size=40,
                    weights="random", mlflow_client=single, cache=FeatureCache(tmp_path / "single" / "cache"),
                    progress=False)
        assert tracking.load_matrix("fda", mlflow_client=single).values.equals(over_http.values)


def _claims_of(client, pid: int) -> list:
    exp = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    return [r for r in runs if r.data.tags.get(claims.OWNER_TAG, "").split(":")[1:2] == [str(pid)]]


@pytest.mark.slow
def test_names_with_quotes_read_the_same_over_http_and_sql(tracking_server, tmp_path):
    http_uri, sql_uri = tracking_server
    table = tmp_path / "table.csv"
    table.write_text('model,task,score\nm1,t1,0.5\nm2,"it\'s ""t2""",0.6\nm3,t3,0.7\n')
    http = tracking.client(http_uri)
    for source in ("o'brien", 'say "hi"', 'o\'brien "x"'):
        external.import_table(table, source=source, mlflow_client=http, progress=False)
    for source in ("o'brien", 'say "hi"', 'o\'brien "x"'):
        over_http = tracking.load_matrix("external", source=source, mlflow_client=http)
        by_sql = tracking.load_matrix("external", source=source, mlflow_client=tracking.client(sql_uri))
        assert over_http.shape == by_sql.shape == (3, 3), source
        assert over_http.values.equals(by_sql.values)
    assert tracking.load_matrix("external", source="o'brien", mlflow_client=http).values.loc[
        "m2", 'it\'s "t2"'] == 0.6


@pytest.mark.slow
def test_claims_straight_on_postgresql(tracking_server):
    """A worker given the database URI itself: the finish is one UPDATE under a per-cell advisory lock."""
    _, sql_uri = tracking_server
    sql = tracking.client(sql_uri)
    exp_id = tracking.experiment_id(sql, "claims-on-postgresql")
    with claims.Claimer(sql, exp_id) as claimer:
        claim = claimer.claim(tracking.RunRecord(kind="fda", model="m", task="t", cell="pg1"))
        assert claim.state == "won"
        other = tracking.write_run(sql, exp_id, tracking.RunRecord(kind="fda", model="m", task="t", cell="pg1",
                                                                   metrics={"fda_score": 0.1}))
        assert claimer.complete(claim, tracking.RunRecord(kind="fda", metrics={"fda_score": 0.9})) == (other, False)
        mine = claimer.claim(tracking.RunRecord(kind="fda", model="m", task="u", cell="pg2"))
        assert claimer.complete(mine, tracking.RunRecord(kind="fda", metrics={"fda_score": 0.5})) == (mine.run_id, True)
    km = tracking.load_matrix("fda", experiment="claims-on-postgresql", mlflow_client=sql)
    assert km.values.to_dict() == {"t": {"m": 0.1}, "u": {"m": 0.5}}


@pytest.mark.slow
def test_workers_logging_one_new_probe_dataset_at_once_all_succeed(tracking_server):
    """MLflow looks a dataset up, then inserts it: workers that log one new probe at the same moment
    collide on the datasets key; each must still finish with the probe linked to its run."""
    import numpy as np

    http_uri, _ = tracking_server
    http = tracking.client(http_uri)
    exp_id = tracking.experiment_id(http, "one-probe-many-workers")
    probe = tracking.probe_dataset("race", "synthetic:race", np.arange(7), np.arange(7) % 2)
    barrier, errors, run_ids = threading.Barrier(8), [], []

    def worker():
        client = tracking.client(http_uri)
        run_id = client.create_run(exp_id).info.run_id
        barrier.wait()
        try:
            tracking.log_record(client, run_id, tracking.RunRecord(kind="fda", datasets=[probe]))
            run_ids.append(run_id)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert len(run_ids) == 8
    for run_id in run_ids:
        assert [d.dataset.name for d in http.get_run(run_id).inputs.dataset_inputs] == ["race-probe"]


def _create_database(sql_uri: str, name: str) -> str:
    """A new database on the fixture's PostgreSQL cluster; its SQLAlchemy URI."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(sql_uri)
    connection = psycopg2.connect(host=url.host, port=url.port, user=url.username, dbname=url.database)
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.mark.slow
def test_optuna_workers_on_postgresql_log_each_trial_once_through_the_server(tracking_server, monkeypatch):
    """docs/scale-out.md section 4: Optuna's study in its own PostgreSQL database, MLflow's runs through
    `mlflow server`; two worker processes sample into one study, then a second session resumes it."""
    import optuna

    from fennec_mlflow.bench import tuning

    http_uri, sql_uri = tracking_server
    optuna_uri = _create_database(sql_uri, "optuna")
    for name, value in {"MLFLOW_TRACKING_URI": http_uri, "NO_PROXY": "127.0.0.1,localhost",
                        "no_proxy": "127.0.0.1,localhost"}.items():
        monkeypatch.setenv(name, value)  # the spawned workers inherit them
    outcome = tuning.run_tuning(planted_benchmark(), n_trials=4, workers=2, storage=optuna_uri, study_name="pg-shared",
                                nested_cv=False, progress=False)
    again = tuning.run_tuning(planted_benchmark(), n_trials=1, storage=optuna_uri, study_name="pg-shared",
                              nested_cv=False, progress=False)
    study = optuna.load_study(study_name="pg-shared", storage=optuna_uri)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 5
    assert outcome.n_trials == 4 and again.n_trials == 5 and again.parent_run_id != outcome.parent_run_id
    http = tracking.client(http_uri)
    exp = http.get_experiment_by_name(tuning.experiment_name("planted"))
    runs = http.search_runs([exp.experiment_id], "", max_results=1000)
    assert {r.info.status for r in runs} == {"FINISHED"}  # nothing left RUNNING
    parents = {r.info.run_id: r for r in runs if r.data.tags[tracking.KIND_TAG] == "tune"}
    trials = [r for r in runs if r.data.tags[tracking.KIND_TAG] == "tune-trial"]
    assert set(parents) == {outcome.parent_run_id, again.parent_run_id}
    # every Optuna trial is exactly one MLflow run, and each run is one trial
    by_number = {int(r.data.params["trial_number"]): r for r in trials}
    assert len(trials) == len(by_number) == len(study.trials)
    for trial in study.trials:
        run = by_number[trial.number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.metrics["mean_pearson"] == pytest.approx(trial.value)
    first_session = {r.data.tags["mlflow.parentRunId"] for r in trials if int(r.data.params["trial_number"]) < 4}
    assert first_session == {outcome.parent_run_id}  # both workers log under one parent
    assert parents[outcome.parent_run_id].data.params["workers"] == "2"
    # the storage is logged without credentials, and the resumed session's choice is over the whole study
    assert parents[outcome.parent_run_id].data.params["optuna_storage"].endswith(optuna_uri.split("@", 1)[1])
    assert parents[again.parent_run_id].data.params["best_k"] == str(again.best_params["k"])
    chosen = selection.chosen_trial(study, selection.default_params(planted_benchmark().tuning_data()))
    assert parents[again.parent_run_id].data.metrics["best_mean_pearson"] == pytest.approx(chosen.value)
    assert again.best_params == selection.fennec_params(chosen.params)
