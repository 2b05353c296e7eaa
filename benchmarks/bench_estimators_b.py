"""Time PARC, GBC, ETran, NCTI and PED against the authors' implementations; print a markdown table.

    python benchmarks/bench_estimators_b.py \\
        --parc-path /tmp/refs/parc --gbc-path /tmp/refs/gbc --etran-path /tmp/refs/ETran \\
        --ncti-path /tmp/refs/NCTI --ped-path /tmp/refs/PED \\
        --extra-site-packages /tmp/tfenv/lib/python3.11/site-packages

Each ``--*-path`` is a checkout of the reference (the folder holding its ``methods.py`` /
``metrics.py``; for GBC the folder holding ``stable_transfer/``); a reference column is left
out when its path is not given. ``--extra-site-packages`` is appended to ``sys.path`` to find
TensorFlow (GBC's reference) without installing it into this environment. When a reference's
import fails the script says why and leaves its column out.

Cells: N=500 probes with D in ``--dims`` and C in ``--classes``. Each time is the median of
``--repeats`` calls after one warm-up call; a call slower than ``--slow-seconds`` is timed once
(its warm-up) to keep the whole run short, and marked with ``*``. BLAS and OpenMP are pinned to
``--threads`` threads (threadpoolctl) and so are torch and TensorFlow, for both sides.
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
import types
import warnings
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from fennec_mlflow.core.estimators import get_estimator
from fennec_mlflow.core.estimators.ncti import ncti_components
from fennec_mlflow.core.estimators.ped import ped_score

DEFAULT_DIMS = (512, 2048)
DEFAULT_CLASSES = (10, 100)
N_SAMPLES = 500


def make_probe(rng: np.random.Generator, n_samples: int, n_features: int, n_classes: int):
    """Gaussian classes, centres scaled by 1/sqrt(D) (the task does not get easier with D); ReLU'd."""
    labels = rng.integers(0, n_classes, n_samples)
    labels[:n_classes] = np.arange(n_classes)  # the references assume every id 0..C-1 occurs
    centres = rng.normal(size=(n_classes, n_features)) * 2.0 / np.sqrt(n_features)
    features = np.maximum(centres[labels] + rng.normal(size=(n_samples, n_features)) + 0.5, 0.0)
    return features, labels


def timed(call: Callable[[], object], repeats: int, slow_seconds: float) -> tuple[float, object, bool]:
    """(median seconds, result, single_run): one warm-up, then ``repeats`` timed calls unless slow."""
    start = time.perf_counter()
    result = call()
    warm = time.perf_counter() - start
    if warm > slow_seconds:
        return warm, result, True
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations), result, False


# ------------------------------------------------------------------------- references


def _import_from(path: str, module: str, flush: tuple[str, ...] = ("metrics", "utils", "methods", "constants")):
    """Import ``module`` from the checkout at ``path``; their helper modules share names, so flush them."""
    for name in flush:
        sys.modules.pop(name, None)
    sys.path.insert(0, path)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return importlib.import_module(module)
    finally:
        sys.path.remove(path)


def load_references(args: argparse.Namespace) -> dict[str, dict[str, Callable]]:
    """name -> {estimator row: callable(features, labels) -> comparable value}."""
    references: dict[str, dict[str, Callable]] = {}
    quiet = lambda: contextlib.redirect_stdout(io.StringIO())  # noqa: E731  (they print a lot)

    def attempt(name: str, loader: Callable[[], dict[str, Callable]]) -> None:
        try:
            references[name] = loader()
        except Exception as error:  # report and go on without that column
            print(f"reference {name}: not available ({type(error).__name__}: {error}); column left out")

    if args.parc_path:
        def parc_loader():
            methods = _import_from(args.parc_path, "methods")
            constants = sys.modules["constants"]

            def parc(features, labels):
                # One-hot width: the next power of two >= C, where the reference's label RDM is
                # exactly binary (a width of C adds roundoff ties; see fennec_mlflow/core/estimators/parc.py).
                constants.num_classes["bench"] = 1 << int(labels.max()).bit_length()
                return float(methods.PARC(n_dims=32)(features.copy(), None, labels, "src", "bench", "arch", None))
            return {"parc": parc}
        attempt("parc", parc_loader)

    if args.gbc_path:
        def gbc_loader():
            import tensorflow as tf
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
            sys.path.insert(0, args.gbc_path)
            # gbc.py imports the experiment runner only for a caching decorator; the runner pulls
            # in datasets and networks. Stand in for that one decorator.
            stub = types.ModuleType("stable_transfer.transferability.transfer_experiment")
            stub.load_or_compute = lambda function: function
            sys.modules.setdefault(stub.__name__, stub)
            gbc = importlib.import_module("stable_transfer.transferability.gbc")
            utils = importlib.import_module("stable_transfer.transferability.features_targets_utils")

            def run(features, labels):
                reduced = utils.pca_reduction(features, 64)
                return float(gbc.get_gbc_score(reduced, utils.shift_target_labels(labels), "spherical"))
            return {"gbc": run}
        attempt("gbc", gbc_loader)

    if args.etran_path:
        def etran_loader():
            metrics = _import_from(args.etran_path, "metrics")

            def lda(features, labels):
                with quiet():
                    return float(metrics.LDA_Score(features.copy(), labels))
            return {"etran_energy": lambda f, y: float(metrics.Energy_Score(f.copy(), 0.5, "bot")),
                    "etran_lda": lda}
        attempt("etran", etran_loader)

    if args.ncti_path:
        def ncti_loader():
            metrics = _import_from(args.ncti_path, "metrics")

            def ncti(features, labels):
                with quiet():
                    seli, ncc, vc = metrics.NCTI_Score(features.copy(), labels)
                return np.array([ncc, seli, vc])
            return {"ncti": ncti}
        attempt("ncti", ncti_loader)

    if args.ped_path:
        def ped_loader():
            metrics = _import_from(args.ped_path, "metrics")

            def ped(features, labels):
                with quiet(), contextlib.redirect_stderr(io.StringIO()):
                    return float(metrics.PED_Score(features.copy(), labels, general_X=features.copy(),
                                                   exit_ratio=0.5, time_step=0.1, type="SFDA", nsigma=0.6,
                                                   constant=1.0))
            return {"ped (raw SFDA)": ped}
        attempt("ped", ped_loader)
    return references


