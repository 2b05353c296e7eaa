"""Evaluation work on forked workers: the same answers as in turn, in order."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from fennec_mlflow.bench import evaluate as evaluation_runs
from fennec_mlflow.parallel import forked_map, in_this_process
from tests.helpers import planted_benchmark


def test_forked_map_keeps_the_order_runs_closures_and_nests_in_turn():
    offset = 10
    done = []
    results = forked_map(lambda item: (item + offset, os.getpid()), list(range(6)), workers=2,
                         done=lambda: done.append(1))
    assert [value for value, _ in results] == list(range(10, 16)) and len(done) == 6
    assert os.getpid() not in {pid for _, pid in results}  # computed by the workers
    # a worker asked to spread work again does it in turn instead of forking workers of its own
    nested = forked_map(lambda item: (os.getpid(), forked_map(lambda x: os.getpid(), [item, item], workers=2)),
                        [0, 1], workers=2)
    assert all(worker != os.getpid() and inner == [worker, worker] for worker, inner in nested)
    assert forked_map(lambda item: os.getpid(), [0], workers=2) == [os.getpid()]  # one item: no pool
    with in_this_process():
        assert forked_map(lambda item: os.getpid(), [0, 1], workers=2) == [os.getpid()] * 2


def test_prefetched_fits_rank_as_fits_made_in_turn():
    bench = planted_benchmark()
    estimators = ["fennec", "fennec-no-meta", "fennec-paper", "fennec-warm-3", "popularity"]
    prefetched, in_turn = evaluation_runs.FennecFits(bench), evaluation_runs.FennecFits(bench)
    wanted = evaluation_runs.fits_needed(prefetched, estimators, bench.targets, (0, 1))
    assert len(wanted) == len(bench.targets) * 2 * 3  # default alpha (shared by the warm start), alpha 0, paper
    evaluation_runs.prefetch_fits(wanted, progress=False)
    variant = prefetched.variant(formulation="paper")
    assert len(prefetched._fits) == len(bench.targets) * 2 * 2 and len(variant._fits) == len(bench.targets) * 2
    for name in estimators:
        ahead = evaluation_runs.evaluate_estimator(bench, name, seeds=(0, 1), fits=prefetched)
        made = evaluation_runs.evaluate_estimator(bench, name, seeds=(0, 1), fits=in_turn)
        pd.testing.assert_frame_equal(ahead.result.per_target, made.result.per_target)
    assert len(prefetched._fits) == len(bench.targets) * 2 * 2  # nothing fitted again


def test_forked_map_raises_an_items_error_without_running_the_rest(tmp_path):
    def work(item):
        if item == 0:
            raise ValueError("item 0 is bad")
        import time

        time.sleep(0.5)
        (tmp_path / f"ran-{item}").touch()
        return item

    with pytest.raises(ValueError, match="item 0 is bad"):
        forked_map(work, list(range(12)), workers=2)
    assert len(list(tmp_path.glob("ran-*"))) < 11  # the pending items were cancelled
