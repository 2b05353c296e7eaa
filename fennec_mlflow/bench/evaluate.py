"""Leave-one-task-out evaluations of every estimator, logged as MLflow runs side by side.

One call of :func:`run_evaluation` evaluates the estimators under test on one benchmark (a public
table, :mod:`fennec_mlflow.bench.public`, or the store's own ground truth,
:mod:`fennec_mlflow.bench.store`) and writes ONE run per estimator (``fennec.kind=evaluation``,
params ``estimator`` and ``benchmark``) into one experiment per benchmark (default
``fennec-eval-<benchmark>``), so the MLflow UI compares them column by column. The estimator runs
are the children of one parent run, ``leaderboard-<benchmark>`` (``fennec.kind=leaderboard``):
one metric per estimator (``mean_pearson.<estimator>``, ``mean_spearman.<estimator>``,
``mean_top1_regret.<estimator>``), the table ``leaderboard.csv`` / ``leaderboard.json`` (best
first, with each estimator's run id) and the figure ``leaderboard.png``.

Units, the same in the terminal and in MLflow: correlations (Pearson, Spearman, weighted tau) are
fractions in [-1, 1] (x 100 gives the paper's figures); ``top1_regret`` is in the table's units
(e.g. accuracy points); ``top5_hit`` is a fraction of targets. Each run holds:

- metrics: ``mean_pearson``, ``mean_spearman``, ``mean_weighted_tau``, ``mean_top1_regret``,
  ``mean_top5_hit``, their ``std_*`` over targets and ``seed_std_*`` over seeds, and per target
  ``pearson.<task>``, ``spearman.<task>``, ... (:meth:`EvaluationResult.as_metrics`);
  the ``fennec`` run also logs the calibration of its predicted-accuracy interval, leave one
  target out (:func:`interval_metrics`: ``fennec_interval_coverage``, ``fennec_interval_width``,
  ``fennec_accuracy_abs_error``, ``interval_level``, ``interval_coverage.<task>``);
- artifacts: ``scatter.png`` (predicted score vs true accuracy per target, like the paper's
  Fig. 12/13), ``predictions.csv`` (target, model, predicted, true, repeat), ``per_target.csv``,
  and for warm starts ``known_entries.json`` (which models were given, per seed and target).

The estimators (:data:`ESTIMATORS`):

- ``fennec``: Fennec with its defaults (``k=4``, ``alpha=0.5``, ``nmf_l2=0.1``; ``k`` capped at
  ``min(models, history tasks) - 1``); ``fennec-no-transfer`` (``alpha=1``: meta regression only)
  and ``fennec-no-meta`` (``alpha=0``: transfer phase only); ``fennec-additive-meta``: the full
  model with a purely additive meta regression (``meta_interactions=False``: no model-fact x
  task-fact products, so the meta score ranks every task's models alike); ``fennec-paper``: the
  paper's formulation (z-scored merge, eq. 10) instead of the default shrunk one. Cold start: **these tables carry no
  images, so the new task's vector is regressed from its task meta (class count, training-set
  size, domain) alone; no proxy features are used.** Each seed fits Fennec with
  ``random_state=seed`` (NMF start, forest); the metrics are averaged over seeds.
- ``fennec-warm-<n>`` (n = 1, 3, 5): the same fit, ranked with ``known_scores``: the true
  accuracies of n models drawn at random (per seed and target) from the target's known cells.
  **Known entries are excluded from the metrics**: a warm start is judged on the models it was
  not told about, so echoing the given values earns nothing. Because that changes the set of
  scored models, a warm run also logs ``paired_cold_mean_<metric>`` and
  ``paired_popularity_mean_<metric>``: cold Fennec and popularity scored on exactly the same
  remaining models, the fair comparison. One known entry cannot order anything (Fennec's fold-in
  needs two distinct values), so ``fennec-warm-1`` ranks as cold start does.
- ``popularity``, ``family-mean`` (mean popularity of the model's architecture family) and
  ``random`` (averaged over seeds), from :mod:`fennec_mlflow.core.evaluation`. The baselines rank
  from the ground truth of the other tasks; the Fennec rows from the benchmark's history (the
  same, unless a store benchmark learns from, e.g., FDA scores).

A row a benchmark cannot support (:func:`unavailable`: ``family-mean`` without model families,
the meta ablations without model or task facts, ``fennec-no-meta`` and ``fennec-paper`` without
any task information) is skipped with a note when every estimator is evaluated, and refused
when asked for by name: ``fennec-no-transfer`` never silently ranks by something else.

Under ``mlflow run`` (``MLFLOW_RUN_ID`` set) the runs are still new runs of their own
(:func:`fennec_mlflow.store.tracking.own_run`); the project run only gets a summary.
"""
from __future__ import annotations

