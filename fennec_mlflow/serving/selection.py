"""Model selection for Fennec: the data it is validated on, the Optuna search, nested cross-validation.

Shared by ``build`` (which tunes and validates on the store's own ground truth) and by the
benchmarks (:mod:`fennec_mlflow.bench.tuning`, :mod:`fennec_mlflow.bench.store`); nothing here
reads a public table.

**Data** (:class:`TuningData`). ``P`` is the ground truth (models x tasks, NaN where unknown);
``targets`` are the tasks held out in turn. The *history* a fit sees for target t is one of
``histories``: :data:`TRUTH` (P without t's column, the public benchmarks' protocol) or another
matrix of the store (FDA, an estimator's scores, another table) **without t's column**, so
neither t's ground truth nor its own transferability scores are ever seen (leak-free: only the
other tasks' columns of any matrix enter a fit). A fit's history drops the models and tasks it
has no value for; a truth model the fit could not score gets 0, the average model.

**Store data** (:func:`load_store_data`). Truth: the store's ``finetune`` runs, or an imported
table (``external`` runs of one ``source``). Targets: every truth task with at least
:data:`MIN_TARGET_MODELS` known models that the history covers. Model and task meta come from the
facts the runs carry, through the knowledge helpers (:mod:`fennec_mlflow.store.knowledge`):
log parameter count, archi2vec of the architecture (``arch`` of ``arch@source``) when the store
has it, source domain; log class count, log sample count (``task_sample_count`` or
``task_train_size``), domain one-hot. A table without informative facts gets ``None``: Fennec then
ranks by popularity, which it says.

**Search space** (:func:`suggest`). ``k`` in [1, k_max], ``alpha`` in [0, 1], ``nmf_l2`` in
[1e-3, 10] (log), the shrinkage (``shrinkage_mode`` ``auto``, or ``fixed`` with ``shrinkage`` in
[0, 1]), when several are given, the history source (``history``), and where a new task has a
vector to place it by (task facts or proxies), the formulation (``shrunk``, the default, or the
paper's eq. 10 merge: on a published table of 9 self-supervised rows x 12 targets it ranked 10
Pearson points above the default). The first trial of a study is Fennec's default. The
objective: mean leave-one-task-out Pearson over the targets.
**Choice** (:func:`chosen_trial`): a trial replaces the default only if its per-target gain over
the default is beyond doubt (the lower confidence bound of the mean paired difference, one-sided
~98%, Student's t over targets, is above 0), the rule the recommender's shrinkage follows. With
6 to 13 targets the plain best of 12 trials is mostly chance: it made the nested-CV figure 0.1
and 0.9 points worse than the default on PARC and PARC-6.

**Nested cross-validation** (:func:`nested_cross_validation`). For each outer target t: a fresh
in-memory study tunes on the data without t (inner leave-one-task-out over the other targets),
then Fennec with the inner best params is fitted on t's history and ranks t. The mean of those
outer Pearsons is the honest figure: no choice behind it ever saw t.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from fennec_mlflow.progress import tqdm

from fennec_mlflow import config
from fennec_mlflow.archi2vec.meta import model_family
from fennec_mlflow.core import evaluation as ev
from fennec_mlflow.core.recommender import FORMULATIONS, Fennec, mean_gain_is_certain
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.parallel import forked_map
from fennec_mlflow.store import tracking
from fennec_mlflow.store.archi2vec_runs import load_architectures
from fennec_mlflow.store.knowledge import (
    architecture_of,
    load_task_proxies,
    model_meta_table,
    source_of,
    task_meta_table,
)

TRUTH = "truth"
MIN_TARGET_MODELS = 3  # a target needs this many known models to be ranked and scored
MIN_TARGETS = 3  # evaluate / tune on the store
DEFAULT_PARAMS = {**config.FENNEC_DEFAULTS, "shrinkage": "auto"}
NMF_L2_RANGE = (1e-3, 10.0)
SHRINKAGE_MODES = ("auto", "fixed")
DEFAULT_INNER_TRIALS = 8


# --------------------------------------------------------------------------- data

def history_without(matrix: pd.DataFrame, target: str) -> pd.DataFrame:
    """``matrix`` without ``target``'s column, and without the models and tasks left with no value."""
    history = matrix.drop(columns=[target], errors="ignore")
    known = history.notna()
    return history.loc[known.any(axis=1), known.any(axis=0)].copy()


