"""Time LogME, LEEP, NCE, N-LEEP, H-Score (plain, shrinkage) and TransRate beside their references.

    PYTHONPATH=/path/with/numba python benchmarks/bench_estimators_a.py \\
        --logme-path CHECKOUT_OF_thuml/LogME \\
        --tllib-path CHECKOUT_OF_thuml/Transfer-Learning-Library \\
        --sfda-path CHECKOUT_OF_TencentARC/SFDA

Each path is a checkout of the reference repository; the files are loaded from it by path
(``LogME.py``, ``LEEP.py``, ``NCE.py``; ``tllib/ranking/{hscore,transrate}.py``;
SFDA's ``metrics.py``), never copied here. A reference whose path is not given, or that
cannot be imported (``LogME.py`` needs numba), gets no column. The references:

=================  ==================================================================
ours               reference timed on the same inputs
=================  ==================================================================
logme              thuml/LogME ``LogME().fit(X, y)`` (numba; as shipped, see below)
leep               thuml/LogME ``LEEP(softmax(logits), y)`` (softmax included)
nce                thuml/LogME ``NCE(argmax(logits), y)`` (argmax included)
nleep              TencentARC/SFDA ``NLEEP(X, y)``; ours with ``reduction="mean"``, same seed
hscore             tllib ``ranking.hscore.h_score(X, y)``
hscore_shrinkage   tllib ``ranking.hscore.regularized_h_score(X, y)``
transrate          tllib ``ranking.transrate.transrate(X, y)``
=================  ==================================================================

The probe: N samples of C Gaussian classes in D dimensions whose per-axis scale decays as
``j^-0.65`` (variance ``j^-1.3``), so that, as with real penultimate features, a minority of
directions carries most of the variance (N-LEEP's 80%-variance PCA keeps 18-32 of them,
where white noise would need hundreds), plus K=1000 source logits from a noisy linear head.

Each timing is the median of ``--repeats`` calls after one warm-up call; a call slower than
``--slow-seconds`` is timed once (its first call) to keep the whole run short. BLAS threads
are pinned (``--blas-threads``, default 1) for both sides. The ``(input checks)`` row times the
validation every ``score`` call does first (finite features, labels, logits): it is part of
each of our timings, and the references do none of it. The ``|ours - ref|`` column shows
how far the two scores are apart on the benchmark inputs: LogME's is large because D > N
here and the shipped reference has the D > N evidence bug (thuml/LogME issue #23; see
fennec_mlflow/core/estimators/logme.py).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import platform
import statistics
import sys
import time
import warnings
from types import ModuleType
from typing import Callable

import numpy as np
import scipy.special
from threadpoolctl import threadpool_info, threadpool_limits

from fennec_mlflow.core.estimators import check_features, check_labels, check_source_logits, get_estimator

ESTIMATORS = ("logme", "leep", "nce", "nleep", "hscore", "hscore_shrinkage", "transrate")


def make_probe(rng: np.random.Generator, n_samples: int, n_features: int, n_classes: int, n_source: int):
    labels = rng.integers(0, n_classes, n_samples)
    labels[:n_classes] = np.arange(n_classes)  # the references assume every id 0..C-1 occurs
    scale = np.arange(1, n_features + 1) ** -0.65
    centres = rng.normal(size=(n_classes, n_features)) * 0.7
    features = (centres[labels] + rng.normal(size=(n_samples, n_features))) * scale
    head = rng.normal(size=(n_features, n_source)) / np.sqrt(np.sum(scale**2)) * 3.0
    logits = features @ head + rng.normal(size=(n_samples, n_source))
    return features, labels, logits


def load_file(path: str, name: str, extra_path: str | None = None) -> ModuleType:
    """Import one reference file by path (its folder on sys.path for its own imports)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    if extra_path and extra_path not in sys.path:
        sys.path.insert(0, extra_path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    with contextlib.redirect_stdout(io.StringIO()):
        spec.loader.exec_module(module)
    return module


def load_references(args) -> tuple[dict[str, Callable], list[str]]:
    """Reference callables ``(X, y, logits) -> float`` by estimator name, and notes on what is missing."""
    refs: dict[str, Callable] = {}
    notes: list[str] = []
    if args.logme_path:
        try:
            logme = load_file(os.path.join(args.logme_path, "LogME.py"), "ref_logme", args.logme_path)
            refs["logme"] = lambda X, y, L: logme.LogME(regression=False).fit(X, y)
        except Exception as error:  # numba missing, typically
            notes.append(f"logme reference not importable ({type(error).__name__}: {error})")
        leep = load_file(os.path.join(args.logme_path, "LEEP.py"), "ref_leep")
        nce = load_file(os.path.join(args.logme_path, "NCE.py"), "ref_nce")
        refs["leep"] = lambda X, y, L: leep.LEEP(scipy.special.softmax(L, axis=1), y)
        refs["nce"] = lambda X, y, L: nce.NCE(np.argmax(L, axis=1), y)
    if args.tllib_path:
        ranking = os.path.join(args.tllib_path, "tllib", "ranking")
        hscore = load_file(os.path.join(ranking, "hscore.py"), "ref_hscore")
        transrate = load_file(os.path.join(ranking, "transrate.py"), "ref_transrate")
        refs["hscore"] = lambda X, y, L: hscore.h_score(X, y)
        refs["hscore_shrinkage"] = lambda X, y, L: hscore.regularized_h_score(X, y)
        refs["transrate"] = lambda X, y, L: transrate.transrate(X, y)
    if args.sfda_path:
        metrics = load_file(os.path.join(args.sfda_path, "metrics.py"), "ref_sfda_metrics", args.sfda_path)

        def sfda_nleep(X, y, L):
            np.random.seed(0)  # its GaussianMixture draws from the global state
            return metrics.NLEEP(X.copy(), y)

        refs["nleep"] = sfda_nleep
    return refs, notes


def ours(name: str) -> Callable:
    params = {"reduction": "mean"} if name == "nleep" else {}  # what SFDA's NLEEP returns
    estimator = get_estimator(name, **params)
    return lambda X, y, L: estimator.score(X, y, source_logits=L)


def input_checks(X: np.ndarray, y: np.ndarray, L: np.ndarray) -> float:
    """What ``TransferabilityEstimator.score`` validates before any estimator runs (part of ours)."""
    check_features(X)
    check_labels(y, n_samples=X.shape[0])
    check_source_logits(L, n_samples=X.shape[0])
    return 0.0


def timed(call: Callable[[], float], repeats: int, slow_seconds: float) -> tuple[float, float, int]:
    """(median seconds, result, number of timed calls; 0 = only the first call, it was slow)."""
    start = time.perf_counter()
    result = call()
    first = time.perf_counter() - start
    if first > slow_seconds:
        return first, result, 0
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations), result, repeats