import json
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fennec_mlflow import config
from fennec_mlflow.bench.public import Benchmark, load_benchmark
from fennec_mlflow.core import evaluation as ev
from fennec_mlflow.core.accuracy import (
    DEFAULT_LEVEL,
    coverage_summary,
    interval_coverage,
)
from fennec_mlflow.core.recommender import INTERACTION_MIN_TASKS, Fennec
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.parallel import forked_map
from fennec_mlflow.serving.selection import (  # noqa: F401 (capped_k: bench.synthetic)
    TuningData, capped_k, fennec_scores, fit_fennec)
from fennec_mlflow.store import tracking

DEFAULT_SEEDS = (0, 1, 2, 3, 4)
WARM_KNOWN = (1, 3, 5)
WARM_ESTIMATORS = {f"fennec-warm-{n}": n for n in WARM_KNOWN}
FENNEC_DEFAULTS = config.FENNEC_DEFAULTS
ESTIMATORS = ("fennec", "fennec-no-transfer", "fennec-no-meta", "fennec-additive-meta", "fennec-paper",
              *(f"fennec-warm-{n}" for n in WARM_KNOWN), "popularity", "family-mean", "archi2vec-family-mean", "model-size",
              "source-accuracy", "random")
# Data-free baselines: a model fact that ranks every task's models alike (larger first).
FACT_BASELINES = {"model-size": "log_parameters", "source-accuracy": "source_accuracy"}
EVALUATION_TAG_BENCHMARK = "fennec.benchmark"
CORRELATION_METRICS = ("pearson", "spearman", "weighted_tau", "top1_regret", "top5_hit")


def experiment_name(benchmark: str) -> str:
    """The default experiment of a benchmark's evaluation runs."""
    return f"fennec-eval-{benchmark}"


# --------------------------------------------------------------------------- Fennec predictors

class FennecFits:
    """Fitted Fennec models per (target, seed), shared by every Fennec variant of one evaluation.

    The warm starts of one (target, seed, alpha) rank from the same fit (``alpha`` enters the
    shrunk formulation's fit: it switches phases off). The fit sees the benchmark's history for
    the target (:meth:`Benchmark.history_for`: the target's column is never in it) plus the meta
    tables, which hold public facts only.
    """

    def __init__(self, benchmark: Benchmark, params: dict | None = None, data: TuningData | None = None):
        self.benchmark = benchmark
        self.params = {**FENNEC_DEFAULTS, **(params or {})}
        self.data = benchmark.tuning_data() if data is None else data
        self._fits: dict[tuple, Fennec] = {}
        self._variants: dict[tuple, FennecFits] = {}

    def variant(self, **changes) -> "FennecFits":
        """The fits of Fennec with ``changes`` to these params (kept: each is fitted once per evaluation)."""
        key = tuple(sorted(changes.items()))
        if key not in self._variants:
            self._variants[key] = FennecFits(self.benchmark, {**self.params, **changes}, self.data)
        return self._variants[key]

    def _fit(self, key: tuple[str, int, float]) -> Fennec:
        target, seed, alpha = key
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            return fit_fennec(self.benchmark.history_for(target), {**self.params, "alpha": alpha}, self.data, seed)

    def get(self, target: str, seed: int, alpha: float) -> Fennec:
        key = (target, int(seed), float(alpha))
        if key not in self._fits:
            self._fits[key] = self._fit(key)
        return self._fits[key]

    def rank(self, history: pd.DataFrame, target: str, seed: int, alpha: float,
             known_scores: dict[str, float] | None = None) -> pd.Series:
        """Scores of ``history``'s models (the ground truth's) on ``target``."""
        model = self.get(target, seed, alpha)
        with warnings.catch_warnings():
            # one known entry: Fennec warns that it ranks cold, as documented for fennec-warm-1
            warnings.simplefilter("ignore", category=UserWarning)
            return fennec_scores(model, target, self.data, history.index, known_scores)


TOP_K = 5  # the cut-off of the top-k hit the leaderboard shows (``top5_hit``)
MIN_JUDGED_MODELS = 3  # a warm start judged on fewer models has a Pearson of +-1 or none at all


def most_known_per_target(benchmark: Benchmark) -> int:
    """The most models any target of ``benchmark`` has a known score for (0 without targets)."""
    return int(benchmark.P[list(benchmark.targets)].notna().sum().max()) if len(benchmark.targets) else 0