def capped_k(k: int, history: pd.DataFrame) -> int:
    """``k`` lowered to what a fit on ``history`` allows: below min(models, tasks)."""
    return int(max(1, min(int(k), min(history.shape) - 1)))


@dataclass(frozen=True)
class TuningData:
    """What Fennec is validated on: ground truth, histories, meta tables, targets (module docstring)."""

    P: pd.DataFrame
    model_meta: pd.DataFrame | None
    task_meta: pd.DataFrame | None
    targets: tuple[str, ...]
    histories: Mapping[str, pd.DataFrame | None] = field(default_factory=lambda: {TRUTH: None})
    task_proxy: pd.DataFrame | None = None
    history_weights: Mapping[str, pd.Series] = field(default_factory=dict)  # a history's task weights, if any

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.histories)

    def history(self, target: str, source: str | None = None) -> pd.DataFrame:
        """What a fit for ``target`` may see: the ``source`` matrix without ``target``'s column."""
        matrix = self.histories[source or self.sources[0]]
        return history_without(self.P if matrix is None else matrix, target)

    def without(self, target: str) -> TuningData:
        """The data of an outer fold: ``target``'s columns, facts and place among the targets removed."""
        def drop_rows(table):
            return None if table is None else table.drop(index=[target], errors="ignore")

        return TuningData(self.P.drop(columns=[target]), self.model_meta, drop_rows(self.task_meta),
                          tuple(t for t in self.targets if t != target),
                          {name: None if m is None else m.drop(columns=[target], errors="ignore")
                           for name, m in self.histories.items()},
                          drop_rows(self.task_proxy), self.history_weights)

    @property
    def k_max(self) -> int:
        """Largest k a leave-one-task-out fit on any history allows (a fit sees its tasks but the target)."""
        sizes = [(self.P if m is None else m).shape for m in self.histories.values()]
        return max(1, max(min(rows, columns - 1) for rows, columns in sizes) - 1)


def fit_fennec(history: pd.DataFrame, params: Mapping, data: TuningData, seed: int = 0) -> Fennec:
    """Fennec with ``params`` (k capped to the history) fitted on ``history`` and the data's meta tables.

    Warnings are the caller's business (a ``ConvergenceWarning`` says the NMF hit its cap).
    """
    settings = {key: value for key, value in params.items() if key != "history"}
    settings["k"] = capped_k(settings.get("k", config.FENNEC_K), history)
    task_meta, task_proxy = data.task_meta, data.task_proxy
    if min(history.shape) < 2:  # nothing to factorise: rank by the history's popularity
        task_meta = task_proxy = None
        settings["formulation"] = "shrunk"
    weights = data.history_weights.get(params.get("history") or data.sources[0])
    return Fennec(**settings, random_state=int(seed)).fit(history, data.model_meta, task_meta, task_proxy,
                                                          task_weights=weights)


def fennec_scores(model: Fennec, target: str, data: TuningData, models: pd.Index,
                  known_scores: Mapping[str, float] | None = None) -> pd.Series:
    """``model``'s score of each of ``models`` on ``target``; a model it was not fitted on gets 0 (average).

    Known scores of models it was not fitted on (their only cell is the target's: nothing to learn
    from) are not told: the recommender cannot place or propagate them.
    """
    meta = None if model.task_meta_columns_ is None else data.task_meta.loc[target]
    proxy = None if model.proxy_columns_ is None else data.task_proxy.loc[target]
    if known_scores:
        fitted = set(model.model_names_)
        known_scores = {name: value for name, value in known_scores.items() if name in fitted} or None
    ranking = model.rank(meta, proxy, known_scores=known_scores)
    return ranking.set_index("model")["score"].reindex(models).fillna(0.0)


