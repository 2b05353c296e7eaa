"""An end-to-end benchmark with real fine-tunes, built offline: the paper's Table 1 on synthetic data.

Does Fennec, without labels on the target and without a forward pass of the candidates, rank a
zoo as well as the label-based estimators that need every candidate's features? The public
tables have no images, so this is tested on a benchmark the project builds itself:

- **zoo**: CIFAR-size pytorchcv architectures from different families, each pre-trained by
  the project (:mod:`fennec_mlflow.training.pretrain`) on several synthetic source domains, PARC-style
  (every architecture sees ``sources_per_arch`` of the sources, rotated so architecture and
  source are not confounded);
- **history**: synthetic tasks whose FDA scores of every model form Fennec's performance matrix;
- **targets**: synthetic tasks of several domain families, class counts and sizes. Ground
  truth: a real full fine-tune of every model on every target with the fine-tune runner (the
  grid is part of the configuration), the test accuracy of the best grid point by validation.

Evaluation is leave-one-target-out. For target ``t``:

- ``fennec`` and its ablations fit on the FDA scores of the history tasks *and of the other
  targets* (past tasks too), never on anything of ``t``; ``t`` enters only through its proxy
  features (a label-free sample of its images through the proxy encoder) and its public facts
  (class count, image count, domain). ``fennec-warm-<n>``: also told the FDA scores of ``n``
  random models on ``t`` (which needs ``t``'s labels and ``n`` forward passes, counted as such).
  ``fennec-finetuned-<n>``: the default told the true fine-tune accuracies of ``n`` random models
  on ``t``, what a user who already fine-tuned them knows; judged on the other models only, with
  cold Fennec and popularity on the same models beside it (as ``fennec-warm-<n>`` on the public tables);
- each registered estimator (and ETran's and NCTI's published combinations of their parts)
  scores every model on ``t``'s labelled probe;
- ``popularity``, ``family-mean`` (by architecture) and ``random`` use the true fine-tune
  accuracies of the other targets.

Costs per target, as the paper splits them: **feature extraction** (forward passes: every
candidate on the probe for the estimators; the proxy encoder on the sample for Fennec) and
**calculation** (the estimator on the features, or Fennec's online ranking). Fennec's offline
fit is logged separately (``offline_fit_seconds``): like the history, it is paid once.

Every cell (pre-trained models are files; fine-tunes, FDA and estimator scores, archi2vec,
task proxies are runs in ``fennec-bench-<name>``) is computed once: a killed benchmark
restarts where it stopped. One evaluation run per estimator goes to ``fennec-eval-<name>``,
keyed so a restart does not log it twice.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fennec_mlflow import __version__, config
from fennec_mlflow.bench.evaluate import (
    EVALUATION_TAG_BENCHMARK,
    FACT_BASELINES,
    FENNEC_DEFAULTS,
    LEADERBOARD_METRICS,
    EstimatorOutcome,
    calibration_metrics,
    capped_k,
    draw_known,
    excluding_known,
    experiment_name,
    fact_baseline,
    log_leaderboard,
    log_outcome,
    paired_metrics,
    told_known_predictor,
)
from fennec_mlflow.bench.public import Benchmark
from fennec_mlflow.core import evaluation as ev
from fennec_mlflow.core.estimators import available_estimators
from fennec_mlflow.core.estimators.etran import etran_combine
from fennec_mlflow.core.estimators.ncti import ncti_combine
from fennec_mlflow.core.recommender import Fennec, behaviour_digest
from fennec_mlflow.data.checkpoints import load_pretrained
from fennec_mlflow.data.features import FeatureCache
from fennec_mlflow.data.synthetic import synthetic_task
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.parallel import forked_map
from fennec_mlflow.serving.demo import demo_encoder
from fennec_mlflow.store import tracking
from fennec_mlflow.store.archi2vec_runs import embed_architectures
from fennec_mlflow.store.jobs import finetune_cells, proxy_cells, score_cells
from fennec_mlflow.store.knowledge import Knowledge, architecture_of, build_knowledge
from fennec_mlflow.training.finetune import FinetuneConfig
from fennec_mlflow.training.pretrain import PretrainBudget, pretrain_demo_zoo

SYNTHETIC_BENCHMARKS = ("synthetic", "synthetic-smoke")
BASELINES = ("popularity", "family-mean", "archi2vec-family-mean", "random")
COMBINED = {"etran": ("etran_energy", "etran_lda"), "ncti": ("ncti_ncc", "ncti_seli", "ncti_vc")}


@dataclass(frozen=True)
class TaskSpec:
    """A synthetic task rendered with ``samples_per_class`` images per class (render seed 0)."""

    name: str
    samples_per_class: int

    def task(self):
        return synthetic_task(self.name, samples_per_class=self.samples_per_class)


class EndToEndConfig:
    """What every end-to-end benchmark configuration (synthetic here, real in
    :mod:`fennec_mlflow.bench.real`) derives from its dataclass fields."""

    def finetune_config(self, progress: bool = False) -> FinetuneConfig:
        return FinetuneConfig(learning_rates=self.finetune_lrs, weight_decays=self.finetune_wds,
                              batch_size=self.finetune_batch_size, max_epochs=self.finetune_epochs,
                              patience=self.finetune_patience, seed=0, progress=progress)

    def finetune_grid(self) -> str:
        return (f"lr {','.join(f'{v:g}' for v in self.finetune_lrs)}; wd {','.join(f'{v:g}' for v in self.finetune_wds)}; "
                f"batch {self.finetune_batch_size}; <= {self.finetune_epochs} epochs, patience {self.finetune_patience}")

    def as_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """Hash of every field: it keys the evaluation runs."""
        return hashlib.sha1(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class BenchmarkConfig(EndToEndConfig):
    """Everything that defines one synthetic benchmark (its hash keys the evaluation runs)."""

    name: str
    archs: tuple[str, ...]
    sources: tuple[str, ...]
    sources_per_arch: int
    history: tuple[TaskSpec, ...]
    targets: tuple[TaskSpec, ...]
    pretrain: PretrainBudget
    finetune_lrs: tuple[float, ...]
    finetune_wds: tuple[float, ...]
    finetune_batch_size: int
    finetune_epochs: int
    finetune_patience: int
    probe_size: int
    proxy_sample_size: int
    seeds: tuple[int, ...]
    warm_known: tuple[int, ...]
    # Estimators also scored on the history tasks, each giving a Fennec row with that history
    # instead of FDA (``fennec-<estimator>-history``).
    history_estimators: tuple[str, ...] = ()

    kind = "synthetic"
    fact_baselines = ("model-size", "source-accuracy")  # source accuracy: on the pre-training source's test split

    @property
    def zoo(self) -> tuple[tuple[str, str], ...]:
        """(arch, source) pairs: architecture i takes sources i, i+s, i+2s, ... (mod the source
        count) with a stride s that changes every len(sources) architectures, so the pairs spread
        over the sources instead of repeating one pattern."""
        n = len(self.sources)
        pairs = []
        for i, arch in enumerate(self.archs):
            stride = 1 + (i // n) % max(1, n - 1)
            pairs += [(arch, self.sources[(i + j * stride) % n]) for j in range(self.sources_per_arch)]
        return tuple(pairs)

    @property
    def model_names(self) -> list[str]:
        return [f"{arch}@{source}" for arch, source in self.zoo]

    @property
    def task_names(self) -> list[str]:
        return [spec.name for spec in (*self.history, *self.targets)]

    @property
    def target_names(self) -> list[str]:
        return [spec.name for spec in self.targets]

    def families(self) -> dict[str, str]:
        return {m: architecture_of(m) for m in self.model_names}

    def model_facts(self) -> pd.DataFrame:
        """Unknown here: the source accuracies are in the pre-trained checkpoints (run_benchmark reads them)."""
        return pd.DataFrame({"source_accuracy": pd.Series(np.nan, index=self.model_names)})

    def describe(self) -> dict[str, object]:
        """Run params describing the benchmark."""
        return {"benchmark_fingerprint": self.fingerprint(), "zoo_archs": ",".join(self.archs),
                "zoo_sources": ",".join(self.sources), "history_tasks": ",".join(s.name for s in self.history),
                "finetune_grid": self.finetune_grid(), "probe_size": self.probe_size,
                "proxy_sample_size": self.proxy_sample_size}


# Eight pytorchcv CIFAR families, the cheapest to train on a CPU (training throughput within
# 1.6x of resnet20; densenet, nin, ror, pyramidnet and resnext cost 2-12x): post- and
# pre-activation residual, squeeze-and-excitation on both, DIA attention on both, shake-shake
# branches and stochastic depth. Their autograd graphs differ, which archi2vec sees.
FULL_ARCHS = (
    "resnet20_cifar10", "preresnet20_cifar10", "seresnet20_cifar10", "sepreresnet20_cifar10",
    "diaresnet20_cifar10", "diapreresnet20_cifar10", "shakeshakeresnet20_2x16d_cifar10", "resdropresnet20_cifar10",
)
# Three specialist domains every family learns within the budget (see pretrain.DEMO_SOURCES)
# plus the broad mix, a generalist like ImageNet.
FULL_SOURCES = ("glyphs-lower-10", "gratings-orient-8", "blobs-size-4", "mix")

CONFIGS: dict[str, BenchmarkConfig] = {
    # 16 models x 8 targets: the whole benchmark in well under an hour on 2 CPU cores.
    "synthetic": BenchmarkConfig(
        name="synthetic",
        archs=FULL_ARCHS,
        sources=FULL_SOURCES,
        sources_per_arch=2,
        # Nine tasks of every family, none a source or a target.
        history=tuple(TaskSpec(n, 80) for n in (
            "digits-noisy-bg", "digits-5class", "digits-inverted", "shapes-4", "shapes-textured-10",
            "gratings-orient-4", "gratings-texture-6", "glyphs-upper-26", "blobs-count-3")),
        # Five families, 2 to 20 classes, 300 to 500 images.
        targets=(TaskSpec("digits-color", 40), TaskSpec("digits-parity", 150), TaskSpec("shapes-8", 50),
                 TaskSpec("shapes-outline-6", 60), TaskSpec("gratings-freq-5", 60), TaskSpec("glyphs-upper-10", 40),
                 TaskSpec("glyphs-mixed-20", 25), TaskSpec("blobs-count-5", 80)),
        pretrain=PretrainBudget(images_per_source=400, epochs=8, mix_images=930, mix_epochs=8),
        finetune_lrs=(0.05, 0.01), finetune_wds=(5e-4,), finetune_batch_size=32, finetune_epochs=6,
        finetune_patience=2,
        probe_size=300,
        proxy_sample_size=100,
        seeds=(0, 1, 2),
        warm_known=(3,),
        # Added after the first full run showed FDA's own correlation with the fine-tunes
        # capping Fennec's: an ablation of the history source, not a tuned default.
        history_estimators=("logme",),
    ),
    # The CI smoke test: every stage on tiny inputs, in about a minute. Quality means nothing here.
    "synthetic-smoke": BenchmarkConfig(
        name="synthetic-smoke",
        archs=("resnet20_cifar10", "preresnet20_cifar10"),
        sources=("blobs-size-4", "gratings-orient-8"),
        sources_per_arch=2,
        history=(TaskSpec("shapes-4", 10), TaskSpec("digits-5class", 10)),
        targets=(TaskSpec("blobs-count-3", 14), TaskSpec("gratings-freq-5", 10), TaskSpec("glyphs-upper-10", 8)),
        pretrain=PretrainBudget(images_per_source=48, epochs=1, mix_images=186, mix_epochs=1),
        finetune_lrs=(0.05,), finetune_wds=(5e-4,), finetune_batch_size=16, finetune_epochs=1,
        finetune_patience=1,
        probe_size=40,
        proxy_sample_size=20,
        seeds=(0,),
        warm_known=(2,),
        history_estimators=("logme",),
    ),
}


def get_config(name: str) -> BenchmarkConfig:
    if name not in CONFIGS:
        raise InvalidInputError(f"unknown synthetic benchmark {name!r}; choose one of {list(CONFIGS)}")
    return CONFIGS[name]


def cells_experiment(name: str) -> str:
    """The experiment holding a benchmark's cells (fine-tunes, scores, proxies, archi2vec)."""
    return f"fennec-bench-{name}"


