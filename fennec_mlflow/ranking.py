"""Build (fit + log + register) and rank: the MLflow side of the recommender, kept thin."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from fennec_mlflow import pyfunc, tracking
from fennec_mlflow.envvars import env_override
from fennec_mlflow.knowledge import Knowledge, build_knowledge
from fennec_mlflow.recommender import Fennec
from fennec_mlflow.tasks import Task

DEFAULT_ALPHA = 0.5


@contextlib.contextmanager
def own_run(experiment: str, run_name: str, tags: dict):
    """A new run of our own, even under `mlflow run` (whose MLFLOW_RUN_ID would otherwise be resumed)."""
    with env_override(MLFLOW_RUN_ID=None):
        mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name=run_name, tags=tags) as run:
            yield run


def default_k(P: pd.DataFrame) -> int:
    return int(max(1, min(4, min(P.shape) - 1)))


def tuned_parameters(experiment: str, mlflow_client=None) -> dict:
    """Best (k, alpha, nmf_l2) of the newest finished ``tune`` run, if any (see the tune entry point)."""
    runs = tracking.runs_of_kind("tune", experiment=experiment, mlflow_client=mlflow_client)
    for run in runs:
        best = {k[5:]: v for k, v in run.data.params.items() if k.startswith("best_")}
        if best:
            return {"k": int(float(best["k"])), "alpha": float(best["alpha"]), "nmf_l2": float(best["nmf_l2"])}
    return {}


@dataclass
class BuildResult:
    run_id: str
    model_uri: str
    version: str | None
    fennec: Fennec
    knowledge: Knowledge


def build(
    *,
    kind: str = "fda",
    estimator: str | None = None,
    encoder_spec: str,
    encoder_name: str,
    encoder_file: Path | None = None,
    k: int | None = None,
    alpha: float | None = None,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    register: bool = True,
    models: list[str] | None = None,
    tasks: list[str] | None = None,
    extra_artifacts: dict | None = None,
) -> BuildResult:
    """Rebuild the knowledge from the store, fit Fennec, log it (``fennec.kind=fennec-fit``), register it.

    ``models`` / ``tasks`` restrict the knowledge to those rows / columns of the matrix.
    """
    knowledge = build_knowledge(kind=kind, estimator=estimator, encoder=encoder_name, models=models, tasks=tasks,
                                experiment=experiment)
    tuned = tuned_parameters(experiment)
    settings = {"k": k or tuned.get("k") or default_k(knowledge.P),
                "alpha": alpha if alpha is not None else tuned.get("alpha", DEFAULT_ALPHA)}
    if "nmf_l2" in tuned:
        settings["nmf_l2"] = tuned["nmf_l2"]
    settings["k"] = min(settings["k"], min(knowledge.P.shape) - 1)
    start = time.perf_counter()
    fennec = Fennec(**settings).fit(knowledge.P, knowledge.model_meta, knowledge.task_meta, knowledge.task_proxy)
    fit_seconds = time.perf_counter() - start
    bundle = pyfunc.RankerBundle(
        fennec=fennec, model_meta=knowledge.model_meta, model_parameters=knowledge.model_parameters,
        domains=knowledge.domains, task_meta_fill=knowledge.task_meta_fill,
        proxy_dim=0 if knowledge.task_proxy is None else knowledge.task_proxy.shape[1],
        encoder_spec=pyfunc.BUNDLED_ENCODER if encoder_file else encoder_spec,
        info={"kind": kind, "encoder": encoder_name, "models": list(knowledge.P.index), "tasks": list(knowledge.P.columns)})
    example = None
    if knowledge.task_proxy is not None:
        first = knowledge.P.columns[0]
        example = knowledge.task_proxy.loc[[first]].reset_index(drop=True)
        example["class_count"] = float(np.exp(knowledge.task_meta.loc[first, "log_class_count"]))
        example["sample_count"] = float(np.exp(knowledge.task_meta.loc[first, "log_sample_count"]))
    tags = {tracking.KIND_TAG: "fennec-fit"}
    with own_run(experiment, "fennec-fit", tags) as run:
        mlflow.log_params({"matrix_kind": kind, "matrix_estimator": estimator, "encoder": encoder_name,
                           "models": knowledge.P.shape[0],
                           "tasks": knowledge.P.shape[1], "tuned": bool(tuned), **settings})
        mlflow.log_metrics({"fit_seconds": fit_seconds, "known_cells": float(knowledge.P.notna().sum().sum()),
                            "nmf_iterations": float(fennec.n_iter_),
                            "nmf_objective": float(fennec.objective_history_[-1])})
        mlflow.log_text(knowledge.P.to_csv(), "training_matrix.csv")
        mlflow.log_text(knowledge.model_meta.to_csv(), "model_meta.csv")
        mlflow.log_text(knowledge.task_meta.to_csv(), "task_meta.csv")
        for name, value in (extra_artifacts or {}).items():
            tracking.log_artifacts(mlflow.MlflowClient(), run.info.run_id, {name: value})
        info = pyfunc.log_ranker(bundle, encoder_file=encoder_file, register=register, input_example=example)
    version = str(info.registered_model_version) if register else None
    uri = f"models:/{pyfunc.REGISTERED_NAME}@{pyfunc.CHAMPION}" if register else info.model_uri
    return BuildResult(run.info.run_id, uri, version, fennec, knowledge)


def rank_task(
    target: Task,
    *,
    model_uri: str = f"models:/{pyfunc.REGISTERED_NAME}@{pyfunc.CHAMPION}",
    top_k: int = 10,
    labels_known: bool = False,
    class_count_hint: int | None = None,
    params: dict | None = None,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    log: bool = True,
) -> pd.DataFrame:
    """Rank the registered model's candidates for ``target``; log the ranking (``fennec.kind=rank``).

    Only the target's images are used (its labels only when ``labels_known``, for the class count).
    """
    from fennec_mlflow.proxy import task_proxy_features

    load_start = time.perf_counter()
    model = mlflow.pyfunc.load_model(model_uri)
    load_seconds = time.perf_counter() - load_start
    ranker: pyfunc.FennecRanker = model.unwrap_python_model()
    bundle = ranker.bundle
    start = time.perf_counter()
    proxy = task_proxy_features(ranker.encoder(), target, sample_size=bundle.proxy_sample_size)
    proxy_seconds = time.perf_counter() - start
    request = pd.DataFrame([proxy], columns=[f"proxy_{i}" for i in range(len(proxy))])
    request["class_count"] = float(target.num_classes if labels_known else (class_count_hint or np.nan))
    request["sample_count"] = float(target.num_samples)
    request["domain"] = target.domain if target.domain != "unknown" else None
    start = time.perf_counter()
    ranking = model.predict(request, params={**pyfunc.default_params(), **(params or {}), "top_k": top_k})
    rank_seconds = time.perf_counter() - start
    ranking = ranking.drop(columns="task_index")
    if log:
        with own_run(experiment, f"rank-{target.name}", {tracking.KIND_TAG: "rank", tracking.TASK_TAG: target.name}):
            mlflow.log_params({"model_uri": model_uri, "top_k": top_k, "target_source": target.source,
                               "labels_known": labels_known, "encoder": bundle.info.get("encoder")})
            mlflow.log_metrics({"rank_seconds": rank_seconds, "proxy_seconds": proxy_seconds,
                                "model_load_seconds": load_seconds})
            mlflow.log_table(ranking, "ranking.json")
            mlflow.log_text(ranking.to_csv(index=False), "ranking.csv")
            mlflow.log_figure(ranking_chart(ranking, target.name), "ranking.png")
    return ranking


def ranking_chart(ranking: pd.DataFrame, target: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ranking.head(20).iloc[::-1]
    figure, axes = plt.subplots(figsize=(8, 0.35 * len(shown) + 1.2))
    axes.barh(shown["model"], shown["score"], color="#4C72B0")
    axes.set_xlabel("Fennec score (z-scored merge of transfer and meta scores)")
    axes.set_title(f"Recommended models for {target}")
    figure.tight_layout()
    return figure