def loto_evaluation(data: TuningData, params: Mapping, seed: int = 0) -> ev.EvaluationResult:
    """Leave-one-task-out evaluation of cold-start Fennec with ``params`` on ``data``'s targets.

    ``params["history"]`` picks the history source (default the first). The summary gains
    ``nmf_not_converged``: fits whose NMF stopped at its iteration cap (small ``nmf_l2``
    converges slowly; the fit is still used, as ``build`` would use it).
    """
    source = params.get("history")

    def fitted_scores(target: str) -> tuple[pd.Series, bool]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model = fit_fennec(data.history(target, source), params, data, seed)
        return (fennec_scores(model, target, data, data.P.index),
                any(issubclass(w.category, ConvergenceWarning) for w in caught))

    # The targets' fits on every core first (each sees only its target's history); the protocol
    # then reads their scores.
    targets = list(data.targets)
    fitted = dict(zip(targets, forked_map(fitted_scores, targets)))
    result = ev.leave_one_task_out(data.P, lambda history, target: fitted[target][0].reindex(history.index), targets)
    result.summary["nmf_not_converged"] = float(sum(flag for _, flag in fitted.values()))
    return result


def popularity_evaluation(data: TuningData) -> ev.EvaluationResult:
    """Popularity (mean z-scored ground truth of the other tasks) on the same targets."""
    return ev.leave_one_task_out(data.P, ev.popularity, list(data.targets))


# --------------------------------------------------------------------------- search space and studies

def suggest(trial: optuna.Trial, data: TuningData, fixed: Mapping | None = None) -> dict:
    """Fennec params for one trial; ``fixed`` params are not searched (see the module docstring)."""
    fixed = dict(fixed or {})
    params = {}
    params["k"] = int(fixed["k"]) if "k" in fixed else trial.suggest_int("k", 1, data.k_max)
    params["alpha"] = float(fixed["alpha"]) if "alpha" in fixed else trial.suggest_float("alpha", 0.0, 1.0)
    params["nmf_l2"] = (float(fixed["nmf_l2"]) if "nmf_l2" in fixed
                        else trial.suggest_float("nmf_l2", *NMF_L2_RANGE, log=True))
    if "shrinkage" in fixed:
        params["shrinkage"] = fixed["shrinkage"]
    elif trial.suggest_categorical("shrinkage_mode", SHRINKAGE_MODES) == "auto":
        params["shrinkage"] = "auto"
    else:
        params["shrinkage"] = trial.suggest_float("shrinkage", 0.0, 1.0)
    if len(data.sources) > 1:
        params["history"] = fixed.get("history") or trial.suggest_categorical("history", data.sources)
    if "formulation" in fixed:
        params["formulation"] = fixed["formulation"]
    elif paper_searchable(data):
        params["formulation"] = trial.suggest_categorical("formulation", FORMULATIONS)
    return params


def paper_searchable(data: TuningData) -> bool:
    """Whether the paper's formulation can rank these targets: it places a new task by a vector,
    regressed from its proxy or its facts."""
    return data.task_meta is not None or data.task_proxy is not None


def default_params(data: TuningData, fixed: Mapping | None = None) -> dict:
    """The first trial of a study (Fennec's defaults), as Optuna params; ``fixed`` ones left out."""
    fixed = fixed or {}
    params = {"k": min(DEFAULT_PARAMS["k"], data.k_max), "alpha": DEFAULT_PARAMS["alpha"],
              "nmf_l2": DEFAULT_PARAMS["nmf_l2"], "shrinkage_mode": "auto"}
    if len(data.sources) > 1:
        params["history"] = data.sources[0]
    if paper_searchable(data):
        params["formulation"] = "shrunk"
    if "shrinkage" in fixed:
        params.pop("shrinkage_mode")
    return {k: v for k, v in params.items() if k not in fixed}


def fennec_params(trial_params: Mapping, fixed: Mapping | None = None) -> dict:
    """Optuna params (plus the ``fixed`` ones) as Fennec params: ``shrinkage_mode`` folded into ``shrinkage``."""
    fixed = dict(fixed or {})
    params = {**dict(trial_params), **fixed}
    if "shrinkage" not in fixed and params.pop("shrinkage_mode", "auto") == "auto":
        params["shrinkage"] = "auto"
    result = {"k": int(params["k"]), "alpha": float(params["alpha"]), "nmf_l2": float(params["nmf_l2"]),
              "shrinkage": params["shrinkage"] if params["shrinkage"] == "auto" else float(params["shrinkage"])}
    if "history" in params:
        result["history"] = str(params["history"])
    if "formulation" in params:
        result["formulation"] = str(params["formulation"])
    return result


