"""How well does a recommender rank models? Ranking metrics, the leave-one-task-out protocol, baselines.

A *predictor* is any callable ``predict(history, target) -> pd.Series``: given the performance
matrix without the target's column (``history``: models x other tasks, every model of the
matrix as its index, NaN where a cell is unknown) and the target's name, it returns one score
per model, higher = recommended first. Fennec, the baselines below and a feature-based
estimator wrapped in a closure all fit this signature, so one protocol measures them all.

Ranking metrics compare a prediction with the true accuracies of one target. Models whose true
value is missing are skipped, never filled. Degenerate cases have a fixed, documented result:

- correlations (Pearson, Spearman, weighted Kendall tau) are NaN when the *ground truth* cannot
  rank anything (fewer than 2 known models, or all known accuracies equal): no estimator can be
  judged there, so such a target drops out of every estimator's mean alike;
- they are 0.0 when the *prediction* is constant over the known models but the truth is not: a
  constant prediction ranks nothing, and scoring it 0 (not scipy's NaN) keeps a degenerate
  estimator from dropping its hard targets out of the mean. The protocol counts these cases;
- top-1 regret and top-k hit break ties in the prediction at random and report the expectation,
  so tied scores are neither rewarded nor punished by an arbitrary sort order.

No MLflow here: ``fennec_mlflow.store.tracking`` logs an :class:`EvaluationResult` (``as_metrics``).
"""
from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from fennec_mlflow.config import TASK_FACTS_CSV
from fennec_mlflow.errors import InvalidInputError

Predictor = Callable[[pd.DataFrame, str], pd.Series]

CORRELATIONS = ("pearson", "spearman", "weighted_tau")
MISSING_PREDICTION_POLICIES = ("raise", "skip")
TASK_FACT_COLUMNS = ("task", "benchmarks", "dataset", "class_count", "train_size", "domain",
                     "image_kind", "source", "note")


# --------------------------------------------------------------------------- ranking metrics

def _as_vector(values, name: str) -> np.ndarray:
    vector = np.asarray(values, dtype=float)
    if vector.ndim != 1:
        raise InvalidInputError(f"{name} must be one-dimensional (one value per model), got shape {vector.shape}")
    return vector


