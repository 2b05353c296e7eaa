"""Constraints of the candidates: measured latency and peak memory (``profile`` runs) and licences.

``fennec profile`` measures each model once on this machine (:func:`fennec_mlflow.data.profile.profile_model`)
and logs one run per (model, input size, batch size, device): ``fennec.kind=profile``, tags
``fennec.model``, ``fennec.input_size``, ``fennec.batch_size``, ``fennec.device``; metrics
``latency_ms``, ``latency_p90_ms``, ``peak_memory_mb``, ``weights_mb``; params ``licence``,
``parameters``, ``threads``, ``machine``. A measurement already in the store is reused, not
repeated. ``build`` bundles the newest profile of every candidate (and the zoo's licences) into the
served model, so ``rank`` (CLI, pyfunc params, REST) filters on ``max_latency_ms``,
``max_memory_mb`` and ``licence`` and shows the values.
"""
from __future__ import annotations

import platform
from collections.abc import Iterable

import mlflow
import pandas as pd

from fennec_mlflow.store import tracking

PROFILE_KIND = "profile"
INPUT_SIZE_TAG = "fennec.input_size"
BATCH_TAG = "fennec.batch_size"
DEVICE_TAG = "fennec.device"
CONSTRAINT_COLUMNS = ["latency_ms", "peak_memory_mb", "licence", "profile_input_size", "licence_from"]
# Where a candidate's licence came from: the imported table's licence column, the built-in zoo (the
# store's own runs of its model), the zoo's model of the same name (an imported table's model: only its
# name says it is that model), or a profile run.
LICENCE_FROM = ("table", "zoo", "zoo name", "profile")


def _filter(model: str | None = None, input_size: int | None = None, batch_size: int | None = None,
            device: str | None = None) -> str:
    parts = []
    for tag, value in ((tracking.MODEL_TAG, model), (INPUT_SIZE_TAG, input_size), (BATCH_TAG, batch_size),
                       (DEVICE_TAG, device)):
        if value is not None:
            parts.append(f"tags.`{tag}` = {tracking.quote(str(value))}")
    return " and ".join(parts)


def profile_runs(*, experiment: str = tracking.DEFAULT_EXPERIMENT, model: str | None = None,
                 input_size: int | None = None, batch_size: int | None = None, device: str | None = None,
                 mlflow_client=None) -> list:
    """Finished ``profile`` runs matching the given tags, newest first."""
    return tracking.runs_of_kind(PROFILE_KIND, experiment=experiment, mlflow_client=mlflow_client,
                                 extra_filter=_filter(model, input_size, batch_size, device))


def profile_models(names: Iterable[str], *, input_size: int | None = None, batch_size: int = 1, device: str = "cpu",
                   weights: str = "auto", experiment: str = tracking.DEFAULT_EXPERIMENT, force: bool = False,
                   repeats: int = 10, warmup: int = 2) -> pd.DataFrame:
    """Measure (or reuse) each model's latency and peak memory; one row per model, ``reused`` says which.

    ``input_size``: the image side in pixels (default: each model's own input size).
    """
    from fennec_mlflow.data.profile import profile_model
    from fennec_mlflow.data.zoo import load_model

    rows = []
    for name in names:
        model = None
        size = input_size
        if size is None:
            model = load_model(name, weights)
            size = model.input_size
        existing = [] if force else profile_runs(experiment=experiment, model=model.name if model else name,
                                                 input_size=size, batch_size=batch_size, device=device)
        if existing:
            rows.append({**_row(existing[0]), "reused": True})
            continue
        model = model or load_model(name, weights)
        measured = profile_model(model, input_size=size, batch_size=batch_size, device=device, warmup=warmup,
                                 repeats=repeats)
        tags = {tracking.KIND_TAG: PROFILE_KIND, tracking.MODEL_TAG: measured.model,
                INPUT_SIZE_TAG: str(measured.input_size), BATCH_TAG: str(measured.batch_size),
                DEVICE_TAG: measured.device, **tracking.project_run_link()}
        with tracking.own_run(experiment, f"profile-{measured.model}-{measured.input_size}px", tags) as run:
            mlflow.log_params({"licence": measured.licence or "unknown", "parameters": measured.parameters,
                               "threads": measured.threads, "weights": model.weights, "repeats": repeats,
                               "machine": f"{platform.machine()} {platform.processor() or platform.system()}"[:250]})
            mlflow.log_metrics({"latency_ms": measured.latency_ms, "latency_p90_ms": measured.latency_p90_ms,
                                "peak_memory_mb": measured.peak_memory_mb, "weights_mb": measured.weights_mb})
        rows.append({"model": measured.model, "latency_ms": measured.latency_ms,
                     "peak_memory_mb": measured.peak_memory_mb, "licence": measured.licence,
                     "profile_input_size": measured.input_size, "run_id": run.info.run_id, "reused": False})
    return pd.DataFrame(rows)


def _row(run) -> dict:
    licence = run.data.params.get("licence")
    return {"model": run.data.tags[tracking.MODEL_TAG], "latency_ms": run.data.metrics.get("latency_ms"),
            "peak_memory_mb": run.data.metrics.get("peak_memory_mb"),
            "licence": None if licence in (None, "unknown") else licence,
            "profile_input_size": int(run.data.tags.get(INPUT_SIZE_TAG, 0)) or None, "run_id": run.info.run_id}


def candidate_constraints(models: Iterable[str], *, experiment: str = tracking.DEFAULT_EXPERIMENT,
                          input_size: int | None = None, mlflow_client=None, stated_licences: pd.Series | None = None,
                          imported: bool = False) -> pd.DataFrame:
    """Per model (index): the newest profile's ``latency_ms``, ``peak_memory_mb``, ``profile_input_size``
    (at ``input_size`` when given), the ``licence`` (the one ``stated_licences`` gives: an imported table's
    licence column; else the built-in zoo's for a model of that name; else its profile's; NaN / None when
    unknown) and where it came from, ``licence_from`` (:data:`LICENCE_FROM`; ``imported``: the models are an
    imported table's, whose names only match the zoo's)."""
    from fennec_mlflow.data.zoo import licence_of

    models = [str(m) for m in models]
    newest: dict[str, dict] = {}
    for run in profile_runs(experiment=experiment, input_size=input_size, mlflow_client=mlflow_client):
        row = _row(run)
        newest.setdefault(row["model"], row)
    table = pd.DataFrame(index=pd.Index(models, name="model"), columns=CONSTRAINT_COLUMNS, dtype=object)
    for model in models:
        row = newest.get(model, {})
        table.loc[model, "latency_ms"] = row.get("latency_ms")
        table.loc[model, "peak_memory_mb"] = row.get("peak_memory_mb")
        table.loc[model, "profile_input_size"] = row.get("profile_input_size")
        stated = None if stated_licences is None else stated_licences.get(model)
        found = [(stated if isinstance(stated, str) and stated.strip() else None, "table"),
                 (licence_of(model), "zoo name" if imported else "zoo"), (row.get("licence"), "profile")]
        licence, origin = next(((value, origin) for value, origin in found if value), (None, None))
        table.loc[model, "licence"], table.loc[model, "licence_from"] = licence, origin
    for column in ("latency_ms", "peak_memory_mb", "profile_input_size"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    return table