def objective_value(result: ev.EvaluationResult) -> float:
    value = result.summary["mean_pearson"]
    return float(value) if np.isfinite(value) else -1.0


def make_sampler(n_trials: int, seed: int | None) -> optuna.samplers.TPESampler:
    """TPE, seeded, with a random start of a third of the trials (2 to 10)."""
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, n_trials // 3)))


PER_TARGET_ATTR = "pearson_per_target"


def record_per_target(trial: optuna.Trial, result: ev.EvaluationResult) -> float:
    """The objective value, with the per-target Pearsons kept on the trial for :func:`chosen_trial`."""
    pearsons = result.per_target["pearson"]
    trial.set_user_attr(PER_TARGET_ATTR, {str(t): float(v) for t, v in pearsons.items() if np.isfinite(v)})
    return objective_value(result)


def chosen_trial(study: optuna.Study, defaults: Mapping) -> optuna.trial.FrozenTrial:
    """The best trial whose gain over the default (the trial with params ``defaults``) is beyond doubt, else the default.

    The gain is paired over targets: per-target Pearson minus the default's; its mean must clear
    the recommender's own bar (:func:`mean_gain_is_certain`). Trials without per-target
    figures (other objectives) fall back to Optuna's best.
    """
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    default = next((t for t in complete if t.params == dict(defaults)), None)
    if default is None or PER_TARGET_ATTR not in default.user_attrs:
        return study.best_trial
    baseline = default.user_attrs[PER_TARGET_ATTR]
    best = default
    for trial in complete:
        per_target = trial.user_attrs.get(PER_TARGET_ATTR, {})
        gains = np.array([per_target[t] - baseline[t] for t in baseline if t in per_target])
        if trial.value > best.value and mean_gain_is_certain(gains):
            best = trial
    return best


def tune_study(data: TuningData, n_trials: int, *, seed: int | None = 0, fennec_seed: int = 0,
               fixed: Mapping | None = None, on_trial: Callable[[], None] | None = None) -> optuna.Study:
    """An in-memory study of ``n_trials`` on ``data`` (Fennec's default first); nothing is logged.
    ``on_trial`` is called after each trial (progress)."""
    study = optuna.create_study(direction="maximize", sampler=make_sampler(n_trials, seed))
    study.enqueue_trial(default_params(data, fixed))
    study.optimize(lambda trial: record_per_target(trial, loto_evaluation(data, suggest(trial, data, fixed),
                                                                           fennec_seed)),
                   n_trials=n_trials, callbacks=[lambda study, trial: on_trial()] if on_trial else None)
    return study


# --------------------------------------------------------------------------- nested cross-validation

@dataclass
class NestedFold:
    target: str
    best_params: dict
    inner_value: float
    pearson: float
    metrics: dict


@dataclass
class NestedCVResult:
    folds: list[NestedFold]

    def _pearsons(self) -> np.ndarray:
        values = np.array([f.pearson for f in self.folds], dtype=float)
        return values[np.isfinite(values)]

    @property
    def mean_pearson(self) -> float:
        values = self._pearsons()
        return float(values.mean()) if values.size else math.nan

    @property
    def std_pearson(self) -> float:
        values = self._pearsons()
        return float(values.std()) if values.size else math.nan

    def table(self) -> pd.DataFrame:
        rows = [{"target": f.target, **{f"best_{k}": v for k, v in f.best_params.items()},
                 "inner_mean_pearson": f.inner_value, **f.metrics} for f in self.folds]
        return pd.DataFrame(rows).set_index("target")


