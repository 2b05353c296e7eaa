"""Fennec: recommend which pre-trained model to fine-tune on a new task (Bai et al., arXiv 2403.06382).

Offline, from history (M models x N tasks), as in the paper:

1. **Transfer phase** (eq. 4). The performance matrix P (NaN = not measured) is standardised per
   task and factorised as P ~ M Dᵀ with non-negative model vectors ``m_i`` and task vectors ``d_j``
   by masked NMF with Frobenius regularisation: ``min ||W ∘ (P − M Dᵀ)||² + λ(||M||² + ||D||²)``.
2. **Proxy regressor** (eq. 6). A random forest maps a task's proxy features ``g_j`` (e.g. the mean
   CLIP embedding of its images), or without them its task facts, to its task vector ``d_j``.
3. **Meta regression** (eq. 8). Ridge on standardised [model facts, task facts, their products].

Online, two formulations (``Fennec(formulation=...)``):

- ``"shrunk"`` (default). Each score is a model effect plus task-conditioned interactions:
  ``score_i = b_i + w_T·m_i·(d̂_t − d̄) + w_M·f_i W (f_t − f̄)``, with ``b_i`` the model's mean
  per-task z-score (what popularity ranks by; with task proxies or facts, a mean weighted toward the
  history tasks whose proxy (for a new task given without one: facts) is close to the new task's,
  see ``SIMILAR_TASK_FLOOR`` and ``PROXY_DISTANCE_UNIT``), ``d̂_t`` the forest's
  task vector and ``d̄`` the mean
  one, ``W`` the meta regression's fact-product weights. The weights are learned from the history
  so that a task is never predicted by a fit that saw it, and only as far as the history proves
  them: on each history task ``j`` the forest's out-of-bag interaction (trees that never saw ``j``)
  is compared with what popularity *without* ``j`` misses there, ``z_j − b_{−j}``; ``w_T`` is that
  slope (pooled over tasks, clipped to [0, 1]), kept only if it raises the mean per-task Pearson on
  the history tasks by half a standard error, and then shrunk by ``1 − 1/t²``, t that gain's mean over
  its standard error (``TRANSFER_GAIN_Z``). ``w_M`` is the lower confidence bound (one-sided ~98%,
  Student's t over tasks) of the slope of a leave-one-task-out ridge's interaction against what the
  transfer part still misses, kept only if it raises the per-task Pearson at that confidence (the
  ranking must improve, not only the fit). See ``TRANSFER_SLOPE_Z`` for why the two differ.
  A handful of tasks, noise facts or a lucky task give weight 0 and the popularity ranking; a
  history where the task information truly predicts the pattern earns its weight. No task information at all is valid and ranks by ``b`` (popularity), said so.
  ``score`` is the predicted z-score on the new task (0 = an average model, 1 = one std better).
- ``"paper"``: eq. 10, ``score_i = (1 − alpha)·z(m_i·d̂_t) + alpha·z(meta_it)``, z-scored across
  candidates, and the fold-in warm start below.

Warm start (``known_scores``: a few models' scores on the new task, on P's raw scale).

- Shrunk, first step: the bias becomes popularity among the history tasks whose raw scores on the
  known models lie close to the known scores (kernel ``exp(−d²/2h²)`` on their root-mean-square
  difference), when the history vouches for it at these known models: each history task in turn
  plays the new task, told its own scores of them, and a bandwidth is used only if it raises the
  per-task Pearson beyond doubt (the interaction weights' rule; at least
  ``KNOWN_LEVEL_MIN_TASKS`` history tasks). The level says which tasks are alike (a fine-grained
  task's low accuracies) where three centred scores cannot.
- Shrunk, then: a Gaussian posterior. The prior mean is the cold prediction; the prior covariance of
  the new task's scores is the Ledoit-Wolf estimate from the history's residual vectors (what the
  cold prediction left unexplained, one vector per task): ``(1 − ρ)·RᵀR/N + ρ·μ·I``. The task's offset
  is unknown (flat prior): only the known scores' deviations from their mean inform the others.
  Their scale is what their own spread implies under the prior (three or more scores; two get the
  history's typical task spread), so the posterior ranks % and fractions alike; the first step
  reads P's raw scale, and known scores matching no history task's level skip it. The posterior
  runs only where the history expects it to help at these known models: each history task with
  the most evidence plays the new task (its cold out-of-fold prediction, told its own z-scores of
  the known models, the covariance from the other tasks' residuals recomputed without it), and
  the mean gain in Pearson on its other models must be positive, and at least 3 history tasks
  must have measured the known models to say so; otherwise the known scores are not propagated,
  and the basis says so. (On a zoo of ImageNet models whose tasks share little beyond
  popularity, 5 known scores otherwise made the others' ranking worse than cold.)
- Paper: the task is folded into the transfer space by ridge NNLS on the known models' vectors
  (standardised values, centred vectors: the direction of the task vector, not its offset) and
  mixed with the proxy's estimate with weight ``n / (n + warm_start_prior)``.

Decisions the paper leaves open: per-task standardisation before NMF (tasks of different scales
and difficulty weigh the same), one global shift to non-negative values, ridge rather than OLS for
the meta regression (one-hot families are collinear with the intercept), and fact-product terms
(an additive meta model ranks every task's models alike).

Fitted state is plain arrays plus one scikit-learn forest, so the object pickles.
"""
from __future__ import annotations

import functools
import hashlib
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import linalg as scipy_linalg
from scipy.optimize import nnls
from scipy.stats import norm, t as student_t
from sklearn.base import BaseEstimator
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.ensemble import RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.utils import check_random_state

from fennec_mlflow.config import (
    FENNEC_ALPHA,
    FENNEC_FORMULATION,
    FENNEC_K,
    FENNEC_NMF_L2,
    FENNEC_TASK_BANDWIDTH,
)
from fennec_mlflow.errors import InvalidInputError

RANKING_COLUMNS = ["model", "score", "bias_score", "transfer_score", "meta_score", "known_score", "rank"]

# Keeps multiplicative updates away from 0/0 without changing them measurably.
_EPS = 1e-12


def normalize_tasks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per-task standardisation plus one global shift to non-negative values; NaN stays NaN.

    Returns (normalised, task_mean, task_std, shift): ``normalised = (values − mean) / std + shift``.
    """
    task_mean = np.nanmean(values, axis=0)
    task_std = np.nanstd(values, axis=0)
    # A task whose observed scores are all equal carries no ranking information; std 1 keeps it finite.
    task_std = np.where(task_std > 0, task_std, 1.0)
    standardised = (values - task_mean) / task_std
    shift = float(-np.nanmin(standardised))
    return standardised + shift, task_mean, task_std, shift


def masked_nmf(values: np.ndarray, observed: np.ndarray, k: int, l2: float, *, max_iter: int = 5000,
               tol: float = 1e-6, random_state=0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-negative ``values ~ M Dᵀ`` fitted on the observed cells only (paper eq. 4).

    Minimises ``||W ∘ (values − M Dᵀ)||² + l2·(||M||² + ||D||²)`` with weighted multiplicative updates
    (Lee & Seung's auxiliary-function argument with the mask as weights: each update cannot
    increase the objective). Unobserved cells never enter the computation, whatever they hold.
    Stops when the relative decrease of the objective falls below ``tol`` or after ``max_iter``
    sweeps. Returns (M, D, objective history: the objective at the start and after each sweep).
    """
    mask = observed.astype(float)
    target = np.where(observed, values, 0.0)
    if np.any(target < 0):
        raise InvalidInputError("masked_nmf needs non-negative observed values")
    n_rows, n_cols = target.shape
    rng = check_random_state(random_state)
    # Start where M Dᵀ has the data's mean level, so early sweeps fit structure rather than scale.
    scale = np.sqrt(max(target.sum() / max(mask.sum(), 1.0), _EPS) / k)
    model_vectors = scale * rng.uniform(0.5, 1.5, size=(n_rows, k))
    task_vectors = scale * rng.uniform(0.5, 1.5, size=(n_cols, k))

    def objective(product: np.ndarray) -> float:
        residual = mask * (target - product)
        return float(np.sum(residual ** 2) + l2 * (np.sum(model_vectors ** 2) + np.sum(task_vectors ** 2)))

    # The product M Dᵀ after each sweep serves both the objective and the next sweep's first update.
    product = model_vectors @ task_vectors.T
    history = [objective(product)]
    for _ in range(max_iter):
        model_vectors *= (target @ task_vectors) / ((mask * product) @ task_vectors + l2 * model_vectors + _EPS)
        product = model_vectors @ task_vectors.T
        task_vectors *= (target.T @ model_vectors) / ((mask * product).T @ model_vectors + l2 * task_vectors + _EPS)
        product = model_vectors @ task_vectors.T
        history.append(objective(product))
        if history[-2] - history[-1] <= tol * max(history[-2], _EPS):
            break
    return model_vectors, task_vectors, np.asarray(history)


def fold_in(known_vectors: np.ndarray, known_values: np.ndarray, l2: float) -> np.ndarray | None:
    """A task vector ``d >= 0`` whose scores ``known_vectors @ d`` follow ``known_values`` up to an affine map.

    Ridge NNLS on centred vectors and standardised values: ``min ||C y − C V d||² + l2·||d||²``, solved
    as plain NNLS on the ridge-augmented system. None when the values cannot say anything about
    the order (fewer than two, or all equal).
    """
    known_values = np.asarray(known_values, dtype=float)
    spread = known_values.std()
    if known_values.size < 2 or not spread > 0:
        return None
    centred_values = (known_values - known_values.mean()) / spread
    centred_vectors = known_vectors - known_vectors.mean(axis=0)
    k = known_vectors.shape[1]
    design = np.vstack([centred_vectors, np.sqrt(l2) * np.eye(k)])
    response = np.concatenate([centred_values, np.zeros(k)])
    task_vector, _ = nnls(design, response)
    return task_vector


def zscore(scores: np.ndarray) -> np.ndarray:
    """Scores standardised across candidates; all zeros when they do not vary."""
    spread = scores.std()
    if not spread > 1e-12 * max(1.0, np.abs(scores).max()):
        return np.zeros_like(scores)
    return (scores - scores.mean()) / spread


def _numeric_table(table, name: str, index: pd.Index, index_kind: str,
                   allow_unknown: bool = False) -> tuple[np.ndarray, list[str]]:
    """``table``'s rows for ``index``, as a float array, with clear errors for what cannot be used;
    ``allow_unknown``: NaN stands for a value not known (infinite values are still refused)."""
    if not isinstance(table, pd.DataFrame):
        raise InvalidInputError(f"{name} must be a pandas DataFrame indexed by {index_kind}, got {type(table).__name__}")
    if not table.index.is_unique:
        duplicated = table.index[table.index.duplicated()].unique().tolist()
        raise InvalidInputError(f"{name} has duplicated {index_kind} in its index: {duplicated[:5]}")
    missing = index.difference(table.index)
    if len(missing):
        raise InvalidInputError(f"{name} lacks rows for {len(missing)} {index_kind} of P: {missing.tolist()[:5]}")
    if table.shape[1] == 0:
        raise InvalidInputError(f"{name} has no columns")
    non_numeric = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if non_numeric:
        raise InvalidInputError(f"{name} has non-numeric column(s) {non_numeric[:5]}; encode them first (e.g. one-hot)")
    rows = table.loc[index].to_numpy(dtype=float)
    bad = np.isinf(rows) if allow_unknown else ~np.isfinite(rows)
    if bad.any():
        columns = table.columns[bad.any(axis=0)].tolist()
        raise InvalidInputError(f"{name} has {'' if allow_unknown else 'NaN or '}infinite values in column(s) "
                                f"{columns[:5]}")
    return rows, [str(c) for c in table.columns]


