"""The user's own store as a benchmark: ``evaluate`` and ``tune`` with ``benchmark=store``.

Ground truth: the store's ``finetune`` runs (test accuracy), or a table imported with
``fennec import TABLE --source NAME`` (``external`` runs of that source). History, what Fennec
learns from: the ground truth itself (for each target, the other tasks' columns, as on the public
tables; the default for an imported table), every task's best evidence (the default for the
``finetune`` ground truth: fine-tunes where a task has them, else FDA, as ``fennec build`` learns
by default; :func:`~fennec_mlflow.store.tracking.load_best_evidence`) or another matrix of the
store (FDA, an estimator's scores, another imported table), always **without the target's own
column**. Targets: every ground-truth task with at least
:data:`~fennec_mlflow.serving.selection.MIN_TARGET_MODELS` known models (among the models the
history scores); at least :data:`~fennec_mlflow.serving.selection.MIN_TARGETS` are needed.

Meta tables come from the facts the runs carry (``model_*`` / ``task_*`` params, e.g. the
``task_class_count``, ``task_train_size``, ``task_domain`` columns of an imported long table) and
the store's archi2vec runs; a table without facts still evaluates (Fennec then ranks by
popularity, and the rows that need facts are skipped with a note). The baselines (popularity,
family-mean) rank from the ground truth of the other tasks, as on the public tables, whatever
Fennec's history. Label-based estimators the store computed on the targets themselves (``fennec
fda``, ``fennec fda --estimator logme``, ...) are rows too, each ranking a target by its own scores
of it: the comparison a user makes before trusting Fennec without labels. See
:mod:`fennec_mlflow.serving.selection` for the details.
"""
from __future__ import annotations

from fennec_mlflow.bench.public import Benchmark
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.serving.selection import MIN_TARGET_MODELS, TRUTH, MatrixSpec, load_store_data
from fennec_mlflow.store import tracking

TRUTH_KINDS = ("external", "finetune")
HISTORY_KINDS = ("external", "fda", "estimator", "finetune", tracking.BEST_EVIDENCE)


def matrix_specs(*, source: str | None = None, truth_kind: str | None = None, history_kind: str | None = None,
                 history_source: str | None = None, history_estimator: str | None = None,
                 regime: str | None = None) -> tuple[MatrixSpec, MatrixSpec]:
    """(truth, history) from the user's options; the defaults are described in the module docstring.
    ``regime``: which fine-tune regime's runs a finetune (or best-evidence) matrix reads."""
    truth_kind = truth_kind or ("external" if source else "finetune")
    if truth_kind not in TRUTH_KINDS:
        raise InvalidInputError(f"the ground truth is fine-tune accuracies or an imported table: truth kind must be "
                                f"one of {TRUTH_KINDS}, got {truth_kind!r}")
    if truth_kind == "finetune" and source:
        raise InvalidInputError("--source names an imported table, which is ground truth of kind 'external'; "
                                "drop --truth-kind finetune or --source")
    if regime is not None and truth_kind != "finetune":
        raise InvalidInputError("--regime picks which fine-tunes are the ground truth: it applies with "
                                "--truth-kind finetune, not to an imported table")
    truth = MatrixSpec(truth_kind, source=source if truth_kind == "external" else None, regime=regime)
    history_kind = history_kind or ("external" if history_source else "estimator" if history_estimator
                                    else tracking.BEST_EVIDENCE if truth_kind == "finetune" else truth_kind)
    if history_kind not in HISTORY_KINDS:
        raise InvalidInputError(f"history kind must be one of {HISTORY_KINDS}, got {history_kind!r}")
    if history_kind == "estimator" and not history_estimator:
        raise InvalidInputError("history kind 'estimator' needs --history-estimator NAME (e.g. logme)")
    if history_kind == "external":
        return truth, MatrixSpec("external", source=history_source or truth.source)
    return truth, MatrixSpec(history_kind, estimator=history_estimator if history_kind == "estimator" else None,
                             regime=regime if history_kind in tracking.REGIME_KINDS else None)


