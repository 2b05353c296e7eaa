"""Work spread over the machine's cores.

Evaluations and validations fit Fennec hundreds to thousands of times on data already in
memory. Forked workers inherit that memory, so nothing is pickled but each item and its
result; the function may be a closure. Each worker uses one BLAS thread: the workers already
fill the cores.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# macOS lists fork but its system libraries are not fork-safe (Python's default there is spawn).
_CAN_FORK = "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin"
_FORKED: list[Callable] = []  # the function forked workers call (set only while a pool runs)
_IN_THIS_PROCESS: list[bool] = []


@contextmanager
def in_this_process() -> Iterator[None]:
    """Inside this block :func:`forked_map` runs everything here, in turn (for a debugger, a
    profiler, or a test that watches calls)."""
    _IN_THIS_PROCESS.append(True)
    try:
        yield
    finally:
        _IN_THIS_PROCESS.pop()


def _call(item):
    return _FORKED[0](item)


def _one_blas_thread() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def forked_map(function: Callable[[Item], Result], items: Sequence[Item], *, workers: int | None = None,
               done: Callable[[], object] | None = None) -> list[Result]:
    """``[function(item) for item in items]`` on ``workers`` forked processes (default: the cores
    this process may use), or in turn where there is one worker, one item or no safe fork
    (Windows, macOS). Results in the items' order; ``done`` is called as each finishes (a
    progress bar's update). Items are handed out one at a time: their costs differ. A worker
    that calls it again, or a call inside :func:`in_this_process`, runs in turn."""
    workers = available_cores() if workers is None else workers
    workers = min(workers, len(items))
    if workers <= 1 or not _CAN_FORK or _FORKED or _IN_THIS_PROCESS:
        results = []
        for item in items:
            results.append(function(item))
            if done is not None:
                done()
        return results
    _FORKED.append(function)
    try:
        results: list = [None] * len(items)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_one_blas_thread) as pool:
            futures = {pool.submit(_call, item): i for i, item in enumerate(items)}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    if done is not None:
                        done()
            except BaseException:  # an item failed (or Ctrl-C): do not start the rest
                for future in futures:
                    future.cancel()
                raise
        return results
    finally:
        _FORKED.clear()
