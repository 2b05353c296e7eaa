"""Build and evaluate the synthetic end-to-end benchmark, then write its section of docs/evaluation.md.

    python projects/synthetic_benchmark/run.py                     # the full benchmark (about 30 min on 2 cores)
    python projects/synthetic_benchmark/run.py --benchmark synthetic-smoke   # the CI-size copy (about 1 min)

The same as ``mlflow run . -e evaluate --env-manager local -P benchmark=synthetic`` followed by
``python benchmarks/make_end_to_end_report.py``; the wall time of the whole build and evaluation
is printed at the end (what docs/benchmarks.md reports). Runs land in the store of
MLFLOW_TRACKING_URI (default: sqlite mlflow.db in the working directory). Kill it at any point
and start it again: finished cells are reused.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="synthetic", choices=("synthetic", "synthetic-smoke"))
    parser.add_argument("--output", default=str(REPO / "docs" / "evaluation.md"))
    parser.add_argument("--no-report", action="store_true", help="build and evaluate only")
    args = parser.parse_args()

    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fennec_mlflow.cli", "evaluate", "--benchmark", args.benchmark], check=True)
    print(f"{args.benchmark}: built and evaluated in {time.perf_counter() - start:.0f} s", flush=True)
    if not args.no_report:
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_end_to_end_report.py"),
                        "--benchmark", args.benchmark, "--output", args.output], check=True)


if __name__ == "__main__":
    main()