def too_few_models_to_judge_warm(benchmark: Benchmark, n_known: int) -> str | None:
    """Why ``fennec-warm-<n_known>`` cannot be judged on ``benchmark``: no target keeps
    :data:`MIN_JUDGED_MODELS` known models besides the ``n_known`` it is told (None when one does)."""
    most = most_known_per_target(benchmark)
    if most - n_known >= MIN_JUDGED_MODELS:
        return None
    return (f"fennec-warm-{n_known} is judged on the models it is not told, and with at most {most} known models "
            f"per target it would keep {max(most - n_known, 0)}, fewer than {MIN_JUDGED_MODELS}")


def skip_notes(refused: dict[str, str], benchmark: Benchmark) -> list[str]:
    """One note per skipped estimator, the warm starts skipped for too few models in one."""
    warm = [name for name in refused if name in WARM_ESTIMATORS]
    notes = [f"skipped: {reason}" for name, reason in refused.items() if name not in warm]
    if warm:
        most = most_known_per_target(benchmark)
        notes.append(f"skipped: {', '.join(warm)}: a warm start is judged on the models it is not told, and with at "
                     f"most {most} known models per target it keeps fewer than {MIN_JUDGED_MODELS}")
    return notes


def unavailable(benchmark: Benchmark, estimator: str) -> str | None:
    """Why ``estimator`` cannot be evaluated on ``benchmark`` (None when it can)."""
    has_vector = benchmark.task_meta is not None or benchmark.task_proxy is not None
    if estimator in ("fennec-no-transfer", "fennec-additive-meta") and (
            benchmark.model_meta is None or benchmark.task_meta is None):
        return (f"{estimator} ranks by the meta regression, which needs model and task facts; "
                f"this benchmark has no {'numeric model facts that differ between models' if benchmark.model_meta is None else 'task facts'}")
    if estimator in ("fennec-no-meta", "fennec-paper") and not has_vector:
        return f"{estimator} needs task facts or task proxies to place a new task; this benchmark has neither"
    if estimator == "archi2vec-family-mean" and ev.architecture_vectors(benchmark.model_meta) is None:
        return "archi2vec-family-mean needs the models' archi2vec vectors (a2v_* or arch_* model facts)"
    if estimator == "family-mean" and benchmark.families is None:
        return ("family-mean needs two model families or more, one of several models (from a family, architecture, "
                "arch or type fact, arch@source names, or the names' leading letters); this benchmark's models give none")
    if estimator in FACT_BASELINES:
        column = FACT_BASELINES[estimator]
        if benchmark.model_meta is None or column not in benchmark.model_meta or benchmark.model_meta[column].isna().all():
            return f"{estimator} needs the model fact {column!r}, which this benchmark's models lack"
    if estimator in WARM_ESTIMATORS:
        return too_few_models_to_judge_warm(benchmark, WARM_ESTIMATORS[estimator])
    return None


def own_scores(scores: pd.DataFrame) -> ev.Predictor:
    """A label-based estimator as a ranker: each target ranked by its own column of ``scores``."""
    def predict(history: pd.DataFrame, target: str) -> pd.Series:
        column = scores[target] if target in scores else pd.Series(dtype=float)
        return column.reindex(history.index).astype(float)
    return predict


def fact_baseline(values: pd.Series) -> ev.Predictor:
    """A data-free predictor: every task ranks its models by one fact (e.g. size), larger first."""
    def predict(history: pd.DataFrame, target: str) -> pd.Series:
        return values.reindex(history.index).astype(float)
    return predict


def interval_metrics(benchmark: Benchmark, fits: FennecFits, seeds: Sequence[int], alpha: float,
                     level: float = DEFAULT_LEVEL) -> dict[str, float]:
    """Calibration of Fennec's predicted-accuracy interval, leave one target out (issue 16).

    Per target: the accuracy model (:class:`fennec_mlflow.core.accuracy.AccuracyModel`) is fitted
    on the ground truth without the target, Fennec's scores (the same fits as the ranking, each
    seed) become predicted accuracies with a ``level`` interval, and the target's known cells are
    checked. Metrics as :func:`calibration_metrics`.
    """
    rankers = [lambda h, t, s=seed: fits.rank(h, t, s, alpha) for seed in seeds]
    return calibration_metrics(benchmark.P, benchmark.targets, rankers, benchmark.task_meta, level)


def calibration_metrics(truth: pd.DataFrame, targets: Sequence[str], rankers: Sequence[ev.Predictor],
                        task_meta: pd.DataFrame | None, level: float = DEFAULT_LEVEL) -> dict[str, float]:
    """``fennec_interval_coverage`` (share of held-out cells inside their interval, pooled over
    targets, mean over ``rankers``, one per seed), ``fennec_interval_width`` and
    ``fennec_accuracy_abs_error`` (table units), ``interval_level``, ``interval_coverage.<task>``;
    none when the truth is not on an accuracy scale."""
    tables = [interval_coverage(truth, targets, rank, level=level, task_meta=task_meta) for rank in rankers]
    tables = [t for t in tables if not t.empty]
    if not tables:
        return {}
    per_target = sum(tables) / len(tables)
    summary = coverage_summary(per_target)
    return {"fennec_interval_coverage": summary["interval_coverage"], "fennec_interval_width": summary["interval_width"],
            "fennec_accuracy_abs_error": summary["accuracy_abs_error"], "interval_level": float(level),
            **{f"interval_coverage.{ev.metric_name_part(target)}": float(v)
               for target, v in per_target["coverage"].items()}}