def default_workdir(name: str) -> Path:
    return config.cache_dir("bench", name)


# --------------------------------------------------------------------------- the data, read from the store

@dataclass
class BenchmarkData:
    """What the evaluation reads back from the cells experiment.

    truth: models x targets, fine-tuned test accuracy. knowledge: FDA over history + targets,
    model and task meta, task proxies. scores[e]: models x targets of estimator ``e``.
    feature_seconds: models x targets, one model's forward passes over the target's probe.
    score_seconds[e]: models x targets, estimator ``e``'s calculation. proxy_seconds: per task,
    the proxy encoder's pass over the task's sample.
    """

    truth: pd.DataFrame
    knowledge: Knowledge
    scores: dict[str, pd.DataFrame]
    feature_seconds: pd.DataFrame
    score_seconds: dict[str, pd.DataFrame]
    proxy_seconds: pd.Series
    encoder: str
    history_scores: dict[str, pd.DataFrame] = field(default_factory=dict)  # estimator -> models x all tasks
    source_accuracy: pd.Series | None = None  # each model's accuracy (%) on its pre-training task, NaN where unknown

    def best_evidence(self) -> tuple[pd.DataFrame, pd.Series]:
        """Every task's best evidence (the default history): the targets' fine-tune accuracies, the
        other tasks' FDA scores; and the tasks' popularity weights (``config.SCORE_ONLY_TASK_WEIGHT``
        for the FDA-only ones). A fit for a target drops its column, so its fine-tunes never reach it."""
        matrix = self.knowledge.P.copy()
        matrix[self.truth.columns] = self.truth
        return matrix, tracking.evidence_weights(matrix.columns, self.truth.columns)

    def fact(self, baseline: str) -> pd.Series:
        """The model fact a data-free baseline ranks by (larger first)."""
        if baseline == "model-size":
            return np.log(self.knowledge.model_parameters.astype(float))
        return self.source_accuracy if self.source_accuracy is not None else pd.Series(dtype=float)


