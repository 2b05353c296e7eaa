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


class tqdm(_tqdm):
    """``tqdm.auto``'s bar, redrawn every :data:`LOG_PROGRESS_SECONDS` into a log (see the module); there a
    new postfix (the cell in flight) shows at the next redraw, not at once."""

    def __init__(self, *args, **kwargs):
        if _sparse and not sys.stderr.isatty():
            kwargs.setdefault("mininterval", LOG_PROGRESS_SECONDS)
        super().__init__(*args, **kwargs)

    def set_postfix_str(self, s="", refresh=True):
        sparse = getattr(self, "mininterval", 0) >= LOG_PROGRESS_SECONDS  # a disabled bar has none
        super().set_postfix_str(s, refresh=refresh and not sparse)