def attempt(call: Callable[[], float], repeats: int, slow_seconds: float):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return timed(call, repeats, slow_seconds)
    except Exception as error:
        return None, f"{type(error).__name__}: {error}", -1


def fmt_ms(seconds: float | None, calls: int) -> str:
    if seconds is None:
        return "error"
    text = f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds * 1e3:.0f}"
    return text + ("*" if calls == 0 else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logme-path", help="checkout of thuml/LogME (LogME.py needs numba)")
    parser.add_argument("--tllib-path", help="checkout of thuml/Transfer-Learning-Library")
    parser.add_argument("--sfda-path", help="checkout of TencentARC/SFDA")
    parser.add_argument("--n-samples", type=int, default=500)
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--source-classes", type=int, default=1000)
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    parser.add_argument("--blas-threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    refs, notes = load_references(args)
    started = time.perf_counter()
    load_before = os.getloadavg()
    rows = []
    with threadpool_limits(limits=args.blas_threads):
        for n_features in args.dims:
            for n_classes in args.classes:
                rng = np.random.default_rng([args.seed, n_features, n_classes])
                X, y, L = make_probe(rng, args.n_samples, n_features, n_classes, args.source_classes)
                checks_time, _, checks_calls = attempt(lambda: input_checks(X, y, L), args.repeats, args.slow_seconds)
                rows.append(["(input checks)", n_features, n_classes, fmt_ms(checks_time, checks_calls)])
                for name in args.estimators:
                    mine = ours(name)
                    our_time, our_value, our_calls = attempt(lambda: mine(X, y, L), args.repeats, args.slow_seconds)
                    row = [name, n_features, n_classes, fmt_ms(our_time, our_calls)]
                    if name in refs:
                        ref = refs[name]
                        ref_time, ref_value, ref_calls = attempt(lambda: ref(X, y, L), args.repeats, args.slow_seconds)
                        speedup = f"{ref_time / our_time:.1f}x" if ref_time and our_time else "n/a"
                        if isinstance(ref_value, str) or isinstance(our_value, str):
                            gap = ref_value if isinstance(ref_value, str) else our_value
                            gap = gap[:60]
                        else:
                            gap = f"{abs(float(our_value) - float(ref_value)):.1e}"
                        row += [fmt_ms(ref_time, ref_calls), speedup, gap]
                    rows.append(row)
                    print("  ", " | ".join(str(cell) for cell in row), file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()

    blas = ", ".join(f"{info['internal_api']} {info.get('version') or ''}".strip() for info in threadpool_info())
    print(f"N={args.n_samples}, K={args.source_classes} source logits, median of {args.repeats} after a warm-up "
          f"(* = one call, slower than {args.slow_seconds:g} s); {args.blas_threads} BLAS thread(s).")
    print(f"Python {platform.python_version()}, numpy {np.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; BLAS: {blas}.")
    print(f"Load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}; wall time {elapsed:.0f} s.")
    for note in notes:
        print(f"Note: {note}")
    print()
    with_refs = any(len(row) > 4 for row in rows)
    header = "| estimator | D | C | ours (ms) |"
    if with_refs:
        header += " reference (ms) | speed-up | \\|ours - ref\\| |"
    print(header)
    print("|" + "---|" * (7 if with_refs else 4))
    for row in rows:
        cells = row + ([""] * 3 if with_refs and len(row) == 4 else [])
        print("| " + " | ".join(str(cell) for cell in cells) + " |")


if __name__ == "__main__":
    main()
