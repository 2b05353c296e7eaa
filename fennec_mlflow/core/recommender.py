"""Fennec: recommend which pre-trained model to fine-tune on a new task (Bai et al., arXiv 2403.06382).

Offline, from history (M models x N tasks):

1. **Transfer phase** (paper eq. 4). The performance matrix P, which may have holes (NaN), is
   normalised per task (below) and factorised as P ~ M Dᵀ with non-negative model vectors
   ``m_i`` and task vectors ``d_j`` by masked NMF with Frobenius regularisation on both factors:
   ``min ||W ∘ (P − M Dᵀ)||² + λ(||M||² + ||D||²)``, W the observed-cell mask.
2. **Proxy regressor** (eq. 6). A random forest maps a task's proxy features ``g_j`` (e.g. the mean
   CLIP embedding of its images) to its task vector ``d_j``. Without proxy features the forest maps
   the task meta features to ``d_j`` instead; with few historical tasks that estimate shrinks to the
   mean task vector, i.e. to "popularity" (every task gets the same ranking).
3. **Meta regression** (eq. 8). A ridge regression on standardised [model meta, task meta] (and, by
   default, their pairwise products) predicts the normalised score ``p_ij`` over the observed cells.
4. **Merge** (eq. 10). For a new task t: ``score_i = (1 − alpha)·z(m_i·d_t) + alpha·z(meta_it)``.

Decisions this module makes (the paper leaves them open):

- **Normalisation.** Each task's column is standardised over its observed cells (mean 0, std 1;
  a column with fewer than two distinct values gets std 1), then one global shift makes the
  smallest observed value 0 so NMF sees a non-negative matrix. Per-task standardisation makes tasks
  of different scales (FDA in [0, 1], accuracy in %) and difficulty weigh the same in the
  factorisation; only the order within a target task matters for a recommendation, and a common
  shift (rather than a per-task min-max) keeps outliers from squashing a column's useful spread.
- **Merge scaling.** Transfer and meta scores are z-scored across the candidate models before
  mixing, so ``alpha`` is the share of each signal whatever their units. A constant signal
  (e.g. no meta phase) scores 0 for every candidate. The ranking's ``transfer_score`` and
  ``meta_score`` columns are these z-scores: ``score = (1 − alpha)·transfer_score + alpha·meta_score``.
- **Meta regression.** Ridge (``meta_l2``) on standardised inputs, not ordinary least squares: one-hot
  families are collinear with the intercept, and meta tables are small. A purely additive model
  ``a·f_i + b·f_t`` ranks the models of every task identically (the task term is a constant within a
  task), so ``meta_interactions=True`` adds the products ``f_i ⊗ f_t``, letting task facts (class
  count, domain) re-weight model facts (source dataset, size).
- **Warm start** (beyond the paper). ``known_scores`` are a few models' scores on the new task, on the
  scale of P's raw values (any affine scale works: % or [0, 1] alike). The task is folded into the
  transfer space by ridge non-negative least squares on those models' vectors with the same λ as the
  NMF. The new task's mean and spread are unknown, so the known scores are standardised by their own
  mean and std and the model vectors centred over the known models: the fold-in learns the direction
  of the task vector, not its offset. It needs at least two distinct known values. The fold-in
  transfer score and the proxy's are mixed as z-scores with weight ``n / (n + warm_start_prior)`` on
  the fold-in (n known models): with the default prior of 10, ten known entries weigh as much as the
  cold estimate. The default is cautious on purpose: on the PARC table (6 historical tasks) a fold-in
  from 3-8 random entries is worse than the cold estimate, while on a well-sampled low-rank history a
  prior of 3 pays off; lower it when the history is rich. Known models are not pinned: their scores
  stay predictions on the z scale, and the ranking shows their known value in ``known_score``.

Fitted state is plain arrays (``model_vectors_``, ``task_vectors_``, normalisation and meta-regression
coefficients) plus one scikit-learn forest, so the object pickles and its parts save as arrays.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy.optimize import nnls
from sklearn.base import BaseEstimator
from sklearn.ensemble import RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.utils import check_random_state

from fennec_mlflow.config import FENNEC_ALPHA, FENNEC_K, FENNEC_NMF_L2
from fennec_mlflow.errors import InvalidInputError

RANKING_COLUMNS = ["model", "score", "transfer_score", "meta_score", "known_score", "rank"]

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


def _numeric_table(table, name: str, index: pd.Index, index_kind: str) -> tuple[np.ndarray, list[str]]:
    """``table``'s rows for ``index``, as a float array, with clear errors for what cannot be used."""
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
    bad = ~np.isfinite(rows)
    if bad.any():
        columns = table.columns[bad.any(axis=0)].tolist()
        raise InvalidInputError(f"{name} has NaN or infinite values in column(s) {columns[:5]}")
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
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def _feature_row(row, columns: list[str], name: str) -> np.ndarray:
    """One task's feature vector in the fitted column order, from a Series, dict, 1-row DataFrame or array."""
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
    if not np.all(np.isfinite(values)):
        bad = [c for c, v in zip(columns, values) if not np.isfinite(v)]
        raise InvalidInputError(f"{name} has missing, non-numeric or infinite values for {bad}")
    return values