def _matrix(kind: str, experiment: str, models: list[str], tasks: list[str], *, metric: str | None = None,
            estimator: str | None = None) -> pd.DataFrame:
    values = tracking.load_matrix(kind, experiment=experiment, metric=metric, estimator=estimator).values
    missing = [(m, t) for m in models for t in tasks
               if m not in values.index or t not in values.columns or pd.isna(values.at[m, t])]
    if missing:
        what = f"{kind} runs" + (f" of {estimator}" if estimator else "") + (f" (metric {metric})" if metric else "")
        raise tracking.TrackingError(f"{len(missing)} cell(s) have no finished {what} in {experiment!r}, e.g. "
                                     f"{missing[:3]}; run the benchmark to completion first")
    return values.loc[models, tasks].astype(float)


def load_benchmark_data(config: BenchmarkConfig, encoder: str, estimators: Sequence[str],
                        experiment: str | None = None, source_accuracy: pd.Series | None = None) -> BenchmarkData:
    experiment = experiment or cells_experiment(config.name)
    models, targets = config.model_names, config.target_names
    knowledge = build_knowledge(kind="fda", encoder=encoder, models=models, tasks=config.task_names,
                                experiment=experiment)
    scores, score_seconds = {}, {}
    for name in estimators:
        kind = "fda" if name == "fda" else "estimator"
        estimator = None if name == "fda" else name
        scores[name] = _matrix(kind, experiment, models, targets, estimator=estimator)
        score_seconds[name] = _matrix(kind, experiment, models, targets, metric="score_seconds", estimator=estimator)
    proxy_runs = tracking.runs_of_kind("task-proxy", experiment=experiment,
                                       extra_filter=f"params.encoder = '{encoder}'")
    proxy_seconds: dict[str, float] = {}
    for run in proxy_runs:  # newest first
        proxy_seconds.setdefault(run.data.tags[tracking.TASK_TAG], float(run.data.metrics["seconds"]))
    history_scores = {name: _matrix("estimator", experiment, models, config.task_names, estimator=name)
                      for name in config.history_estimators if name in estimators}
    return BenchmarkData(
        history_scores=history_scores,
        source_accuracy=(config.model_facts()["source_accuracy"] if source_accuracy is None else source_accuracy).reindex(models),
        truth=_matrix("finetune", experiment, models, targets),
        knowledge=knowledge, scores=scores,
        feature_seconds=_matrix("fda", experiment, models, targets, metric="feature_seconds"),
        score_seconds=score_seconds, proxy_seconds=pd.Series(proxy_seconds), encoder=encoder)


# --------------------------------------------------------------------------- predictors and their costs

@dataclass
class Costs:
    """Seconds per target spent on feature extraction and on calculation (per repeat: the last wins)."""

    feature: dict[str, float] = field(default_factory=dict)
    calculation: dict[str, float] = field(default_factory=dict)

    def add(self, target: str, feature: float, calculation: float) -> None:
        self.feature[target], self.calculation[target] = float(feature), float(calculation)

    def metrics(self) -> dict[str, float]:
        out = {"feature_seconds": float(np.mean(list(self.feature.values()))),
               "calculation_seconds": float(np.mean(list(self.calculation.values())))}
        out["total_seconds"] = out["feature_seconds"] + out["calculation_seconds"]
        for target in self.feature:
            out[f"feature_seconds.{ev.metric_name_part(target)}"] = self.feature[target]
            out[f"calculation_seconds.{ev.metric_name_part(target)}"] = self.calculation[target]
        return out