def draw_known(true: pd.Series, n_known: int, seed: int, target: str) -> list[str]:
    """``n_known`` models drawn at random among those with a known true value (seeded per target)."""
    candidates = true.dropna().index
    rng = np.random.default_rng([int(seed), zlib.crc32(str(target).encode()), int(n_known)])
    chosen = rng.choice(len(candidates), size=min(int(n_known), len(candidates)), replace=False)
    return sorted(str(candidates[i]) for i in chosen)


def fennec_predictor(fits: FennecFits, seed: int, alpha: float) -> ev.Predictor:
    def predict(history: pd.DataFrame, target: str) -> pd.Series:
        return fits.rank(history, target, seed, alpha)
    return predict


def excluding_known(predict: ev.Predictor, table: pd.DataFrame, n_known: int, seed: int) -> ev.Predictor:
    """``predict`` with the models a warm start of (n_known, seed) would be told about left unscored."""
    def masked(history: pd.DataFrame, target: str) -> pd.Series:
        scores = predict(history, target).astype(float).copy()
        scores[draw_known(table[target], n_known, seed, target)] = np.nan
        return scores
    return masked


def told_known_predictor(rank: Callable[[pd.DataFrame, str, dict[str, float]], pd.Series], table: pd.DataFrame,
                         seed: int, n_known: int, record: dict | None = None) -> ev.Predictor:
    """A warm start: ``rank(history, target, known_scores)`` told ``table``'s values of ``n_known``
    random models of the target; those models are left unscored (a warm start is judged on the others).

    Reads ``n_known`` cells of the target's column of ``table`` (that is what a warm start is) and
    nothing else of it; ``record`` collects what it read.
    """
    def predict(history: pd.DataFrame, target: str) -> pd.Series:
        known = draw_known(table[target], n_known, seed, target)
        known_scores = {model: float(table.at[model, target]) for model in known}
        if record is not None:
            record.setdefault(str(seed), {})[str(target)] = known_scores
        scores = rank(history, target, known_scores).copy()
        scores[known] = np.nan  # known entries are not judged
        return scores
    return predict


def warm_start_predictor(fits: FennecFits, table: pd.DataFrame, seed: int, n_known: int, alpha: float,
                         record: dict | None = None) -> ev.Predictor:
    """Fennec told the true accuracy of ``n_known`` random models of the target (:func:`told_known_predictor`)."""
    return told_known_predictor(lambda history, target, known: fits.rank(history, target, seed, alpha, known),
                                table, seed, n_known, record)


# --------------------------------------------------------------------------- evaluation (no MLflow)

@dataclass
class EstimatorOutcome:
    """One estimator's evaluation on one benchmark, before or after logging."""

    estimator: str
    result: ev.EvaluationResult
    params: dict = field(default_factory=dict)
    extra_metrics: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)
    run_id: str | None = None

    def metrics(self) -> dict[str, float]:
        return {**self.result.as_metrics(), **self.extra_metrics}


def prefetch_fits(wanted: Iterable[tuple[FennecFits, tuple[str, int, float]]], *, progress: bool = True) -> None:
    """Fit the (fits, (target, seed, alpha)) pairs not fitted yet, on every core
    (:func:`~fennec_mlflow.parallel.forked_map`): the evaluation's rows then rank from them."""
    from fennec_mlflow.progress import tqdm

    missing = [(fits, key) for fits, key in wanted if key not in fits._fits]
    with tqdm(total=len(missing), desc="fit Fennec per target and seed", unit="fit", leave=False,
              disable=not progress or not missing) as bar:
        models = forked_map(lambda pair: pair[0]._fit(pair[1]), missing, done=bar.update)
    for (fits, key), model in zip(missing, models):
        fits._fits[key] = model


def fits_needed(fits: FennecFits, estimators: Iterable[str], targets: Sequence[str],
                seeds: Sequence[int]) -> list[tuple[FennecFits, tuple[str, int, float]]]:
    """The fits :func:`evaluate_estimator` will rank from for these estimators."""
    alpha = float(fits.params["alpha"])
    wanted = {"fennec": (fits, alpha), "fennec-no-transfer": (fits, 1.0), "fennec-no-meta": (fits, 0.0),
              "fennec-paper": (fits.variant(formulation="paper"), alpha),
              "fennec-additive-meta": (fits.variant(meta_interactions=False), alpha),
              **{f"fennec-warm-{n}": (fits, alpha) for n in WARM_KNOWN}}
    return list(dict.fromkeys((variant, (target, int(seed), variant_alpha)) for name in estimators if name in wanted
                              for variant, variant_alpha in [wanted[name]] for seed in seeds for target in targets))


