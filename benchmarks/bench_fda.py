"""Time the FDA and SFDA scores against feature dimension and probe size; print markdown tables.

    python benchmarks/bench_fda.py --reference-path /tmp/sfda_ref

``--reference-path`` is a checkout of TencentARC/SFDA (the folder holding its ``metrics.py``).
With it, each row also times the reference on the same features in the same run (its first
stage ``SFDA().fit(X, y).predict_proba(X)`` reduced to the mean true-class probability, which
is our ``fda_score``; and its ``SFDA_Score``) and reports how far the two scores are apart.
Without it those columns are left out.

Each timing is the median of ``--repeats`` calls after one warm-up call. BLAS threads are
pinned (``--blas-threads``, default 1) because on a small shared machine a multi-threaded BLAS
fights other processes for cores and its timings swing by several times.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import platform
import statistics
import sys
import time
from types import ModuleType
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from fennec_mlflow.core.estimators import fda_score, sfda_score

DEFAULT_DIMS = (64, 128, 256, 512, 1024, 2048)
DEFAULT_PROBE_SIZES = (100, 250, 500, 1000, 2000)


def make_probe(rng: np.random.Generator, n_samples: int, n_features: int, n_classes: int):
    """Gaussian classes with random centres and random (unequal) class sizes.

    Centres are scaled by 1/sqrt(D) so that the distance between classes, hence how hard the
    task is, does not grow with the dimension; only the cost does.
    """
    labels = rng.integers(0, n_classes, n_samples)
    labels[:n_classes] = np.arange(n_classes)  # the reference assumes every id 0..C-1 occurs
    centres = rng.normal(size=(n_classes, n_features)) * 2.0 / np.sqrt(n_features)
    return centres[labels] + rng.normal(size=(n_samples, n_features)), labels


def median_seconds(call: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Median wall time of ``call`` over ``repeats`` runs after a warm-up; and its result."""
    result = call()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations), result


def load_reference(path: str) -> ModuleType:
    if not os.path.isfile(os.path.join(path, "metrics.py")):
        raise SystemExit(f"--reference-path {path!r} has no metrics.py (expected a TencentARC/SFDA checkout)")
    sys.path.insert(0, path)
    return importlib.import_module("metrics")


def reference_fda_score(metrics: ModuleType, features: np.ndarray, labels: np.ndarray) -> float:
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the shrinkage on every fit
        probabilities = metrics.SFDA().fit(features, labels).predict_proba(features)
    return float(probabilities[np.arange(labels.size), labels].mean())


def reference_sfda_score(metrics: ModuleType, features: np.ndarray, labels: np.ndarray) -> float:
    with contextlib.redirect_stdout(io.StringIO()):
        return float(metrics.SFDA_Score(features.copy(), labels))  # it overwrites its input


def benchmark_row(
    n_samples: int,
    n_features: int,
    n_classes: int,
    repeats: int,
    seed: int,
    reference: ModuleType | None,
    with_sfda: bool,
) -> dict[str, float]:
    features, labels = make_probe(np.random.default_rng(seed), n_samples, n_features, n_classes)
    row: dict[str, float] = {"N": n_samples, "D": n_features}
    row["fda_ms"], ours_fda = median_seconds(lambda: fda_score(features, labels), repeats)
    row["fda"] = ours_fda
    # Not timed: shows when the in-sample score saturates whatever the labels (N - C <= D).
    row["fda_shuffled"] = fda_score(features, np.random.default_rng(seed + 1).permutation(labels))
    if reference is not None:
        row["ref_fda_ms"], ref_fda = median_seconds(lambda: reference_fda_score(reference, features, labels), repeats)
        row["fda_diff"] = abs(ours_fda - ref_fda)
    if with_sfda:
        row["sfda_ms"], ours_sfda = median_seconds(lambda: sfda_score(features, labels), repeats)
        if reference is not None:
            row["ref_sfda_ms"], ref_sfda = median_seconds(
                lambda: reference_sfda_score(reference, features, labels), repeats
            )
            row["sfda_diff"] = abs(ours_sfda - ref_sfda)
    for key in [k for k in row if k.endswith("_ms")]:
        row[key] *= 1000.0
    return row


def markdown_table(rows: list[dict[str, float]]) -> str:
    columns = [("N", "N", "{:.0f}"), ("D", "D", "{:.0f}"), ("fda", "FDA score", "{:.4f}"),
               ("fda_shuffled", "FDA score, shuffled labels", "{:.4f}"),
               ("fda_ms", "FDA ours (ms)", "{:.1f}")]
    if "ref_fda_ms" in rows[0]:
        columns += [("ref_fda_ms", "FDA reference (ms)", "{:.1f}"), ("fda_speedup", "speed-up", "{:.1f}x"),
                    ("fda_diff", "abs score diff", "{:.1e}")]
    if "sfda_ms" in rows[0]:
        columns += [("sfda_ms", "SFDA ours (ms)", "{:.1f}")]
        if "ref_sfda_ms" in rows[0]:
            columns += [("ref_sfda_ms", "SFDA reference (ms)", "{:.1f}"), ("sfda_speedup", "speed-up", "{:.1f}x"),
                        ("sfda_diff", "abs score diff", "{:.1e}")]
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
             "|" + "|".join("---:" for _ in columns) + "|"]
    for row in rows:
        derived = dict(row)
        if "ref_fda_ms" in row:
            derived["fda_speedup"] = row["ref_fda_ms"] / row["fda_ms"]
        if "ref_sfda_ms" in row:
            derived["sfda_speedup"] = row["ref_sfda_ms"] / row["sfda_ms"]
        lines.append("| " + " | ".join(fmt.format(derived[key]) for key, _, fmt in columns) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=list(DEFAULT_DIMS),
                        help="feature dimensions for the first sweep (default: %(default)s)")
    parser.add_argument("--probe-sizes", type=int, nargs="+", default=list(DEFAULT_PROBE_SIZES),
                        help="probe sizes for the second sweep (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=500, help="probe size in the dimension sweep")
    parser.add_argument("--dim", type=int, default=512, help="feature dimension in the probe-size sweep")
    parser.add_argument("--classes", type=int, default=10, help="number of classes (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per cell; the median is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-path", help="TencentARC/SFDA checkout to time beside ours")
    parser.add_argument("--no-sfda", action="store_true", help="time the FDA score only")
    parser.add_argument("--blas-threads", type=int, default=1, help="BLAS threads for both (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reference = load_reference(args.reference_path) if args.reference_path else None
    with threadpool_limits(limits=args.blas_threads, user_api="blas"):
        blas = sorted({f"{i['internal_api']} {i.get('version')}" for i in threadpool_info() if i["user_api"] == "blas"})
        print(f"python {platform.python_version()}, numpy {np.__version__}, BLAS {', '.join(blas)}, "
              f"{args.blas_threads} BLAS thread(s), {os.cpu_count()} CPUs, {args.repeats} repeats (median)")
        if reference is None:
            print("Reference columns omitted: pass --reference-path to a TencentARC/SFDA checkout to time it.")
        sweeps = [
            (f"Time vs feature dimension (N={args.samples}, C={args.classes})",
             [(args.samples, d) for d in args.dims]),
            (f"Time vs probe size (D={args.dim}, C={args.classes})",
             [(n, args.dim) for n in args.probe_sizes]),
        ]
        for title, cells in sweeps:
            rows = [
                benchmark_row(n, d, args.classes, args.repeats, args.seed, reference, not args.no_sfda)
                for n, d in cells
            ]
            print(f"\n### {title}\n\n{markdown_table(rows)}", flush=True)


if __name__ == "__main__":
    main()