def estimator_predictor(data: BenchmarkData, name: str, costs: Costs) -> ev.Predictor:
    """The scores of registered estimator ``name`` (or of a published combination, :data:`COMBINED`)."""

    parts = COMBINED.get(name, (name,))

    def predict(history: pd.DataFrame, target: str) -> pd.Series:
        start = time.perf_counter()
        columns = [data.scores[part][target].reindex(history.index) for part in parts]
        if name == "etran":
            values = etran_combine(*columns)
        elif name == "ncti":  # the registered ncti_vc is minus the paper's S_vc
            values = ncti_combine(np.column_stack([columns[0], columns[1], -columns[2]]))
        else:
            values = columns[0].to_numpy()
        combine = time.perf_counter() - start if name in COMBINED else 0.0
        calculation = sum(float(data.score_seconds[part][target].sum()) for part in parts) + combine
        costs.add(target, data.feature_seconds[target].sum(), calculation)
        return pd.Series(values, index=history.index, name=name)
    return predict


class TargetFennecFits:
    """Fennec fitted per (target, seed) on a history matrix without the target's column.

    ``history``: models x tasks (the targets among them), by default the FDA knowledge;
    ``task_weights``: each task's weight in the popularity part (default 1 each).
    ``alpha`` enters the shrunk formulation's fit (it switches phases off), so fits are kept per
    (target, seed, alpha); a warm start shares its cold fit.
    """

    def __init__(self, data: BenchmarkData, params: dict | None = None, history: pd.DataFrame | None = None,
                 task_weights: pd.Series | None = None):
        self.data = data
        self.history = data.knowledge.P if history is None else history
        self.task_weights = task_weights
        self.params = {**FENNEC_DEFAULTS, **(params or {})}
        self._fits: dict[tuple[str, int], object] = {}
        self.fit_seconds: dict[str, float] = {}

    def get(self, target: str, seed: int, alpha: float, hidden: tuple[str, ...] = ()):
        """The fit for ``target``; ``hidden``: more tasks left out of it (an outer target, in nested CV)."""

        key = (target, int(seed), float(alpha), tuple(sorted(hidden)))
        if key not in self._fits:
            k = self.data.knowledge
            P = self.history.drop(columns=[target, *hidden])
            tasks = list(P.columns)
            params = {**self.params, "alpha": float(alpha)}
            params["k"] = capped_k(params["k"], P)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)
                self._fits[key] = Fennec(**params, random_state=int(seed)).fit(
                    P, k.model_meta, k.task_meta.loc[tasks], k.task_proxy.loc[tasks], task_weights=self.task_weights)
            if not hidden:
                self.fit_seconds[target] = time.perf_counter() - start
        return self._fits[key]

    def forget(self, hidden: tuple[str, ...]) -> None:
        """Drop the fits that left ``hidden`` out besides their target (memory)."""
        hidden = tuple(sorted(hidden))
        for key in [key for key in self._fits if key[3] == hidden]:
            del self._fits[key]

    def rank(self, target: str, seed: int, alpha: float, known_scores: dict | None = None,
             hidden: tuple[str, ...] = ()) -> tuple[pd.Series, float]:
        """Scores of every model for ``target`` and the seconds the online ranking took."""
        k = self.data.knowledge
        model = self.get(target, seed, alpha, hidden)
        start = time.perf_counter()
        ranking = model.rank(k.task_meta.loc[target], k.task_proxy.loc[target], known_scores=known_scores)
        seconds = time.perf_counter() - start
        return ranking.set_index("model")["score"], seconds


def fennec_predictor(fits: TargetFennecFits, seed: int, alpha: float, costs: Costs, n_known: int = 0,
                     record: dict | None = None) -> ev.Predictor:
    """Fennec from its fits' history and the target's proxy; with ``n_known`` > 0 also told the FDA
    scores of that many random models on the target (their forward passes and FDA are costs)."""
    data = fits.data

    def predict(history: pd.DataFrame, target: str) -> pd.Series:
        feature = float(data.proxy_seconds[target])
        calculation = 0.0
        known_scores = None
        if n_known:
            fda = data.knowledge.P[target]
            known = draw_known(fda, n_known, seed, target)
            known_scores = {m: float(fda[m]) for m in known}
            if record is not None:
                record.setdefault(str(seed), {})[target] = known_scores
            feature += float(data.feature_seconds.loc[known, target].sum())
            calculation += float(data.score_seconds["fda"].loc[known, target].sum())
        scores, seconds = fits.rank(target, seed, alpha, known_scores)
        costs.add(target, feature, calculation + seconds)
        return scores.reindex(history.index)
    return predict


def finetuned_predictor(fits: TargetFennecFits, truth: pd.DataFrame, seed: int, alpha: float, costs: Costs,
                        n_known: int, record: dict | None = None) -> ev.Predictor:
    """Fennec told the fine-tune accuracies of ``n_known`` random models of the target
    (:func:`told_known_predictor`). The fine-tunes are the user's past work: only the proxy is
    counted as feature time."""
    def rank(history: pd.DataFrame, target: str, known_scores: dict[str, float]) -> pd.Series:
        scores, seconds = fits.rank(target, seed, alpha, known_scores)
        costs.add(target, float(fits.data.proxy_seconds[target]), seconds)
        return scores.reindex(history.index)
    return told_known_predictor(rank, truth, seed, n_known, record)


NESTED_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def nested_alphas(params: dict) -> tuple[float, ...]:
    """The alphas nested CV chooses among. In the shrunk formulation with learned shrinkage (the
    default) alpha only switches a phase off, and the learned weights already drop a phase that
    does not help held-out history tasks: every interior alpha fits the same model, so only the
    configured alpha is tried (a fit costs seconds; the inner loop makes thousands). Otherwise
    the grid :data:`NESTED_ALPHAS`."""
    if params.get("formulation", "shrunk") == "shrunk" and params.get("shrinkage", "auto") == "auto":
        return (float(params["alpha"]),)
    return NESTED_ALPHAS


# An inner fit on the fine-tune history leaves out two targets (outer and inner); below this
# many targets too few tasks would remain to fit on.
MIN_TARGETS_FOR_FINETUNE_HISTORY = 5


