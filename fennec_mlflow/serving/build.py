"""Build: rebuild the knowledge from the store, fit Fennec, validate it, log a ``fennec-fit`` run, register it.

**Validation on the store's own ground truth.** Ground truth is the experiment's ``finetune``
runs of one regime (``regime``: ``"full"``, the default, or ``"linear-probe"``), or the imported
table named by ``truth_source`` (by default, a build from an imported table in a store without
fine-tune runs is validated on that table). The regime also picks the finetune history when ``kind="finetune"``,
and the served model says which regime it predicts (``info["regime"]``, shown in the rank basis). When it covers at least
:data:`BUILD_MIN_TARGETS` tasks (each with 3 known models or more), ``build`` tunes Fennec by default
(Optuna over ``k``, ``alpha``, ``nmf_l2``, the shrinkage and the history source: the build's own
matrix or the ground truth itself; :mod:`fennec_mlflow.serving.selection`) and measures the
whole procedure by nested leave-one-task-out cross-validation: ``validated_mean_pearson``, the
honest figure, beside ``popularity_mean_pearson`` on the same targets. With ``tune=False`` the
given (or default) parameters are measured by plain leave-one-task-out. Without ground truth the
version is tagged ``fennec.quality=unmeasured`` and the reason is said.

The figures are metrics of the ``fennec-fit`` run and tags of the registered version (plus a
version description and the run's note, shown by the MLflow UI). The alias ``champion`` moves to
the new version only when its validated figure is at least the current champion's (a champion
without one is unmeasured and is replaced; an unmeasured version never replaces a validated
champion), figures measured on the same ground truth (source or kind, and the champion's targets among the
new version's); otherwise
the version gets the alias ``challenger``, with the reason (a figure on another ground truth is not
comparable, and the champion stays).
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from fennec_mlflow import config
from fennec_mlflow.core.accuracy import AccuracyModel
from fennec_mlflow.core.recommender import Fennec
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.serving import flavor as pyfunc
from fennec_mlflow.serving.profiles import candidate_constraints
from fennec_mlflow.serving.selection import (
    TRUTH,
    MatrixSpec,
    Validation,
    load_store_data,
    validate,
)
from fennec_mlflow.store import tracking
from fennec_mlflow.store.knowledge import Knowledge, build_knowledge, load_task_proxies

BUILD_MIN_TARGETS = 4
BUILD_N_TRIALS = config.TUNE_N_TRIALS
BUILD_INNER_TRIALS = 5
CHALLENGER = "challenger"
QUALITY_TAG = "fennec.quality"
VALIDATED_TAG = "fennec.validated_mean_pearson"
POPULARITY_TAG = "fennec.popularity_mean_pearson"
# What a version places a new task by: its images (a proxy encoder) or its facts alone. Versions that
# answer different requests never take the champion alias from each other: a table's facts-only
# recommender built into the image recommender's name broke every image request to the champion.
INPUT_TAG = "fennec.input"
IMAGES, FACTS = "images", "task facts"


def default_k(P: pd.DataFrame) -> int:
    return int(max(1, min(config.FENNEC_K, min(P.shape) - 1)))


def _shrinkage(value: str):
    return value if value == "auto" else float(value)


def tuned_parameters(experiment: str, mlflow_client=None) -> dict:
    """Best (k, alpha, nmf_l2, shrinkage and, where searched, formulation) of the newest finished ``tune``
    run, if any (see the tune entry point)."""
    runs = tracking.runs_of_kind("tune", experiment=experiment, mlflow_client=mlflow_client)
    for run in runs:
        best = {k[5:]: v for k, v in run.data.params.items() if k.startswith("best_")}
        if best:
            tuned = {"k": int(float(best["k"])), "alpha": float(best["alpha"]), "nmf_l2": float(best["nmf_l2"]),
                     "shrinkage": _shrinkage(best.get("shrinkage", "auto"))}
            if "formulation" in best:
                tuned["formulation"] = best["formulation"]
            return tuned
    return {}


@dataclass
class Quality:
    """What is known of a build's ranking quality: validated on the store's ground truth, or unmeasured."""

    validation: Validation | None
    reason: str  # how it was measured, or why it is not
    truth: str | None = None
    history: str | None = None  # the matrix the fit learned from (label)

    @property
    def measured(self) -> bool:
        return self.validation is not None and math.isfinite(self.validation.validated_mean_pearson)

    def metrics(self) -> dict[str, float]:
        v = self.validation
        if v is None:
            return {}
        return {"validated_mean_pearson": v.validated_mean_pearson, "popularity_mean_pearson": v.popularity_mean_pearson,
                "validated_targets": float(len(v.targets)), "tuning_seconds": v.seconds, "tuning_trials": float(v.n_trials),
                **({} if v.best_mean_pearson is None else {"tuned_best_mean_pearson": v.best_mean_pearson})}

    def tags(self) -> dict[str, str]:
        if not self.measured:
            return {QUALITY_TAG: "unmeasured", "fennec.quality_note": self.reason}
        v = self.validation
        return {QUALITY_TAG: "validated", VALIDATED_TAG: f"{v.validated_mean_pearson:.6f}",
                POPULARITY_TAG: f"{v.popularity_mean_pearson:.6f}", "fennec.validation": v.method,
                "fennec.truth": str(self.truth), "fennec.validated_targets": ",".join(v.targets)[:4000]}

    def description(self) -> str:
        if not self.measured:
            return f"Ranking quality unmeasured: {self.reason}."
        v = self.validation
        return (f"Validated on the store's {self.truth} ground truth ({len(v.targets)} targets, {v.method}): "
                f"mean leave-one-task-out Pearson x 100 {100 * v.validated_mean_pearson:.1f}, popularity on the "
                f"same targets {100 * v.popularity_mean_pearson:.1f}. History: {self.history}.")


@dataclass
class BuildResult:
    run_id: str
    model_uri: str
    version: str | None
    fennec: Fennec
    knowledge: Knowledge
    quality: Quality | None = None
    alias: str | None = None
    alias_reason: str = ""
    regime: str | None = None  # the fine-tune regime the recommender predicts (None: not a fine-tune's)


ACCURACY_KINDS = ("finetune", "external")  # histories that can hold fine-tune accuracies


def accuracy_model(spec: MatrixSpec, knowledge: Knowledge) -> AccuracyModel:
    """The predicted-accuracy model served with the recommender (issue 16): fitted on the history
    when it holds accuracies (finetune runs, or an imported table on an accuracy scale), else one
    that says the scores are relative."""
    P = knowledge.P
    if spec.kind == tracking.BEST_EVIDENCE:  # only its fine-tuned tasks hold accuracies
        P = P.loc[:, knowledge.task_weights == 1.0]
        if P.shape[1] < 2:
            return AccuracyModel.unavailable(f"the store has fine-tunes of {P.shape[1]} task(s); the predicted "
                                             "accuracy needs at least 2")
    elif spec.kind not in ACCURACY_KINDS:
        return AccuracyModel.unavailable(f"the history is {spec.label} scores, not fine-tune accuracies")
    return AccuracyModel().fit(P, task_meta=knowledge.task_meta)


def _truth_spec(truth_source: str | None, regime: str | None = None) -> MatrixSpec:
    return MatrixSpec("external", source=truth_source) if truth_source else MatrixSpec("finetune", regime=regime)


def predicted_regime(chosen: MatrixSpec, truth_source: str | None, regime: str) -> str | None:
    """The fine-tune regime a build's scores predict: its finetune history's, else its finetune ground
    truth's; None when the history is an imported table (its scores are whatever the table measured: a
    linear probe's, a full fine-tune's; the table does not say) or the truth is."""
    if chosen.kind == "finetune":
        return chosen.regime
    return None if truth_source or chosen.kind == "external" else regime


def assess(spec: MatrixSpec, *, truth_source: str | None, encoder: str | None, experiment: str, tune: bool,
           fixed: dict, n_trials: int, inner_trials: int, regime: str | None = None,
           progress: bool = False) -> tuple[Quality, MatrixSpec, dict]:
    """(quality, the matrix to fit on, the Fennec params) from the store's ground truth, if it has enough.

    The history candidates are ``spec`` (what the build was asked to learn from) and the ground
    truth itself when a fit on it can be served (its tasks have task proxies, or no encoder is used).
    """
    if (truth_source is None and spec.kind == "external" and spec.source
            and _truth_spec(None, regime).load(experiment).values.empty):
        truth_source = spec.source  # without fine-tune runs, a table of fine-tune results is its own ground truth
    truth = _truth_spec(truth_source, regime)
    candidates = [spec]
    if truth != spec:
        km = truth.load(experiment)
        if not km.values.empty and (encoder is None or set(km.values.columns) <= set(
                load_task_proxies(encoder, experiment=experiment).index)):
            candidates.append(truth)
    try:
        loaded = load_store_data(truth, candidates, experiment=experiment, encoder=encoder,
                                 min_targets=BUILD_MIN_TARGETS)
    except InvalidInputError as exc:
        hint = (f"; to validate on the imported table itself, build with --truth-source {spec.source}"
                if truth_source is None and spec.kind == "external" and spec.source else "")
        return Quality(None, f"no usable ground truth in the store: {exc}{hint}"), spec, {}
    validation = validate(loaded.data, tune=tune, params=fixed, n_trials=n_trials, inner_trials=inner_trials,
                          progress=progress)
    params = dict(validation.params)
    label = params.pop("history", loaded.data.sources[0])
    chosen = truth if label == TRUTH else next(c for c in candidates if c.label == label)
    return Quality(validation, validation.method, truth.label, chosen.label), chosen, params


def request_example(knowledge) -> pd.DataFrame | None:
    """A request for the first history task, logged with the model to show the request format: its
    proxy features (a recommender that reads images) and its facts (class count, sample count, domain)."""
    first = knowledge.P.columns[0]
    example = (knowledge.task_proxy.loc[[first]].reset_index(drop=True) if knowledge.task_proxy is not None
               else pd.DataFrame(index=[0]))
    meta = knowledge.task_meta.loc[first] if first in knowledge.task_meta.index else pd.Series(dtype=float)
    for column, fact in (("log_class_count", "class_count"), ("log_sample_count", "sample_count")):
        if np.isfinite(meta.get(column, np.nan)):
            example[fact] = float(round(np.exp(meta[column])))  # a count: exp(log(3)) is 3.0000000000000004
    domain = next((c.split("=", 1)[1] for c in meta.index if c.startswith("domain=") and meta[c] == 1), None)
    if domain is not None and knowledge.task_proxy is None:  # a facts-only recommender places a task by it
        example["domain"] = domain
    return example if len(example.columns) else None


def choose_alias(quality: Quality, mlflow_client=None, name: str = pyfunc.REGISTERED_NAME,
                 experiment: str | None = None, reads: str | None = None) -> tuple[str, str]:
    """(alias, why) for a new version of the given quality (see the module docstring), built from
    ``experiment``, placing tasks by what ``reads`` says (:data:`IMAGES` or :data:`FACTS`): a champion
    built from another experiment, or reading the other input, is never compared with (its figure
    comes from another ground truth; it answers other requests), so the new version is its challenger."""
    mlflow_client = mlflow_client or mlflow.MlflowClient()
    try:
        champion = mlflow_client.get_model_version_by_alias(name, pyfunc.CHAMPION)
    except mlflow.exceptions.MlflowException:
        return pyfunc.CHAMPION, "no champion yet"
    champion_reads = champion.tags.get(INPUT_TAG) or _input_of(mlflow_client, champion.run_id)
    if reads is not None and champion_reads not in (None, reads):
        return CHALLENGER, (f"the champion (version {champion.version}) places a task by its {champion_reads}, this "
                            f"version by its {reads}: they answer different requests, so the champion stays; build "
                            f"with --registered-model NAME to give this recommender a champion of its own")
    champion_experiment = _experiment_of(mlflow_client, champion.run_id)
    if experiment is not None and champion_experiment not in (None, experiment):
        return CHALLENGER, (f"the champion (version {champion.version}) was built from experiment "
                            f"{champion_experiment!r}, not {experiment!r}, so their figures are not comparable; "
                            f"build with --registered-model to keep this experiment's models apart")
    current = champion.tags.get(VALIDATED_TAG)
    if current is None:
        return pyfunc.CHAMPION, f"the champion (version {champion.version}) was unmeasured"
    if not quality.measured:
        return CHALLENGER, (f"the champion (version {champion.version}) is validated ({100 * float(current):.1f}) "
                            "and this version is unmeasured")
    elsewhere = other_ground_truth(quality, champion.tags)
    changed = None if elsewhere else changed_truth_cells(quality, mlflow_client, champion.run_id)
    if changed:  # the champion's figure was measured on cells that no longer hold: it has none on today's
        return pyfunc.CHAMPION, (f"the champion (version {champion.version}) was validated on {quality.truth} as it "
                                 f"was then; {changed} of those cells have changed or gone since, so its figure no "
                                 "longer holds and this version, validated on the current table, takes over")
    if elsewhere:
        return CHALLENGER, (f"the champion (version {champion.version}) was validated on {elsewhere}, this version on "
                            f"{ground_truth_words(quality.truth, quality.validation.targets)}, so their figures are "
                            "not comparable; the champion stays (move the alias by hand if this one should serve)")
    new = quality.validation.validated_mean_pearson
    digits = 1 if round(100 * new, 1) != round(100 * float(current), 1) else 3  # a tie as shown is no tie
    verdict = (f"validated {100 * new:.{digits}f} vs the champion's (version {champion.version}) "
               f"{100 * float(current):.{digits}f}")
    return (pyfunc.CHAMPION, verdict) if new >= float(current) else (CHALLENGER, verdict)


def ground_truth_words(truth: str | None, targets) -> str:
    return f"{truth} ({len(targets)} targets)"


def other_ground_truth(quality: Quality, champion_tags: dict) -> str | None:
    """The champion's ground truth in words when it is not this validated version's (another kind or
    source, or targets this version was not validated on), else None: only figures on the same ground
    truth compare. A store that grew (every champion target among this version's) still compares, or
    its champion would never move again after new fine-tunes."""
    truth = champion_tags.get("fennec.truth")
    targets = champion_tags.get("fennec.validated_targets")
    if truth is None or targets is None:  # validated before these tags: nothing to tell them apart
        return None
    grown = set(targets.split(",")) <= set(quality.tags()["fennec.validated_targets"].split(","))
    if truth == str(quality.truth) and grown:
        return None
    return ground_truth_words(truth, targets.split(",") if targets else [])


TRUTH_ARTIFACT = "validation_truth.csv"
TRAINING_ARTIFACT = "training_matrix.csv"


def _changed_cells(mlflow_client, run_id: str | None, artifact: str, now: pd.DataFrame) -> int | None:
    """How many cells of the matrix ``artifact`` of ``run_id`` ``now`` no longer holds as they were (changed,
    or gone); None when that run kept no such record."""
    try:
        before = tracking.download_csv(mlflow_client, run_id, artifact)
    except (mlflow.exceptions.MlflowException, OSError, TypeError):
        return None
    before.index, before.columns = before.index.map(str), before.columns.map(str)
    now = now.reindex(index=before.index, columns=before.columns)
    kept = np.isclose(before.to_numpy(float), now.to_numpy(float), rtol=0.0, atol=1e-9)
    return int((before.notna().to_numpy() & ~kept).sum())


def changed_truth_cells(quality: Quality, mlflow_client, run_id: str | None) -> int | None:
    """How many of the cells the version of ``run_id`` was validated on the new validation's truth no
    longer holds as they were (a corrected table); None when that run kept no such record."""
    return _changed_cells(mlflow_client, run_id, TRUTH_ARTIFACT, quality.validation.truth)


def changed_history(run_id: str, mlflow_client=None) -> tuple[int, MatrixSpec] | None:
    """How many cells of the matrix that the recommender fitted by ``run_id`` (its ``fennec-fit`` run) learned
    from the store no longer holds as they were (a table re-imported with --replace, runs deleted or
    corrected), and that matrix; None when it cannot be told (a version built before the fit run logged its
    matrix's source, a run or experiment gone)."""
    mlflow_client = mlflow_client or tracking.client()
    try:
        run = mlflow_client.get_run(run_id)
        experiment = mlflow_client.get_experiment(run.info.experiment_id).name
    except (mlflow.exceptions.MlflowException, TypeError):
        return None
    params = run.data.params
    if "matrix_source" not in params:
        return None
    given = {name: None if params.get(f"matrix_{name}") in (None, "None") else params[f"matrix_{name}"]
             for name in ("estimator", "source", "regime")}
    spec = MatrixSpec(params["matrix_kind"], **given)
    try:
        now = spec.load(experiment, mlflow_client).values
    except tracking.TrackingError:
        return None
    changed = _changed_cells(mlflow_client, run_id, TRAINING_ARTIFACT, now)
    return None if changed is None else (changed, spec)


def _input_of(mlflow_client, run_id: str | None) -> str | None:
    """What the version built by ``run_id`` places tasks by, from its ``encoder`` param (versions
    registered before :data:`INPUT_TAG`); None when the run is gone."""
    try:
        encoder = mlflow_client.get_run(run_id).data.params.get("encoder")
    except (mlflow.exceptions.MlflowException, TypeError):
        return None
    return None if encoder is None else FACTS if encoder in ("None", "none", "") else IMAGES


def _experiment_of(mlflow_client, run_id: str | None) -> str | None:
    """The name of the experiment holding ``run_id``; None when the run is gone."""
    try:
        return mlflow_client.get_experiment(mlflow_client.get_run(run_id).info.experiment_id).name
    except (mlflow.exceptions.MlflowException, TypeError):
        return None


def _register(version: str, quality: Quality, alias: str, mlflow_client=None,
              name: str = pyfunc.REGISTERED_NAME) -> None:
    mlflow_client = mlflow_client or mlflow.MlflowClient()
    for key, value in quality.tags().items():
        mlflow_client.set_model_version_tag(name, version, key, value)
    mlflow_client.update_model_version(name, version, description=quality.description())
    if alias == pyfunc.CHAMPION:
        pyfunc.set_champion(version, mlflow_client, name)
    else:
        mlflow_client.set_registered_model_alias(name, alias, version)


def build(
    *,
    kind: str = tracking.BEST_EVIDENCE,
    estimator: str | None = None,
    source: str | None = None,
    encoder_spec: str | None = None,
    encoder_name: str | None = None,
    encoder_file: Path | None = None,
    k: int | None = None,
    alpha: float | None = None,
    shrinkage: str | float | None = None,
    formulation: str | None = None,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    register: bool = True,
    models: list[str] | None = None,
    tasks: list[str] | None = None,
    extra_artifacts: dict | None = None,
    tune: bool = True,
    truth_source: str | None = None,
    n_trials: int = BUILD_N_TRIALS,
    inner_trials: int = BUILD_INNER_TRIALS,
    regime: str = tracking.DEFAULT_REGIME,
    progress: bool = False,
    registered_model: str = pyfunc.REGISTERED_NAME,
) -> BuildResult:
    """Rebuild the knowledge from the store, fit Fennec, validate it, log it (``fennec.kind=fennec-fit``), register it.

    ``kind`` / ``estimator`` / ``source``: the matrix to learn from. ``encoder_name``: the task
    proxies' encoder (None: no proxies, a new task is placed by its facts). ``models`` / ``tasks``
    restrict the knowledge to those rows / columns of the matrix. ``k`` / ``alpha`` / ``shrinkage``:
    fixed (else tuned on the ground truth when there is enough, else from a ``tune`` run, else
    defaults). ``formulation``: Fennec's (``"shrunk"``, the default) or the paper's (``"paper"``), the
    others tuned and validated under it. ``tune``: tune when the ground truth allows. ``truth_source``: an imported table
    as ground truth instead of the ``finetune`` runs. ``regime``: which fine-tune regime's runs are the
    ground truth (and the history, with ``kind="finetune"``): ``"full"`` or ``"linear-probe"``.
    ``progress``: a bar over the validation's trials and folds. ``registered_model``: the name it is
    registered under (one per experiment keeps their champions apart). See the module docstring.
    """
    spec = MatrixSpec(kind, estimator, source, regime=regime if kind in tracking.REGIME_KINDS else None)
    _truth_spec(None, regime)  # an unknown regime fails here, before anything is read
    fixed = {name: value for name, value in (("k", k), ("alpha", alpha), ("shrinkage", shrinkage),
                                             ("formulation", formulation)) if value is not None}
    quality, chosen, settings = assess(spec, truth_source=truth_source, encoder=encoder_name, experiment=experiment,
                                       tune=tune, fixed=fixed, n_trials=n_trials, inner_trials=inner_trials,
                                       regime=regime, progress=progress)
    tuned = {}
    if chosen != spec:  # validation found the ground truth a better history than the asked matrix
        models = tasks = None
    knowledge = build_knowledge(kind=chosen.kind, estimator=chosen.estimator, source=chosen.source,
                                regime=chosen.regime, encoder=encoder_name, models=models, tasks=tasks, experiment=experiment)
    if not quality.measured:
        tuned = tuned_parameters(experiment)
        settings = {"k": k or tuned.get("k") or default_k(knowledge.P),
                    "alpha": alpha if alpha is not None else tuned.get("alpha", config.FENNEC_ALPHA)}
        for name in ("nmf_l2", "shrinkage", "formulation"):
            if name in fixed or name in tuned:
                settings[name] = fixed.get(name, tuned.get(name))
    settings["k"] = int(max(1, min(settings["k"], min(knowledge.P.shape) - 1)))
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        fennec = Fennec(**settings).fit(knowledge.P, knowledge.model_meta, knowledge.task_meta, knowledge.task_proxy,
                                        task_weights=knowledge.task_weights)
    fit_seconds = time.perf_counter() - start
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            # The library's advice (raise nmf_max_iter or nmf_l2) is no option of build: what matters
            # here is that validation measured fits under the same cap.
            warnings.warn(f"the NMF stopped at its cap of {fennec.nmf_max_iter} sweeps before settling "
                          f"(k={fennec.k}, nmf_l2={fennec.nmf_l2:g}); the fit is used as it stands, as "
                          "validation measured it", ConvergenceWarning, stacklevel=2)
        elif "no meta phase" not in str(warning.message):  # a table without model facts: the basis says so
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    accuracy = accuracy_model(chosen, knowledge)
    constraints = candidate_constraints(knowledge.P.index, experiment=experiment,
                                        stated_licences=knowledge.model_licences, imported=chosen.kind == "external")
    bundle = pyfunc.RankerBundle(
        fennec=fennec, model_meta=knowledge.model_meta, model_parameters=knowledge.model_parameters,
        domains=knowledge.domains, task_meta_fill=knowledge.task_meta_fill,
        proxy_dim=0 if knowledge.task_proxy is None else knowledge.task_proxy.shape[1],
        encoder_spec=pyfunc.BUNDLED_ENCODER if encoder_file else (encoder_spec or "none"),
        info={"kind": chosen.kind, "matrix": chosen.label, "encoder": encoder_name,
              "regime": predicted_regime(chosen, truth_source, regime),
              "models": list(knowledge.P.index), "tasks": list(knowledge.P.columns)},
        accuracy=accuracy, constraints=constraints)
    example = request_example(knowledge)
    predicts = bundle.info["regime"]
    tags = {tracking.KIND_TAG: "fennec-fit", **quality.tags(), "mlflow.note.content": quality.description(),
            **({tracking.REGIME_TAG: predicts} if predicts else {})}
    with tracking.own_run(experiment, "fennec-fit", tags) as run:
        mlflow.log_params({"matrix_kind": chosen.kind, "matrix_estimator": chosen.estimator, "matrix": chosen.label,
                           "matrix_source": chosen.source, "matrix_regime": chosen.regime,
                           "encoder": encoder_name, "models": knowledge.P.shape[0], "tasks": knowledge.P.shape[1],
                           "tuned": bool(tuned) or (quality.measured and tune), "validation": quality.reason[:500],
                           "truth": quality.truth, "predicted_accuracy": accuracy.note[:500],
                           "regime": predicts or "unknown",
                           "profiled_models": int(constraints["latency_ms"].notna().sum()), **settings})
        mlflow.log_metrics({"fit_seconds": fit_seconds, "known_cells": float(knowledge.P.notna().sum().sum()),
                            **({"accuracy_calibration_cells": float(accuracy.calibration_cells_),
                                "accuracy_median_task": accuracy.task_mean_} if accuracy.available else {}),
                            **({"nmf_iterations": float(fennec.n_iter_),
                                "nmf_objective": float(fennec.objective_history_[-1])} if fennec.has_transfer_ else {}),
                            **{k: v for k, v in quality.metrics().items() if np.isfinite(v)}})
        mlflow.log_text(knowledge.P.to_csv(), TRAINING_ARTIFACT)
        mlflow.log_text(knowledge.model_meta.to_csv(), "model_meta.csv")
        mlflow.log_text(knowledge.task_meta.to_csv(), "task_meta.csv")
        validation = quality.validation
        artifacts = {"validation_trials.csv": None if validation is None else validation.trials,
                     "validation_folds.csv": None if validation is None else validation.folds,
                     TRUTH_ARTIFACT: None if validation is None else validation.truth,
                     **(extra_artifacts or {})}
        tracking.log_artifacts(mlflow.MlflowClient(), run.info.run_id,
                               {name: value for name, value in artifacts.items() if value is not None})
        reads = IMAGES if bundle.proxy_dim else FACTS
        alias, why = (choose_alias(quality, name=registered_model, experiment=experiment, reads=reads) if register
                      else (None, ""))
        info = pyfunc.log_model(bundle, encoder_file=encoder_file, input_example=example,
                                registered_model_name=registered_model if register else None)
        if register:
            mlflow.set_tags({"fennec.alias": alias, "fennec.alias_reason": why})
            _register(str(info.registered_model_version), quality, alias, name=registered_model)
            mlflow.MlflowClient().set_model_version_tag(registered_model, str(info.registered_model_version),
                                                        INPUT_TAG, reads)
            if predicts:
                mlflow.MlflowClient().set_model_version_tag(registered_model, str(info.registered_model_version),
                                                            tracking.REGIME_TAG, predicts)
    version = str(info.registered_model_version) if register else None
    uri = f"models:/{registered_model}@{alias}" if register else info.model_uri
    return BuildResult(run.info.run_id, uri, version, fennec, knowledge, quality, alias, why, predicts)
