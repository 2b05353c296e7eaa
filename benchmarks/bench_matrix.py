"""Matrix rebuild time: how long `load_matrix` takes to read N cell runs back from sqlite.

    python benchmarks/bench_matrix.py --runs 1000 10000

Each run is written with the same writer the FDA job uses (tags, ~16 params, 4 metrics), into
a fresh sqlite store in a temp dir; the rebuild is timed (median of --repeats).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fennec_mlflow.store import tracking


def fill_store(mlflow_client, n_runs: int, seed: int = 0) -> None:
    exp_id = tracking.experiment_id(mlflow_client)
    n_tasks = 50
    rng = np.random.default_rng(seed)
    for i in range(n_runs):
        model, task = f"model{i // n_tasks:04d}", f"task{i % n_tasks:02d}"
        record = tracking.RunRecord(
            kind="fda", model=model, task=task, cell=tracking.cell_key("fda", model=model, task=task),
            params={"estimator": "fda", "weights": "random-init", "probe_size": 500, "probe_seed": 0,
                    "feature_dim": 512, "feature_cache_hit": False, "task_fingerprint": "0" * 16,
                    "device": "cpu", "model_parameters": 1_000_000 + i, "model_source": "pytorchcv",
                    "model_input_size": 32, "task_class_count": 10, "task_sample_count": 1000,
                    "task_domain": "digits", "task_source": f"synthetic:{task}"},
            metrics={"fda_score": rng.random(), "fda_score_sum": 500 * rng.random(),
                     "feature_seconds": 0.5, "score_seconds": 0.01},
        )
        tracking.write_run(mlflow_client, exp_id, record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store-dir", default=None,
                        help="keep the stores here (store-N.db) and reuse them on the next call")
    args = parser.parse_args()
    print("| runs | write time (s) | rebuild time (s), median | matrix shape |")
    print("|---:|---:|---:|---|")
    for n_runs in args.runs:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(args.store_dir or tmp) / f"store-{n_runs}.db"
            reuse = db.exists()
            mlflow_client = tracking.client(f"sqlite:///{db}")
            start = time.perf_counter()
            if not reuse:
                fill_store(mlflow_client, n_runs)
            write_seconds = float("nan") if reuse else time.perf_counter() - start
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                km = tracking.load_matrix("fda", mlflow_client=mlflow_client)
                times.append(time.perf_counter() - start)
            assert int(km.values.notna().sum().sum()) == n_runs
            print(f"| {n_runs} | {write_seconds:.1f} | {statistics.median(times):.2f} | {km.shape[0]} x {km.shape[1]} |",
                  flush=True)


if __name__ == "__main__":
    main()