def nested_cv_choice(histories: dict[str, TargetFennecFits], target: str, seed: int) -> tuple[float, str, float]:
    """(inner mean Pearson, history, alpha) that an inner leave-one-target-out over the targets other
    than ``target`` prefers; its fits never see ``target`` (neither its scores nor, through them, its labels)."""
    first = next(iter(histories.values()))
    truth, alphas = first.data.truth, nested_alphas(first.params)
    inner_targets = [u for u in truth.columns if u != target]
    best = (-np.inf, next(iter(histories)), alphas[0])  # a choice even when no inner score is finite
    for name, fits in histories.items():
        for alpha in alphas:
            values = [ev.pearson(fits.rank(u, seed, alpha, hidden=(target,))[0].reindex(truth.index), truth[u])
                      for u in inner_targets]
            score = float(np.nanmean(values)) if np.isfinite(values).any() else -np.inf
            if score > best[0]:
                best = (score, name, alpha)
    for fits in histories.values():
        fits.forget(hidden=(target,))  # fits without this outer target serve no other
    return best


def nested_cv_choices(histories: dict[str, TargetFennecFits], seeds: Sequence[int], *, workers: int | None = None,
                      done: Callable[[], object] | None = None) -> dict[tuple[int, str], tuple[float, str, float]]:
    """:func:`nested_cv_choice` for every (seed, target), on ``workers`` processes (default: every
    core; :func:`~fennec_mlflow.parallel.forked_map`). ``done`` is called after each."""
    jobs = [(int(seed), target) for seed in seeds for target in next(iter(histories.values())).data.truth.columns]
    made = forked_map(lambda job: nested_cv_choice(histories, job[1], job[0]), jobs, workers=workers, done=done)
    return dict(zip(jobs, made))


def nested_cv_predictor(histories: dict[str, TargetFennecFits], seed: int, costs: Costs,
                        record: dict | None = None,
                        choices: dict[tuple[int, str], tuple[float, str, float]] | None = None) -> ev.Predictor:
    """Fennec with its history source (a key of ``histories``) and alpha chosen per target by an
    inner leave-one-target-out over the *other* targets, whose fits never see the outer target
    (:func:`nested_cv_choice`). The honest figure for such a choice. ``choices``: those made
    beforehand (:func:`nested_cv_choices`), else each is made when its target comes."""
    data = next(iter(histories.values())).data

    def predict(history: pd.DataFrame, target: str) -> pd.Series:
        choice = (choices or {}).get((int(seed), target)) or nested_cv_choice(histories, target, seed)
        score, name, alpha = choice
        if record is not None:
            record.setdefault(str(seed), {})[target] = {"history": name, "alpha": alpha, "inner_mean_pearson": score}
        scores, seconds = histories[name].rank(target, seed, alpha)
        costs.add(target, float(data.proxy_seconds[target]), seconds)
        return scores.reindex(history.index)
    return predict


def baseline_costs(predict: ev.Predictor, costs: Costs) -> ev.Predictor:
    def timed(history: pd.DataFrame, target: str) -> pd.Series:
        start = time.perf_counter()
        scores = predict(history, target)
        costs.add(target, 0.0, time.perf_counter() - start)
        return scores
    return timed


# --------------------------------------------------------------------------- the evaluation

# The default and its phase ablations learn from every task's best evidence (BenchmarkData.best_evidence).
FENNEC_VARIANTS = {"fennec": None, "fennec-no-transfer": 1.0, "fennec-no-meta": 0.0}
# The paper's history: FDA scores of every task, the other targets included. The warm-start rows
# use it too (they are told FDA scores of the target, comparable with this history's columns).
FDA_HISTORY = "fennec-fda-history"
FDA_HISTORY_DESCRIPTION = "fda (history tasks + the other targets)"
BEST_EVIDENCE = ("fine-tunes of the other targets (popularity weight 1), FDA of the history tasks "
                 f"(weight {config.SCORE_ONLY_TASK_WEIGHT:g})")
# The user's warm start: the default told the fine-tune accuracies of n models of the target.
FINETUNED_PREFIX = "fennec-finetuned-"
# Fennec whose history is the fine-tuned accuracies of the other targets instead of FDA scores
# (the performance matrix the design allows besides FDA); the target still gives no label.
FINETUNE_HISTORY = "fennec-finetune-history"
# History source (FDA, the other targets' fine-tunes, or an estimator of ``history_estimators``)
# and alpha chosen by nested CV.
NESTED_CV = "fennec-nested-cv"


def history_row(estimator: str) -> str:
    return f"fennec-{estimator}-history"


def other_history(name: str, data: BenchmarkData) -> tuple[pd.DataFrame, str] | None:
    """The history matrix (and its description) of a Fennec row that does not learn from FDA."""
    if name == FINETUNE_HISTORY:
        return data.truth, "fine-tune accuracies of the other targets"
    if name == FDA_HISTORY:
        return data.knowledge.P, FDA_HISTORY_DESCRIPTION
    for estimator, scores in data.history_scores.items():
        if name == history_row(estimator):
            return scores, f"{estimator} (history tasks + the other targets)"
    return None


def evaluation_names(config: BenchmarkConfig, estimators: Sequence[str]) -> list[str]:
    """Every row of the benchmark's table, in table order."""
    combined = [name for name, parts in COMBINED.items() if all(p in estimators for p in parts)]
    return [*FENNEC_VARIANTS, *(f"{FINETUNED_PREFIX}{n}" for n in config.warm_known), FDA_HISTORY,
            *(f"fennec-warm-{n}" for n in config.warm_known), FINETUNE_HISTORY,
            *(history_row(name) for name in config.history_estimators if name in estimators), NESTED_CV,
            *estimators, *combined, *BASELINES[:-1], *config.fact_baselines, BASELINES[-1]]