def _over_seeds(table: pd.DataFrame, make: Callable[[int], ev.Predictor], seeds: Sequence[int],
                targets: list[str], missing: str = "raise") -> ev.EvaluationResult:
    results = [ev.leave_one_task_out(table, make(seed), targets, missing_predictions=missing) for seed in seeds]
    return results[0] if len(results) == 1 else ev.aggregate(results)


def paired_metrics(prefix: str, result: ev.EvaluationResult) -> dict[str, float]:
    return {f"{prefix}_mean_{m}": result.summary[f"mean_{m}"] for m in CORRELATION_METRICS
            if f"mean_{m}" in result.summary}


def evaluate_estimator(benchmark: Benchmark, estimator: str, *, seeds: Sequence[int] = DEFAULT_SEEDS,
                       fits: FennecFits | None = None) -> EstimatorOutcome:
    """Leave-one-task-out evaluation of one estimator of :data:`ESTIMATORS` or of the benchmark's
    ``target_scores`` (nothing is logged)."""
    if estimator not in (*ESTIMATORS, *benchmark.target_scores):
        raise InvalidInputError(f"unknown estimator {estimator!r}; choose among "
                                f"{[*ESTIMATORS, *benchmark.target_scores]}")
    reason = unavailable(benchmark, estimator)
    if reason:
        raise InvalidInputError(f"cannot evaluate {estimator} on {benchmark.name}: {reason}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise InvalidInputError("seeds must name at least one seed")
    table, targets = benchmark.P, benchmark.targets
    fits = fits or FennecFits(benchmark)
    base = {"estimator": estimator, "seeds": ",".join(map(str, seeds))}
    if estimator == "popularity":
        return EstimatorOutcome(estimator, ev.leave_one_task_out(table, ev.popularity, targets), base)
    if estimator == "archi2vec-family-mean":
        vectors = ev.architecture_vectors(benchmark.model_meta)
        return EstimatorOutcome(estimator, ev.leave_one_task_out(table, ev.neighbour_family_mean(vectors), targets),
                                {**base, "architectures_per_family": 2})
    if estimator == "family-mean":
        return EstimatorOutcome(estimator, ev.leave_one_task_out(table, ev.family_mean(benchmark.families), targets),
                                {**base, "families": benchmark.families.nunique()})
    if estimator == "random":
        return EstimatorOutcome(estimator, _over_seeds(table, ev.random_baseline, seeds, targets), base)
    if estimator in benchmark.target_scores:  # a label-based estimator: the target's own scores rank it
        result = ev.leave_one_task_out(table, own_scores(benchmark.target_scores[estimator]), targets,
                                       missing_predictions="skip")
        return EstimatorOutcome(estimator, result, {**base, "labels": "the target's own (label-based estimator)"})
    if estimator in FACT_BASELINES:
        column = FACT_BASELINES[estimator]
        result = ev.leave_one_task_out(table, fact_baseline(benchmark.model_meta[column]), targets,
                                       missing_predictions="skip")
        return EstimatorOutcome(estimator, result, {**base, "fact": column})

    fennec_params = {**fits.params, "history": benchmark.history_name,
                     "task_vector_source": ("task_proxy" if benchmark.task_proxy is not None
                                            else "task_meta" if benchmark.task_meta is not None else "none (popularity)"),
                     "proxy_features": "none (no images)" if benchmark.task_proxy is None else "task_proxy"}
    if estimator in ("fennec", "fennec-no-transfer", "fennec-no-meta"):
        alpha = {"fennec": fits.params["alpha"], "fennec-no-transfer": 1.0, "fennec-no-meta": 0.0}[estimator]
        result = _over_seeds(table, lambda s: fennec_predictor(fits, s, alpha), seeds, targets)
        extra = interval_metrics(benchmark, fits, seeds, alpha) if estimator == "fennec" else {}
        return EstimatorOutcome(estimator, result, {**base, **fennec_params, "alpha": alpha}, extra_metrics=extra)
    if estimator == "fennec-paper":
        paper = fits.variant(formulation="paper")
        result = _over_seeds(table, lambda s: fennec_predictor(paper, s, paper.params["alpha"]), seeds, targets)
        return EstimatorOutcome(estimator, result, {**base, **fennec_params, **paper.params})
    if estimator == "fennec-additive-meta":
        additive = fits.variant(meta_interactions=False)
        result = _over_seeds(table, lambda s: fennec_predictor(additive, s, additive.params["alpha"]), seeds, targets)
        return EstimatorOutcome(estimator, result, {**base, **fennec_params, **additive.params})

    n_known = int(estimator.rsplit("-", 1)[1])
    alpha = fits.params["alpha"]
    known: dict = {}
    result = _over_seeds(table, lambda s: warm_start_predictor(fits, table, s, n_known, alpha, known),
                         seeds, targets, missing="skip")
    expected = sum(min(n_known, int(table[t].notna().sum())) for t in targets)
    if result.per_target["n_unscored"].sum() != expected:  # only the known entries may go unscored
        raise AssertionError(f"{estimator}: {result.per_target['n_unscored'].sum()} unscored cells, expected {expected}")
    cold = _over_seeds(table, lambda s: excluding_known(fennec_predictor(fits, s, alpha), table, n_known, s),
                       seeds, targets, missing="skip")
    popular = _over_seeds(table, lambda s: excluding_known(ev.popularity, table, n_known, s),
                          seeds, targets, missing="skip")
    return EstimatorOutcome(
        estimator, result,
        {**base, **fennec_params, "alpha": alpha, "known_entries": n_known, "known_entries_in_metric": False},
        extra_metrics={**paired_metrics("paired_cold", cold), **paired_metrics("paired_popularity", popular)},
        artifacts={"known_entries.json": known})


# --------------------------------------------------------------------------- figures

def scatter_figure(result: ev.EvaluationResult, title: str, units: str = ""):
    """Predicted score vs true accuracy, one panel per target, Pearson in each title (first repeat)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = result.predictions
    if "repeat" in cells:
        cells = cells[cells["repeat"] == cells["repeat"].min()]
    targets = list(result.per_target.index)
    columns = min(4, len(targets))
    rows = int(np.ceil(len(targets) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False)
    for axis, target in zip(axes.ravel(), targets):
        points = cells[cells["target"] == target]
        axis.scatter(points["predicted"], points["true"], s=12, alpha=0.75, color="#4C72B0")
        r = result.per_target.at[target, "pearson"]
        axis.set_title(f"{target}  r={r:.2f}" if np.isfinite(r) else target, fontsize=9)
        axis.tick_params(labelsize=7)
    for axis in axes.ravel()[len(targets):]:
        axis.set_visible(False)
    for axis in axes[:, 0]:
        axis.set_ylabel(f"true {units}".strip(), fontsize=8)
    for axis in axes[-1, :]:
        axis.set_xlabel("predicted score", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------- MLflow

def log_outcome(outcome: EstimatorOutcome, benchmark: Benchmark, experiment: str, tags: dict | None = None) -> str:
    """Write one evaluation run (tags, params, metrics, scatter, tables); returns its id.

    ``tags``: extra run tags, e.g. the ``fennec.cell`` key that makes a re-run skip it."""
    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.http_dataset_source import HTTPDatasetSource


    tags = {tracking.KIND_TAG: "evaluation", EVALUATION_TAG_BENCHMARK: benchmark.name,
            tracking.MLFLOW_RUN_NOTE: (f"Leave-one-task-out evaluation of {outcome.estimator} on {benchmark.name}. "
                                       f"{UNITS}"), **(tags or {})}
    mean = outcome.result.summary["mean_pearson"]
    with tracking.own_run(experiment, outcome.estimator, tags) as run:
        mlflow.log_params({**benchmark.summary(), **outcome.params})
        mlflow.log_metrics({k: v for k, v in outcome.metrics().items() if v is not None and np.isfinite(v)})
        source = (HTTPDatasetSource(benchmark.sources[0]) if benchmark.sources
                  else CodeDatasetSource(tags={"benchmark": benchmark.name}))
        dataset = mlflow.data.from_pandas(benchmark.P.reset_index(), name=f"{benchmark.name}-performance-matrix",
                                          source=source)
        mlflow.log_input(dataset, context="evaluation")
        figure = scatter_figure(outcome.result, f"{benchmark.name}: {outcome.estimator} "
                                f"(mean Pearson {mean:.3f})", benchmark.units)
        mlflow.log_figure(figure, "scatter.png")
        plt.close(figure)
        mlflow.log_text(outcome.result.predictions.to_csv(index=False), "predictions.csv")
        mlflow.log_text(outcome.result.per_target.to_csv(), "per_target.csv")
        for name, value in outcome.artifacts.items():
            mlflow.log_text(json.dumps(value, indent=1, sort_keys=True), name)
        outcome.run_id = run.info.run_id
    return outcome.run_id


UNITS = ("Correlations (pearson, spearman, weighted_tau) are fractions in [-1, 1], averaged over targets "
         "(x 100 gives the paper's figures); top1_regret is in the table's units; top5_hit is a fraction of targets. "
         "Warm starts (fennec-warm-n) are judged on the models they were not told: cold_same_models_pearson is "
         "cold Fennec on those same models, their fair comparison.")
LEADERBOARD_METRICS = ("mean_pearson", "mean_spearman", "mean_weighted_tau", "mean_top1_regret", "mean_top5_hit")


@dataclass
class EvaluationRuns:
    """What :func:`run_evaluation` did: the experiment, one outcome (with its run id) per estimator
    and the parent ``leaderboard`` run."""

    benchmark: str
    experiment: str
    outcomes: dict[str, EstimatorOutcome]
    notes: list[str] = field(default_factory=list)  # estimators skipped and why, what the benchmark lacks
    leaderboard_run_id: str | None = None

    def table(self) -> pd.DataFrame:
        """Estimators x mean metrics, the order they were run in; units as logged (:data:`UNITS`)."""
        rows = {}
        for name, outcome in self.outcomes.items():
            s = outcome.metrics()
            rows[name] = {**{m: s.get(m, np.nan) for m in LEADERBOARD_METRICS}, "run_id": outcome.run_id}
            if any("paired_cold_mean_pearson" in o.extra_metrics for o in self.outcomes.values()):
                rows[name]["cold_same_models_pearson"] = s.get("paired_cold_mean_pearson", np.nan)
        return pd.DataFrame.from_dict(rows, orient="index")

    def leaderboard(self) -> pd.DataFrame:
        """:meth:`table`, best mean Pearson first, with a rank column; rows without a mean Pearson
        (a warm start on a table with too few models left to judge it) come last, unranked."""
        table = self.table().sort_values("mean_pearson", ascending=False, kind="stable", na_position="last")
        ranked = table["mean_pearson"].notna().to_numpy()
        table.insert(0, "rank", pd.array(np.where(ranked, np.cumsum(ranked), 0), dtype="Int64"))
        table.loc[~ranked, "rank"] = pd.NA
        return table.rename_axis("estimator")


def leaderboard_figure(table: pd.DataFrame, title: str):
    """Mean Pearson per estimator (fractions), best on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = table.iloc[::-1]
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(shown) + 1.4))
    colours = ["#C44E52" if name.startswith("fennec") else "#8C8C8C" for name in shown.index]
    axes.barh(list(shown.index), shown["mean_pearson"], color=colours)
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel("mean Pearson over targets (fraction, -1 to 1)")
    axes.set_title(title)
    figure.tight_layout()
    return figure