def known_pairs(predicted, true) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) restricted to the models whose true value is known.

    Two pandas Series are aligned on their index (the model names); anything else is paired by
    position. A missing prediction for a model whose truth is known is an error: silently
    dropping it would shrink the candidate set in the estimator's favour.
    """
    if isinstance(predicted, pd.Series) and isinstance(true, pd.Series):
        if not predicted.index.is_unique:
            raise InvalidInputError("predicted scores name some model twice")
        predicted = predicted.reindex(true.index)
    p, t = _as_vector(predicted, "predicted"), _as_vector(true, "true")
    if p.shape != t.shape:
        raise InvalidInputError(f"predicted has {p.size} values but true has {t.size}")
    known = ~np.isnan(t)
    p, t = p[known], t[known]
    if np.isnan(p).any():
        raise InvalidInputError(f"{int(np.isnan(p).sum())} model(s) with a known true value have no prediction")
    return p, t


def _is_constant(values: np.ndarray) -> bool:
    return values.size > 0 and bool(np.all(values == values[0]))


def truth_can_rank(true: np.ndarray) -> bool:
    """Whether known true values can judge a ranking at all: 2+ models, not all equal."""
    return true.size >= 2 and not _is_constant(true)


def _correlation(predicted, true, statistic: Callable[[np.ndarray, np.ndarray], float]) -> float:
    p, t = known_pairs(predicted, true)
    if not truth_can_rank(t):
        return math.nan
    if _is_constant(p):
        return 0.0
    return float(statistic(p, t))


def pearson(predicted, true) -> float:
    """Pearson correlation of predicted scores with true accuracies (the Fennec paper's metric)."""
    return _correlation(predicted, true, lambda p, t: stats.pearsonr(p, t).statistic)


def spearman(predicted, true) -> float:
    """Spearman rank correlation; tied values get their average rank (scipy's convention)."""
    return _correlation(predicted, true, lambda p, t: stats.spearmanr(p, t).statistic)


def weighted_kendall_tau(predicted, true) -> float:
    """Weighted Kendall tau exactly as SFDA evaluates: ``scipy.stats.weightedtau(score, truth)``.

    SFDA's ``rank_correlation.w_kendall_metric`` calls ``weightedtau(metric_score, gt)`` with the
    defaults (``rank=True``, hyperbolic weigher 1/(r+1), additive), so swaps among the top
    models cost more than swaps in the tail.
    """
    return _correlation(predicted, true, lambda p, t: stats.weightedtau(p, t).statistic)


def _top_ranked(p: np.ndarray) -> np.ndarray:
    return p == p.max()


def top1_regret(predicted, true) -> float:
    """Best true accuracy minus the true accuracy of the model ranked first.

    Units are those of the ground truth (accuracy points for PARC's %, a fraction in [0, 1] for
    TransferGraph). 0 is perfect. When several models share the top predicted score, the
    regret is the mean over them: the expectation under random tie-breaking. NaN when no true
    value is known.
    """
    p, t = known_pairs(predicted, true)
    if t.size == 0:
        return math.nan
    return float(t.max() - t[_top_ranked(p)].mean())


def topk_hit(predicted, true, k: int = 5) -> float:
    """Whether a truly best model is among the k models ranked first (1.0 or 0.0).

    Ties in the truth: any model sharing the best true value counts as a hit. Ties in the
    prediction across the k-th place: the probability of a hit under random tie-breaking, so
    the value can lie strictly between 0 and 1. NaN when no true value is known.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    p, t = known_pairs(predicted, true)
    if t.size == 0:
        return math.nan
    if k >= p.size:
        return 1.0
    kth_score = np.sort(p)[::-1][k - 1]
    above, tied = p > kth_score, p == kth_score
    best = t == t.max()
    if np.any(best & above):
        return 1.0
    # The tied group fills the remaining slots at random; a hit needs one of its best models drawn.
    slots, group, best_in_group = k - int(above.sum()), int(tied.sum()), int((best & tied).sum())
    if best_in_group == 0:
        return 0.0
    draws = np.arange(slots)
    miss = np.prod((group - best_in_group - draws) / (group - draws)).clip(min=0.0)
    return float(1.0 - miss)


# --------------------------------------------------------------------------- protocol

@dataclass(frozen=True)
class EvaluationResult:
    """Outcome of one leave-one-task-out evaluation (or of several repeats, see :func:`aggregate`).

    per_target: one row per target task: the metrics, ``n_models`` (models scored: true value
        known and, under ``missing_predictions="skip"``, a prediction), ``n_unscored`` (known but
        unpredicted models skipped), ``constant_prediction`` and ``correlation_undefined``.
    summary: ``mean_<metric>`` and ``std_<metric>`` over targets (population std, ddof=0, NaN
        targets left out), ``n_targets``, ``n_targets_undefined`` (truth cannot rank),
        ``n_constant_predictions``, ``n_unscored``; after :func:`aggregate` also
        ``n_repeats`` and ``seed_std_<metric>`` (spread of the per-repeat means).
    predictions: long table (target, model, predicted, true) of the scored cells, for scatter plots.
    """

    per_target: pd.DataFrame
    summary: dict[str, float]
    predictions: pd.DataFrame

    @property
    def metric_names(self) -> tuple[str, ...]:
        return _metric_columns(self.per_target)

    def as_metrics(self) -> dict[str, float]:
        """Flat ``{name: value}`` in the design's naming: the summary plus ``<metric>.<task>``
        (the task's name as :func:`metric_name_part` writes it)."""
        flat = {key: float(value) for key, value in self.summary.items()}
        for target, row in self.per_target.iterrows():
            for metric in self.metric_names:
                flat[f"{metric}.{metric_name_part(target)}"] = float(row[metric])
        return flat


def metric_name_part(name) -> str:
    """``name`` (a task's, as a table gave it) with each character a metric name may not hold
    (MLflow's rule: letters, digits, ``_ - . / :`` and spaces) replaced by ``_``: "Aircraft (%)"
    -> "Aircraft ___"."""
    return re.sub(r"[^\w\-. :/]", "_", str(name))


def _metric_columns(per_target: pd.DataFrame) -> tuple[str, ...]:
    return tuple(c for c in per_target.columns if c in CORRELATIONS or c == "top1_regret"
                 or (c.startswith("top") and c.endswith("_hit")))


def _check_matrix(table: pd.DataFrame) -> None:
    if not isinstance(table, pd.DataFrame):
        raise InvalidInputError(f"the performance matrix must be a pandas DataFrame (models x tasks), got {type(table).__name__}")
    if table.shape[0] < 1 or table.shape[1] < 2:
        raise InvalidInputError(f"leave-one-task-out needs at least 1 model and 2 tasks, got shape {table.shape}")
    for axis, labels in (("model", table.index), ("task", table.columns)):
        if not labels.is_unique:
            duplicated = sorted(map(str, labels[labels.duplicated()].unique()))[:5]
            raise InvalidInputError(f"the performance matrix names some {axis}s twice: {duplicated}")
    non_numeric = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if non_numeric:
        raise InvalidInputError(f"performance matrix columns {non_numeric[:5]} are not numeric")


def _chosen_targets(table: pd.DataFrame, targets: Sequence[str] | None) -> list:
    if targets is None:
        return list(table.columns)
    if isinstance(targets, str):
        raise InvalidInputError("targets must be a list of task names, not one string")
    chosen = list(targets)
    unknown = [t for t in chosen if t not in table.columns]
    if unknown:
        raise InvalidInputError(f"targets {unknown} are not tasks of the performance matrix {list(table.columns)}")
    if len(set(chosen)) != len(chosen) or not chosen:
        raise InvalidInputError(f"targets must be a non-empty list without repeats, got {chosen}")
    return chosen


def _checked_prediction(prediction, models: pd.Index, target) -> pd.Series:
    if not isinstance(prediction, pd.Series):
        raise InvalidInputError(f"the predictor must return a pandas Series indexed by model; for target "
                         f"{target!r} it returned {type(prediction).__name__}")
    if not prediction.index.is_unique:
        raise InvalidInputError(f"the prediction for target {target!r} names some model twice")
    strangers = prediction.index.difference(models)
    if len(strangers):
        raise InvalidInputError(f"the prediction for target {target!r} scores models not in the matrix: "
                         f"{sorted(map(str, strangers))[:5]}")
    return pd.to_numeric(prediction, errors="raise").astype(float).reindex(models)


def evaluate_target(predicted: pd.Series, true: pd.Series, k: int = 5) -> dict[str, float]:
    """All ranking metrics of one target, over the models whose true value is known."""
    p, t = known_pairs(predicted, true)
    return {
        "pearson": pearson(p, t),
        "spearman": spearman(p, t),
        "weighted_tau": weighted_kendall_tau(p, t),
        "top1_regret": top1_regret(p, t),
        f"top{k}_hit": topk_hit(p, t, k),
        "n_models": int(t.size),
        "constant_prediction": bool(truth_can_rank(t) and _is_constant(p)),
        "correlation_undefined": not truth_can_rank(t),
    }


def _summarise(per_target: pd.DataFrame) -> dict[str, float]:
    summary: dict[str, float] = {}
    for metric in _metric_columns(per_target):
        values = per_target[metric].to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        summary[f"mean_{metric}"] = float(values.mean()) if values.size else math.nan
        summary[f"std_{metric}"] = float(values.std()) if values.size else math.nan
    summary["n_targets"] = float(len(per_target))
    summary["n_targets_undefined"] = float(per_target["correlation_undefined"].sum())
    summary["n_constant_predictions"] = float(per_target["constant_prediction"].sum())
    summary["n_unscored"] = float(per_target["n_unscored"].sum())
    return summary


def leave_one_task_out(
    table: pd.DataFrame,
    predict: Predictor,
    targets: Sequence[str] | None = None,
    *,
    k: int = 5,
    missing_predictions: str = "raise",
) -> EvaluationResult:
    """Hold out each target in turn, predict it from the other tasks, score the ranking.

    table: models x tasks, true accuracies, NaN where unknown. The predictor sees a copy of
        ``table`` without the target's column (every task but the target is history, all models
        stay as rows) and never the target's values.
    targets: the tasks to hold out (default all). The other tasks stay history either way, as in
        PARC's evaluation of 6 of its 7 targets.
    k: the cut-off of the top-k hit metric (named ``top<k>_hit``).
    missing_predictions: ``"raise"`` (default) when a model with a known true value gets no
        score; ``"skip"`` to score the rest and count the skipped (``n_unscored``), e.g. for a
        published estimator that scored only part of the zoo.
    """
    _check_matrix(table)
    if missing_predictions not in MISSING_PREDICTION_POLICIES:
        raise InvalidInputError(f"missing_predictions must be one of {MISSING_PREDICTION_POLICIES}, got {missing_predictions!r}")
    if not callable(predict):
        raise InvalidInputError("predict must be a callable predict(history, target) -> pd.Series")
    rows, scored_cells = [], []
    for target in _chosen_targets(table, targets):
        history = table.drop(columns=[target]).copy()  # a copy: a predictor cannot alter the matrix
        predicted = _checked_prediction(predict(history, target), table.index, target)
        true = table[target]
        unscored = true.notna() & predicted.isna()
        if unscored.any() and missing_predictions == "raise":
            raise InvalidInputError(f"for target {target!r}, {int(unscored.sum())} model(s) with a known true value got "
                             f"no prediction, e.g. {sorted(map(str, true.index[unscored]))[:3]}; pass "
                             "missing_predictions='skip' to score only the predicted ones")
        scored = true.notna() & predicted.notna()
        rows.append({"target": target, **evaluate_target(predicted[scored], true[scored], k),
                     "n_unscored": int(unscored.sum())})
        scored_cells.append(pd.DataFrame({"target": target, "model": table.index[scored],
                                          "predicted": predicted[scored].to_numpy(),
                                          "true": true[scored].to_numpy()}))
    per_target = pd.DataFrame(rows).set_index("target")
    predictions = pd.concat(scored_cells, ignore_index=True)
    return EvaluationResult(per_target=per_target, summary=_summarise(per_target), predictions=predictions)


def aggregate(results: Sequence[EvaluationResult]) -> EvaluationResult:
    """Combine repeats of one evaluation (probe seeds, random seeds) into one result.

    per_target: each target's metrics averaged over the repeats (the two flags become the
    fraction of repeats). summary: as for one evaluation, computed on that average, plus
    ``n_repeats`` and ``seed_std_<metric>``: the population std over repeats of each repeat's
    ``mean_<metric>``. predictions: all repeats stacked, with a ``repeat`` column.
    """
    results = list(results)
    if not results:
        raise InvalidInputError("aggregate needs at least one EvaluationResult")
    first = results[0].per_target
    for i, result in enumerate(results[1:], start=1):
        if set(result.per_target.index) != set(first.index) or list(result.per_target.columns) != list(first.columns):
            raise InvalidInputError(f"repeat {i} evaluated other targets or metrics than repeat 0; "
                             "only repeats of the same evaluation can be aggregated")
    stacked = pd.concat([r.per_target.loc[first.index].astype(float) for r in results], keys=range(len(results)))
    per_target = stacked.groupby(level=1, sort=False).mean()
    summary = _summarise(per_target)
    summary["n_repeats"] = float(len(results))
    for metric in _metric_columns(first):
        means = np.array([r.summary[f"mean_{metric}"] for r in results], dtype=float)
        means = means[~np.isnan(means)]
        summary[f"seed_std_{metric}"] = float(means.std()) if means.size else math.nan
    predictions = pd.concat([r.predictions.assign(repeat=i) for i, r in enumerate(results)], ignore_index=True)
    return EvaluationResult(per_target=per_target, summary=summary, predictions=predictions)


# --------------------------------------------------------------------------- baselines

def zscore_per_task(history: pd.DataFrame) -> pd.DataFrame:
    """Each task's column standardised over the models known there (population std).

    Tasks measured in different units or with different difficulty become comparable. A task
    with fewer than 2 known models or a single value carries no ranking information and
    becomes all NaN.
    """
    mean, std = history.mean(), history.std(ddof=0)
    informative = (history.notna().sum() >= 2) & (std > 0)
    z = (history - mean) / std.where(informative)
    return z.astype(float)


def _mean_z_per_model(history: pd.DataFrame) -> pd.Series:
    return zscore_per_task(history).mean(axis=1, skipna=True)


def popularity(history: pd.DataFrame, target: str) -> pd.Series:
    """A model's mean z-scored accuracy over the history tasks; ignores the target's identity.

    A model with no z-scored history gets 0.0, the average model: the best guess without evidence.
    """
    return _mean_z_per_model(history).fillna(0.0).rename("popularity")


def random_baseline(seed: int = 0) -> Predictor:
    """A predictor of independent standard-normal scores; seeded per (seed, target) so the
    scores of one target do not depend on which targets were evaluated before it."""
    def predict(history: pd.DataFrame, target: str) -> pd.Series:
        rng = np.random.default_rng([int(seed), zlib.crc32(str(target).encode())])
        return pd.Series(rng.standard_normal(len(history.index)), index=history.index, name="random")
    return predict


def family_mean(families: Mapping[str, str] | pd.Series) -> Predictor:
    """A predictor scoring each model by the mean popularity (mean z-scored history accuracy) of
    the models sharing its family label, e.g. its architecture; a family without history gets 0.0.

    families: model -> family label; every model of the matrix must have one.
    """
    labels = pd.Series(families, dtype=object)
    if labels.empty:
        raise InvalidInputError("families must map each model to a family label; got an empty mapping")

    def predict(history: pd.DataFrame, target: str) -> pd.Series:
        unlabelled = history.index.difference(labels.index)
        if len(unlabelled):
            raise InvalidInputError(f"{len(unlabelled)} model(s) have no family label, e.g. {sorted(map(str, unlabelled))[:3]}")
        model_family = labels.reindex(history.index)
        family_score = _mean_z_per_model(history).groupby(model_family).mean()
        return model_family.map(family_score).astype(float).fillna(0.0).rename("family_mean")
    return predict


def architecture_vectors(model_meta: pd.DataFrame | None) -> pd.DataFrame | None:
    """The archi2vec columns of a model meta table (``a2v_*`` or ``arch_*``), None when it has none."""
    if model_meta is None:
        return None
    columns = [c for c in model_meta.columns if str(c).startswith(("a2v_", "arch_"))]
    return model_meta[columns].astype(float) if columns else None


def neighbour_family_mean(vectors: pd.DataFrame, architectures: int = 2) -> Predictor:
    """:func:`family_mean` with families found by archi2vec instead of a name: each model is scored
    by the mean popularity of the models whose architecture vector is among the ``architectures``
    nearest distinct vectors to its own (its own included), so an architecture's graph-similar
    neighbour lends it its record.

    vectors: model -> archi2vec vector (models of one architecture share a vector).
    """
    if architectures < 1:
        raise InvalidInputError(f"architectures must be at least 1, got {architectures}")

    def predict(history: pd.DataFrame, target: str) -> pd.Series:
        missing = history.index.difference(vectors.index)
        if len(missing):
            raise InvalidInputError(f"{len(missing)} model(s) have no archi2vec vector, e.g. {sorted(map(str, missing))[:3]}")
        X = vectors.reindex(history.index).to_numpy(dtype=float)
        distinct, kind = np.unique(np.round(X, 9), axis=0, return_inverse=True)
        kind = kind.ravel()
        popularity_z = _mean_z_per_model(history).reindex(history.index).to_numpy(dtype=float)
        distances = np.linalg.norm(distinct[:, None, :] - distinct[None, :, :], axis=-1)
        scores = np.empty(len(distinct))
        for i, row in enumerate(distances):
            members = np.isin(kind, np.argsort(row, kind="stable")[:architectures])
            scores[i] = np.nanmean(popularity_z[members]) if np.isfinite(popularity_z[members]).any() else 0.0
        return pd.Series(scores[kind], index=history.index, name="archi2vec_family_mean")
    return predict


def oracle(table: pd.DataFrame) -> Predictor:
    """A predictor that reads the held-out true values: a sanity check of the protocol only
    (Pearson 1, regret 0, hit 1); it deliberately breaks the no-leak rule."""
    _check_matrix(table)

    def predict(history: pd.DataFrame, target: str) -> pd.Series:
        if target not in table.columns:
            raise InvalidInputError(f"the oracle's table has no task {target!r}")
        return table[target].reindex(history.index).rename("oracle")
    return predict


# --------------------------------------------------------------------------- task facts

def load_task_facts(path: str | Path | None = None) -> pd.DataFrame:
    """Public facts about each target dataset of the public benchmarks, indexed by task.

    Columns: benchmarks (``;``-separated), dataset, class_count, train_size, domain,
    image_kind, source (paper or catalogue page of the figures), note (caveats, uncertainty),
    and aliases (optional, ``;``-separated: other names of the same dataset, for
    :func:`find_task_facts`). No two rows may answer to the same name.
    """
    path = Path(path) if path is not None else TASK_FACTS_CSV
    if not path.is_file():
        raise InvalidInputError(f"task facts table {str(path)!r} does not exist")
    facts = pd.read_csv(path)
    missing = [c for c in TASK_FACT_COLUMNS if c not in facts.columns]
    if missing:
        raise InvalidInputError(f"task facts table {str(path)!r} lacks column(s) {missing}")
    if facts["task"].duplicated().any():
        raise InvalidInputError(f"task facts table {str(path)!r} lists task(s) "
                         f"{sorted(facts.loc[facts['task'].duplicated(), 'task'])} twice")
    for column in ("class_count", "train_size"):
        facts[column] = pd.to_numeric(facts[column], errors="raise").astype(int)
    for column in ("note", "benchmarks", "aliases"):
        facts[column] = facts[column].fillna("") if column in facts.columns else ""
    facts = facts.set_index("task")
    _alias_index(facts, str(path))  # refuses a name that two rows answer to
    return facts


def task_name_key(name: str) -> str:
    """``name`` as task names are compared: lower case, without ``-``, ``_``, ``.`` or spaces.

    "FGVC-Aircraft", "fgvc_aircraft" and "fgvc aircraft" are one name; "food101" and "Food-101" too.
    """
    return re.sub(r"[\s_.\-]+", "", str(name).lower())


def _alias_index(facts: pd.DataFrame, where: str = "the task facts table") -> dict[str, str]:
    """Normalised name (each task and its aliases) -> task."""
    index: dict[str, str] = {}
    for task, aliases in facts.get("aliases", pd.Series("", index=facts.index)).items():
        for name in [task, *str(aliases).split(";")]:
            key = task_name_key(name)
            if key and index.setdefault(key, task) != task:
                raise InvalidInputError(f"{where}: the name {name!r} is given to both task "
                                        f"{index[key]!r} and task {task!r}")
    return index


# What a table's header may add after a dataset's name: its unit or metric ("Aircraft (%)",
# "CIFAR-10 [Acc.]", "DTD top-1"), not part of the name.
_NAME_UNIT = re.compile(r"\s*(?:\([^()]*\)|\[[^\[\]]*\]|%|\b(?:acc\.?|accuracy|top-?1)\b)\s*$", re.IGNORECASE)


def find_task_facts(name: str, facts: pd.DataFrame | None = None) -> pd.Series | None:
    """The facts row of the public dataset called ``name`` (its task name or an alias, compared
    by :func:`task_name_key`, without a unit or metric after it: "Aircraft (%)"), named by its task;
    None when no dataset answers to ``name``."""
    facts = load_task_facts() if facts is None else facts
    aliases, name = _alias_index(facts), str(name)
    while (task := aliases.get(task_name_key(name))) is None:
        shorter = _NAME_UNIT.sub("", name, count=1)
        if shorter == name or not shorter.strip():
            return None
        name = shorter
    return facts.loc[task]