def as_benchmark(config: BenchmarkConfig, data: BenchmarkData) -> Benchmark:
    """The truth and meta tables in the shape :mod:`fennec_mlflow.bench.evaluate` logs."""

    truth = data.truth
    return Benchmark(
        name=config.name,
        description=(f"{config.name}: {truth.shape[0]} pre-trained models x {truth.shape[1]} {config.kind} targets, "
                     "test accuracy of a real fine-tune (fraction)"),
        P=truth, model_meta=data.knowledge.model_meta, task_meta=data.knowledge.task_meta.loc[truth.columns],
        targets=list(truth.columns), families=pd.Series(config.families(), name="family").reindex(truth.index),
        units="accuracy (fraction)",
        task_vector_source=f"proxy features of a label-free sample ({data.encoder}) + task facts")


def _repeat(table: pd.DataFrame, make: Callable[[int], ev.Predictor], seeds: Sequence[int],
            missing: str = "raise") -> ev.EvaluationResult:
    results = [ev.leave_one_task_out(table, make(seed), missing_predictions=missing) for seed in seeds]
    return results[0] if len(results) == 1 else ev.aggregate(results)


def evaluate_one(config: BenchmarkConfig, data: BenchmarkData, bench: Benchmark, name: str,
                 fits: TargetFennecFits, fda_fits: TargetFennecFits, progress: bool = False) -> EstimatorOutcome:
    """Leave-one-target-out evaluation of one row of the table (nothing is logged). ``fits``: on
    the best evidence (the default's history); ``fda_fits``: on the FDA history. ``progress``:
    a bar over the nested-CV row's outer targets (its inner fits take most of the evaluation)."""
    costs = Costs()
    truth, seeds = data.truth, list(config.seeds)
    needs_labels = True
    params: dict[str, object] = {}
    artifacts: dict[str, object] = {}
    if name in FENNEC_VARIANTS or name.startswith("fennec-warm-"):
        n_known = int(name.rsplit("-", 1)[1]) if name.startswith("fennec-warm-") else 0
        alpha = FENNEC_VARIANTS.get(name)
        alpha = fits.params["alpha"] if alpha is None else alpha
        known: dict = {}
        ranker = fda_fits if n_known else fits  # told FDA scores: the history they compare with
        result = _repeat(truth, lambda s: fennec_predictor(ranker, s, alpha, costs, n_known, known), seeds)
        needs_labels = n_known > 0
        params = {**ranker.params, "alpha": alpha,
                  "history": FDA_HISTORY_DESCRIPTION if n_known else BEST_EVIDENCE,
                  "encoder": data.encoder, "seeds": ",".join(map(str, seeds))}
        if n_known:
            params["known_fda_entries"] = n_known
            artifacts["known_entries.json"] = known
        extra = {"offline_fit_seconds": float(np.mean(list(ranker.fit_seconds.values())))}
        if name == "fennec":  # the predicted-accuracy interval, checked on each held-out target's fine-tunes
            rankers = [lambda h, t, s=seed: fits.rank(t, s, alpha)[0].reindex(h.index) for seed in seeds]
            extra.update(calibration_metrics(truth, list(truth.columns), rankers, data.knowledge.task_meta))
    elif name.startswith(FINETUNED_PREFIX):
        n_known = int(name[len(FINETUNED_PREFIX):])
        alpha = fits.params["alpha"]
        known = {}
        result = _repeat(truth, lambda s: finetuned_predictor(fits, truth, s, alpha, costs, n_known, known), seeds,
                         missing="skip")
        cold = _repeat(truth, lambda s: excluding_known(fennec_predictor(fits, s, alpha, Costs()), truth, n_known, s),
                       seeds, missing="skip")
        popular = _repeat(truth, lambda s: excluding_known(ev.popularity, truth, n_known, s), seeds, missing="skip")
        params = {**fits.params, "alpha": alpha, "history": BEST_EVIDENCE, "encoder": data.encoder,
                  "seeds": ",".join(map(str, seeds)), "known_finetune_entries": n_known,
                  "known_entries_in_metric": False}
        artifacts["known_entries.json"] = known
        extra = {"offline_fit_seconds": float(np.mean(list(fits.fit_seconds.values()))),
                 **paired_metrics("paired_cold", cold), **paired_metrics("paired_popularity", popular)}
    elif other_history(name, data) is not None:
        matrix, description = other_history(name, data)
        other = fda_fits if name == FDA_HISTORY else TargetFennecFits(data, fits.params, history=matrix)
        result = _repeat(truth, lambda s: fennec_predictor(other, s, other.params["alpha"], costs), seeds)
        needs_labels = False
        params = {**other.params, "encoder": data.encoder, "seeds": ",".join(map(str, seeds)), "history": description}
        extra = {"offline_fit_seconds": float(np.mean(list(other.fit_seconds.values())))}
    elif name == NESTED_CV:
        # Every history the benchmark has, the other targets' fine-tunes included (leak-free: an
        # inner fit drops the outer target's column as well as its own).
        histories = {"best": fits, "fda": fda_fits, **{source: TargetFennecFits(data, fits.params, history=scores)
                                     for source, scores in data.history_scores.items()}}
        if truth.shape[1] >= MIN_TARGETS_FOR_FINETUNE_HISTORY:
            histories["finetune"] = TargetFennecFits(data, fits.params, history=truth)
        choices: dict = {}
        from fennec_mlflow.progress import tqdm
        with tqdm(total=len(seeds) * truth.shape[1], desc=f"nested CV over {len(histories)} histories",
                  unit="target", leave=False, disable=not progress) as bar:
            made = nested_cv_choices(histories, seeds, done=bar.update)
        result = _repeat(truth, lambda s: nested_cv_predictor(histories, s, costs, record=choices, choices=made), seeds)
        needs_labels = False
        params = {**{k: v for k, v in fits.params.items() if k != "alpha"}, "encoder": data.encoder,
                  "seeds": ",".join(map(str, seeds)), "history": "chosen per target: " + ",".join(histories),
                  "alpha": "chosen per target: " + ",".join(map(str, nested_alphas(fits.params)))}
        artifacts["choices.json"] = choices
        extra = {"offline_fit_seconds": float(np.mean(list(fits.fit_seconds.values())))}
    elif name in BASELINES:
        vectors = ev.architecture_vectors(data.knowledge.model_meta)
        make = {"popularity": lambda seed: ev.popularity, "family-mean": lambda seed: ev.family_mean(bench.families),
                "archi2vec-family-mean": lambda seed: ev.neighbour_family_mean(vectors),
                "random": ev.random_baseline}[name]
        used = seeds if name == "random" else seeds[:1]  # only random depends on the seed
        result = _repeat(truth, lambda seed: baseline_costs(make(seed), costs), used)
        needs_labels = False
        params = {"seeds": ",".join(map(str, used)), "history": "fine-tune accuracies of the other targets"}
        extra = {}
    elif name in FACT_BASELINES:
        values = data.fact(name)
        result = ev.leave_one_task_out(truth, baseline_costs(fact_baseline(values), costs), missing_predictions="skip")
        needs_labels = False
        params = {"fact": FACT_BASELINES[name], "models_with_fact": int(values.reindex(truth.index).notna().sum())}
        extra = {}
    else:
        result = ev.leave_one_task_out(truth, estimator_predictor(data, name, costs))
        params = {"parts": ",".join(COMBINED.get(name, (name,))), "probe_size": config.probe_size}
        extra = {}
    params = {"estimator": name, "needs_target_labels": needs_labels, **params}
    return EstimatorOutcome(name, result, params, extra_metrics={**costs.metrics(), **extra}, artifacts=artifacts)