def log_leaderboard(table: pd.DataFrame, notes: Sequence[str], bench: Benchmark, mlflow_client, run_id: str,
                    seeds: Sequence[int]) -> None:
    """The parent run's content: one metric per estimator and metric, the table (best first, as
    :meth:`EvaluationRuns.leaderboard`) and its figure."""
    import matplotlib.pyplot as plt
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    metrics = [Metric(f"{metric}.{name}", float(row[metric]), now, 0) for name, row in table.iterrows()
               for metric in ("mean_pearson", "mean_spearman", "mean_top1_regret") if np.isfinite(row[metric])]
    params = [Param(k, str(v)[:6000]) for k, v in {**bench.summary(), "estimators": ",".join(table.index),
                                                    "seeds": ",".join(map(str, seeds))}.items()]
    mlflow_client.log_batch(run_id, metrics=metrics, params=params)
    best = table.index[0] if len(table) else "none"
    mlflow_client.set_tag(run_id, tracking.MLFLOW_RUN_NOTE,
                          f"Leaderboard of {len(table)} estimators on {bench.name} ({bench.P.shape[0]} models, "
                          f"{len(bench.targets)} targets, leave one task out, seeds {list(seeds)}); best: {best}. "
                          f"Each estimator is a child run with per-target metrics, scatter.png and predictions.csv. "
                          f"{UNITS}" + (" Notes: " + "; ".join(notes) if notes else ""))
    mlflow_client.log_text(run_id, table.to_csv(), "leaderboard.csv")
    mlflow_client.log_table(run_id, table.reset_index(), "leaderboard.json")
    figure = leaderboard_figure(table, f"{bench.name}: leave-one-task-out leaderboard")
    mlflow_client.log_figure(run_id, figure, "leaderboard.png")
    plt.close(figure)


