"""Rank: the registered recommender's candidates for one target task, logged as a ``rank`` run."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from fennec_mlflow.core.evaluation import find_task_facts, task_name_key
from fennec_mlflow.data.proxy import task_proxy_features
from fennec_mlflow.data.tasks import Task
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.serving import flavor as pyfunc
from fennec_mlflow.serving.answers import predicted_regime
from fennec_mlflow.store import tracking

SCORE_UNITS = ("score = predicted z-score of the model on the target in the history's terms (its fine-tuned "
               "accuracy where the history holds fine-tunes, else its transferability score; 0 = an average "
               "model of the history, +1 = one standard deviation better) = bias (popularity, among the history tasks "
               "alike by their images' proxy or their facts, as the basis says) + transfer + meta "
               "(task-specific adjustments, shrunk by how well they predicted held-out history tasks); "
               "with known scores (known_score: what you told) the score also carries what they say about the "
               "other models, so it no longer equals that sum. "
               "predicted_accuracy [accuracy_low, accuracy_high]: the accuracy it predicts on the history's scale "
               "(of the history's kind: full fine-tunes, linear probes, or whatever an imported table measured), "
               "with a conformal interval learned leave-one-task-out (empty when the history holds no "
               "accuracies: the scores are then relative). latency_ms / peak_memory_mb: measured by `fennec profile` "
               "on this machine at profile_input_size pixels.")
# What `fennec rank` prints under every ranking, where SCORE_UNITS (on the rank run) would be a paragraph.
SCORE_LEGEND = ("score: the model's predicted standing on the target, in z-scores of the history (0 = an average "
                "model) = bias_score + transfer_score + meta_score{known}; the rank run's description (mlflow ui) "
                "explains every column.")
NO_ENCODER = (None, "", "none")
# A model scored on fewer history tasks than this stands where that one score puts it (a published
# table's baseline row measured on one dataset): the answer says so.
THIN_HISTORY_TASKS = 2


def thin_history(fennec, models) -> dict[str, int]:
    """{model: its history tasks} of those of ``models`` scored on fewer than :data:`THIN_HISTORY_TASKS`
    history tasks (none for a recommender that keeps no history, the paper's formulation)."""
    standardised = getattr(fennec, "standardised_", None)
    if standardised is None:
        return {}
    counts = dict(zip(map(str, fennec.model_names_), np.isfinite(standardised).sum(axis=1).tolist()))
    return {str(m): int(counts[str(m)]) for m in models if counts.get(str(m), THIN_HISTORY_TASKS) < THIN_HISTORY_TASKS}


@dataclass(frozen=True)
class TaskFacts:
    """A target known by its facts alone (no images): for a recommender built without an encoder,
    which places a new task by its class count, training-set size and domain."""

    name: str
    num_classes: int | None
    num_samples: int
    domain: str = "unknown"
    source: str = "facts"
    labelled: bool = False


def built_without_encoder(model_uri: str) -> bool:
    """Whether the recommender behind ``model_uri`` was built from task facts alone (``fennec build
    --encoder none``), as its ``fennec-fit`` run logged; False when that cannot be told (no such
    model yet, or one logged elsewhere)."""
    from mlflow.models import get_model_info

    try:
        run_id = get_model_info(model_uri).run_id
        encoder = tracking.client().get_run(run_id).data.params.get("encoder") if run_id else None
    except (MlflowException, OSError):
        return False
    return encoder is not None and encoder.strip().lower() in ("none", "")


def stored_task_facts(name: str, experiment: str) -> pd.Series | None:
    """The facts (``class_count``, ``train_size``, ``domain``) that the tables imported into ``experiment``
    gave the task called ``name`` (compared as task names are, :func:`find_task_facts`); None when no
    imported task answers to it or the experiment does not exist."""
    if tracking.client().get_experiment_by_name(experiment) is None:
        return None
    facts = tracking.load_matrix("external", experiment=experiment).task_facts
    if facts.empty or not {"class_count", "train_size"} & set(facts.columns):
        return None
    # Tables imported separately may spell one dataset two ways ("CIFAR10", "CIFAR-10"): one name, one row.
    facts = facts[~facts.index.map(task_name_key).duplicated()]
    return find_task_facts(name, facts.drop(columns="aliases", errors="ignore"))


def history_task_of(target: Task | TaskFacts, history_tasks, same_data=(), namesake: str | None = None) -> str | None:
    """The recommender's history task that is the target: one of ``same_data`` (the names the store gives
    the target's folder, :func:`store_names_of`), else one of its name unless ``namesake`` (another folder
    the store files under that name, :func:`~fennec_mlflow.store.tracking.other_task_source`), or, for a
    target named by its public dataset (``--dataset``), one named like the same dataset ("Oxford-IIIT Pets" and "pets")."""
    names = [str(name) for name in history_tasks]
    same = next((name for name in same_data if name in names), None)
    if same is not None:
        return same
    if target.name in names:
        return None if namesake else target.name
    return pyfunc.history_task_named(target.name, names) if isinstance(target, TaskFacts) else None


def rank_task(
    target: Task | TaskFacts,
    *,
    model_uri: str = f"models:/{pyfunc.REGISTERED_NAME}@{pyfunc.CHAMPION}",
    top_k: int = 10,
    labels_known: bool = False,
    class_count_hint: int | None = None,
    params: dict | None = None,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    log: bool = True,
    regime: str | None = None,
    known_from_store: bool = False,
) -> pd.DataFrame:
    """Rank the registered model's candidates for ``target``; log the ranking (``fennec.kind=rank``).

    Only the target's images are used (its labels only when ``labels_known``, for the class count).
    ``attrs`` of the returned table: ``basis`` (what the ranking rests on), ``in_history`` (the
    recommender's history task that is the target, :func:`history_task_of`, or None) and, when logged, ``run_id`` and
    ``experiment`` of the rank run. ``regime`` (``"full"``, ``"linear-probe"``; None: any):
    the fine-tune regime the ranking must predict; a recommender built for another one is refused.
    ``known_from_store``: warm start from the target's fine-tunes in ``experiment`` (the models the
    recommender knows, in the regime it predicts; ``known_scores`` in ``params`` take precedence);
    ``attrs["known_from_store"]`` counts them. ``attrs["history_changed"]``: (cells, matrix) when the
    store's cells the recommender learned from have changed or gone since it was built (:func:`history_changed_since`).
    """
    load_start = time.perf_counter()
    try:
        model = mlflow.pyfunc.load_model(model_uri, suppress_warnings=True)  # skips a 1.2 s requirements check
    except MlflowException as exc:  # no such model, version or alias: the user's URI is wrong
        raise InvalidInputError(f"cannot load the recommender {model_uri!r}: {exc.message.splitlines()[0]}; "
                                "build one with `fennec build` or give --model-uri") from None
    load_seconds = time.perf_counter() - load_start
    ranker: pyfunc.FennecRanker = model.unwrap_python_model()
    bundle = ranker.bundle
    predicts = predicted_regime(bundle)
    if regime is not None and predicts != regime:
        raise InvalidInputError(
            f"the recommender {model_uri!r} predicts {predicts or 'an unrecorded'} regime accuracy, not {regime!r}: "
            f"build one on that regime's fine-tunes with `fennec build --regime {regime}` and rank with its "
            "--model-uri (e.g. models:/fennec/VERSION)")
    params = dict(params or {})
    stored = stored_fine_tunes(target, bundle, experiment, predicts) if known_from_store else {}
    if stored:
        try:
            given = json.loads(params.get("known_scores") or "{}")
        except ValueError:
            given = None  # the served model says what is wrong with it
        if isinstance(given, dict):
            params["known_scores"] = json.dumps({**stored, **given})
    start = time.perf_counter()
    if isinstance(target, TaskFacts) and bundle.encoder_spec not in NO_ENCODER:
        raise InvalidInputError(
            f"the recommender {model_uri!r} places a task by its images (encoder {bundle.info.get('encoder')}): "
            "give --target with a folder of the task's images, or build one that reads task facts alone under "
            "a name of its own and rank with it (`fennec build --encoder none --registered-model NAME`, e.g. with "
            "`--kind external --source TABLE --truth-source TABLE` for an imported table; then "
            "`--model-uri models:/NAME@champion`)")
    if bundle.encoder_spec in NO_ENCODER:  # built without task proxies: the target is placed by its facts
        request = pd.DataFrame(index=[0])
    else:
        proxy = task_proxy_features(ranker.encoder(), target, sample_size=bundle.proxy_sample_size)
        request = pd.DataFrame([proxy], columns=[f"proxy_{i}" for i in range(len(proxy))])
    proxy_seconds = time.perf_counter() - start
    known_classes = target.num_classes if labels_known or isinstance(target, TaskFacts) else None
    request["class_count"] = float(known_classes or class_count_hint or np.nan)
    request["sample_count"] = float(target.num_samples)
    request["domain"] = target.domain if target.domain != "unknown" else None
    start = time.perf_counter()
    try:
        ranking = model.predict(request, params={**pyfunc.default_params(), **params, "top_k": top_k})
    except MlflowException as exc:  # the served model's 400s (bad params, no candidate left) are the user's to fix
        if exc.error_code != "INVALID_PARAMETER_VALUE":
            raise
        raise InvalidInputError(exc.message) from None
    rank_seconds = time.perf_counter() - start
    basis = str(ranking["basis"].iloc[0]) if len(ranking) else ""
    ranking = ranking.drop(columns=["task_index", "basis"])
    ranking.attrs["basis"] = basis
    history = [str(name) for name in getattr(bundle.fennec, "task_names_", ())]
    namesake = tracking.other_task_source(tracking.client(), experiment, target) if is_folder(target) else None
    ranking.attrs["in_history"] = history_task_of(target, history, store_names_of(target, experiment), namesake)
    ranking.attrs["history_namesake"] = namesake if namesake and target.name in history else None
    ranking.attrs["known_from_store"] = len(stored)
    ranking.attrs["history_matrix"] = bundle.info.get("matrix")  # e.g. "best", "external:mine"
    ranking.attrs["regime"] = predicts  # None: the history does not say (an imported table)
    ranking.attrs["thin_history"] = thin_history(bundle.fennec, ranking["model"])
    ranking.attrs["history_changed"] = changed = history_changed_since(model)
    if log:
        described = (f"placed by its facts: {target.num_samples} training images" if isinstance(target, TaskFacts)
                     else f"{target.num_samples} images from {target.source}")
        tags = {tracking.KIND_TAG: "rank", tracking.TASK_TAG: target.name,
                MLFLOW_RUN_NOTE: (f"Ranking of {len(ranking)} candidate models for target {target.name!r} "
                                  f"({described}; labels "
                                  f"{'used for the class count' if labels_known else 'not used'}) by {model_uri}. "
                                  f"Basis: {basis}. {SCORE_UNITS}"),
                **tracking.project_run_link()}
        with tracking.own_run(experiment, f"rank-{target.name}", tags) as run:
            constraints = {k: v for k, v in params.items() if k in ("max_latency_ms", "max_memory_mb", "licence")
                           and v}
            mlflow.log_params({"model_uri": model_uri, "top_k": top_k, "target_source": target.source, **constraints,
                               "labels_used": labels_known, "class_count_hint": class_count_hint or "none",
                               "encoder": bundle.info.get("encoder"), "regime": predicts or "unknown",
                               "basis": basis})
            if changed:
                mlflow.set_tag("fennec.history_changed_cells", changed[0])
            mlflow.log_metrics({"rank_seconds": rank_seconds, "proxy_seconds": proxy_seconds,
                                "model_load_seconds": load_seconds})
            mlflow.log_table(ranking, "ranking.json")
            mlflow.log_text(ranking.to_csv(index=False), "ranking.csv")
            mlflow.log_figure(ranking_chart(ranking, target.name), "ranking.png")
        ranking.attrs.update(run_id=run.info.run_id, experiment=experiment)
    return ranking


def history_changed_since(model) -> tuple[int, str] | None:
    """(cells, matrix) when cells of the store matrix the loaded recommender ``model`` learned from have
    changed or been deleted since it was built (:func:`~fennec_mlflow.serving.build.changed_history`);
    None when none have, or it cannot be told (a model logged outside a ``fennec-fit`` run)."""
    from fennec_mlflow.serving.build import changed_history

    changed = changed_history(model.metadata.run_id) if model.metadata.run_id else None
    return (changed[0], changed[1].label) if changed and changed[0] else None


def is_folder(target: Task | TaskFacts) -> bool:
    return str(target.source).startswith("folder:")


def store_names_of(target: Task | TaskFacts, experiment: str) -> list[str]:
    """The task names the store's runs in ``experiment`` give the target's folder (through a link, another
    name); [] for a target that is not a folder."""
    return tracking.task_names_of_source(tracking.client(), experiment, target.source) if is_folder(target) else []


def stored_task_of(target: Task | TaskFacts, task_facts: pd.DataFrame) -> str | None:
    """The task of ``task_facts`` (a matrix's, one row per task) that holds the target's data, or None.

    A folder target is found by the folder its runs logged (``task_source``), so a link to it matches
    and another folder of the same name does not: that one is refused, for its results are another
    dataset's. A task stored without a source, or a built-in one, is found by its name."""
    sources = task_facts["source"] if "source" in task_facts else pd.Series(dtype=object)
    if is_folder(target):
        same = [str(task) for task, source in sources.items() if source == target.source]
        if same:
            return target.name if target.name in same else same[0]
        other = sources.get(target.name)
        if isinstance(other, str) and other:
            raise InvalidInputError(
                f"the store's fine-tunes of task {target.name!r} are of another folder, "
                f"{other.removeprefix('folder:')}, not of {target.source.removeprefix('folder:')} (tasks are named by "
                "their folder); rank without --known-from-store, or give this folder's scores with --known-scores")
    return target.name if target.name in task_facts.index else None


def stored_fine_tunes(target: Task | TaskFacts, bundle, experiment: str, regime: str | None) -> dict[str, float]:
    """The target's fine-tune accuracies in ``experiment`` (``regime``'s), of the models ``bundle`` ranks
    (:func:`stored_task_of` finds the target's task)."""
    matrix = tracking.load_matrix("finetune", experiment=experiment, regime=regime)
    task = stored_task_of(target, matrix.task_facts)
    if task is None or task not in matrix.values:
        return {}
    return {str(m): float(v) for m, v in matrix.values[task].dropna().items() if m in bundle.model_meta.index}


def ranking_chart(ranking: pd.DataFrame, target: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ranking.head(20).iloc[::-1]
    figure, axes = plt.subplots(figsize=(8, 0.35 * len(shown) + 1.2))
    axes.barh(shown["model"], shown["score"], color="#4C72B0")
    axes.set_xlabel("Fennec score (predicted z-score on the target: 0 = an average model)")
    axes.set_title(f"Recommended models for {target}")
    figure.tight_layout()
    return figure
