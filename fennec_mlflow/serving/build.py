"""Build: rebuild the knowledge from the store, fit Fennec, log it as a ``fennec-fit`` run and register it."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from fennec_mlflow import config
from fennec_mlflow.core.recommender import Fennec
from fennec_mlflow.serving import flavor as pyfunc
from fennec_mlflow.store import tracking
from fennec_mlflow.store.knowledge import Knowledge, build_knowledge


def default_k(P: pd.DataFrame) -> int:
    return int(max(1, min(config.FENNEC_K, min(P.shape) - 1)))


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
                "alpha": alpha if alpha is not None else tuned.get("alpha", config.FENNEC_ALPHA)}
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
    with tracking.own_run(experiment, "fennec-fit", tags) as run:
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
        info = pyfunc.log_model(bundle, encoder_file=encoder_file, input_example=example,
                                registered_model_name=pyfunc.REGISTERED_NAME if register else None)
        if register:
            pyfunc.set_champion(info.registered_model_version)
    version = str(info.registered_model_version) if register else None
    uri = f"models:/{pyfunc.REGISTERED_NAME}@{pyfunc.CHAMPION}" if register else info.model_uri
    return BuildResult(run.info.run_id, uri, version, fennec, knowledge)
