"""Every default shared by more than one module, defined once.

Defaults that belong to one object stay with it (an estimator's parameters, ``Fennec``'s
constructor); the CLI and MLproject read the shared ones from here, and a test checks that
MLproject's parameter defaults equal the CLI's.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RESOURCES_DIR = Path(__file__).parent / "resources"
TASK_FACTS_CSV = RESOURCES_DIR / "task_facts.csv"
PUBLIC_TABLES_DIR = RESOURCES_DIR / "benchmarks"

DEFAULT_EXPERIMENT = "fennec"
REGISTERED_MODEL = "fennec"
CHAMPION_ALIAS = "champion"

PROBE_SIZE = 500  # images per task probe set (FDA and other estimators) and per proxy sample
PROBE_SEED = 0
IMAGE_SIZE = 32  # size a target's images are loaded at (a folder, REST images) and synthetic tasks rendered
BATCH_SIZE = 64

# Fennec's defaults (the paper's alpha; k is capped at min(M, N) - 1 when the history is small).
FENNEC_K = 4
FENNEC_ALPHA = 0.5
FENNEC_NMF_L2 = 0.1
# "shrunk": popularity plus interactions shrunk by out-of-fold fit; "paper": the paper's eq. 10 merge.
FENNEC_FORMULATION = "shrunk"
# Bandwidth of similar-task popularity, in standardised task-fact units (None: plain popularity);
# see fennec_mlflow.core.recommender.SIMILAR_TASK_FLOOR for how it was chosen.
FENNEC_TASK_BANDWIDTH = 1.0
# A history task known only through a label-based score (FDA), beside tasks with real fine-tunes,
# counts this much in Fennec's popularity part (a fine-tuned task counts 1). On the synthetic and
# real end-to-end benchmarks 0.05-0.2 gave the same mean Pearson (within 0.4 points); 1 (equal
# weight) lost 8.7 points on synthetic, where FDA ranks the source models unlike fine-tuning.
SCORE_ONLY_TASK_WEIGHT = 0.1
FENNEC_DEFAULTS = {"k": FENNEC_K, "alpha": FENNEC_ALPHA, "nmf_l2": FENNEC_NMF_L2}

# The fine-tune grid of the `finetune` entry point (CLI and MLproject).
FINETUNE_LRS = (0.1, 0.01, 0.001, 0.0001)
FINETUNE_WDS = (0.01, 0.001, 0.0001, 0.00001)
FINETUNE_EPOCHS = 30
FINETUNE_PATIENCE = 5
MIN_RELIABLE_TEST_IMAGES = 10  # a smaller test split moves a fine-tune's accuracy in steps of over 10 points
# What a fine-tune trains (issue 16, "recipe"): "full" (every weight, the paper's protocol) or
# "linear-probe" (frozen backbone in eval mode, only the fresh head). Part of a finetune cell's identity;
# finetune runs without a regime tag (written before regimes existed) are "full".
FINETUNE_REGIMES = ("full", "linear-probe")
FINETUNE_REGIME = "full"

TRACKING_CONNECT_TIMEOUT = 5  # seconds an HTTP tracking server gets to answer before a command gives up
# A progress bar's redraw interval when stderr is no terminal (nohup, CI, `mlflow run` into a log): each
# redraw is kept there, so one every 30 s, not ten a second (fennec_mlflow.progress)
LOG_PROGRESS_SECONDS = 30

TUNE_N_TRIALS = 20  # Optuna trials of one `tune` call


def cache_dir(*parts: str) -> Path:
    """``$FENNEC_CACHE_DIR`` (default ``~/.cache/fennec-mlflow``), joined with ``parts``."""
    return Path(os.environ.get("FENNEC_CACHE_DIR", "~/.cache/fennec-mlflow")).expanduser().joinpath(*parts)


@contextmanager
def env_override(**values: str | None) -> Iterator[None]:
    """Set each variable to its value (None: unset it) inside the block; restore afterwards."""
    previous = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