class FlatForest:
    """A fitted random forest's trees in a few flat arrays, so that one sample walks every tree at once.

    Online ranking predicts one task at a time, and the forest dominated its latency: calling each
    of 200 trees costs ~0.6 ms, scoring 1,000 models 0.002 ms. Walking all trees together is one
    small vectorised step per tree level. Splits compare the sample cast to float32, as
    ``forest.predict`` does, so the result equals it to rounding.
    """

    def __init__(self, forest: RandomForestRegressor):
        trees = [estimator.tree_ for estimator in forest.estimators_]
        sizes = np.array([tree.node_count for tree in trees])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.roots = offsets.astype(np.intp)

        def children(side: str) -> np.ndarray:
            return np.concatenate([np.where(getattr(tree, side) >= 0, getattr(tree, side) + offset, -1)
                                   for tree, offset in zip(trees, offsets)]).astype(np.intp)

        self.left, self.right = children("children_left"), children("children_right")
        # leaves have feature -2; they are never split on, any valid index does
        self.feature = np.concatenate([np.maximum(tree.feature, 0) for tree in trees]).astype(np.intp)
        self.threshold = np.concatenate([tree.threshold for tree in trees])
        self.value = np.concatenate([tree.value[:, :, 0] for tree in trees])  # (nodes, outputs)

    def predict_one(self, features: np.ndarray) -> np.ndarray:
        sample = features.astype(np.float32).astype(np.float64)
        node = self.roots
        while True:
            left = self.left[node]
            inner = left >= 0
            if not inner.any():
                return self.value[node].mean(axis=0)
            goes_left = sample[self.feature[node]] <= self.threshold[node]
            node = np.where(inner, np.where(goes_left, left, self.right[node]), node)