def nested_fold(data: TuningData, target: str, inner_trials: int, seed: int | None = 0, fennec_seed: int = 0,
                fixed: Mapping | None = None) -> NestedFold:
    """Tune on the data without ``target`` only, then fit on ``target``'s history and score it."""
    inner = data.without(target)
    if not inner.targets:
        raise InvalidInputError(f"nested cross-validation needs at least 2 targets; {target!r} is the only one")
    study = tune_study(inner, inner_trials, seed=seed, fennec_seed=fennec_seed, fixed=fixed)
    chosen = chosen_trial(study, default_params(inner, fixed))
    best = fennec_params(chosen.params, fixed)
    # Outer step: fit on every history task but the target (the inner fits saw one fewer), rank the target.
    result = loto_evaluation(dataclasses.replace(data, targets=(target,)), best, fennec_seed)
    row = result.per_target.loc[target]
    metrics = {m: float(row[m]) for m in result.metric_names}
    return NestedFold(target, best, float(chosen.value), metrics["pearson"], metrics)


def nested_cross_validation(data: TuningData, *, inner_trials: int = DEFAULT_INNER_TRIALS, seed: int | None = 0,
                            fennec_seed: int = 0, workers: int | None = None, fixed: Mapping | None = None,
                            on_fold: Callable[[], None] | None = None) -> NestedCVResult:
    """Nested leave-one-task-out: the reported figure of a tuned Fennec (see the module docstring).
    The outer folds run on ``workers`` processes (default: every core; :func:`~fennec_mlflow.parallel.forked_map`);
    ``on_fold`` is called after each (progress)."""
    jobs = [(data, target, inner_trials, None if seed is None else seed + i, fennec_seed, fixed)
            for i, target in enumerate(data.targets)]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # inner studies are internal: no per-trial lines
    try:
        return NestedCVResult(forked_map(lambda job: nested_fold(*job), jobs, workers=workers, done=on_fold))
    finally:
        optuna.logging.set_verbosity(verbosity)


# --------------------------------------------------------------------------- validation (what build logs)

@dataclass
class Validation:
    """The validated quality of a Fennec configuration on the store's ground truth."""

    params: dict  # the Fennec params to fit with (history included when several were searched)
    validated_mean_pearson: float  # nested CV when tuned, plain leave-one-task-out for fixed params
    popularity_mean_pearson: float  # popularity on the same targets
    method: str
    targets: list[str]
    n_trials: int = 0
    best_mean_pearson: float | None = None  # optimistic: chosen and measured on the same targets
    seconds: float = 0.0
    trials: pd.DataFrame | None = None
    folds: pd.DataFrame | None = None
    truth: pd.DataFrame | None = None  # the cells it was measured on (models x targets)


# Fennec reduced to the popularity of its history: no interaction, no similar-task weighting.
POPULARITY_SETTINGS = {"formulation": "shrunk", "shrinkage": 0.0, "task_bandwidth": None}


def popularity_fallback(data: TuningData, chosen: dict, value: float, popularity: float,
                        fixed: Mapping) -> tuple[dict, float, str]:
    """(params, validated figure, what was done) to serve: ``chosen`` with its figure ``value``, or, where
    that is below popularity's on the same targets, Fennec reduced to popularity
    (:data:`POPULARITY_SETTINGS`) when its own leave-one-task-out figure is higher.

    A recommender that its own store shows to rank worse than popularity should not serve: the user
    gets the popular models, and the basis says so. That configuration is not tuned, so its
    leave-one-task-out figure is honest; choosing it looks at the same targets, a choice of two.
    Not done where the user fixed the shrinkage or the paper's formulation.
    """
    if not value < popularity or "shrinkage" in fixed or fixed.get("formulation") == "paper":
        return chosen, value, ""
    reduced = {**chosen, **POPULARITY_SETTINGS}
    reduced_value = float(loto_evaluation(data, reduced).summary["mean_pearson"])
    if not reduced_value > value:
        return chosen, value, ""
    return reduced, reduced_value, (f"; it validated {100 * value:.1f} against popularity's {100 * popularity:.1f}, "
                                    f"so it serves popularity among the history (no task-specific weighting: "
                                    f"{100 * reduced_value:.1f})")


