import os

import torch

from fennec_mlflow.data import threads


def test_fair_share_is_between_one_thread_and_every_core(monkeypatch):
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    assert 1 <= threads.fair_share_threads() <= (os.cpu_count() or 1)
    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    assert threads.fair_share_threads() == 1  # every core already busy: one thread cannot wait on another
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert threads.fair_share_threads() == len(os.sched_getaffinity(0))


def test_the_environment_decides_when_set(monkeypatch):
    previous = torch.get_num_threads()
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    try:
        assert threads.use_fair_share_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
