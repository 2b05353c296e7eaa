"""How many threads torch may use: all cores on a quiet machine, one when the cores are shared.

With every core busy, torch's intra-op thread pool collapses: each parallel region waits at a
barrier for its slowest thread, and a thread the OS has descheduled for another process holds
all of them (measured on 2 cores with two CPU-bound competitors: one pre-training step loop
took 3.6 s on 1 thread and 3.4-27.8 s on 2; docs/benchmarks.md, "Shared cores"). One thread
cannot wait for another, so under load it keeps its fair share.
"""
from __future__ import annotations

import os

from fennec_mlflow.parallel import available_cores

THREADS_ENV = "FENNEC_TORCH_THREADS"


def fair_share_threads() -> int:
    """``$FENNEC_TORCH_THREADS`` when set; else the cores, or 1 when the 1-minute load already fills them."""
    if os.environ.get(THREADS_ENV):
        return max(1, int(os.environ[THREADS_ENV]))
    cores = available_cores()
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return cores
    return cores if load < cores - 0.5 else 1


def use_fair_share_threads() -> int:
    """Set torch's intra-op threads to :func:`fair_share_threads`; returns the number."""
    import torch  # here: the rest of this module serves torch-free processes too

    threads = fair_share_threads()
    torch.set_num_threads(threads)
    return threads
