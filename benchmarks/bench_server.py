"""Cells through a shared tracking server: matrix read-back over HTTP, and claimed cell writes.

    python benchmarks/bench_server.py --http-uri http://127.0.0.1:5000 \
        --sql-uri postgresql+psycopg2://fennec@127.0.0.1:55432/mlflow --runs 1000 10000 --writers 4 --cells 200

The server is an ``mlflow server`` on PostgreSQL (docs/scale-out.md has the recipe); ``--sql-uri``
is the same database. Read: N FDA cell runs (the FDA job's tags, params and metrics) are inserted
by SQL into a fresh experiment, then ``load_matrix`` is timed over HTTP and by SQL (median of
--repeats) and the two matrices compared. Write: ``--writers`` processes each take every cell of one
grid of ``--cells`` cells (a disjoint slice each, then every cell each; a trivial value per cell) through the claim protocol
the FDA job uses (claims.claim_each + Claimer.complete) over HTTP; the report gives cells/s
(distinct cells finished per second of wall time) and checks one finished run per cell.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
import uuid

import numpy as np

from fennec_mlflow.store import claims, tracking


def fda_record(i: int, n_tasks: int = 50, value: float = 0.5) -> tracking.RunRecord:
    model, task = f"model{i // n_tasks:04d}", f"task{i % n_tasks:02d}"
    return tracking.RunRecord(
        kind="fda", model=model, task=task, cell=tracking.cell_key("fda", model=model, task=task),
        params={"estimator": "fda", "weights": "random-init", "probe_size": 500, "probe_seed": 0,
                "feature_dim": 512, "feature_cache_hit": False, "task_fingerprint": "0" * 16,
                "device": "cpu", "model_parameters": 1_000_000 + i, "model_source": "pytorchcv",
                "model_input_size": 32, "task_class_count": 10, "task_sample_count": 1000,
                "task_domain": "digits", "task_source": f"synthetic:{task}"},
        metrics={"fda_score": value, "fda_score_sum": 500 * value, "feature_seconds": 0.5, "score_seconds": 0.01},
    )


def bench_read(http_uri: str, sql_uri: str, n_runs: int, repeats: int) -> None:
    sql = tracking.client(sql_uri)
    http = tracking.client(http_uri)
    experiment = f"bench-read-{n_runs}-{uuid.uuid4().hex[:6]}"
    exp_id = tracking.experiment_id(sql, experiment)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    # batches of 20 runs: start times spread over the insert, as cells written by workers are
    tracking.write_runs(sql, exp_id, [fda_record(i, value=float(rng.random())) for i in range(n_runs)], batch_size=20)
    write_s = time.perf_counter() - start
    timings = {}
    default_threads = tracking._READER_THREADS
    for name, client, threads in (("HTTP1", http, 1), ("HTTP", http, default_threads), ("SQL", sql, 1)):
        tracking._READER_THREADS = threads
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            km = tracking.load_matrix("fda", experiment=experiment, mlflow_client=client)
            times.append(time.perf_counter() - start)
        timings[name] = (statistics.median(times), km)
    tracking._READER_THREADS = default_threads
    equal = all(timings[n][1].values.equals(timings["SQL"][1].values)
                and timings[n][1].run_ids.equals(timings["SQL"][1].run_ids) for n in ("HTTP1", "HTTP"))
    print(f"| {n_runs:,} | {write_s:.1f} | {timings['HTTP1'][0]:.2f} | {timings['HTTP'][0]:.2f} | "
          f"{timings['SQL'][0]:.2f} | {'x'.join(map(str, timings['HTTP'][1].shape))} | {equal} |", flush=True)


def _writer(http_uri: str, experiment: str, cells: list[int], barrier) -> None:
    os.environ["FENNEC_CLAIM_POLL_S"] = "0.2"
    client = tracking.client(http_uri)
    exp_id = tracking.experiment_id(client, experiment)
    work = [claims.Work(i, tracking.RunRecord(kind="fda", model=r.model, task=r.task, cell=r.cell))
            for i, r in ((i, fda_record(i)) for i in cells)]
    barrier.wait()
    with claims.Claimer(client, exp_id) as claimer:
        for unit, claim in claims.claim_each(claimer, work):
            if claim.state == "won":
                record = fda_record(unit.item)
                claimer.complete(claim, tracking.RunRecord(kind="fda", params=record.params, metrics=record.metrics))


def bench_write(http_uri: str, writers: int, n_cells: int, overlap: bool) -> None:
    client = tracking.client(http_uri)
    experiment = f"bench-write-{uuid.uuid4().hex[:6]}"
    exp_id = tracking.experiment_id(client, experiment)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(writers + 1)
    slices = [list(range(n_cells)) if overlap else list(range(k, n_cells, writers)) for k in range(writers)]
    processes = [context.Process(target=_writer, args=(http_uri, experiment, cells, barrier)) for cells in slices]
    for process in processes:
        process.start()
    barrier.wait()
    start = time.perf_counter()
    for process in processes:
        process.join()
    seconds = time.perf_counter() - start
    runs = list(tracking.search_all(client, [exp_id], "tags.`fennec.kind` = 'fda'"))
    cells = {r.data.tags["fennec.cell"] for r in runs}
    finished = sum(r.info.status == "FINISHED" for r in runs)
    print(f"| {writers} | {'every cell' if overlap else 'a disjoint slice'} | {n_cells} | {seconds:.1f} | {n_cells / seconds:.1f} | {len(runs)} runs, "
          f"{finished} finished, {len(cells)} cells |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http-uri", required=True)
    parser.add_argument("--sql-uri", required=True)
    parser.add_argument("--runs", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--writers", type=int, nargs="*", default=[4])
    parser.add_argument("--cells", type=int, default=200)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.runs:
        print("| runs | SQL insert (s) | over HTTP, 1 search at a time (s) | over HTTP, "
              f"{tracking._READER_THREADS} at once (s) | by SQL (s) | shape | all equal |")
        print("|---:|---:|---:|---:|---:|---|---|")
        for n_runs in args.runs:
            bench_read(args.http_uri, args.sql_uri, n_runs, args.repeats)
    if args.writers:
        print("| writers | each writer takes | cells | wall (s) | cells/s | store |")
        print("|---:|---|---:|---:|---:|---|")
        for writers in args.writers:
            for overlap in (False, True):
                bench_write(args.http_uri, writers, args.cells, overlap)


if __name__ == "__main__":
    main()
