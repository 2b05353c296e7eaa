"""The knowledge base, rebuilt from the store, as the arrays the recommender fits on.

- ``P``: a performance matrix (:func:`tracking.load_matrix`; FDA by default).
- model meta: log parameter count, and the architecture: the archi2vec embedding of the
  model's architecture (``arch`` of ``arch@source`` names) reduced by PCA to a few dimensions
  (the meta regression is fitted on a few dozen models: 128 raw dimensions would be noise),
  plus graph depth and learnable-layer count; the source domain one-hot where a model name
  says where it was pre-trained (``arch@source``) or the real zoo knows it (``real:NAME``);
  and every other numeric ``model_*`` fact a user imported (e.g. ``model_source_accuracy``,
  ``model_flops``): see :func:`user_model_facts`.
- task meta: log class count, log sample count, task domain one-hot (the helper that builds a
  target's row is :func:`task_meta_row`, shared with the served model).
- task proxy: the proxy features of each task, from ``task-proxy`` runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from fennec_mlflow.data.synthetic import SYNTHETIC_TASKS
from fennec_mlflow.store import tracking
from fennec_mlflow.store.archi2vec_runs import load_architectures

ARCHITECTURE_DIMS = 4
REAL_PREFIX = "real:"


@dataclass
class Knowledge:
    P: pd.DataFrame
    model_meta: pd.DataFrame
    model_parameters: pd.Series
    task_meta: pd.DataFrame
    task_proxy: pd.DataFrame | None
    domains: list[str]
    task_meta_fill: pd.Series  # the task meta columns in order (values: the known facts' means)
    task_weights: pd.Series | None = None  # each task's weight in Fennec's popularity part (None: alike)
    model_licences: pd.Series | None = None  # licences the matrix's runs state (an imported table's column)


def architecture_of(model: str) -> str:
    return model.split("@", 1)[0]


def source_of(model: str) -> str | None:
    return model.split("@", 1)[1] if "@" in model else None


def model_source_domain(model: str) -> str:
    """Where ``model`` was pre-trained: a real-zoo entry's source domain group, else what an
    ``arch@source`` name says (:func:`source_domain`)."""
    if model.startswith(REAL_PREFIX):
        from fennec_mlflow.data.real_zoo import REAL_MODELS  # lazily: it imports torch

        spec = REAL_MODELS.get(model.removeprefix(REAL_PREFIX))
        if spec is not None:
            return spec.domain_group
    return source_domain(source_of(model))


def source_domain(source: str | None) -> str:
    """The domain a model was pre-trained on: a synthetic family, the mix, or 'imagenet'."""
    if source is None:
        return "imagenet"

    spec = SYNTHETIC_TASKS.get(source)
    return spec.family if spec is not None else source


# Model facts the cell jobs log about every model, which the meta already holds in another form
# (parameters as log_parameters, source as the source domain) or which describe the input
# pipeline rather than what the model learnt (input_size).
JOB_MODEL_FACTS = ("parameters", "source", "input_size")
LOG_SPAN = 100.0  # a positive fact spanning more than this ratio (sizes, FLOPs) enters as its log


def model_parameters(model_facts: pd.DataFrame) -> pd.Series:
    """Each model's parameter count from its ``model_parameters`` fact (NaN where unknown)."""
    return pd.to_numeric(model_facts.get("parameters", pd.Series(dtype=float)), errors="coerce")