def _estimator_list(estimators: str | Iterable[str] | None, bench: Benchmark) -> list[str]:
    known = [*ESTIMATORS, *bench.target_scores]
    if estimators is None:
        return known
    if isinstance(estimators, str):
        estimators = [e.strip() for e in estimators.split(",") if e.strip()]
    chosen = list(dict.fromkeys(estimators))
    unknown = [e for e in chosen if e not in known]
    if unknown or not chosen:
        raise InvalidInputError(f"unknown estimator(s) {unknown}; choose among {known}"
                                + ("" if bench.target_scores else " (label-based ones such as fda or logme are "
                                   "evaluated where the store scored the targets with them: fennec fda)"))
    return chosen


def run_evaluation(benchmark: str | Benchmark, *, experiment: str | None = None, estimators: str | Iterable[str] | None = None,
                   seeds: Sequence[int] = DEFAULT_SEEDS, progress: bool = True,
                   fennec_params: dict | None = None) -> EvaluationRuns:
    """Evaluate ``estimators`` (default: all of :data:`ESTIMATORS` and the benchmark's
    ``target_scores``) on ``benchmark`` leave-one-task-out and log one run per estimator in
    ``experiment`` (default ``fennec-eval-<benchmark>``).

    ``benchmark``: a name of :data:`fennec_mlflow.bench.public.BENCHMARK_NAMES` or a
    :class:`~fennec_mlflow.bench.public.Benchmark` of your own (e.g. the store's,
    :func:`fennec_mlflow.bench.store.store_benchmark`).
    ``estimators``: names or one comma-separated string. By default, the estimators a benchmark
    cannot support (:func:`unavailable`: ``family-mean`` without families, the meta ablations
    without model facts) are skipped, each with a note in the result; named explicitly, they are
    refused. ``seeds``: Fennec's random states, the warm-start draws and the random baseline's
    seeds (results averaged over them).
    ``fennec_params``: override Fennec's defaults (``k``, ``alpha``, ``nmf_l2``, ``shrinkage``, ...) for every
    Fennec variant (the ablations keep their own alpha); the run params record what was used.
    """
    from fennec_mlflow.progress import tqdm


    bench = benchmark if isinstance(benchmark, Benchmark) else load_benchmark(benchmark)
    chosen = _estimator_list(estimators, bench)
    reasons = {name: unavailable(bench, name) for name in chosen}
    refused = {name: reason for name, reason in reasons.items() if reason}
    if refused and estimators is not None:
        raise InvalidInputError(f"cannot evaluate on {bench.name}: " + "; ".join(refused.values()))
    notes = [*bench.notes, *skip_notes(refused, bench)]
    if 0 < most_known_per_target(bench) <= TOP_K:
        notes.append(f"top{TOP_K}_hit is 1 for every ranker here: no target has more than {TOP_K} scored models, "
                     "so it tells nothing; top1_regret does")
    history_tasks = min((bench.history_for(target).shape[1] for target in bench.targets), default=0)
    if (history_tasks < INTERACTION_MIN_TASKS and (bench.task_meta is not None or bench.task_proxy is not None)
            and (fennec_params or {}).get("shrinkage", "auto") == "auto"):
        notes.append(f"each target's history holds {history_tasks} tasks, fewer than the {INTERACTION_MIN_TASKS} that "
                     "Fennec needs to weigh a task-specific interaction: here it ranks by popularity among similar "
                     "tasks, which alone sets it apart from popularity")
    experiment = experiment or experiment_name(bench.name)
    fits = FennecFits(bench, fennec_params)
    outcomes: dict[str, EstimatorOutcome] = {}
    mlflow_client = tracking.client()
    parent = mlflow_client.create_run(
        tracking.experiment_id(mlflow_client, experiment), run_name=f"leaderboard-{bench.name}",
        tags={tracking.KIND_TAG: "leaderboard", EVALUATION_TAG_BENCHMARK: bench.name, **tracking.project_run_link()})
    parent_id = parent.info.run_id
    try:
        evaluated = [n for n in chosen if n not in refused]
        prefetch_fits(fits_needed(fits, evaluated, bench.targets, seeds), progress=progress)
        for name in tqdm(evaluated, desc=f"evaluate {bench.name}", unit="estimator", disable=not progress):
            outcome = evaluate_estimator(bench, name, seeds=seeds, fits=fits)
            log_outcome(outcome, bench, experiment, tags={tracking.MLFLOW_PARENT_RUN_ID: parent_id})
            outcomes[name] = outcome
        runs = EvaluationRuns(bench.name, experiment, outcomes, notes, leaderboard_run_id=parent_id)
        log_leaderboard(runs.leaderboard(), runs.notes, bench, mlflow_client, parent_id, seeds)
    except BaseException:
        mlflow_client.set_terminated(parent_id, "FAILED")
        raise
    mlflow_client.set_terminated(parent_id)
    summary = {f"{name}.mean_pearson": o.result.summary["mean_pearson"] for name, o in outcomes.items()}
    tracking.annotate_project_run("evaluate", summary, result_run_id=parent_id)
    return runs