# ------------------------------------------------------------------------------- ours


def ours() -> dict[str, Callable]:
    return {
        "parc": lambda f, y: get_estimator("parc").score(f, y),
        "gbc": lambda f, y: get_estimator("gbc").score(f, y),
        "etran_energy": lambda f, y: get_estimator("etran_energy").score(f),
        "etran_lda": lambda f, y: get_estimator("etran_lda").score(f, y),
        # the three NCTI terms from one fit, as the reference computes them
        "ncti": lambda f, y: (lambda c: np.array([c.ncc, c.seli, c.vc]))(ncti_components(f, y)),
        # same computation as the reference (its raw SFDA, probe statistics for the rescaling)
        "ped (raw SFDA)": lambda f, y: ped_score(f, y),
        # the registered estimator's default (max_dim="auto"); no reference counterpart
        "ped (registered)": lambda f, y: get_estimator("ped").score(f, y),
    }


def difference(mine, reference) -> float:
    mine, reference = np.atleast_1d(mine).astype(float), np.atleast_1d(reference).astype(float)
    return float(np.max(np.abs(mine - reference) / np.maximum(np.abs(reference), 1e-300)))


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    references = {}
    for table in load_references(args).values():
        references.update(table)
    rows = []
    for n_features in args.dims:
        for n_classes in args.classes:
            features, labels = make_probe(np.random.default_rng(args.seed), N_SAMPLES, n_features, n_classes)
            for name, call in ours().items():
                row: dict[str, object] = {"estimator": name, "D": n_features, "C": n_classes}
                seconds, mine, single = timed(lambda: call(features, labels), args.repeats, args.slow_seconds)
                row["ours_ms"], row["ours_single"] = seconds * 1e3, single
                if name in references:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        seconds, theirs, single = timed(lambda: references[name](features, labels), args.repeats,
                                                        args.slow_seconds)
                    row["ref_ms"], row["ref_single"] = seconds * 1e3, single
                    row["diff"] = difference(mine, theirs)
                rows.append(row)
                print(f"  {name} D={n_features} C={n_classes}: " + ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                    if k not in ("estimator", "D", "C")), file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    with_reference = any("ref_ms" in row for row in rows)
    header = ["estimator", "D", "C", "ours (ms)"]
    if with_reference:
        header += ["reference (ms)", "speed-up", "max rel. diff"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in sorted(rows, key=lambda r: (list(ours()).index(r["estimator"]), r["D"], r["C"])):
        star = lambda key: "*" if row.get(key) else ""  # noqa: E731
        cells = [str(row["estimator"]), str(row["D"]), str(row["C"]), f"{row['ours_ms']:.1f}{star('ours_single')}"]
        if with_reference:
            if "ref_ms" in row:
                cells += [f"{row['ref_ms']:.1f}{star('ref_single')}", f"{row['ref_ms'] / row['ours_ms']:.1f}x",
                          f"{row['diff']:.1e}"]
            else:
                cells += ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=list(DEFAULT_DIMS))
    parser.add_argument("--classes", type=int, nargs="+", default=list(DEFAULT_CLASSES))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cell after a warm-up (median)")
    parser.add_argument("--slow-seconds", type=float, default=2.0,
                        help="a warm-up slower than this is the cell's only timing (marked *)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch/TF threads for both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parc-path", help="dbolya/parc checkout")
    parser.add_argument("--gbc-path", help="folder holding google-research's stable_transfer/")
    parser.add_argument("--etran-path", help="mgholamikn/ETran checkout")
    parser.add_argument("--ncti-path", help="BUserName/NCTI checkout")
    parser.add_argument("--ped-path", help="lixiaotong97/PED checkout")
    parser.add_argument("--extra-site-packages", help="appended to sys.path (e.g. a venv with TensorFlow)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.extra_site_packages:
        sys.path.append(args.extra_site_packages)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = time.perf_counter()
    with threadpool_limits(limits=args.threads):
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            pass
        blas = sorted({f"{i['internal_api']} {i.get('version')}" for i in threadpool_info() if i["user_api"] == "blas"})
        rows = run(args)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    print(f"python {platform.python_version()}, numpy {np.__version__}, BLAS {', '.join(blas)}, "
          f"{args.threads} thread(s), {os.cpu_count()} CPUs, N={N_SAMPLES}, {args.repeats} repeats (median); "
          f"* = single call; load average at the end {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}; "
          f"total {time.perf_counter() - started:.0f} s")
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