def validate(data: TuningData, *, tune: bool, params: Mapping | None = None, n_trials: int = config.TUNE_N_TRIALS,
             inner_trials: int = DEFAULT_INNER_TRIALS, seed: int | None = 0, progress: bool = False) -> Validation:
    """Tune (Optuna, ``params`` fixed) and measure by nested CV, or measure ``params`` as given.

    Without ``tune`` the params are not chosen on the data, so their plain leave-one-task-out
    figure is already honest. ``progress``: one bar over the trials, then the outer folds.
    """
    start = time.perf_counter()
    fixed = dict(params or {})
    popularity = popularity_evaluation(data).summary["mean_pearson"]
    if not tune:
        chosen = fennec_params(default_params(data, fixed), fixed)
        value = loto_evaluation(data, chosen).summary["mean_pearson"]
        chosen, value, fallback = popularity_fallback(data, chosen, float(value), float(popularity), fixed)
        return Validation(chosen, value, float(popularity), "leave-one-task-out (parameters not tuned)" + fallback,
                          list(data.targets), seconds=time.perf_counter() - start, truth=data.P[list(data.targets)])
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bar = tqdm(total=n_trials + len(data.targets), desc=f"validate: {n_trials} Optuna trials, then nested CV over "
               f"{len(data.targets)} targets", unit="step", disable=not progress)
    try:
        with bar:
            study = tune_study(data, n_trials, seed=seed, fixed=fixed, on_trial=bar.update)
            nested = nested_cross_validation(data, inner_trials=inner_trials, seed=seed, fixed=fixed,
                                             on_fold=bar.update)
    finally:
        optuna.logging.set_verbosity(verbosity)
    trials = study.trials_dataframe(attrs=("number", "value", "params", "state"))
    trials["state"] = trials["state"].astype(str)
    defaults = default_params(data, fixed)
    chosen = chosen_trial(study, defaults)
    kept = ("; the defaults kept: no trial beat them beyond doubt" if chosen.params == dict(defaults) else "")
    served, value, fallback = popularity_fallback(data, fennec_params(chosen.params, fixed), float(nested.mean_pearson),
                                                  float(popularity), fixed)
    return Validation(served, value, float(popularity),
                      f"nested cross-validation ({n_trials} trials, {inner_trials} per inner study){kept}{fallback}",
                      list(data.targets), n_trials, float(study.best_value), time.perf_counter() - start,
                      trials, nested.table(), data.P[list(data.targets)])


# --------------------------------------------------------------------------- the store's own data