@dataclass(frozen=True)
class TableRow:
    """One evaluated row as logged: its run's metrics and whether it needs the target's labels."""

    metrics: dict[str, float]
    needs_labels: bool
    run_id: str


def run_evaluation(config: BenchmarkConfig, data: BenchmarkData, estimators: Sequence[str], *,
                   experiment: str | None = None, progress: bool = True) -> dict[str, TableRow]:
    """Evaluate and log every row of the table not logged yet (one run each); logged rows are read back."""
    from fennec_mlflow.progress import tqdm

    experiment = experiment or experiment_name(config.name)
    bench = as_benchmark(config, data)
    fits = TargetFennecFits(data, None, *data.best_evidence())
    fda_fits = TargetFennecFits(data)
    mlflow_client = tracking.client()
    logged = tracking.finished_cells(mlflow_client, experiment, "evaluation")
    stale = tracking.unfinished_cells(mlflow_client, experiment, "evaluation")
    recommender_version = f"{__version__}+{behaviour_digest()}"
    rows = {}
    for name in tqdm(evaluation_names(config, estimators), desc=f"evaluate {config.name}", unit="estimator",
                     disable=not progress):
        # The recommender's digest and the package's version are in the key: after an upgrade that changes
        # a ranking, a row is evaluated again rather than read back.
        key = tracking.cell_key("evaluation", benchmark=config.fingerprint(), estimator=name, encoder=data.encoder,
                                estimators=sorted(estimators), recommender=recommender_version)
        if key in logged:
            run = mlflow_client.get_run(logged[key])
            rows[name] = TableRow(run.data.metrics, run.data.params.get("needs_target_labels") == "True",
                                  run.info.run_id)
            continue
        outcome = evaluate_one(config, data, bench, name, fits, fda_fits, progress)
        outcome.params.update(config.describe(), recommender_version=recommender_version)
        tracking.discard_runs(mlflow_client, stale.pop(key, ()))
        log_outcome(outcome, bench, experiment, tags={tracking.CELL_TAG: key})
        rows[name] = TableRow(outcome.metrics(), bool(outcome.params["needs_target_labels"]), outcome.run_id)
    return rows


