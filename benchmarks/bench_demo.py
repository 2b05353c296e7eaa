"""The embedded default: wall time of `mlflow run . -e rank --env-manager local`, first and later runs.

    python benchmarks/bench_demo.py             # first run + 2 later runs
    python benchmarks/bench_demo.py --later 3

Each measurement starts from a fresh temp dir (its working directory, so MLflow's default store
`./mlflow.db` is new) with a fresh ``FENNEC_CACHE_DIR``: the first run bootstraps the real
default (`fennec_mlflow.serving.demo.bootstrap`) and ranks; later runs find `fennec@champion`
and only rank. Prints each run's wall time, the bootstrap's step lines, and the time spent in
the rank run itself (its `rank_seconds`, `proxy_seconds`, `model_load_seconds` metrics). Then
splits a later run: the same `fennec rank` without `mlflow run` (`python -m fennec_mlflow.cli
rank` on the same store), and the interpreter start plus the CLI's imports alone.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_rank(workdir: Path, cache: Path) -> tuple[float, str]:
    env = {**os.environ, "FENNEC_CACHE_DIR": str(cache)}
    env.pop("MLFLOW_TRACKING_URI", None)  # MLflow's default: ./mlflow.db in the fresh working dir
    start = time.perf_counter()
    proc = subprocess.run(["mlflow", "run", str(REPO), "-e", "rank", "--env-manager", "local"], cwd=workdir,
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"mlflow run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout + proc.stderr


def timed_command(command: list[str], workdir: Path, cache: Path) -> float:
    env = {**os.environ, "FENNEC_CACHE_DIR": str(cache), "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    start = time.perf_counter()
    subprocess.run(command, cwd=workdir, env=env, capture_output=True, check=True)
    return time.perf_counter() - start


def rank_metrics(workdir: Path) -> dict:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fennec")
    run = client.search_runs([exp.experiment_id], "tags.`fennec.kind` = 'rank'", order_by=["start_time DESC"],
                             max_results=1)[0]
    return {k: round(v, 2) for k, v in run.data.metrics.items() if k.endswith("seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--later", type=int, default=2, help="later runs after the first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir, cache = Path(tmp) / "work", Path(tmp) / "cache"
        workdir.mkdir()
        seconds, output = run_rank(workdir, cache)
        print(f"first run (bootstrap + rank): {seconds:.1f} s")
        for line in output.splitlines():
            if re.match(r"^(\d/5 |    |No registered|Built in|Fine-tune|Top )", line):
                print("   ", line)
        print("    rank run metrics:", rank_metrics(workdir))
        for i in range(args.later):
            seconds, output = run_rank(workdir, cache)
            print(f"later run {i + 1}: {seconds:.1f} s; rank run metrics: {rank_metrics(workdir)}")
        direct = timed_command([sys.executable, "-m", "fennec_mlflow.cli", "rank"], workdir, cache)
        imports = timed_command([sys.executable, "-c", "import fennec_mlflow.cli, fennec_mlflow.serving.rank"],
                                workdir, cache)
        print(f"later run split: `fennec rank` without `mlflow run` {direct:.1f} s, of which interpreter start "
              f"and imports {imports:.1f} s")
        print("load average:", " ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