class Fennec(BaseEstimator):
    """The Fennec recommender: masked NMF transfer space, proxy regressor, meta regression, merge.

    Parameters
    ----------
    k : dimension of the transfer space; must be below min(models, tasks) of the training matrix.
    alpha : weight of the meta score in the merge, in [0, 1]; 0 = transfer only, 1 = meta only.
    nmf_l2 : λ of the Frobenius penalty on both factors (also the ridge of the warm-start fold-in),
        in the units of the normalised matrix (per-task z-scores).
    nmf_max_iter, nmf_tol : NMF stops after this many sweeps or when the objective's relative
        decrease per sweep falls below ``nmf_tol``.
    random_state : seeds the NMF initialisation and the forest; same seed, same fit.
    n_estimators : trees of the proxy random forest.
    meta_l2 : ridge penalty of the meta regression (inputs standardised).
    meta_interactions : add model-fact x task-fact products to the meta regression.
    warm_start_prior : how many known entries the proxy estimate is worth in a warm start.

    A scikit-learn ``BaseEstimator`` (``get_params``/``set_params``/``clone`` work), though ``fit`` takes
    tables rather than (X, y).
    """

    def __init__(self, k: int = FENNEC_K, alpha: float = FENNEC_ALPHA, nmf_l2: float = FENNEC_NMF_L2, nmf_max_iter: int = 5000,
                 nmf_tol: float = 1e-6, random_state=0, n_estimators: int = 200, meta_l2: float = 1.0,
                 meta_interactions: bool = True, warm_start_prior: float = 10.0):
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

    @classmethod
    def transfer_only(cls, **params) -> "Fennec":
        """Fennec without the meta phase's vote (alpha = 0)."""
        return cls(alpha=0.0, **params)

    @classmethod
    def meta_only(cls, **params) -> "Fennec":
        """Fennec ranking by the meta regression alone (alpha = 1)."""
        return cls(alpha=1.0, **params)

    # ------------------------------------------------------------------ fit
    def fit(self, P: pd.DataFrame, model_meta: pd.DataFrame | None = None, task_meta: pd.DataFrame | None = None,
            task_proxy: pd.DataFrame | None = None) -> "Fennec":
        """Learn from a models x tasks score matrix ``P`` (NaN = not measured) and the meta/proxy tables.

        ``model_meta`` is indexed by model, ``task_meta`` and ``task_proxy`` by task (extra rows are
        ignored); all their columns must be numeric. Without ``model_meta`` or ``task_meta`` there is no
        meta phase. Without ``task_proxy`` a new task's vector is regressed from ``task_meta``.
        The meta regression's design has one row per observed cell and (p + q + p·q) columns for p model
        and q task facts: compact model facts keep it small (e.g. 25,000 cells x 500 columns = 100 MB).
        """
        # Validate everything before touching any fitted attribute: a failed fit leaves no half state.
        self._check_params()
        values = self._check_matrix(P)
        observed = ~np.isnan(values)
        n_models, n_tasks = values.shape
        if not self.k < min(n_models, n_tasks):
            raise InvalidInputError(f"k={self.k} must be below min(models, tasks) = min({n_models}, {n_tasks}) of P")
        if task_proxy is None and task_meta is None:
            raise InvalidInputError("give task_proxy or task_meta: a new task's vector is predicted from one of them")
        proxy_features = proxy_columns = task_features = task_columns = model_features = model_columns = None
        if task_proxy is not None:
            proxy_features, proxy_columns = _numeric_table(task_proxy, "task_proxy", P.columns, "tasks")
        if task_meta is not None:
            task_features, task_columns = _numeric_table(task_meta, "task_meta", P.columns, "tasks")
        if model_meta is not None:
            model_features, model_columns = _numeric_table(model_meta, "model_meta", P.index, "models")
        has_meta = model_features is not None and task_features is not None
        if not has_meta and self.alpha == 1.0:
            raise InvalidInputError("alpha=1 ranks by the meta regression alone, which needs model_meta and task_meta")
        if not has_meta and self.alpha > 0:
            warnings.warn("no model_meta or task_meta: no meta phase, ranking by the transfer score alone",
                          stacklevel=2)

        self.model_names_ = np.asarray(P.index.map(str), dtype=object)
        self.task_names_ = np.asarray(P.columns.map(str), dtype=object)
        normalised, self.task_mean_, self.task_std_, self.shift_ = normalize_tasks(values)

        # Transfer phase.
        self.model_vectors_, self.task_vectors_, self.objective_history_ = masked_nmf(
            normalised, observed, self.k, self.nmf_l2, max_iter=self.nmf_max_iter, tol=self.nmf_tol,
            random_state=self.random_state)
        self.n_iter_ = len(self.objective_history_) - 1
        last_decrease = self.objective_history_[-2] - self.objective_history_[-1]
        if self.n_iter_ == self.nmf_max_iter and last_decrease > self.nmf_tol * self.objective_history_[-2]:
            warnings.warn(f"masked NMF stopped at nmf_max_iter={self.nmf_max_iter} before reaching "
                          f"nmf_tol={self.nmf_tol}; raise nmf_max_iter or nmf_l2", ConvergenceWarning, stacklevel=2)

        # Proxy regressor: proxy features (or, without them, task facts) -> task vector.
        self.proxy_columns_ = proxy_columns
        self.task_meta_columns_ = task_columns
        self.model_meta_columns_ = model_columns
        self.task_vector_source_ = "task_proxy" if proxy_features is not None else "task_meta"
        self.task_regressor_ = RandomForestRegressor(n_estimators=self.n_estimators, random_state=self.random_state)
        # A 1-column target would trigger scikit-learn's column-vector warning: pass it flat when k = 1.
        targets = self.task_vectors_ if self.k > 1 else self.task_vectors_[:, 0]
        self.task_regressor_.fit(proxy_features if proxy_features is not None else task_features, targets)
        self.flat_forest_ = FlatForest(self.task_regressor_)

        # Meta phase: [model facts, task facts, their products] -> normalised score, over observed cells.
        self.has_meta_ = has_meta
        if has_meta:
            self.model_meta_ = model_features
            self.model_meta_mean_, self.model_meta_std_ = _standardise_columns(model_features)
            self.task_meta_mean_, self.task_meta_std_ = _standardise_columns(task_features)
            rows, cols = np.nonzero(observed)
            design = self._meta_design((model_features[rows] - self.model_meta_mean_) / self.model_meta_std_,
                                       (task_features[cols] - self.task_meta_mean_) / self.task_meta_std_)
            ridge = Ridge(alpha=self.meta_l2).fit(design, normalised[rows, cols])
            n_model, n_task = model_features.shape[1], task_features.shape[1]
            self.meta_model_weights_ = ridge.coef_[:n_model]
            self.meta_task_weights_ = ridge.coef_[n_model:n_model + n_task]
            self.meta_interaction_weights_ = (ridge.coef_[n_model + n_task:].reshape(n_model, n_task)
                                              if self.meta_interactions else np.zeros((n_model, n_task)))
            self.meta_intercept_ = float(ridge.intercept_)
        return self

    def _meta_design(self, model_rows: np.ndarray, task_rows: np.ndarray) -> np.ndarray:
        parts = [model_rows, task_rows]
        if self.meta_interactions:
            parts.append((model_rows[:, :, None] * task_rows[:, None, :]).reshape(len(model_rows), -1))
        return np.hstack(parts)

    def _check_params(self) -> None:
        if not isinstance(self.k, (int, np.integer)) or isinstance(self.k, bool) or self.k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {self.k!r}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise InvalidInputError(f"alpha must lie in [0, 1], got {self.alpha!r}")
        for name in ("nmf_l2", "meta_l2", "warm_start_prior"):
            if not getattr(self, name) >= 0:
                raise InvalidInputError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.nmf_tol >= 0 or not self.nmf_max_iter >= 1:
            raise InvalidInputError(f"need nmf_tol >= 0 and nmf_max_iter >= 1, got {self.nmf_tol!r}, {self.nmf_max_iter!r}")

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
        if not hasattr(self, "model_vectors_"):
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
        if self.task_vector_source_ == "task_proxy":
            if task_proxy_row is None:
                raise InvalidInputError("this model was fitted with task_proxy: rank needs task_proxy_row")
            features = _feature_row(task_proxy_row, self.proxy_columns_, "task_proxy_row")
        else:
            if task_meta_row is None:
                raise InvalidInputError("this model was fitted without task_proxy: rank needs task_meta_row")
            features = _feature_row(task_meta_row, self.task_meta_columns_, "task_meta_row")
        if getattr(self, "flat_forest_", None) is None:  # models pickled before FlatForest existed
            self.flat_forest_ = FlatForest(self.task_regressor_)
        return self.flat_forest_.predict_one(features)

    def meta_scores(self, task_meta_row, model_index: np.ndarray | None = None) -> np.ndarray:
        """The meta regression's normalised-score prediction for each model (one matrix-vector product)."""
        self._check_fitted()
        if not self.has_meta_:
            raise InvalidInputError("this model was fitted without model_meta/task_meta: no meta scores")
        if task_meta_row is None:
            raise InvalidInputError("the meta phase needs task_meta_row")
        task = (_feature_row(task_meta_row, self.task_meta_columns_, "task_meta_row")
                - self.task_meta_mean_) / self.task_meta_std_
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

        ``task_meta_row`` / ``task_proxy_row``: the task's facts and proxy features (a Series or dict by
        column name, or an array in the fitted column order). ``known_scores``: scores of a few models
        on this task, on P's raw scale (warm start). ``models``: restrict the candidates.
        Returns columns model, score, transfer_score, meta_score, known_score (NaN when not given), rank.
        """
        self._check_fitted()
        candidates = (np.arange(len(self.model_names_)) if models is None
                      else self._model_index(list(models), "models"))
        if candidates.size == 0:
            raise InvalidInputError("models is empty: no candidate to rank")
        candidate_vectors = self.model_vectors_[candidates]
        transfer = zscore(candidate_vectors @ self.task_vector(task_meta_row, task_proxy_row))

        known_column = np.full(candidates.size, np.nan)
        if known_scores is not None:
            known_index, known_values = self._known(known_scores)
            folded = fold_in(self.model_vectors_[known_index], known_values, self.nmf_l2)
            if folded is not None:
                weight = known_index.size / (known_index.size + self.warm_start_prior)
                transfer = zscore((1 - weight) * transfer + weight * zscore(candidate_vectors @ folded))
            else:
                warnings.warn("known_scores need at least two different values to inform the ranking; "
                              "ranking cold", stacklevel=2)
            known_by_model = dict(zip(known_index.tolist(), known_values.tolist()))
            known_column = np.asarray([known_by_model.get(i, np.nan) for i in candidates.tolist()])

        # With alpha = 0 the meta score is only informative: skip it when no task facts were given.
        if self.has_meta_ and (task_meta_row is not None or self.alpha > 0):
            meta = zscore(self.meta_scores(task_meta_row, candidates))
            score = (1 - self.alpha) * transfer + self.alpha * meta
        else:
            meta = np.full(candidates.size, np.nan)
            score = transfer

        order = np.argsort(-score, kind="stable")
        return pd.DataFrame({
            "model": self.model_names_[candidates][order],  # same order as RANKING_COLUMNS
            "score": score[order],
            "transfer_score": transfer[order],
            "meta_score": meta[order],
            "known_score": known_column[order],
            "rank": np.arange(1, candidates.size + 1),
        })