def user_model_facts(model_facts: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """The numeric model facts beyond :data:`JOB_MODEL_FACTS`, one column each, by model.

    A fact whose positive values span more than :data:`LOG_SPAN` (a size, a FLOP count) enters as
    ``log_<name>``; any other as ``<name>`` (an ImageNet accuracy stays linear). Text facts (a
    family, an architecture) are not meta; the family baselines read them.
    """
    facts = model_facts.reindex(models)
    columns = {}
    for name in facts.columns:
        if name in JOB_MODEL_FACTS or not pd.api.types.is_numeric_dtype(facts[name]):
            continue
        values = facts[name].astype(float).replace([np.inf, -np.inf], np.nan)
        known = values.dropna()
        if known.nunique() < 2:
            continue
        if known.min() > 0 and known.max() / known.min() > LOG_SPAN:
            columns[f"log_{name}"] = np.log(values)
        else:
            columns[str(name)] = values
    return pd.DataFrame(columns, index=models)


def model_meta_table(models: list[str], embeddings: pd.DataFrame, architecture_meta: pd.DataFrame,
                     model_facts: pd.DataFrame) -> pd.DataFrame:
    """One row per model (see the module docstring); architectures without an embedding get zeros,
    unknown facts the mean of the known ones."""
    from sklearn.decomposition import PCA

    parameters = model_parameters(model_facts)

    archs = sorted({architecture_of(m) for m in models})
    known = [a for a in archs if a in embeddings.index]
    arch_features = pd.DataFrame(0.0, index=archs, columns=[f"arch_{i}" for i in range(ARCHITECTURE_DIMS)])
    if len(known) >= 2:
        dims = min(ARCHITECTURE_DIMS, len(known) - 1)
        vectors = embeddings.loc[known].to_numpy()
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
        arch_features.loc[known, arch_features.columns[:dims]] = PCA(dims, random_state=0).fit_transform(vectors)
    rows = {}
    domains = sorted({model_source_domain(m) for m in models})
    for model in models:
        arch = architecture_of(model)
        row = {"log_parameters": np.log(float(parameters.get(model, np.nan))) if model in parameters else np.nan,
               **arch_features.loc[arch].to_dict()}
        for column in ("depth", "layers"):
            value = architecture_meta.loc[arch, column] if arch in architecture_meta.index and column in architecture_meta else np.nan
            row[f"log_{column}"] = np.log1p(float(value)) if pd.notna(value) else np.nan
        if len(domains) > 1:
            for d in domains:
                row[f"source={d}"] = float(model_source_domain(model) == d)
        rows[model] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    user = user_model_facts(model_facts, models)
    table = table.join(user[[c for c in user.columns if c not in table.columns]])
    return table.fillna(table.mean()).fillna(0.0)


def task_meta_table(task_facts: pd.DataFrame, domains: list[str]) -> pd.DataFrame:
    """One row of :func:`task_meta_values` per task of ``task_facts`` (its ``task_*`` facts).

    A fact the table lacks (no column, or NaN) is unknown: NaN, as for a target task. The sample
    count is ``sample_count`` (the cell jobs' fact), else ``train_size`` (imported tables, the
    public task facts). The columns are the same whatever facts are present, even with no task.
    """
    def fact(name: str) -> pd.Series:
        return task_facts[name] if name in task_facts.columns else pd.Series(np.nan, index=task_facts.index)

    samples = fact("sample_count")
    if "train_size" in task_facts.columns:
        samples = samples.where(samples.notna(), task_facts["train_size"])
    rows = [task_meta_values(classes, count, domain, domains)
            for classes, count, domain in zip(fact("class_count"), samples, fact("domain"))]
    columns = list(task_meta_values(None, None, None, domains))
    return pd.DataFrame(rows, index=task_facts.index.rename(None), columns=columns, dtype=float)


def task_meta_values(class_count, sample_count, domain, domains: list[str]) -> dict[str, float]:
    def log_or_nan(value) -> float:
        try:
            value = float(value)
        except (TypeError, ValueError):
            return np.nan
        return float(np.log(value)) if value > 0 else np.nan

    values = {"log_class_count": log_or_nan(class_count), "log_sample_count": log_or_nan(sample_count)}
    for d in domains:
        values[f"domain={d}"] = domain_indicator(domain, d)
    return values


def domain_indicator(domain, one: str) -> float:
    """1 if ``domain`` is ``one``, 0 if it is another, NaN if it is not known (None, NaN, "", "unknown")."""
    if domain is None or (isinstance(domain, float) and np.isnan(domain)) or str(domain).lower() in ("", "unknown"):
        return np.nan
    return float(domain == one)


def task_meta_row(class_count, sample_count, domain, domains: list[str], columns) -> pd.Series:
    """A target task's meta row in the fitted ``columns`` order; an unknown fact is NaN (Fennec leaves
    it out of the task distances and fills it with the history's mean for its regressions)."""
    return pd.Series(task_meta_values(class_count, sample_count, domain, domains))[list(columns)]


def load_task_proxies(encoder: str, *, experiment: str = tracking.DEFAULT_EXPERIMENT,
                      mlflow_client: MlflowClient | None = None) -> pd.DataFrame:
    """tasks x proxy features of every task-proxy run made with ``encoder`` (newest per task)."""
    mlflow_client = mlflow_client or tracking.client()
    runs = tracking.runs_of_kind("task-proxy", experiment=experiment, mlflow_client=mlflow_client,
                                 extra_filter=f"params.encoder = {tracking.quote(encoder)}")
    vectors = {}
    for run in runs:
        task = run.data.tags[tracking.TASK_TAG]
        if task not in vectors:
            vectors[task] = tracking.download_json(mlflow_client, run.info.run_id, "proxy.json")
    table = pd.DataFrame.from_dict(vectors, orient="index")
    table.columns = [f"proxy_{i}" for i in range(table.shape[1])]
    return table.sort_index()


def build_knowledge(
    *,
    kind: str = "fda",
    estimator: str | None = None,
    source: str | None = None,
    regime: str | None = None,
    encoder: str | None = None,
    models: list[str] | None = None,
    tasks: list[str] | None = None,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    mlflow_client: MlflowClient | None = None,
) -> Knowledge:
    """Everything :class:`~fennec_mlflow.core.recommender.Fennec` fits on, read from the store.

    ``models`` / ``tasks`` restrict the matrix to those rows / columns (default: all in the store).
    ``regime``: with ``kind="finetune"`` or ``"best"`` (every task's best evidence,
    :func:`~fennec_mlflow.store.tracking.load_best_evidence`), which fine-tune regime's runs
    (default ``"full"``).
    """

    mlflow_client = mlflow_client or tracking.client()
    km = tracking.load_matrix(kind, estimator=estimator, source=source, regime=regime, experiment=experiment,
                              mlflow_client=mlflow_client)
    if km.values.empty:
        raise tracking.TrackingError(tracking.missing_runs_message(kind, experiment, source=source,
                                                                   mlflow_client=mlflow_client))
    P = km.values
    for axis, wanted in ((0, models), (1, tasks)):
        if wanted is not None:
            missing = sorted(set(wanted) - set(P.axes[axis]))
            if missing:
                raise tracking.TrackingError(f"no {kind} runs for {'model' if axis == 0 else 'task'}(s) {missing[:5]}")
            P = P.loc[wanted] if axis == 0 else P[wanted]
    models = list(P.index)
    parameters = model_parameters(km.model_facts)
    embeddings, architecture_meta = load_architectures(experiment=experiment, mlflow_client=mlflow_client)
    model_meta = model_meta_table(models, embeddings, architecture_meta, km.model_facts)
    domains = sorted(str(d) for d in km.task_facts.get("domain", pd.Series(dtype=str)).dropna().unique())
    task_meta = task_meta_table(km.task_facts.reindex(P.columns), domains)
    fill = task_meta.mean()  # unknown facts stay NaN: Fennec and the accuracy model know what that means
    task_proxy = None
    if encoder is not None:
        proxies = load_task_proxies(encoder, experiment=experiment, mlflow_client=mlflow_client)
        missing = [t for t in P.columns if t not in proxies.index]
        if missing:
            raise tracking.TrackingError(f"no task-proxy run with encoder {encoder!r} for task(s) {missing}")
        task_proxy = proxies.loc[P.columns]
    return Knowledge(P=P, model_meta=model_meta, model_parameters=parameters.reindex(models),
                     task_meta=task_meta, task_proxy=task_proxy, domains=domains, task_meta_fill=fill.fillna(0.0),
                     task_weights=None if km.task_weights is None else km.task_weights.reindex(P.columns),
                     model_licences=km.model_facts["licence"].reindex(models) if "licence" in km.model_facts else None)