def store_benchmark(*, source: str | None = None, truth_kind: str | None = None, history_kind: str | None = None,
                    history_source: str | None = None, history_estimator: str | None = None,
                    experiment: str = tracking.DEFAULT_EXPERIMENT, encoder: str | None = "auto",
                    regime: str | None = None, mlflow_client=None) -> Benchmark:
    """The store's ground truth as a :class:`Benchmark` for ``run_evaluation`` and ``run_tuning``.

    source: the imported table that is the ground truth (else the ``finetune`` runs). truth_kind:
    ``external`` or ``finetune`` (default from ``source``). history_kind / history_source /
    history_estimator: what Fennec learns from (default: the best evidence for fine-tune ground truth,
    else the ground truth). experiment: where the
    store's runs are. encoder: use that encoder's task proxies when every task has one; ``"auto"``:
    the encoder whose task-proxy runs cover the most tasks (what ``fennec build`` computed, so the
    evaluation measures the Fennec it serves); None: task facts only. regime: which fine-tunes are
    the ground truth (default: full, or linear-probe where the store holds only those).
    """
    options = dict(source=source, truth_kind=truth_kind, history_kind=history_kind, history_source=history_source,
                   history_estimator=history_estimator)
    truth, history = matrix_specs(**options, regime=regime)
    if truth.kind == "finetune" and regime is None:  # a store of linear probes only: those are the ground truth
        truth, history = matrix_specs(**options, regime=tracking.regime_held("finetune", experiment, mlflow_client))
    if truth.kind == "external" and not truth.source:
        raise InvalidInputError("--benchmark store reads an imported table by its name: give --source NAME "
                                "(the name given to `fennec import`), or --truth-kind finetune")
    if truth.kind == "finetune" and not truth_kind:
        refuse_missing_fine_tunes(truth, experiment, mlflow_client)
    if encoder == "auto":
        encoder = widest_proxy_encoder(experiment, mlflow_client)
    loaded = load_store_data(truth, [history], experiment=experiment, encoder=encoder, mlflow_client=mlflow_client)
    data = loaded.data
    same = history == truth
    name = "store-" + (truth.source or truth.label.replace(":", "-")) + (
        "" if same else "-from-" + history.label.replace(":", "-"))
    if experiment != tracking.DEFAULT_EXPERIMENT:  # another experiment's evaluations are kept apart
        name += f"-in-{experiment}"
    vector = ("task_proxy" if data.task_proxy is not None else "task_meta" if data.task_meta is not None
              else "none (no task facts: popularity)")
    return Benchmark(
        name=name,
        description=(f"the store's {truth.label} ground truth (experiment {experiment!r}): {data.P.shape[0]} models "
                     f"x {data.P.shape[1]} tasks, {len(data.targets)} targets; history: "
                     + ("the other tasks' ground truth" if same else f"the other tasks' {history.label} scores"
                        + (" (fine-tunes where a task has them, else FDA)" if history.kind == tracking.BEST_EVIDENCE
                           else ""))),
        P=data.P, model_meta=data.model_meta, task_meta=data.task_meta, targets=list(data.targets),
        families=loaded.families, units=f"{truth.label} score", task_vector_source=vector,
        history=None if same else data.histories[history.label], history_name=TRUTH if same else history.label,
        history_weights=data.history_weights.get(history.label),
        task_proxy=data.task_proxy, notes=tuple(loaded.notes),
        target_scores=label_based_scores(data.P, list(data.targets), experiment, mlflow_client))


def refuse_missing_fine_tunes(truth: MatrixSpec, experiment: str, mlflow_client=None) -> None:
    """The default ground truth (fine-tunes) is missing while the store holds imported tables: say which
    ``--source NAME`` evaluates on one of them."""
    sources = tracking.imported_sources(experiment, mlflow_client)
    if sources and truth.load(experiment, mlflow_client).values.empty:
        raise InvalidInputError(f"experiment {experiment!r} holds no fine-tunes to be ground truth but imported "
                                f"tables: give --source NAME, one of {', '.join(sources)} (or run `fennec finetune` "
                                "first)")


def widest_proxy_encoder(experiment: str = tracking.DEFAULT_EXPERIMENT, mlflow_client=None) -> str | None:
    """The encoder whose finished task-proxy runs cover the most tasks (the newest on a tie); None without any."""
    runs = tracking.runs_of_kind("task-proxy", experiment=experiment, mlflow_client=mlflow_client)
    tasks: dict[str, set] = {}
    for run in runs:  # newest first: on a tie, the encoder seen first wins
        tasks.setdefault(run.data.params.get("encoder", ""), set()).add(run.data.tags.get(tracking.TASK_TAG))
    tasks.pop("", None)
    return max(tasks, key=lambda encoder: len(tasks[encoder])) if tasks else None


def label_based_scores(truth, targets: list[str], experiment: str = tracking.DEFAULT_EXPERIMENT,
                       mlflow_client=None) -> dict:
    """The store's label-based scores of the targets themselves, by estimator name: FDA (``fda``
    runs) and each registered estimator (``estimator`` runs), kept where they score at least
    :data:`~fennec_mlflow.serving.selection.MIN_TARGET_MODELS` of a target's models."""
    from fennec_mlflow.core.estimators import available_estimators

    specs = {"fda": ("fda", None), **{name: ("estimator", name) for name in available_estimators() if name != "fda"}}
    found = {}
    for name, (kind, estimator) in specs.items():
        scores = tracking.load_matrix(kind, estimator=estimator, experiment=experiment,
                                      mlflow_client=mlflow_client).values
        scores = scores.reindex(index=truth.index, columns=[t for t in targets if t in scores.columns])
        if (scores.notna().sum() >= MIN_TARGET_MODELS).any():
            found[name] = scores
    return found