@dataclass(frozen=True)
class MatrixSpec:
    """Which runs of the store fill a matrix: a kind, and for some kinds an estimator, a source or
    (finetune runs) a regime: ``"full"`` unless given, ``None`` for the other kinds."""

    kind: str
    estimator: str | None = None
    source: str | None = None
    regime: str | None = None

    def __post_init__(self):
        if self.kind not in tracking.MATRIX_KINDS:
            raise InvalidInputError(f"a matrix kind must be one of {sorted(tracking.MATRIX_KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "regime", tracking.checked_regime(self.kind, self.regime))

    @property
    def label(self) -> str:
        """``kind[:estimator][:source]``; a finetune matrix of another regime than full adds it (``finetune:linear-probe``)."""
        regime = None if self.regime == tracking.DEFAULT_REGIME else self.regime
        return ":".join(part for part in (self.kind, self.estimator, self.source, regime) if part)

    def load(self, experiment: str, mlflow_client=None) -> tracking.KnowledgeMatrix:
        return tracking.load_matrix(self.kind, experiment=experiment, estimator=self.estimator, source=self.source,
                                    regime=self.regime, mlflow_client=mlflow_client)


@dataclass
class StoreData:
    """The store's ground truth and histories, ready for :class:`TuningData` (see :func:`load_store_data`)."""

    truth: MatrixSpec
    data: TuningData
    families: pd.Series | None
    notes: list[str]


def _combined(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    combined = pd.DataFrame()
    for table in tables:
        combined = table if combined.empty else combined.combine_first(table)
    return combined


def informative(table: pd.DataFrame | None, fill_unknown: bool = True) -> pd.DataFrame | None:
    """``table``'s columns that vary, unknown or infinite values (log of a zero count) filled with the
    column mean unless not ``fill_unknown`` (task facts: Fennec leaves an unknown fact out of the task
    distances); None when no column varies (Fennec then has no such meta)."""
    if table is None or table.empty:
        return None
    table = table.astype(float).replace([np.inf, -np.inf], np.nan)
    if fill_unknown:
        table = table.fillna(table.mean()).fillna(0.0)
    varying = [c for c in table.columns if table[c].nunique() > 1]
    return table[varying] if varying else None


def store_task_meta(task_facts: pd.DataFrame, tasks: list[str]) -> pd.DataFrame | None:
    """Task meta from the runs' ``task_*`` facts (class count, sample or train-set size, domain)."""
    facts = task_facts.reindex(tasks)
    domains = []
    if "domain" in facts:
        facts["domain"] = facts["domain"].map(lambda d: str(d) if pd.notna(d) else None)
        domains = sorted(facts["domain"].dropna().unique())
    return informative(task_meta_table(facts, domains), fill_unknown=False)


# Model facts that name a family, first found first used; "arch" is how papers head the column
# (DINOv2's linear-probe table: "Arch", imported as the fact model_arch).
FAMILY_FACTS = ("family", "architecture", "arch", "type")
NAME_FAMILIES = "family_from_name"  # the families' name when only the model names gave them


def store_families(models: list[str], model_facts: pd.DataFrame, architecture_meta: pd.DataFrame) -> pd.Series | None:
    """model -> architecture family, from the facts (family, architecture or arch, type), archi2vec, or ``arch@source`` names.

    A model the first source that names families says nothing about is a family of its own. None
    when no source gives two families or more, one of them shared by several models. Last, the
    names' leading letters (:func:`model_family`: "EfficientNet-B3" -> efficientnet), as a published
    table names its models, named ``family_from_name`` so that the evaluation notes can say so.
    """
    facts = model_facts.reindex(models)
    candidates = [facts[c] for c in FAMILY_FACTS if c in facts]
    archs = pd.Series([architecture_of(m) for m in models], index=models)
    if "family" in architecture_meta:
        candidates.append(archs.map(architecture_meta["family"]))
    if any(source_of(m) is not None for m in models):
        candidates.append(archs)
    candidates.append(pd.Series([model_family(m) for m in models], index=models, name=NAME_FAMILIES))
    for labels in candidates:
        labels = labels.astype(object).where(labels.notna(), pd.Series(models, index=models)).astype(str)
        if labels.nunique() > 1 and labels.value_counts().max() > 1:
            return labels.rename(labels.name if labels.name == NAME_FAMILIES else "family")
    return None


def load_store_data(truth: MatrixSpec, histories: Sequence[MatrixSpec] = (), *,
                    experiment: str = tracking.DEFAULT_EXPERIMENT, encoder: str | None = None,
                    min_targets: int = MIN_TARGETS, mlflow_client=None) -> StoreData:
    """The store's ground truth with its histories and meta (module docstring); raises when too thin.

    ``histories``: the matrices Fennec may learn from (default: the ground truth itself); one that
    equals ``truth`` is the truth. ``encoder``: use the task proxies of that encoder when every
    task has one (else the task vector comes from the task facts, and a note says so).
    """
    mlflow_client = mlflow_client or tracking.client()
    if truth.kind == "external" and not truth.source:
        raise InvalidInputError("an imported ground-truth table is chosen by its source: give --source NAME "
                                "(the name given to `fennec import`)")
    truth_km = truth.load(experiment, mlflow_client)
    if truth_km.values.empty:
        raise InvalidInputError(tracking.missing_runs_message(truth.kind, experiment, source=truth.source,
                                                              mlflow_client=mlflow_client))
    matrices, weights, facts = {}, {}, [truth_km]
    for spec in histories or (truth,):
        if spec == truth:
            matrices[TRUTH] = None
            continue
        km = spec.load(experiment, mlflow_client)
        if km.values.empty:
            raise InvalidInputError(f"no finished {spec.label} runs in experiment {experiment!r} to learn from")
        matrices[spec.label] = km.values
        if km.task_weights is not None:
            weights[spec.label] = km.task_weights
        facts.append(km)
    notes = []
    P = truth_km.values
    scored = set(P.index)
    for name, matrix in matrices.items():
        if matrix is not None:
            scored &= set(matrix.index[matrix.notna().any(axis=1)])
    if len(scored) < len(P.index):
        notes.append(f"{len(P.index) - len(scored)} ground-truth model(s) have no history score and are not evaluated")
        P = P.loc[[m for m in P.index if m in scored]]
    counts = P.notna().sum()
    thin = [t for t in P.columns if 0 < counts[t] < MIN_TARGET_MODELS]
    if thin:  # two scores order nothing: as history their z-scores (+-1) are noise, for popularity too
        notes.append(f"{len(thin)} ground-truth task(s) with fewer than {MIN_TARGET_MODELS} known models left out: "
                     f"{', '.join(map(str, thin[:5]))}{' ...' if len(thin) > 5 else ''}")
    P = P.loc[:, counts >= MIN_TARGET_MODELS]
    targets = list(P.columns)
    if len(targets) < min_targets:
        raise InvalidInputError(
            f"the ground truth ({truth.label}) has {len(targets)} task(s) with at least {MIN_TARGET_MODELS} known "
            f"models{' that the history also scores' if len(scored) < len(truth_km.values.index) else ''}; "
            f"this needs at least {min_targets} such tasks (fine-tune or import results for more tasks)")
    for name, matrix in matrices.items():
        if matrix is not None and matrix.shape[1] < 2:
            raise InvalidInputError(f"the history {name} has {matrix.shape[1]} task(s); a fit needs at least 2")
    all_models = sorted(set(P.index).union(*(m.index for m in matrices.values() if m is not None)))
    all_tasks = sorted(set(P.columns).union(*(m.columns for m in matrices.values() if m is not None)))
    model_facts = _combined([km.model_facts for km in facts])
    task_facts = _combined([km.task_facts for km in facts])
    embeddings, architecture_meta = load_architectures(experiment=experiment, mlflow_client=mlflow_client)
    model_meta = informative(model_meta_table(all_models, embeddings, architecture_meta, model_facts))
    task_meta = store_task_meta(task_facts, all_tasks)
    task_proxy = None
    if encoder is not None:
        proxies = load_task_proxies(encoder, experiment=experiment, mlflow_client=mlflow_client)
        missing = [t for t in all_tasks if t not in proxies.index]
        if missing and 2 * len(missing) < len(all_tasks):
            # A few tasks without a proxy (fine-tuned after the last build) are left out rather than every
            # task placed by its facts: the recommender build serves reads proxies.
            notes.append(f"{len(missing)} task(s) without a {encoder} task proxy left out ({', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}; `fennec build --tasks` computes them)")
            P = P.drop(columns=[t for t in missing if t in P.columns])
            targets = [t for t in targets if t not in missing]
            matrices = {name: None if matrix is None else matrix.drop(columns=[t for t in missing if t in matrix])
                        for name, matrix in matrices.items()}
            all_tasks = [t for t in all_tasks if t not in missing]
            task_meta = None if task_meta is None else task_meta.loc[all_tasks]
            if len(targets) < min_targets:
                raise InvalidInputError(f"only {len(targets)} ground-truth task(s) have a {encoder} task proxy; this "
                                        f"needs at least {min_targets} (`fennec build --tasks` computes them)")
            missing = []
        if not missing:
            task_proxy = proxies.loc[all_tasks]
        elif len(missing) < len(all_tasks):  # none has one: a table without images, nothing to say
            notes.append(f"no {encoder} task proxy for {len(missing)} of {len(all_tasks)} task(s): every task "
                         "vector comes from the task facts")
    if model_meta is None:
        notes.append("no informative model facts: no meta phase")
    if task_meta is None and task_proxy is None:
        notes.append("no task facts or proxies: Fennec ranks by popularity (no task information)")
    families = store_families(all_models, model_facts, architecture_meta)
    if families is not None and families.name == NAME_FAMILIES:
        notes.append(f"model families read from the names' leading letters ({families.nunique()} families, e.g. "
                     f"{', '.join(families.value_counts().index[:3])}) for family-mean; a family, arch or type model "
                     "fact names them better")
    data = TuningData(P, model_meta, task_meta, tuple(targets), matrices, task_proxy, weights)
    return StoreData(truth, data, families, notes)