def _standardise_columns(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and spreads (1 where a column is constant); of the known values where some are
    NaN (unknown task facts), 0 and 1 for a column with none known."""
    if np.isnan(features).any():
        known = ~np.isnan(features)
        counts = known.sum(axis=0)
        mean = np.where(known, features, 0.0).sum(axis=0) / np.maximum(counts, 1)
        std = np.sqrt(np.where(known, (features - mean) ** 2, 0.0).sum(axis=0) / np.maximum(counts, 1))
    else:
        mean = features.mean(axis=0)
        std = features.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def _filled(features: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """``features`` with unknown (NaN) values replaced by ``fill``, per column."""
    return np.where(np.isnan(features), fill, features)


def _feature_row(row, columns: list[str], name: str, allow_unknown: bool = False) -> np.ndarray:
    """One task's feature vector in the fitted column order, from a Series, dict, 1-row DataFrame or array;
    ``allow_unknown``: NaN stands for a fact not known."""
    if isinstance(row, pd.DataFrame):
        if len(row) != 1:
            raise InvalidInputError(f"{name} must hold one task, got {len(row)} rows")
        row = row.iloc[0]
    if isinstance(row, pd.Series) and len(row) == len(columns) and list(map(str, row.index)) == columns \
            and pd.api.types.is_numeric_dtype(row.dtype):
        values = row.to_numpy(dtype=float)  # the served model's usual case: already in fitted order
    elif isinstance(row, (pd.Series, Mapping)):
        row = pd.Series(row)
        row.index = row.index.map(str)
        missing = [c for c in columns if c not in row.index]
        if missing:
            raise InvalidInputError(f"{name} lacks column(s) {missing}; the model was fitted with {columns}")
        values = pd.to_numeric(row[columns], errors="coerce").to_numpy(dtype=float)
    else:
        values = np.asarray(row, dtype=float).ravel()
        if values.size != len(columns):
            raise InvalidInputError(f"{name} has {values.size} values; the model was fitted with {len(columns)}: {columns}")
    bad = np.isinf(values) if allow_unknown else ~np.isfinite(values)
    if bad.any():
        raise InvalidInputError(f"{name} has {'infinite' if allow_unknown else 'missing, non-numeric or infinite'} "
                                f"values for {[c for c, b in zip(columns, bad) if b]}")
    return values


FORMULATIONS = ("shrunk", "paper")
# The confidence an interaction must clear before it gets weight, as a normal quantile (one-sided
# ~98%); with G history tasks the bound uses Student's t with G - 1 degrees of freedom and the
# small-sample factor sqrt(G / (G - 1)), as cluster-robust inference with few clusters must. On
# random small sub-tables of the public tables (benchmarks/heldout_tables.py) looser bounds let
# chance weights through that lost up to 1 Pearson point to popularity.
SLOPE_CONFIDENCE_Z = 2.0
# The transfer interaction (the paper's own mechanism: NMF task vectors regressed from the proxy or
# the facts) is weighted by the history's slope itself, its empirical-Bayes shrinkage factor, not
# that slope's lower bound, and kept where it raises the history's mean per-task Pearson by half a
# standard error (the meta interaction keeps the bound above: its ridge of model facts x task facts
# let chance weights through on PARC). With the 10 history tasks of a published table of 12
# self-supervised models x 11 targets (convolutional fine-tuning), the slope was 0.3 to 0.5 for
# every target and its bound 0, and the default stayed 7 points below the paper's formulation.
# Measured side by side (issue 13, note of 2026-11-30): that table +3.5 -> +7.5 over popularity,
# TransferGraph +0.8 -> +1.1, PARC unchanged, 50 random sub-tables (benchmarks/heldout_tables.py
# draws) +1.28 -> +1.30, one of them -3.9 (a remote-sensing target whose facts lie outside its
# history's), the real end-to-end benchmark 77.5 -> 77.4 with its top-1 regret 8.5 -> 5.1 points.
TRANSFER_SLOPE_Z = 0.0
TRANSFER_GAIN_Z = 0.5
# Below this many history tasks neither interaction is weighed: their checks have too few tasks to
# vouch for anything, and a lucky few pass them. On 60 random sub-tables of 4 to 7 tasks (3 to 6 in each
# fold's history; `benchmarks/heldout_tables.py --tables 30 --seed 0|1 --models 5-12 --tasks 4-7`)
# checks from 3 tasks on let through a transfer weight of 0.94 that cost a target 27 Pearson points
# against popularity and a meta weight of 1.0 that cost another 22; from 8 on, the mean lead over
# popularity went from +0.20 / +0.23 to +0.32 / +1.07 and the worst table from -5.5 / -17.9 to -3.6 / -3.9;
# larger sub-tables (4-11 and 7-11 tasks) moved by at most 0.04, PARC, PARC-6 and TransferGraph not at all.
INTERACTION_MIN_TASKS = 8
# Kept, that slope is shrunk by the positive-part James-Stein factor 1 - 1/t² of the history's gain
# (t: the mean per-task Pearson gain over its standard error): a gain the history barely vouches for
# gets a fraction of its slope. A fold of a published 16-model table (Kornblith et al. 2019, Pets the
# target) kept a slope of 0.69 on a gain of t = 1.35 and lost 14 Pearson points on its target; shrunk,
# that table went from 0.3 below popularity to 0.4 above. Over 100 random sub-tables
# (`benchmarks/heldout_tables.py --tables 20 --seed 0..4`) the mean lead over popularity went from
# +0.93 to +1.04 points and the worst table from -3.71 to -1.13 (per seed: +1.06/+0.38/+1.51/+0.79/+0.92
# -> +0.96/+1.02/+1.30/+0.94/+0.98); TransferGraph 76.5 -> 76.2, PARC 72.0 -> 72.1 (issue 13, 2026-12-02).


def bias_scores(standardised: np.ndarray, task_weights: np.ndarray | None = None) -> np.ndarray:
    """Each model's mean per-task z-score over its observed tasks: the popularity baseline (0 when unseen).

    ``task_weights`` (one per task) makes it a weighted mean: popularity among similar tasks;
    (tasks, k) gives k weightings at once, (models, k).
    """
    weights = np.ones(standardised.shape[1]) if task_weights is None else task_weights
    observed = (~np.isnan(standardised)).astype(float)  # float: a boolean matrix product skips BLAS
    counts = observed @ weights
    sums = np.where(observed, standardised, 0.0) @ weights
    return np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), 0.0)


# Similar-task popularity: a history task's weight in the bias is exp(−d²/2h²) + floor, with d
# the root-mean-square difference of the standardised task facts and h ``task_bandwidth``. The
# floor keeps every task in: a new task unlike all of the history gets popularity, not the
# ranking of whichever task happens to be least far. On 43 random sub-tables of the public tables
# (benchmarks/heldout_tables.py draws, seeds 0 and 1) h = 1 with floor 0.2 beat plain popularity
# on 33 and trailed on 9 (mean +0.8 Pearson points, worst -1.4); without the floor the worst was -2.2.
SIMILAR_TASK_FLOOR = 0.2
# With task proxies (statistics of the task's images) the distance is the proxy's: the root-mean-square
# difference of the standardised proxy features, in units of this fraction of the median distance
# between two history tasks (high-dimensional distances crowd around their median, so only the tasks
# clearly nearer than most count more). On the end-to-end benchmarks (`fennec evaluate --benchmark
# real|synthetic`), 0.5 against the task facts' distance: cold +0.7 / +0.6 mean Pearson points, with 3
# known fine-tunes +1.9 / +1.0, with 5 +3.4 / +0.1 (0.35: +0.5 / +0.8 cold; the facts and the proxy
# averaged, 0.5: +0.1 / +1.0).
PROXY_DISTANCE_UNIT = 0.5


# Beyond this many bandwidths every history task's kernel is under 0.05 (against the floor's 0.2):
# the bias is nearly plain popularity, and the basis says the target is unlike the history.
UNLIKE_HISTORY_BANDWIDTHS = 2.5


def similar_task_weights(distances: np.ndarray, bandwidth: float) -> np.ndarray:
    """Kernel weights of history tasks from their task-fact (or proxy) distances (see ``SIMILAR_TASK_FLOOR``).

    An infinite distance (no fact known to both tasks) says nothing of how alike they are: that
    task gets the mean kernel of the tasks whose distance is known (all alike when none is), not
    the floor, which would hand the ranking to the few tasks with known facts. NaN marks an entry
    left out of that mean (a history task compared with itself) and gets the kernel of distance 0.
    """
    kernel = np.exp(-0.5 * (distances / bandwidth) ** 2)
    unknown = np.isinf(distances)
    if unknown.any():
        counted = np.isfinite(distances)
        counts = counted.sum(axis=-1, keepdims=True)
        mean = np.where(counts > 0, np.where(counted, kernel, 0.0).sum(axis=-1, keepdims=True)
                        / np.maximum(counts, 1), 1.0)
        kernel = np.where(unknown, mean, kernel)
    return np.nan_to_num(kernel, nan=1.0) + SIMILAR_TASK_FLOOR


def task_fact_distances(rows: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Root-mean-square difference between standardised task-fact (or proxy) rows: (len(rows), len(others)).

    Through the inner products, not the differences: a warm start compares every history task with
    every other, and a (tasks, tasks, proxy features) difference array is 180 MB at 400 tasks.
    An unknown fact (NaN) is left out of the pair's mean; a pair sharing no known fact is infinitely far
    apart. Filled in with an average, unknown facts made every task without them alike: a table of 4
    public datasets and 4 of the user's own ranked each own task by the other three, 2.5 Pearson points
    below popularity."""
    known_rows, known_others = ~np.isnan(rows), ~np.isnan(others)
    if known_rows.all() and known_others.all():
        squared = (rows ** 2).sum(axis=1)[:, None] + (others ** 2).sum(axis=1)[None, :] - 2.0 * rows @ others.T
        return np.sqrt(np.maximum(squared, 0.0) / rows.shape[1])
    rows, others = np.where(known_rows, rows, 0.0), np.where(known_others, others, 0.0)
    known_rows, known_others = known_rows.astype(float), known_others.astype(float)
    squared = (rows ** 2) @ known_others.T + known_rows @ (others ** 2).T - 2.0 * rows @ others.T
    shared = known_rows @ known_others.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(shared > 0, np.sqrt(np.maximum(squared, 0.0) / shared), np.inf)


@dataclass
class SimilaritySpace:
    """Where a new task is compared with the history tasks: their standardised proxies (or facts)
    and the distance unit."""
    source: str  # "task_proxy" or "task_meta": which row of a new task it reads
    mean: np.ndarray
    std: np.ndarray
    rows: np.ndarray  # (history tasks, features), standardised
    unit: float

    @classmethod
    def of(cls, source: str, features: np.ndarray) -> "SimilaritySpace":
        mean, std = _standardise_columns(features)
        rows = (features - mean) / std
        unit = 1.0
        if source == "task_proxy" and len(rows) >= 2:  # see PROXY_DISTANCE_UNIT
            pairs = task_fact_distances(rows, rows)[~np.eye(len(rows), dtype=bool)]
            unit = PROXY_DISTANCE_UNIT * float(np.median(pairs)) or 1.0
        return cls(source, mean, std, rows, unit)

    def standardise(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) / self.std

    def distances(self, standardised_rows: np.ndarray) -> np.ndarray:
        """(rows, history tasks), in units of the space."""
        return task_fact_distances(standardised_rows, self.rows) / self.unit


# Warm start, first step: popularity among the history tasks whose raw scores on the known models
# lie close to the new task's known scores. The level says as much as the pattern (a fine-grained
# task's low accuracies, a near-saturated one's high ones), and the posterior (flat prior on the
# task's offset) discards it. Bandwidths are in units of the history's median task spread; one, or
# none, is chosen per query by the history itself (``Fennec._known_level_bandwidth``). That check
# needs enough history tasks: on 20 random sub-tables of 7-11 tasks each (seeds 3 and 4 of
# benchmarks/heldout_tables.py's draws), allowed from 3 history tasks, it changed the result on 11
# and 9 tables and trailed the posterior alone on 10 and 6 of them (worst -0.9 Pearson points);
# from 10 tasks on it never fired there, while TransferGraph (12 history tasks, 180 models) gained
# +1.0 with 3 known scores (`python benchmarks/warm_start_variants.py [--subtables 20 --seed 3]`).
KNOWN_LEVEL_BANDWIDTHS = (0.5, 1.0, 2.0, 4.0)
KNOWN_LEVEL_MIN_TASKS = 10


def known_level_distances(known_history: np.ndarray, known_values: np.ndarray) -> np.ndarray:
    """Root-mean-square difference between each history task's raw scores of the known models and
    the known values, over the measured ones (inf for a task with none).

    ``known_history``: (known models, tasks), NaN = not measured. ``known_values``: (known models,)
    for one new task, giving (tasks,), or (known models, rows) for several, giving (rows, tasks).
    """
    values = known_values[:, None] if known_values.ndim == 1 else known_values
    differences = known_history[:, None, :] - values[:, :, None]
    measured = np.isfinite(differences)
    counts = measured.sum(axis=0)
    squared = np.where(measured, differences ** 2, 0.0).sum(axis=0) / np.maximum(counts, 1)
    distances = np.where(counts > 0, np.sqrt(squared), np.inf)
    return distances[0] if known_values.ndim == 1 else distances


def known_level_kernel(distances: np.ndarray, bandwidth: float) -> np.ndarray:
    """Kernel weights ``exp(−(d² − d²_min)/2h²)`` along the last axis: the nearest task gets 1 (no
    underflow), an unmeasured one (inf) 0; a row with no measured task is all 0."""
    nearest = distances.min(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        kernel = np.exp(-(distances ** 2 - nearest ** 2) / (2.0 * bandwidth ** 2))
    return np.where(np.isfinite(nearest), np.nan_to_num(kernel, nan=0.0), 0.0)


@dataclass
class _TransferPart:
    """One fit of the transfer phase on some history tasks: model vectors, a regressor to task vectors."""

    model_vectors: np.ndarray
    task_vectors: np.ndarray
    regressor: RandomForestRegressor
    mean_task_vector: np.ndarray
    objective_history: np.ndarray
    out_of_bag_vectors: np.ndarray | None  # (tasks, k): each task's vector from the trees that did not see it (NaN: none)

    def interaction(self, task_features: np.ndarray) -> np.ndarray:
        """``m_i · (d̂_t − d̄)``: how the predicted task vector moves each model away from its average."""
        predicted = np.atleast_2d(self.regressor.predict(task_features))
        if predicted.shape[0] != task_features.shape[0]:  # k = 1: scikit-learn returns a flat vector
            predicted = predicted.T
        return self.model_vectors @ (predicted - self.mean_task_vector).T


def _fit_transfer(normalised: np.ndarray, observed: np.ndarray, task_features: np.ndarray, *, k: int, l2: float,
                  max_iter: int, tol: float, random_state, n_trees: int, out_of_bag: bool = False) -> _TransferPart:
    """``out_of_bag``: also predict each history task from the trees that did not see it (the
    shrinkage's held-out view, from the same forest: no second fit)."""
    model_vectors, task_vectors, history = masked_nmf(normalised, observed, k, l2, max_iter=max_iter, tol=tol,
                                                      random_state=random_state)
    regressor = RandomForestRegressor(n_estimators=n_trees, random_state=random_state, oob_score=out_of_bag)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a task no tree left out: handled below
        # A 1-column target would trigger scikit-learn's column-vector warning: pass it flat when k = 1.
        regressor.fit(task_features, task_vectors if k > 1 else task_vectors[:, 0])
    out_of_bag_vectors = None
    if out_of_bag:
        out_of_bag_vectors = np.asarray(regressor.oob_prediction_, dtype=float).reshape(len(task_vectors), -1)
        # scikit-learn predicts 0 for a task every tree drew: it has no held-out view.
        in_every_bag = np.logical_and.reduce([np.isin(np.arange(len(task_vectors)), drawn)
                                              for drawn in regressor.estimators_samples_])
        out_of_bag_vectors[in_every_bag] = np.nan
    return _TransferPart(model_vectors, task_vectors, regressor, task_vectors.mean(axis=0), history,
                         out_of_bag_vectors)


@dataclass
class _MetaPart:
    """One fit of the meta regression (eq. 8): ridge on standardised [model facts, task facts, products]."""

    model_weights: np.ndarray
    task_weights: np.ndarray
    interaction_weights: np.ndarray  # (model facts, task facts)
    intercept: float
    mean_task: np.ndarray  # mean standardised task facts of the tasks it was fitted on

    def scores(self, model_rows: np.ndarray, task_row: np.ndarray) -> np.ndarray:
        """The ridge prediction for each model on one task (one matrix-vector product)."""
        weights = self.model_weights + self.interaction_weights @ task_row
        return model_rows @ weights + (self.task_weights @ task_row + self.intercept)

    def interaction(self, model_rows: np.ndarray, task_rows: np.ndarray) -> np.ndarray:
        """The task-dependent part for each model on each task: ``f_i W (f_t − f̄)``; (models, tasks)."""
        return model_rows @ self.interaction_weights @ (task_rows - self.mean_task).T


def _meta_design(model_rows: np.ndarray, task_rows: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                 interactions: bool) -> np.ndarray:
    """One row per observed cell (model ``rows[c]``, task ``cols[c]``): [model facts, task facts, their products]."""
    parts = [model_rows[rows], task_rows[cols]]
    if interactions:
        parts.append((model_rows[rows][:, :, None] * task_rows[cols][:, None, :]).reshape(len(rows), -1))
    return np.hstack(parts)


def _meta_part(coef: np.ndarray, intercept: float, n_model: int, task_rows: np.ndarray,
               interactions: bool) -> _MetaPart:
    n_task = task_rows.shape[1]
    interaction = (coef[n_model + n_task:].reshape(n_model, n_task) if interactions
                   else np.zeros((n_model, n_task)))
    return _MetaPart(coef[:n_model], coef[n_model:n_model + n_task], interaction, float(intercept),
                     task_rows.mean(axis=0))


def _fit_meta(model_rows: np.ndarray, task_rows: np.ndarray, normalised: np.ndarray, observed: np.ndarray, *,
              l2: float, interactions: bool) -> _MetaPart:
    rows, cols = np.nonzero(observed)
    ridge = Ridge(alpha=l2).fit(_meta_design(model_rows, task_rows, rows, cols, interactions), normalised[rows, cols])
    return _meta_part(ridge.coef_, ridge.intercept_, model_rows.shape[1], task_rows, interactions)


def _ridge_from_sums(count: float, x_sum: np.ndarray, y_sum: float, gram: np.ndarray, xy: np.ndarray,
                     l2: float) -> tuple[np.ndarray, float]:
    """Ridge with an intercept (scikit-learn's ``Ridge``: centred, the intercept unpenalised) from the
    design's sums: count, column sums, the target's sum, X'X and X'y."""
    x_mean, y_mean = x_sum / count, y_sum / count
    system = gram - count * np.outer(x_mean, x_mean) + l2 * np.eye(len(gram))
    right = xy - count * x_mean * y_mean
    try:
        coef = scipy_linalg.solve(system, right, assume_a="pos")
    except scipy_linalg.LinAlgError:  # l2 = 0 and a singular design, as scikit-learn falls back
        coef = scipy_linalg.lstsq(system, right)[0]
    return coef, float(y_mean - x_mean @ coef)


def leave_one_task_out_meta(model_rows: np.ndarray, task_rows: np.ndarray, normalised: np.ndarray,
                            observed: np.ndarray, *, l2: float, interactions: bool) -> np.ndarray:
    """(tasks, models): each task's meta interaction from the ridge fitted without it.

    With fewer design columns than cells (the usual case) every fold is the whole's normal
    equations minus the task's own rows: one pass over the design instead of one per task.
    Otherwise each fold is fitted as :func:`_fit_meta` does (scikit-learn then solves the dual)."""
    n_models, n_tasks = normalised.shape
    predicted = np.zeros((n_tasks, n_models))
    rows, cols = np.nonzero(observed)
    n_model, n_task = model_rows.shape[1], task_rows.shape[1]
    if n_model + n_task + (n_model * n_task if interactions else 0) >= len(rows):
        for j in range(n_tasks):
            train = np.arange(n_tasks) != j
            part = _fit_meta(model_rows, task_rows[train], normalised[:, train], observed[:, train], l2=l2,
                             interactions=interactions)
            predicted[j] = part.interaction(model_rows, task_rows[[j]])[:, 0]
        return predicted
    design = _meta_design(model_rows, task_rows, rows, cols, interactions)
    target = normalised[rows, cols]
    total = (len(rows), design.sum(axis=0), target.sum(), design.T @ design, design.T @ target)
    for j in range(n_tasks):
        own = cols == j
        x, y = design[own], target[own]
        coef, intercept = _ridge_from_sums(total[0] - len(y), total[1] - x.sum(axis=0), total[2] - y.sum(),
                                           total[3] - x.T @ x, total[4] - x.T @ y, l2)
        train = np.arange(n_tasks) != j
        part = _meta_part(coef, intercept, n_model, task_rows[train], interactions)
        predicted[j] = part.interaction(model_rows, task_rows[[j]])[:, 0]
    return predicted


def slope_lower_bound(predicted: np.ndarray, true: np.ndarray, z: float = SLOPE_CONFIDENCE_Z) -> float:
    """Lower confidence bound of the slope of ``true`` on ``predicted`` (tasks x models), clipped to [0, 1].

    The slope is pooled over tasks (each task's own slope weighted by its ``x·x``) and its
    standard error is the sandwich estimate over tasks, the units of replication (cells of one
    task share its noise), with the few-cluster corrections of :data:`SLOPE_CONFIDENCE_Z`. NaN in ``true`` = unobserved. Fewer than two informative tasks give 0.
    """
    observed = np.isfinite(true)
    x = np.where(observed, predicted, 0.0)
    y = np.where(observed, true, 0.0)
    weights = np.einsum("ij,ij->i", x, x)
    informative = weights > 1e-12
    if informative.sum() < 2:
        return 0.0
    x, y, weights = x[informative], y[informative], weights[informative]
    per_task = np.einsum("ij,ij->i", x, y) / weights
    pooled = float(weights @ per_task / weights.sum())
    n_tasks = per_task.size
    standard_error = (float(np.sqrt(np.sum(weights ** 2 * (per_task - pooled) ** 2)) / weights.sum())
                      * np.sqrt(n_tasks / (n_tasks - 1)))
    return float(np.clip(pooled - critical_value(z, n_tasks) * standard_error, 0.0, 1.0))


def critical_value(z: float, n_tasks: int) -> float:
    """Student's t quantile with ``n_tasks - 1`` degrees of freedom at the normal ``z``'s level."""
    return float(student_t.ppf(norm.cdf(z), df=n_tasks - 1))


def _pearson_rows(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair over its observed (finite) entries; NaN when undefined
    (fewer than 3 observed entries, or either row constant there)."""
    observed = np.isfinite(true)
    counts = observed.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        x_centred = np.where(observed, predicted - np.where(observed, predicted, 0.0).sum(axis=1, keepdims=True)
                             / counts[:, None], 0.0)
        y_centred = np.where(observed, true - np.where(observed, true, 0.0).sum(axis=1, keepdims=True)
                             / counts[:, None], 0.0)
        correlation = (x_centred * y_centred).sum(axis=1) / np.sqrt((x_centred ** 2).sum(axis=1)
                                                                    * (y_centred ** 2).sum(axis=1))

    def varies(values: np.ndarray) -> np.ndarray:
        return np.where(observed, values, -np.inf).max(axis=1) > np.where(observed, values, np.inf).min(axis=1)

    return np.where((counts >= 3) & varies(predicted) & varies(true), correlation, np.nan)


def gain_is_certain(base: np.ndarray, addition: np.ndarray, true: np.ndarray, z: float = SLOPE_CONFIDENCE_Z) -> bool:
    """Whether adding ``addition`` to ``base`` raises the per-task Pearson with ``true`` beyond doubt.

    All (tasks, models); the mean per-task gain must clear ``z`` standard errors over tasks. The
    slope bound alone let small meta weights through that lost to popularity on held-out tables.
    """
    return mean_gain_is_certain(_pearson_rows(base + addition, true) - _pearson_rows(base, true), z)


def mean_gain_is_certain(gains: np.ndarray, z: float = SLOPE_CONFIDENCE_Z) -> bool:
    """Whether the mean of per-task ``gains`` (NaN skipped) clears ``z`` standard errors (Student's t)."""
    gains = gains[np.isfinite(gains)]
    if gains.size < 2:
        return False
    return bool(gains.mean() - critical_value(z, gains.size) * gains.std(ddof=1) / np.sqrt(gains.size) > 0)


def gain_t_statistic(gains: np.ndarray) -> float:
    """The mean of per-task ``gains`` (NaN skipped) over its standard error; NaN with fewer than 2,
    infinite when every gain is the same positive number."""
    gains = gains[np.isfinite(gains)]
    if gains.size < 2:
        return float("nan")
    error = gains.std(ddof=1) / np.sqrt(gains.size)
    return float(gains.mean() / error) if error > 0 else float(np.copysign(np.inf, gains.mean()))


def leave_one_out_bias(standardised: np.ndarray, task_weights: np.ndarray | None = None) -> np.ndarray:
    """(tasks, models): each model's mean z-score over the *other* observed tasks (0 when none).

    What popularity would predict for each history task had that task been new. ``task_weights``
    (tasks x tasks, row j = the weights of the history tasks when j is new) weighs the others.
    """
    n_tasks = standardised.shape[1]
    sums, counts = _out_of_fold_sums(standardised, np.ones((n_tasks, n_tasks)) if task_weights is None
                                     else task_weights)
    return np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), 0.0)


def _out_of_fold_sums(standardised: np.ndarray, task_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tasks, models) weighted sums of the other tasks' z-scores, and their weighted counts."""
    weights = task_weights.copy()
    np.fill_diagonal(weights, 0.0)
    observed = ~np.isnan(standardised)
    return weights @ np.where(observed, standardised, 0.0).T, weights @ observed.T.astype(float)


def posterior_mean(prior: np.ndarray, residuals: np.ndarray, shrinkage: float, known: np.ndarray,
                   known_z: np.ndarray, noise: float = 1.0) -> np.ndarray:
    """Gaussian conditional mean of every model's score given a few known ones, up to the task's offset.

    The prior covariance is the Ledoit-Wolf estimate from the history's out-of-fold residual
    vectors (one row per task): ``(1 − ρ)·RᵀR/N + ρ·μ·I``. The new task's offset is unknown (a flat
    prior), so only the known scores' deviations from their mean inform the others. A known score
    is one noisy fine-tune, not the model's true level: it carries observation noise of variance
    ``noise``·μ (μ the mean residual variance). Without it, 3 known scores made PARC's ranking of
    the other models 1.7 points worse than cold; with it 0.3 (and +1.9 on PARC's full table);
    0.1x to 3x moved the figure by under half a point (benchmarks/warm_start_variants.py).

    The target's slope on its prior is unknown too (a flat prior): from
    :data:`POSTERIOR_SLOPE_MIN_KNOWN` known models on, the known scores' deviations along the prior's
    own pattern at them (the target follows the cold ranking more or less steeply than the history's
    average task) are not propagated, only what neither the offset nor that slope explains. A cold
    prediction is a shrunk average, flatter than a real task; read as a residual, that flatness moved
    the other models along whatever the covariance links to the known ones.
    """
    n_tasks = residuals.shape[0]
    scale = float(np.mean(residuals ** 2)) if residuals.size else 1.0
    scale = scale if scale > 0 else 1.0
    known_residuals = residuals[:, known]
    cov_known = ((1 - shrinkage) * known_residuals.T @ known_residuals / n_tasks
                 + (shrinkage + noise) * scale * np.eye(known.size))  # prior diagonal + observation noise
    cov_all_known = (1 - shrinkage) * residuals.T @ known_residuals / n_tasks
    cov_all_known[known, np.arange(known.size)] += shrinkage * scale
    centre = unexplained_projection(prior[known])
    deviation = centre @ (known_z - prior[known])
    weights = np.linalg.pinv(centre @ cov_known @ centre, rcond=1e-10) @ deviation
    return prior + cov_all_known @ centre @ weights


# From how many known scores the posterior leaves the target's slope on its prior free. With 5
# known scores, propagating it made two ImageNet-zoo tables fall below cold (SFDA's supervised models
# imported through `fennec import`: 90.1 against cold 91.1; a supervised-head table: 82.2 against
# 83.5); leaving it free, 91.4 and 84.3, and on 20 random sub-tables +3.7 over cold instead of +3.1
# (worst -1.1 instead of -5.0). With 3 known scores, offset and slope leave one of three directions:
# the sub-tables' gain fell from +1.9 to +1.2 and the synthetic benchmark's told fine-tunes from +0.4
# to +0.2, so there the slope is propagated as before (benchmarks/warm_start_variants.py).
POSTERIOR_SLOPE_MIN_KNOWN = 4


def at_measured_values(scores: np.ndarray, known: np.ndarray, known_z: np.ndarray) -> np.ndarray:
    """``scores`` with each known model placed at its measured value: ``known_z`` (the known scores on
    the z scale, centred, :meth:`Fennec._measured_z`) around the mean score the ranking gave them.

    So the known models rank as they measured and stand where their measurements put them among the
    predicted ones: a model measured best of those told is not listed below a model predicted lower.
    The posterior alone could leave a worse-measured model above a better one (its observation noise;
    or not propagated at all).
    """
    out = scores.copy()
    out[known] = scores[known].mean() + known_z
    return out


def unexplained_projection(known_prior: np.ndarray) -> np.ndarray:
    """Projection of the known scores onto what a task's offset (and, from
    :data:`POSTERIOR_SLOPE_MIN_KNOWN` known models on, its slope on the prior) does not explain: the
    complement of span{1, prior at the known models}, or of 1 alone."""
    n = known_prior.size
    spread = known_prior - known_prior.mean()
    centre = np.eye(n) - 1.0 / n
    if n >= POSTERIOR_SLOPE_MIN_KNOWN and np.ptp(known_prior) > 1e-12:
        centre -= np.outer(spread, spread) / float(spread @ spread)
    return centre


# Warm start, second step: the posterior propagates the known scores to the other models through
# the history's residual covariance. Where the history's models have little shared structure
# beyond popularity (e.g. a zoo of ImageNet models), that covariance is mostly noise, and 5 known
# scores made the ranking of the other models worse than cold. So the posterior is used only
# where the history expects it to help at the user's known models (``Fennec._posterior_expected_gain``).
POSTERIOR_CHECK_MIN_TASKS = 3
# A player is told those of the known models it measured: at least this many (all, when fewer are
# known). Requiring all of them left sparse histories without a check, and so without the posterior,
# exactly when many scores are known: PARC with 10 known scores fell to 72.3 against cold 73.0
# (0.7 below; told at least 3: 74.2), parc6 68.7 against 69.5 (71.2); with 3 known nothing changes,
# with 5 within 0.2 (benchmarks/warm_start_variants.py --known 3|5|10, and --subtables 20 --seed 3).
POSTERIOR_CHECK_MIN_TOLD = 3
POSTERIOR_CHECK_MAX_TASKS = 40  # an evenly spaced subset of a larger history: the check stays in milliseconds


def posterior_check_gains(standardised: np.ndarray, residuals: np.ndarray, loo_weights: np.ndarray,
                          shrinkage: float, known: np.ndarray, players: np.ndarray) -> np.ndarray:
    """Per player task: Pearson gain on its judged models of the posterior over the cold prior.

    Each task j of ``players`` plays the new task: its cold prior is its out-of-fold prediction
    (its z-scores minus its residuals), it is told its own z-scores of those ``known`` models it
    measured, and the posterior's covariance comes from the *other* tasks' residuals, recomputed
    with j left out of their popularity too (their out-of-fold bias had seen j, which would flatter
    the check).
    ``standardised``: (models, tasks), NaN = unobserved; ``residuals``: (tasks, models), 0 where
    unobserved; ``loo_weights``: (tasks, tasks), row i = the history weights when i is new.
    """
    truth = standardised.T
    observed = np.isfinite(truth)
    values = np.where(observed, truth, 0.0)
    sums, counts = _out_of_fold_sums(standardised, loo_weights)
    full = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), 0.0)
    judged = np.ones(truth.shape[1], bool)
    judged[known] = False
    measured = observed.astype(float)
    gains = np.full(players.size, np.nan)
    for index, j in enumerate(players):
        others = np.arange(truth.shape[0]) != j
        w = loo_weights[others, j][:, None]  # never the diagonal: j is not among the others
        counts_j = counts[others] - w * measured[j]
        without_j = np.where(counts_j > _EPS, (sums[others] - w * values[j]) / np.maximum(counts_j, _EPS), 0.0)
        other_residuals = (residuals[others] + full[others] - without_j) * measured[others]
        prior = np.where(observed[j], truth[j] - residuals[j], 0.0)
        told = known[observed[j, known]]
        posterior = posterior_mean(prior, other_residuals, shrinkage, told, truth[j, told])
        scored = judged & observed[j]
        rows = np.stack([posterior[scored], prior[scored]])
        pearsons = _pearson_rows(rows, np.tile(truth[j, scored], (2, 1)))
        gains[index] = pearsons[0] - pearsons[1]
    return gains