def leaderboard_run(config: BenchmarkConfig, data: BenchmarkData, rows: dict[str, TableRow], experiment: str) -> str:
    """The ``leaderboard-<name>`` parent run of the evaluated rows (each row's run becomes its child),
    as for the public tables; reused while the same row runs stand, so a rerun logs nothing."""
    mlflow_client = tracking.client()
    key = tracking.cell_key("leaderboard", benchmark=config.fingerprint(),
                            rows=sorted((name, row.run_id) for name, row in rows.items()))
    done = tracking.finished_cells(mlflow_client, experiment, "leaderboard")
    if key in done:
        return done[key]
    tracking.discard_runs(mlflow_client, tracking.unfinished_cells(mlflow_client, experiment, "leaderboard").get(key, ()))
    bench = as_benchmark(config, data)
    parent_id = mlflow_client.create_run(
        tracking.experiment_id(mlflow_client, experiment), run_name=f"leaderboard-{config.name}",
        tags={tracking.KIND_TAG: "leaderboard", tracking.CELL_TAG: key, EVALUATION_TAG_BENCHMARK: config.name,
              **tracking.project_run_link()}).info.run_id
    for row in rows.values():
        mlflow_client.set_tag(row.run_id, tracking.MLFLOW_PARENT_RUN_ID, parent_id)
    table = pd.DataFrame.from_dict({name: {**{m: row.metrics.get(m, np.nan) for m in LEADERBOARD_METRICS},
                                           "run_id": row.run_id} for name, row in rows.items()}, orient="index")
    table = table.sort_values("mean_pearson", ascending=False, kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    log_leaderboard(table.rename_axis("estimator"), [], bench, mlflow_client, parent_id, config.seeds)
    mlflow_client.set_terminated(parent_id)
    return parent_id


# --------------------------------------------------------------------------- the whole pipeline

@dataclass
class BenchmarkRun:
    config: BenchmarkConfig
    experiment: str
    rows: dict[str, TableRow]
    stage_seconds: dict[str, float]
    leaderboard_run_id: str | None = None

    def table(self) -> pd.DataFrame:
        """One row per estimator: correlations x 100, regret in accuracy points, seconds per target."""
        table = {}
        for name, row in self.rows.items():
            m = {key: row.metrics.get(key, np.nan) for key in (  # a logged run omits NaN metrics
                "mean_pearson", "mean_spearman", "mean_weighted_tau", "mean_top1_regret", "feature_seconds",
                "calculation_seconds")}
            table[name] = {"labels": "yes" if row.needs_labels else "no",
                           "pearson": 100 * m["mean_pearson"], "spearman": 100 * m["mean_spearman"],
                           "weighted_tau": 100 * m["mean_weighted_tau"], "top1_regret": 100 * m["mean_top1_regret"],
                           "feature_s": m["feature_seconds"], "calculation_s": m["calculation_seconds"]}
        return pd.DataFrame.from_dict(table, orient="index")


@contextmanager
def _stage(seconds: dict, key: str, label: str, say: Callable[[str], None]):
    say(f"[{key}] {label} ...")
    start = time.perf_counter()
    yield
    seconds[key] = time.perf_counter() - start
    say(f"[{key}] done in {seconds[key]:.0f} s")


def chosen_estimators(estimators: Iterable[str] | None) -> list[str]:
    """FDA (Fennec's history, always computed) and the registered estimators asked for (default all)."""
    registered = available_estimators()
    chosen = list(dict.fromkeys(["fda", *(registered if estimators is None else estimators)]))
    unknown = [e for e in chosen if e not in registered]
    if unknown:
        raise InvalidInputError(f"unknown estimator(s) {unknown}; registered: {registered}")
    return chosen


def finetune_and_score(config: BenchmarkConfig, models: list, history: list, targets: list, chosen: list[str], *,
                       workdir: Path, stages: dict, say: Callable[[str], None], progress: bool) -> None:
    """The stages every end-to-end benchmark shares: the ground-truth fine-tunes, FDA on every
    task, the other estimators on the targets (and on the history for ``history_estimators``)."""
    cells = cells_experiment(config.name)
    with _stage(stages, "finetune", f"fine-tune {len(models)} models x {len(targets)} targets (ground truth)", say):
        finetune_cells(models, targets, config=config.finetune_config(progress), experiment=cells, progress=progress)
    probe = {"probe_size": config.probe_size, "experiment": cells, "cache": FeatureCache(workdir / "features"),
             "progress": progress}
    with _stage(stages, "fda", f"FDA of {len(models)} models on {len(history) + len(targets)} tasks", say):
        score_cells(models, history + targets, estimator="fda", **probe)
    with _stage(stages, "estimators", f"{len(chosen) - 1} other estimators on the targets", say):
        for name in chosen[1:]:
            scored = history + targets if name in config.history_estimators else targets
            score_cells(models, scored, estimator=name, **probe)


def evaluate_stage(config: BenchmarkConfig, encoder: str, chosen: list[str], *, experiment: str | None, stages: dict,
                   say: Callable[[str], None], progress: bool,
                   source_accuracy: pd.Series | None = None) -> tuple[str, dict[str, TableRow], str]:
    """Read the cells back, evaluate every row not logged yet and log the leaderboard:
    (experiment, rows, leaderboard run id)."""
    with _stage(stages, "evaluation", "leave-one-target-out evaluation", say):
        data = load_benchmark_data(config, encoder, chosen, cells_experiment(config.name), source_accuracy)
        experiment = experiment or experiment_name(config.name)
        rows = run_evaluation(config, data, chosen, experiment=experiment, progress=progress)
        leaderboard = leaderboard_run(config, data, rows, experiment)
    return experiment, rows, leaderboard


def run_benchmark(config: str | BenchmarkConfig, *, workdir: str | Path | None = None,
                  experiment: str | None = None, estimators: Iterable[str] | None = None,
                  progress: bool = True, say: Callable[[str], None] = print) -> BenchmarkRun:
    """Build the benchmark (pre-train, fine-tune, score, embed, proxy) and evaluate it; resumable.

    ``workdir`` holds the pre-trained models, the feature cache and the proxy encoder (default
    ``$FENNEC_CACHE_DIR/bench/<name>``). Cells go to ``fennec-bench-<name>``, evaluation runs to
    ``experiment`` (default ``fennec-eval-<name>``). ``estimators``: the registered estimators
    to compare (default all; FDA is always computed, it is Fennec's history).
    """

    config = get_config(config) if isinstance(config, str) else config
    chosen = chosen_estimators(estimators)
    workdir = Path(workdir).expanduser() if workdir else default_workdir(config.name)
    cells = cells_experiment(config.name)
    stages: dict[str, float] = {}
    started = time.perf_counter()

    with _stage(stages, "pretrain", f"pre-train {len(config.zoo)} models on {len(config.sources)} synthetic sources", say):
        paths = pretrain_demo_zoo(workdir / "zoo", budget=config.pretrain, models=config.zoo, progress=progress)
        pretrained = [load_pretrained(p) for p in paths]
        models = [p.model for p in pretrained]
        # The analogue of a published ImageNet top-1 (%): accuracy on the source's held-out test split.
        source_accuracy = pd.Series({p.model.name: 100 * p.info.source_test_accuracy for p in pretrained})
    history = [spec.task() for spec in config.history]
    targets = [spec.task() for spec in config.targets]
    finetune_and_score(config, models, history, targets, chosen, workdir=workdir, stages=stages, say=say,
                       progress=progress)
    with _stage(stages, "archi2vec", "archi2vec of the architectures", say):
        embed_architectures(sorted(set(config.archs)), experiment=cells, progress=progress)
    with _stage(stages, "proxy", "task proxies (no labels)", say):
        encoder = demo_encoder(progress, out_dir=workdir / "proxy", budget=config.pretrain)
        say(f"    proxy encoder: {encoder.description}")
        proxy_cells(encoder.encoder, history + targets, sample_size=config.proxy_sample_size, experiment=cells,
                    progress=progress)
    experiment, rows, leaderboard = evaluate_stage(config, encoder.encoder.name, chosen, experiment=experiment,
                                                   stages=stages, say=say, progress=progress,
                                                   source_accuracy=source_accuracy)
    stages["total"] = time.perf_counter() - started
    return BenchmarkRun(config, experiment, rows, stages, leaderboard)
