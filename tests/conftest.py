"""Shared fixtures: a real sqlite tracking store and a feature cache, both in a temp dir.

Plain helper functions live in helpers.py (``from tests.helpers import ...``), not here."""
from __future__ import annotations

import pytest

from tests.helpers import sqlite_store


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests use small models: one intra-op thread is as fast and never spins against other
    processes on a shared 2-core machine (measured: a resnet20 fine-tune 60 s with 2 threads
    under load, 6 s with 1)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture()
def store(tmp_path, monkeypatch):
    """A fresh sqlite MLflow store in the test's temp dir (also its working directory);
    MLFLOW_TRACKING_URI points at it for the test's duration."""
    with sqlite_store(tmp_path, monkeypatch) as client:
        yield client


@pytest.fixture()
def offline(monkeypatch):
    """Make every HTTP(S) download fail fast, as on a machine without internet."""
    import urllib.request

    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    # urlopen (torch.hub's downloads) builds its global opener, proxies included, on first use and
    # keeps it: drop it before, so the dead proxy applies, and after, so it does not outlive the test.
    urllib.request.install_opener(None)
    yield
    urllib.request.install_opener(None)