class Fennec(BaseEstimator):
    """The Fennec recommender: a popularity bias plus shrunk transfer and meta interactions.

    Parameters
    ----------
    k : int
        Dimension of the transfer space; below min(models, tasks) of the training matrix.
    alpha : float
        In ``formulation="paper"``, the weight of the meta score in the merge (eq. 10). In the
        default ``"shrunk"`` formulation with ``shrinkage="auto"`` the two weights are learned and
        ``alpha`` only switches a phase off (0: no meta, 1: no transfer); with a fixed
        ``shrinkage`` s the weights are ``s·(1 − alpha)`` and ``s·alpha``.
    nmf_l2 : float
        λ of the Frobenius penalty on both NMF factors (also the ridge of the paper's fold-in).
    nmf_max_iter, nmf_tol : int, float
        NMF stops after this many sweeps or when the objective's relative decrease falls below ``nmf_tol``.
    random_state : int
        Seeds the NMF starts, the forests and the task folds; same seed, same fit.
    n_estimators : int
        Trees of the proxy random forest.
    meta_l2 : float
        Ridge penalty of the meta regression (inputs standardised).
    meta_interactions : bool
        Add model-fact x task-fact products to the meta regression.
    warm_start_prior : float
        ``formulation="paper"`` only: how many known entries the cold estimate is worth.
    formulation : {"shrunk", "paper"}
        ``"shrunk"``: score = popularity + λ_T·transfer interaction + λ_M·meta interaction, the λ
        learned out of fold on the history; the warm start weighs history tasks by their
        known-model scores, then takes a Gaussian posterior where the history expects it to help.
        ``"paper"``: the paper's z-scored merge of the transfer and meta scores (eq. 10) and its fold-in.
    shrinkage : "auto" or float in [0, 1]
        ``"auto"``: each interaction's weight is the slope of what popularity misses on each
        history task on its out-of-bag (transfer) prediction, or that slope's lower confidence
        bound on its leave-one-task-out (meta) prediction, clipped to [0, 1]
        (:func:`slope_lower_bound`); a number fixes them (see ``alpha``).
    task_bandwidth : float or None
        Shrunk formulation with ``task_proxy`` or ``task_meta``: the bias is popularity among similar
        tasks, each history task weighted by ``exp(−d²/2h²) + SIMILAR_TASK_FLOOR`` with d its distance
        to the new task and h this bandwidth: the proxy's distance where the fit had proxies (in units
        of :data:`PROXY_DISTANCE_UNIT` x the history's median distance), else the task facts'
        (root-mean-square of standardised facts). None: plain popularity (every task weighs the same).

    Notes
    -----
    A scikit-learn ``BaseEstimator`` (``get_params``/``set_params``/``clone`` work), though ``fit``
    takes tables rather than (X, y). See the module docstring for the decisions it makes.

    References
    ----------
    Bai et al., "Pre-Trained Model Recommendation for Downstream Fine-tuning", arXiv 2403.06382.
    """

    def __init__(self, k: int = FENNEC_K, alpha: float = FENNEC_ALPHA, nmf_l2: float = FENNEC_NMF_L2,
                 nmf_max_iter: int = 5000, nmf_tol: float = 1e-6, random_state=0, n_estimators: int = 200,
                 meta_l2: float = 1.0, meta_interactions: bool = True, warm_start_prior: float = 10.0,
                 formulation: str = FENNEC_FORMULATION, shrinkage="auto",
                 task_bandwidth: float | None = FENNEC_TASK_BANDWIDTH):
        self.k = k
        self.alpha = alpha
        self.nmf_l2 = nmf_l2
        self.nmf_max_iter = nmf_max_iter
        self.nmf_tol = nmf_tol
        self.random_state = random_state
        self.n_estimators = n_estimators
        self.meta_l2 = meta_l2
        self.meta_interactions = meta_interactions
        self.warm_start_prior = warm_start_prior
        self.formulation = formulation
        self.shrinkage = shrinkage
        self.task_bandwidth = task_bandwidth

    def __setstate__(self, state):
        # Models pickled before similar-task popularity (registered versions) keep ranking by plain popularity;
        # those pickled before the proxy's distance keep the task facts', those pickled before the
        # facts' fallback keep their one space.
        state.setdefault("task_bandwidth", None)
        if "task_fact_rows_" in state:
            state.update(similar_source_="task_meta", similar_rows_=state.pop("task_fact_rows_"),
                         similar_mean_=state.pop("task_fact_mean_"), similar_std_=state.pop("task_fact_std_"),
                         similar_unit_=1.0)
        if "similar_rows_" in state:
            state["similarity_spaces_"] = [SimilaritySpace(
                state.pop("similar_source_"), state.pop("similar_mean_"), state.pop("similar_std_"),
                state.pop("similar_rows_"), state.pop("similar_unit_"))]
        state.setdefault("similarity_spaces_", [])
        state.pop("similar_tasks_", None)
        if state.get("task_meta_columns_") is not None and "task_meta_fill_" not in state:
            # pickled when the facts came filled in: the mean of the history's facts, which filled them
            spaces = [space for space in state["similarity_spaces_"] if space.source == "task_meta"]
            state["task_meta_fill_"] = (spaces[0].mean if spaces else state.get(
                "task_meta_mean_", np.zeros(len(state["task_meta_columns_"]))))
        super().__setstate__(state)

    @classmethod
    def transfer_only(cls, **params) -> "Fennec":
        """Fennec without the meta phase's vote (alpha = 0)."""
        return cls(alpha=0.0, **params)

    @classmethod
    def meta_only(cls, **params) -> "Fennec":
        """Fennec ranking by the meta regression alone (alpha = 1)."""
        return cls(alpha=1.0, **params)

    @classmethod
    def paper(cls, **params) -> "Fennec":
        """The paper's formulation: z-scored merge of transfer and meta scores, fold-in warm start."""
        return cls(formulation="paper", **params)

    # ------------------------------------------------------------------ fit
    def fit(self, P: pd.DataFrame, model_meta: pd.DataFrame | None = None, task_meta: pd.DataFrame | None = None,
            task_proxy: pd.DataFrame | None = None, task_weights=None) -> "Fennec":
        """Learn from a models x tasks score matrix ``P`` (NaN = not measured) and the meta/proxy tables.

        ``model_meta`` is indexed by model, ``task_meta`` and ``task_proxy`` by task (extra rows are
        ignored); all their columns must be numeric; in ``task_meta`` (and a new task's row) NaN is a fact
        not known: left out of the task distances, the history's mean in the regressions. Without ``model_meta`` or ``task_meta`` there is no
        meta phase; without ``task_proxy`` a new task's vector is regressed from ``task_meta``; with
        neither, the shrunk formulation ranks every new task by popularity (the paper's refuses).
        The meta regression's design has one row per observed cell and (p + q + p·q) columns for p model
        and q task facts: compact model facts keep it small (e.g. 25,000 cells x 500 columns = 100 MB).
        ``task_weights`` (by task, default 1 each): how much each history task counts in the popularity
        part, e.g. less for a task known only through a label-based score than for a fine-tuned one
        (``config.SCORE_ONLY_TASK_WEIGHT``); the transfer and meta phases use every task alike.
        """
        # Validate everything before touching any fitted attribute: a failed fit leaves no half state.
        self._check_params()
        values = self._check_matrix(P)
        evidence_weights = self._check_task_weights(task_weights, P.columns)
        observed = ~np.isnan(values)
        n_models, n_tasks = values.shape
        proxy_features = proxy_columns = task_features = task_columns = model_features = model_columns = None
        if task_proxy is not None:
            proxy_features, proxy_columns = _numeric_table(task_proxy, "task_proxy", P.columns, "tasks")
        known_task_facts = task_meta_fill = None  # the facts with NaN where unknown: the similarity's
        if task_meta is not None:
            known_task_facts, task_columns = _numeric_table(task_meta, "task_meta", P.columns, "tasks",
                                                            allow_unknown=True)
            # the regressions need every fact: an unknown one is the history's mean
            task_meta_fill = _standardise_columns(known_task_facts)[0]
            task_features = _filled(known_task_facts, task_meta_fill)
        if model_meta is not None:
            model_features, model_columns = _numeric_table(model_meta, "model_meta", P.index, "models")
        vector_features = proxy_features if proxy_features is not None else task_features
        if vector_features is None and self.formulation == "paper":
            raise InvalidInputError("give task_proxy or task_meta: a new task's vector is predicted from one of them")
        if vector_features is not None and not self.k < min(n_models, n_tasks):
            raise InvalidInputError(f"k={self.k} must be below min(models, tasks) = min({n_models}, {n_tasks}) of P")
        # Model facts alike for every model (an imported table's models, known by name alone) cannot
        # move one model against another: no meta phase, rather than a weight on a part that is 0.
        has_meta = (model_features is not None and task_features is not None
                    and bool(np.ptp(model_features, axis=0).max() > 0))
        if not has_meta and self.alpha == 1.0 and self.formulation == "paper":
            raise InvalidInputError("alpha=1 ranks by the meta regression alone, which needs model_meta (with a "
                                    "fact that differs between models) and task_meta")
        if not has_meta and self.alpha > 0 and vector_features is not None:
            what = ("model_meta's facts are the same for every model" if model_features is not None
                    and task_features is not None else "no model_meta or task_meta")
            warnings.warn(f"{what}: no meta phase, ranking by the transfer score alone", stacklevel=2)

        self.model_names_ = np.asarray(P.index.map(str), dtype=object)
        self.task_names_ = np.asarray(P.columns.map(str), dtype=object)
        normalised, self.task_mean_, self.task_std_, self.shift_ = normalize_tasks(values)
        standardised = np.where(observed, normalised - self.shift_, np.nan)
        self.evidence_weights_ = evidence_weights
        self.bias_ = bias_scores(standardised, self.evidence_weights_)
        # Similar-task popularity needs the history's z-scores and its tasks' standardised proxies and
        # facts at rank time: the proxy's space first (it is the better judge on the end-to-end
        # benchmarks), the facts' for a new task given without images.
        if self.formulation == "shrunk":  # similar-task popularity and the warm start read the history
            self.standardised_ = standardised
        self.similarity_spaces_ = []
        if self.formulation == "shrunk" and self.task_bandwidth is not None:
            self.similarity_spaces_ = [SimilaritySpace.of(source, features) for source, features
                                       in (("task_proxy", proxy_features), ("task_meta", known_task_facts))
                                       if features is not None]
        self.proxy_columns_ = proxy_columns
        self.task_meta_columns_ = task_columns
        self.task_meta_fill_ = task_meta_fill
        self.model_meta_columns_ = model_columns
        self.task_vector_source_ = ("task_proxy" if proxy_features is not None
                                    else "task_meta" if task_features is not None else None)

        # Transfer phase (eq. 4) and proxy regressor (eq. 6), on every history task.
        self.has_transfer_ = vector_features is not None
        out_of_bag_vectors = None
        if self.has_transfer_:
            transfer = self._fit_transfer(normalised, observed, vector_features, self.k, self.n_estimators,
                                          out_of_bag=self.formulation == "shrunk" and self.alpha < 1.0 and n_tasks >= 3)
            out_of_bag_vectors = transfer.out_of_bag_vectors
            self.model_vectors_, self.task_vectors_ = transfer.model_vectors, transfer.task_vectors
            self.mean_task_vector_ = transfer.mean_task_vector
            self.objective_history_ = transfer.objective_history
            self.n_iter_ = len(self.objective_history_) - 1
            last_decrease = self.objective_history_[-2] - self.objective_history_[-1]
            if self.n_iter_ == self.nmf_max_iter and last_decrease > self.nmf_tol * self.objective_history_[-2]:
                warnings.warn(f"masked NMF stopped at nmf_max_iter={self.nmf_max_iter} before reaching "
                              f"nmf_tol={self.nmf_tol}; raise nmf_max_iter or nmf_l2", ConvergenceWarning,
                              stacklevel=2)
            self.task_regressor_ = transfer.regressor
            self.flat_forest_ = FlatForest(self.task_regressor_)

        # Meta phase (eq. 8): [model facts, task facts, their products] -> normalised score.
        self.has_meta_ = has_meta
        if has_meta:
            self.model_meta_ = model_features
            self.model_meta_mean_, self.model_meta_std_ = _standardise_columns(model_features)
            self.task_meta_mean_, self.task_meta_std_ = _standardise_columns(task_features)
            self.model_meta_rows_ = (model_features - self.model_meta_mean_) / self.model_meta_std_
            task_rows = (task_features - self.task_meta_mean_) / self.task_meta_std_
            meta = _fit_meta(self.model_meta_rows_, task_rows, normalised, observed, l2=self.meta_l2,
                             interactions=self.meta_interactions)
            self.meta_model_weights_, self.meta_task_weights_ = meta.model_weights, meta.task_weights
            self.meta_interaction_weights_, self.meta_intercept_ = meta.interaction_weights, meta.intercept
            self.mean_task_meta_ = meta.mean_task

        if self.formulation == "shrunk":
            self._fit_shrinkage(normalised, observed, standardised, out_of_bag_vectors,
                                task_rows if has_meta else None)
        return self

    def _fit_transfer(self, normalised, observed, features, k, n_trees, out_of_bag: bool) -> _TransferPart:
        return _fit_transfer(normalised, observed, features, k=k, l2=self.nmf_l2, max_iter=self.nmf_max_iter,
                             tol=self.nmf_tol, random_state=self.random_state, n_trees=n_trees,
                             out_of_bag=out_of_bag)

    def _fit_shrinkage(self, normalised, observed, standardised, out_of_bag_vectors, task_rows) -> None:
        """Interaction weights, learned from the history without letting a task predict itself.

        Each history task is treated as new: popularity from the other tasks (``b_{−j}``), the
        forest's out-of-bag task vector, a leave-one-task-out ridge. ``w_T`` is the slope of what
        ``b_{−j}`` misses on the out-of-bag transfer interaction (:func:`slope_lower_bound` at
        :data:`TRANSFER_SLOPE_Z`, no margin); ``w_M`` the lower confidence bound of that slope for the
        ridge's interaction against what is still missed. Each
        weight is kept only if it raises the per-task Pearson on the history (the transfer's by half a
        standard error, :data:`TRANSFER_GAIN_Z`, and shrunk by ``1 − 1/t²`` of that gain's t; the meta's
        beyond doubt, :func:`gain_is_certain`). An
        interaction the history cannot vouch for gets weight 0: popularity. So does every interaction
        of a history of fewer than :data:`INTERACTION_MIN_TASKS` tasks.
        """
        n_models, n_tasks = normalised.shape
        use_transfer = self.has_transfer_ and self.alpha < 1.0
        use_meta = self.has_meta_ and self.alpha > 0.0
        self.transfer_weight_ = self.meta_weight_ = 0.0
        predicted_transfer = np.zeros((n_tasks, n_models))
        predicted_meta = np.zeros((n_tasks, n_models))
        loo_bias = leave_one_out_bias(standardised, self._out_of_fold_weights(self._fitted_space()))
        missed = standardised.T - loo_bias  # NaN where unobserved
        if use_transfer and n_tasks >= 3:
            seen = np.isfinite(out_of_bag_vectors).all(axis=1)
            predicted_transfer[seen] = (out_of_bag_vectors[seen] - self.mean_task_vector_) @ self.model_vectors_.T
            if self.shrinkage == "auto" and n_tasks >= INTERACTION_MIN_TASKS:
                weight = slope_lower_bound(predicted_transfer[seen], missed[seen], TRANSFER_SLOPE_Z)
                gains = (_pearson_rows(loo_bias + weight * predicted_transfer, standardised.T)
                         - _pearson_rows(loo_bias, standardised.T))
                if mean_gain_is_certain(gains, TRANSFER_GAIN_Z):
                    weight *= max(0.0, 1.0 - 1.0 / gain_t_statistic(gains) ** 2)
                else:
                    weight = 0.0
                self.transfer_weight_ = weight
        if use_meta and n_tasks >= 3:
            predicted_meta = leave_one_task_out_meta(self.model_meta_rows_, task_rows, normalised, observed,
                                                     l2=self.meta_l2, interactions=self.meta_interactions)
            if self.shrinkage == "auto" and n_tasks >= INTERACTION_MIN_TASKS:
                cold = loo_bias + self.transfer_weight_ * predicted_transfer
                weight = slope_lower_bound(predicted_meta, standardised.T - cold)
                self.meta_weight_ = weight if gain_is_certain(cold, weight * predicted_meta, standardised.T) else 0.0
        if self.shrinkage != "auto":
            self.transfer_weight_ = float(self.shrinkage) * (1 - float(self.alpha)) * use_transfer
            self.meta_weight_ = float(self.shrinkage) * float(self.alpha) * use_meta
        # What the cold prediction leaves unexplained on each history task seen as new: the warm
        # start's prior covariance.
        residual = missed - self.transfer_weight_ * predicted_transfer - self.meta_weight_ * predicted_meta
        self.residuals_ = np.nan_to_num(residual)
        self.residual_shrinkage_ = (float(ledoit_wolf_shrinkage(self.residuals_, assume_centered=True))
                                    if n_tasks >= 2 and np.any(self.residuals_) else 1.0)

    def _check_params(self) -> None:
        if not isinstance(self.k, (int, np.integer)) or isinstance(self.k, bool) or self.k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {self.k!r}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise InvalidInputError(f"alpha must lie in [0, 1], got {self.alpha!r}")
        for name in ("nmf_l2", "meta_l2", "warm_start_prior"):
            if not getattr(self, name) >= 0:
                raise InvalidInputError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.task_bandwidth is not None and not (
                isinstance(self.task_bandwidth, (int, float, np.number)) and float(self.task_bandwidth) > 0):
            raise InvalidInputError(f"task_bandwidth must be a positive number or None, got {self.task_bandwidth!r}")
        if not self.nmf_tol >= 0 or not self.nmf_max_iter >= 1:
            raise InvalidInputError(f"need nmf_tol >= 0 and nmf_max_iter >= 1, got {self.nmf_tol!r}, {self.nmf_max_iter!r}")
        if self.formulation not in FORMULATIONS:
            raise InvalidInputError(f"formulation must be one of {FORMULATIONS}, got {self.formulation!r}")
        if self.shrinkage != "auto" and not (isinstance(self.shrinkage, (int, float, np.number))
                                             and 0.0 <= float(self.shrinkage) <= 1.0):
            raise InvalidInputError(f"shrinkage must be 'auto' or a number in [0, 1], got {self.shrinkage!r}")

    @staticmethod
    def _check_task_weights(task_weights, tasks: pd.Index) -> np.ndarray:
        if task_weights is None:
            return np.ones(len(tasks))
        weights = pd.Series(task_weights, dtype=float)
        missing = [t for t in tasks if t not in weights.index]
        if missing:
            raise InvalidInputError(f"task_weights has no weight for task(s) {missing[:5]}: give one per column of P")
        weights = weights.loc[tasks].to_numpy()
        if not (np.all(np.isfinite(weights)) and np.all(weights > 0)):
            raise InvalidInputError("task_weights must be positive and finite")
        return weights

    @staticmethod
    def _check_matrix(P) -> np.ndarray:
        if not isinstance(P, pd.DataFrame):
            raise InvalidInputError(f"P must be a pandas DataFrame (index = models, columns = tasks), got {type(P).__name__}")
        for axis, labels in (("model index", P.index), ("task columns", P.columns)):
            if not labels.is_unique:
                raise InvalidInputError(f"P's {axis} has duplicates: {labels[labels.duplicated()].unique().tolist()[:5]}")
        try:
            values = P.to_numpy(dtype=float)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"P must hold numbers (NaN for unmeasured cells): {error}") from None
        if np.isinf(values).any():
            raise InvalidInputError("P has infinite values; use NaN for unmeasured cells")
        observed = ~np.isnan(values)
        empty_models = P.index[~observed.any(axis=1)].tolist()
        if empty_models:
            raise InvalidInputError(f"P has models with no observed score (all-NaN rows): {empty_models[:10]}")
        empty_tasks = P.columns[~observed.any(axis=0)].tolist()
        if empty_tasks:
            raise InvalidInputError(f"P has tasks with no observed score (all-NaN columns): {empty_tasks[:10]}")
        return values

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_names_"):
            raise InvalidInputError("this Fennec is not fitted yet; call fit(P, model_meta, task_meta, task_proxy) first")

    # ------------------------------------------------------------------ predict
    def predict_matrix(self, normalized: bool = False) -> pd.DataFrame:
        """The reconstruction M Dᵀ for every training (model, task) cell, on P's scale unless ``normalized``."""
        self._check_fitted()
        reconstruction = self.model_vectors_ @ self.task_vectors_.T
        if not normalized:
            reconstruction = (reconstruction - self.shift_) * self.task_std_ + self.task_mean_
        return pd.DataFrame(reconstruction, index=pd.Index(self.model_names_, name="model"),
                            columns=pd.Index(self.task_names_, name="task"))

    def task_vector(self, task_meta_row=None, task_proxy_row=None) -> np.ndarray:
        """The cold-start task vector d_t from the proxy features (or the task facts without a proxy)."""
        self._check_fitted()
        if not self.has_transfer_:
            raise InvalidInputError("this model was fitted without task_proxy or task_meta: it has no task vectors")
        if self.task_vector_source_ == "task_proxy":
            if task_proxy_row is None:
                raise InvalidInputError("this model was fitted with task_proxy: rank needs task_proxy_row")
            features = _feature_row(task_proxy_row, self.proxy_columns_, "task_proxy_row")
        else:
            if task_meta_row is None:
                raise InvalidInputError("this model was fitted without task_proxy: rank needs task_meta_row")
            features = self._task_facts(task_meta_row)
        if getattr(self, "flat_forest_", None) is None:  # models pickled before FlatForest existed
            self.flat_forest_ = FlatForest(self.task_regressor_)
        return self.flat_forest_.predict_one(features)

    def _fitted_space(self) -> SimilaritySpace | None:
        """The space the fit's out-of-fold residuals were computed in (the first), or None: plain popularity."""
        return self.similarity_spaces_[0] if self.similarity_spaces_ else None

    def _similar_task_weights(self, distances: np.ndarray) -> np.ndarray:
        """(rows, history tasks): the bias weights of the history tasks for tasks at these distances
        from them (:meth:`SimilaritySpace.distances`)."""
        evidence = getattr(self, "evidence_weights_", 1.0)  # older pickles have no task weights: 1
        return similar_task_weights(distances, float(self.task_bandwidth)) * evidence

    def _similarity_row(self, task_meta_row, task_proxy_row) -> tuple[SimilaritySpace, np.ndarray] | None:
        """The first space (proxy, then facts) the task is given a row for, and that row standardised;
        None when it has none or the bias is plain popularity."""
        given = {"task_proxy": (task_proxy_row, self.proxy_columns_, "task_proxy_row"),
                 "task_meta": (task_meta_row, self.task_meta_columns_, "task_meta_row")}
        for space in self.similarity_spaces_:
            row, columns, name = given[space.source]
            if row is not None:
                facts = space.source == "task_meta"  # a fact may be unknown; a proxy is computed whole
                return space, space.standardise(_feature_row(row, columns, name, allow_unknown=facts))
        return None

    def bias(self, task_meta_row=None, task_proxy_row=None) -> np.ndarray:
        """Every model's bias on a task: popularity, among similar tasks when its proxy (or facts) allow."""
        self._check_fitted()
        similarity = self._similarity_row(task_meta_row, task_proxy_row)
        if similarity is None:
            return self.bias_
        space, row = similarity
        return self._bias_at(space.distances(row[None]))

    def _bias_at(self, distances: np.ndarray) -> np.ndarray:
        """Popularity among the history tasks at these (1, tasks) distances from the new task."""
        return bias_scores(self.standardised_, self._similar_task_weights(distances)[0])

    def _bias_task_weights(self, task_meta_row, task_proxy_row=None) -> np.ndarray:
        """The history tasks' weights in the bias of a task with this proxy or these facts (evidence x similarity)."""
        similarity = self._similarity_row(task_meta_row, task_proxy_row)
        if similarity is None:
            return getattr(self, "evidence_weights_", np.ones(len(self.task_names_)))
        space, row = similarity
        return self._similar_task_weights(space.distances(row[None]))[0]

    def _known_level_bias(self, task_meta_row, task_proxy_row, known: np.ndarray, values: np.ndarray):
        """(bias, bandwidth): popularity among the history tasks whose known-model scores match.

        (None, None) when the history does not vouch for it at these known models (see
        :meth:`_known_level_bandwidth`), when the known scores match no history task, or for
        models pickled before the history was kept.
        """
        if getattr(self, "standardised_", None) is None:
            return None, None
        known_history = self.standardised_[known] * self.task_std_ + self.task_mean_
        spread = float(np.median(self.task_std_))
        similarity = self._similarity_row(task_meta_row, task_proxy_row)
        history_weights = self._out_of_fold_weights(similarity[0] if similarity is not None else None)
        bandwidth, reach = self._known_level_bandwidth(known, known_history, spread, history_weights)
        if bandwidth is None:
            return None, None
        distances = known_level_distances(known_history, values)
        # Known scores more than twice as far from every history task as any history task is from
        # its nearest (e.g. fractions told to a history in %) match none of them: no step, rather
        # than following whichever task happens to be least far. (On the real benchmark a target
        # at 1.6x that reach was helped by the step.)
        if distances.min() > 2.0 * reach:
            return None, None
        kernel = known_level_kernel(distances, bandwidth * spread)
        return (bias_scores(self.standardised_, self._bias_task_weights(task_meta_row, task_proxy_row) * kernel),
                bandwidth)

    def _known_level_bandwidth(self, known: np.ndarray, known_history: np.ndarray, spread: float,
                               history_weights: np.ndarray) -> tuple[float | None, float]:
        """(bandwidth, reach): the bandwidth (in task spreads) of :data:`KNOWN_LEVEL_BANDWIDTHS` the
        history vouches for, or None; reach: the largest distance of a history task to its nearest.

        Each history task in turn plays the new task, told its own scores of the same known
        models: popularity over the other tasks, weighted as for that task, with and without the
        kernel, judged by Pearson on the models not told. A bandwidth is eligible when its mean
        per-task gain is beyond doubt (:func:`mean_gain_is_certain`, the interaction weights'
        rule); the eligible one with the largest mean gain is chosen. A user's known models are
        thus checked where they are, not on a random draw.
        """
        n_models, n_tasks = self.standardised_.shape
        judged = np.ones(n_models, bool)
        judged[known] = False
        playable = np.flatnonzero(np.all(np.isfinite(known_history), axis=0) & (np.ptp(known_history, axis=0) > 0))
        if playable.size < KNOWN_LEVEL_MIN_TASKS or judged.sum() < 3:
            return None, 0.0
        rows = np.arange(playable.size)
        weights = history_weights[playable].copy()
        weights[rows, playable] = 0.0  # a task never predicts itself
        distances = known_level_distances(known_history, known_history[:, playable])
        distances[rows, playable] = np.inf
        reach = float(distances.min(axis=1).max())
        truth = self.standardised_[judged][:, playable].T
        base = _pearson_rows(bias_scores(self.standardised_, weights.T)[judged].T, truth)
        chosen, chosen_gain = None, 0.0
        for bandwidth in KNOWN_LEVEL_BANDWIDTHS:
            levelled = bias_scores(self.standardised_, (weights * known_level_kernel(distances, bandwidth * spread)).T)
            gains = _pearson_rows(levelled[judged].T, truth) - base
            if mean_gain_is_certain(gains) and np.nanmean(gains) > chosen_gain:
                chosen, chosen_gain = bandwidth, float(np.nanmean(gains))
        return chosen, reach

    def _out_of_fold_weights(self, space: SimilaritySpace | None) -> np.ndarray:
        """(tasks, tasks): row i = the history tasks' weights in the bias when task i is new, judged
        in this space (None: the evidence weights alone)."""
        if space is not None:
            distances = space.distances(space.rows)
            np.fill_diagonal(distances, np.nan)  # a task is not its own neighbour (see similar_task_weights)
            return self._similar_task_weights(distances)
        return np.tile(self._bias_task_weights(None), (len(self.task_names_), 1))

    def _posterior_expected_gain(self, known: np.ndarray) -> float | None:
        """The posterior's mean Pearson gain over the cold ranking on the history, at these known
        models (:func:`posterior_check_gains`); None when the history cannot say.

        The players are the history tasks with the most evidence (e.g. fine-tuned, not only
        FDA-scored: the new task's known scores are fine-tunes too) that measured at least
        :data:`POSTERIOR_CHECK_MIN_TOLD` of the known models (each is told those it measured), at
        least 3 of the others, and not all alike on the known ones; at most
        :data:`POSTERIOR_CHECK_MAX_TASKS` of them, evenly spaced. Fewer than
        :data:`POSTERIOR_CHECK_MIN_TASKS` (the posterior is then not used: a covariance from two
        tasks is noise; 5 known scores cost 22 points of Pearson on an 11 x 3 table), or a model
        pickled before the history was kept: None.
        """
        standardised = getattr(self, "standardised_", None)
        if standardised is None:
            return None
        evidence = self._bias_task_weights(None)
        known_z = standardised[known]
        judged = np.ones(standardised.shape[0], bool)
        judged[known] = False
        told = np.isfinite(known_z)
        spread = np.where(told, known_z, -np.inf).max(axis=0) - np.where(told, known_z, np.inf).min(axis=0)
        players = np.flatnonzero((evidence >= evidence.max()) & (spread > 0)
                                 & (told.sum(axis=0) >= min(POSTERIOR_CHECK_MIN_TOLD, known.size))
                                 & (np.isfinite(standardised[judged]).sum(axis=0) >= 3))
        if players.size < POSTERIOR_CHECK_MIN_TASKS:
            return None
        if players.size > POSTERIOR_CHECK_MAX_TASKS:
            players = players[np.linspace(0, players.size - 1, POSTERIOR_CHECK_MAX_TASKS).round().astype(int)]
        gains = posterior_check_gains(standardised, self.residuals_, self._out_of_fold_weights(self._fitted_space()),
                                      self.residual_shrinkage_, known, players)
        return float(np.nanmean(gains)) if np.isfinite(gains).any() else None

    def _task_facts(self, task_meta_row) -> np.ndarray:
        """A new task's facts for the regressions: an unknown one (NaN) is the history's mean."""
        return _filled(_feature_row(task_meta_row, self.task_meta_columns_, "task_meta_row", allow_unknown=True),
                       self.task_meta_fill_)

    def _task_meta(self, task_meta_row) -> np.ndarray:
        return (self._task_facts(task_meta_row) - self.task_meta_mean_) / self.task_meta_std_

    def meta_scores(self, task_meta_row, model_index: np.ndarray | None = None) -> np.ndarray:
        """The meta regression's normalised-score prediction for each model (one matrix-vector product)."""
        self._check_fitted()
        if not self.has_meta_:
            raise InvalidInputError("this model was fitted without model_meta/task_meta: no meta scores")
        if task_meta_row is None:
            raise InvalidInputError("the meta phase needs task_meta_row")
        task = self._task_meta(task_meta_row)
        models = self.model_meta_ if model_index is None else self.model_meta_[model_index]
        models = (models - self.model_meta_mean_) / self.model_meta_std_
        # a·w_model + b·w_task + aᵀ W b + c, with the task fixed: one product with a per-task weight vector.
        weights = self.meta_model_weights_ + self.meta_interaction_weights_ @ task
        return models @ weights + (self.meta_task_weights_ @ task + self.meta_intercept_)

    def fold_in(self, known_scores: Mapping[str, float]) -> pd.Series:
        """Every training model's predicted raw score on a new task from a few known ones (warm start).

        The fold-in vector's scores are mapped back through the known scores' mean and std.
        """
        self._check_fitted()
        index, values = self._known(known_scores)
        vector = fold_in(self.model_vectors_[index], values, self.nmf_l2)
        if vector is None:
            predicted = np.full(len(self.model_names_), values.mean())
        else:
            scores = self.model_vectors_ @ vector
            predicted = values.mean() + values.std() * (scores - scores[index].mean())
        return pd.Series(predicted, index=pd.Index(self.model_names_, name="model"), name="predicted_score")

    def _known(self, known_scores: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(known_scores, Mapping) or not known_scores:
            raise InvalidInputError("known_scores must be a non-empty mapping {model name: score}")
        index = self._model_index(list(known_scores), "known_scores")
        values = np.asarray([known_scores[name] for name in known_scores], dtype=float)
        if not np.all(np.isfinite(values)):
            raise InvalidInputError("known_scores values must be finite numbers")
        return index, values

    def _model_index(self, names: Iterable[str], what: str) -> np.ndarray:
        position = {name: i for i, name in enumerate(self.model_names_)}
        names = [str(name) for name in names]
        unknown = [name for name in names if name not in position]
        if unknown:
            raise InvalidInputError(f"{what} names model(s) the recommender was not fitted on: {unknown[:10]}")
        return np.asarray([position[name] for name in names], dtype=int)

    def rank(self, task_meta_row=None, task_proxy_row=None, *, known_scores: Mapping[str, float] | None = None,
             models: Iterable[str] | None = None) -> pd.DataFrame:
        """Rank candidate models for a new task, best first.

        Parameters
        ----------
        task_meta_row, task_proxy_row : Series, dict or array
            The task's facts and proxy features (by column name, or in the fitted column order).
            The shrunk formulation ranks by what it is given: with neither, by popularity.
        known_scores : mapping, optional
            Scores of a few models on this task, on P's raw scale (warm start).
        models : iterable of str, optional
            Restrict the candidates.

        Returns
        -------
        DataFrame
            Columns of :data:`RANKING_COLUMNS`; ``attrs["basis"]`` says what the ranking rests on.
            Shrunk: ``score`` is the predicted per-task z-score (0 = an average model, 1 = one
            standard deviation better) = ``bias_score + transfer_score + meta_score`` (+ the warm
            start's update). Paper: ``score = (1 − alpha)·transfer_score + alpha·meta_score``, z-scores.
        """
        self._check_fitted()
        candidates = (np.arange(len(self.model_names_)) if models is None
                      else self._model_index(list(models), "models"))
        if candidates.size == 0:
            raise InvalidInputError("models is empty: no candidate to rank")
        known_column = np.full(candidates.size, np.nan)
        known = None
        if known_scores is not None:
            known = self._known(known_scores)
            known_by_model = dict(zip(known[0].tolist(), known[1].tolist()))
            known_column = np.asarray([known_by_model.get(i, np.nan) for i in candidates.tolist()])
        if self.formulation == "paper":
            score, bias, transfer, meta, basis = self._rank_paper(task_meta_row, task_proxy_row, candidates, known)
        else:
            score, bias, transfer, meta, basis = self._rank_shrunk(task_meta_row, task_proxy_row, candidates, known)
        order = np.argsort(-score, kind="stable")
        ranking = pd.DataFrame({
            "model": self.model_names_[candidates][order],  # same order as RANKING_COLUMNS
            "score": score[order],
            "bias_score": bias[order],
            "transfer_score": transfer[order],
            "meta_score": meta[order],
            "known_score": known_column[order],
            "rank": np.arange(1, candidates.size + 1),
        })
        ranking.attrs["basis"] = basis
        return ranking

    def _unchecked_reason(self, known: np.ndarray) -> str:
        """Why :meth:`_posterior_expected_gain` found too few history tasks to play the new one."""
        others = len(self.model_names_) - known.size
        if others < 3:
            return f"only {others} other model{'s' if others != 1 else ''} to judge it on"
        measured = ("them all" if known.size <= POSTERIOR_CHECK_MIN_TOLD
                    else f"at least {POSTERIOR_CHECK_MIN_TOLD} of them")
        return (f"fewer than {POSTERIOR_CHECK_MIN_TASKS} history tasks measured {measured} and 3 other "
                f"models, with different scores on the known ones")

    def _rank_shrunk(self, task_meta_row, task_proxy_row, candidates, known):
        n_models = len(self.model_names_)
        if (task_proxy_row is None and task_meta_row is not None and self.task_meta_columns_ is not None
                and np.isnan(_feature_row(task_meta_row, self.task_meta_columns_, "task_meta_row",
                                          allow_unknown=True)).all()):
            # No fact known places the task anywhere: the history's mean facts would stand in for it
            # and the basis would name similar tasks that nothing made similar.
            task_meta_row = None
        transfer = np.zeros(n_models)
        meta = np.zeros(n_models)
        parts = ["popularity"]
        vector_row = task_proxy_row if self.task_vector_source_ == "task_proxy" else task_meta_row
        # Rows are checked even when their part has weight 0: a wrong input is an error either way.
        if self.has_transfer_ and vector_row is not None:
            vector = self.task_vector(task_meta_row, task_proxy_row)
            if self.transfer_weight_ > 0:
                transfer = self.transfer_weight_ * (self.model_vectors_ @ (vector - self.mean_task_vector_))
                parts.append(f"{self.transfer_weight_:.2f} x transfer")
        if self.has_meta_ and task_meta_row is not None:
            task = self._task_meta(task_meta_row)
            if self.meta_weight_ > 0:
                meta = self.meta_weight_ * (self.model_meta_rows_ @ self.meta_interaction_weights_
                                            @ (task - self.mean_task_meta_))
                parts.append(f"{self.meta_weight_:.2f} x meta")
        similarity = self._similarity_row(task_meta_row, task_proxy_row)
        bias = self.bias_
        if similarity is not None:
            distances = similarity[0].distances(similarity[1][None])  # once: the bias and the basis read them
            bias = self._bias_at(distances)
            parts[0] = "popularity among similar tasks" + (
                " (alike by their images' proxy)" if similarity[0].source == "task_proxy" else "")
            nearest = float(np.min(distances)) / float(self.task_bandwidth)
            if np.isfinite(nearest) and nearest > UNLIKE_HISTORY_BANDWIDTHS:
                parts[0] += (f" (none is alike: the nearest history task is {nearest:.1f} bandwidths away, so nearly "
                             "plain popularity; a task unlike the whole history is where the ranking is least sure)")
        warm = known is not None and known[0].size >= 2 and np.ptp(known[1]) > 0
        if warm:
            level_bias, bandwidth = self._known_level_bias(task_meta_row, task_proxy_row, *known)
            if bandwidth is not None:
                bias = level_bias
                parts[0] += f", weighted toward tasks whose scores on the known models match (bandwidth {bandwidth:g})"
        score = bias + transfer + meta
        if warm:
            expected_gain = self._posterior_expected_gain(known[0])
            unchecked = getattr(self, "standardised_", None) is None  # pickled before the history was kept
            if unchecked or (expected_gain is not None and expected_gain > 0):
                score = posterior_mean(score, self.residuals_, self.residual_shrinkage_, known[0],
                                       self._known_z(score, *known))
                parts.append(f"warm start from {known[0].size} known scores")
            elif expected_gain is None:
                parts.append(f"{known[0].size} known scores not propagated to the other models "
                             f"({self._unchecked_reason(known[0])}, too few to check on the history that it helps)")
            else:
                parts.append(f"{known[0].size} known scores not propagated to the other models (on the history "
                             f"it lowered their per-task Pearson by {-100 * expected_gain:.1f} points)")
            score = at_measured_values(score, known[0], self._measured_z(score, *known))
        elif known is not None:
            parts.append("ranked cold: known scores need at least two different values")
            warnings.warn("known_scores need at least two different values to inform the ranking; "
                          "ranking cold", stacklevel=3)
        for name, part in (("transfer", transfer), ("meta", meta)):
            # a real but tiny weight would read as a contradiction beside a column of 0.000s
            label = next((i for i, text in enumerate(parts) if text.endswith(f" x {name}")), None)
            if label is not None and np.max(np.abs(part[candidates]), initial=0.0) < 0.0005:
                parts[label] += " (under 0.0005 for every model shown)"
        basis = " + ".join(parts)
        n_history = len(self.task_names_)
        if (self.shrinkage == "auto" and n_history < INTERACTION_MIN_TASKS and vector_row is not None
                and (self.has_transfer_ or self.has_meta_)):
            basis += (f"; no task-specific interaction: {n_history} history tasks are too few to vouch for one "
                      f"(it takes {INTERACTION_MIN_TASKS})")
        elif parts == ["popularity"]:
            basis += (" (no task information)" if self.task_vector_source_ is None or vector_row is None
                      else " (the task information did not predict held-out history tasks)")
        return score[candidates], bias[candidates], transfer[candidates], meta[candidates], basis

    def _measured_z(self, prior: np.ndarray, index: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Known raw scores as z-scores of a typical history task (centred), where they lie on the
        history's raw scale (the spread every predicted score is read on); elsewhere (fractions
        told to a history in %) the scale their own spread implies (:meth:`_known_z`)."""
        low = float(np.min(self.task_mean_ - 4 * self.task_std_))
        high = float(np.max(self.task_mean_ + 4 * self.task_std_))
        if np.all((values >= low) & (values <= high)):
            return (values - values.mean()) / float(np.median(self.task_std_))
        return self._known_z(prior, index, values)

    def _known_z(self, prior: np.ndarray, index: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Known raw scores on the z scale of the prior, up to an offset.

        The scale is what the known scores' own spread implies under the prior (so % and
        fractions give the same ranking); two scores cannot tell it, so they get the history's
        typical task spread, which assumes they are on P's raw scale.
        """
        deviations = values - values.mean()
        n = index.size
        if n < 3:
            scale = float(np.median(self.task_std_))
        else:
            centre = np.eye(n) - 1.0 / n
            known_residuals = self.residuals_[:, index]
            covariance = ((1 - self.residual_shrinkage_) * known_residuals.T @ known_residuals / len(self.residuals_)
                          + self.residual_shrinkage_ * np.mean(self.residuals_ ** 2) * np.eye(n))
            expected = centre @ (covariance + np.outer(prior[index], prior[index])) @ centre
            scale = float(np.sqrt(deviations @ np.linalg.pinv(expected, rcond=1e-10) @ deviations / (n - 1)))
        return deviations / (scale if scale > 0 else 1.0)

    def _rank_paper(self, task_meta_row, task_proxy_row, candidates, known):
        candidate_vectors = self.model_vectors_[candidates]
        transfer = zscore(candidate_vectors @ self.task_vector(task_meta_row, task_proxy_row))
        basis = "paper: transfer"
        if known is not None:
            known_index, known_values = known
            folded = fold_in(self.model_vectors_[known_index], known_values, self.nmf_l2)
            if folded is not None:
                weight = known_index.size / (known_index.size + self.warm_start_prior)
                transfer = zscore((1 - weight) * transfer + weight * zscore(candidate_vectors @ folded))
                basis += f" with a fold-in of {known_index.size} known scores"
            else:
                warnings.warn("known_scores need at least two different values to inform the ranking; "
                              "ranking cold", stacklevel=3)
        # With alpha = 0 the meta score is only informative: skip it when no task facts were given.
        if self.has_meta_ and (task_meta_row is not None or self.alpha > 0):
            meta = zscore(self.meta_scores(task_meta_row, candidates))
            score = (1 - self.alpha) * transfer + self.alpha * meta
            basis += f" and meta merged with alpha={self.alpha:g}"
        else:
            meta = np.full(candidates.size, np.nan)
            score = transfer
        return score, np.full(candidates.size, np.nan), transfer, meta, basis


@functools.lru_cache(maxsize=1)
def behaviour_digest() -> str:
    """A short digest of what the recommender answers on a fixed random history.

    It changes whenever a change of code, default or library changes a ranking (the shrunk
    formulation cold and warm with 3 and 5 known scores, with task facts, proxies and model facts, and with
    facts alone, some unknown; and the paper's), so
    results cached under it, such as the end-to-end evaluation rows, are re-measured after an
    upgrade instead of being read back. About 0.4 s, once per process.
    """
    rng = np.random.default_rng(0)
    n_models, n_tasks = 9, 12
    task_factors, model_factors = rng.normal(size=(n_tasks, 2)), rng.normal(size=(n_models, 2))
    scores = (70 + 5 * rng.normal(size=(n_models, 1)) + 3 * model_factors @ task_factors.T
              + rng.normal(size=(n_models, n_tasks)))
    models, tasks = [f"m{i}" for i in range(n_models)], [f"t{j}" for j in range(n_tasks)]
    P = pd.DataFrame(scores, models, tasks)
    P.iloc[0, 1] = np.nan
    task_meta = pd.DataFrame(task_factors + 0.3 * rng.normal(size=task_factors.shape), tasks, ["size", "domain"])
    task_proxy = pd.DataFrame(task_factors @ rng.normal(size=(2, 6)) + 0.3 * rng.normal(size=(n_tasks, 6)),
                              tasks, [f"f{i}" for i in range(6)])
    model_meta = pd.DataFrame(model_factors + 0.3 * rng.normal(size=model_factors.shape), models, ["a", "b"])
    history, target = tasks[:-1], tasks[-1]
    digest = hashlib.sha256()
    unknown_facts = task_meta.copy()  # a user's own tasks, some facts not known
    unknown_facts.iloc[:2] = np.nan
    unknown_facts.loc[target, "domain"] = np.nan
    for fennec, facts, proxy in ((Fennec(), task_meta, task_proxy), (Fennec.paper(), task_meta, task_proxy),
                                 (Fennec(), unknown_facts, None)):
        fennec.fit(P[history], model_meta, facts.loc[history], None if proxy is None else proxy.loc[history])
        for known in (None, P[target].iloc[:3].to_dict(), P[target].iloc[:5].to_dict()):  # the warm start's regimes
            ranking = fennec.rank(facts.loc[target], None if proxy is None else proxy.loc[target], known_scores=known)
            # Rounded so that the last bits of a BLAS call do not count as a change.
            digest.update((np.round(ranking["score"].to_numpy(float), 6) + 0.0).tobytes())  # + 0.0: no -0.0
            digest.update(",".join(ranking["model"]).encode())
    return digest.hexdigest()[:12]
