"""Evaluate and tune Fennec on every public benchmark, then regenerate docs/evaluation.md.

    python projects/public_benchmarks/run_all.py                  # in-process (what made docs/evaluation.md)
    python projects/public_benchmarks/run_all.py --mlflow-run     # the same through `mlflow run -e evaluate/tune`

Runs land in the tracking store of MLFLOW_TRACKING_URI (default: sqlite mlflow.db in the
working directory): experiments ``fennec-eval-<benchmark>`` and ``fennec-tune-<benchmark>``.
Everything is offline: the tables and task facts ship with the package.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = ("parc", "parc6", "transfergraph")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS), help="comma-separated (default: all)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds of Fennec, warm-start draws and random")
    parser.add_argument("--n-trials", type=int, default=20, help="Optuna trials per benchmark")
    parser.add_argument("--inner-trials", type=int, default=8, help="Optuna trials per nested-CV fold")
    parser.add_argument("--workers", type=int, default=2, help="local Optuna worker processes")
    parser.add_argument("--skip-tune", action="store_true", help="evaluate only")
    parser.add_argument("--mlflow-run", action="store_true", help="go through `mlflow run . -e evaluate|tune`")
    parser.add_argument("--output", default=str(REPO / "docs" / "evaluation.md"))
    args = parser.parse_args()
    chosen = [b.strip() for b in args.benchmarks.split(",") if b.strip()]

    for benchmark in chosen:
        start = time.perf_counter()
        if args.mlflow_run:
            _mlflow_run("evaluate", benchmark=benchmark)
        else:
            from fennec_mlflow.bench.evaluate import run_evaluation

            runs = run_evaluation(benchmark, seeds=[int(s) for s in args.seeds.split(",")])
            print(runs.table().drop(columns="run_id").round(3).to_string())
        print(f"evaluate {benchmark}: {time.perf_counter() - start:.0f} s", flush=True)
        if args.skip_tune:
            continue
        start = time.perf_counter()
        if args.mlflow_run:
            _mlflow_run("tune", benchmark=benchmark, n_trials=args.n_trials)
        else:
            from fennec_mlflow.bench.tuning import run_tuning

            outcome = run_tuning(benchmark, n_trials=args.n_trials, inner_trials=args.inner_trials,
                                 workers=args.workers, progress=False)
            print(f"tune {benchmark}: best {outcome.best_params} mean Pearson {100 * outcome.best_value:.1f} "
                  f"(optimistic), nested CV {100 * outcome.nested_mean_pearson:.1f}")
        print(f"tune {benchmark}: {time.perf_counter() - start:.0f} s", flush=True)

    subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_evaluation_report.py"),
                    "--benchmarks", ",".join(chosen), "--output", args.output], check=True)


def _mlflow_run(entry_point: str, **params) -> None:
    command = ["mlflow", "run", str(REPO), "-e", entry_point, "--env-manager", "local"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
