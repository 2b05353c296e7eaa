"""Progress bars: tqdm's, redrawn sparsely when the command's output goes to a log, not a terminal.

A terminal shows a bar's redraws (ten a second) on one line; a redirected log (``nohup fennec ...``, CI,
``mlflow run``'s output) keeps every one: thousands of lines in an hour's job. The ``fennec`` command line
calls :func:`redraw_sparsely_into_logs`, after which a bar made while stderr is no terminal redraws every
:data:`~fennec_mlflow.config.LOG_PROGRESS_SECONDS`, unless ``TQDM_MININTERVAL`` says otherwise.
"""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm as _tqdm

from fennec_mlflow.config import LOG_PROGRESS_SECONDS

_sparse = False


def redraw_sparsely_into_logs() -> None:
    global _sparse
    _sparse = "TQDM_MININTERVAL" not in os.environ  # the user's own setting wins (tqdm reads it itself)


def tqdm(*args, **kwargs):
    """A tqdm bar (``tqdm.auto``), redrawn every :data:`LOG_PROGRESS_SECONDS` into a log (see the module)."""
    if _sparse and not sys.stderr.isatty():
        kwargs.setdefault("mininterval", LOG_PROGRESS_SECONDS)
    return _tqdm(*args, **kwargs)
