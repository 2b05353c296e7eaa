"""Import external model x task tables (published benchmarks, a user's CSV) as ``external`` runs.

Supported layouts (``layout="auto"`` detects them from the header):

- ``parc``: PARC's oracle CSVs (``Architecture,Source Dataset,Target Dataset,Oracle``);
  model = ``<architecture>@<source dataset>``, score = Oracle (test accuracy in %), ``-1`` = missing.
- ``transfergraph``: TransferGraph's ``records.csv`` (``model,finetuned_dataset,...,eval_accuracy``);
  score = eval_accuracy in [0, 1]; a cell fine-tuned several times keeps its last record.
  Model facts come from ``model_config_dataset.csv`` when given (``model_facts_csv``).
- ``long``: ``model,task,score`` plus optional ``model_*`` / ``task_*`` fact columns.

Scores are stored as published (no rescaling). Re-importing a table adds nothing for cells
already imported from the same source.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from tqdm.auto import tqdm

from fennec_mlflow.config import PUBLIC_TABLES_DIR
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.store import tracking

LAYOUTS = ("auto", "parc", "transfergraph", "long")


class TableError(InvalidInputError):
    """The table cannot be read as asked; the message says what was wrong."""


def detect_layout(columns: list[str]) -> str:
    cols = set(columns)
    if {"Architecture", "Source Dataset", "Target Dataset", "Oracle"} <= cols:
        return "parc"
    if {"model", "finetuned_dataset", "eval_accuracy"} <= cols:
        return "transfergraph"
    if {"model", "task", "score"} <= cols:
        return "long"
    raise TableError(
        f"cannot tell the table layout from its columns {sorted(cols)}; expected PARC's "
        "(Architecture, Source Dataset, Target Dataset, Oracle), TransferGraph's records "
        "(model, finetuned_dataset, eval_accuracy) or a long table (model, task, score)"
    )


def read_table(path: str | Path, layout: str = "auto", model_facts_csv: str | Path | None = None) -> pd.DataFrame:
    """The table as long rows: model, task, score, and model_* / task_* fact columns."""
    path = Path(path)
    if layout not in LAYOUTS:
        raise TableError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not path.is_file():
        raise TableError(f"table {str(path)!r} does not exist")
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TableError(f"cannot read {str(path)!r} as a CSV table: {exc}") from exc
    layout = detect_layout(list(raw.columns)) if layout == "auto" else layout
    if layout == "parc":
        rows = raw[raw["Oracle"] >= 0]
        long = pd.DataFrame({
            "model": rows["Architecture"] + "@" + rows["Source Dataset"],
            "task": rows["Target Dataset"],
            "score": rows["Oracle"].astype(float),
            "model_architecture": rows["Architecture"],
            "model_source_dataset": rows["Source Dataset"],
        })
    elif layout == "transfergraph":
        rows = raw.dropna(subset=["eval_accuracy"]).drop_duplicates(subset=["model", "finetuned_dataset"], keep="last")
        long = pd.DataFrame({"model": rows["model"], "task": rows["finetuned_dataset"],
                             "score": rows["eval_accuracy"].astype(float)})
        if model_facts_csv is not None:
            facts = pd.read_csv(model_facts_csv).drop_duplicates(subset=["model"])
            facts = facts[["model", "model_type", "number_of_parameters", "dataset", "#labels"]].rename(columns={
                "model_type": "model_type", "number_of_parameters": "model_parameters",
                "dataset": "model_source_dataset", "#labels": "model_source_classes"})
            long = long.merge(facts, on="model", how="left")
    else:
        missing = {"model", "task", "score"} - set(raw.columns)
        if missing:
            raise TableError(f"long table {str(path)!r} lacks column(s) {sorted(missing)}")
        keep = ["model", "task", "score"] + [c for c in raw.columns if c.startswith(("model_", "task_"))]
        long = raw[keep].dropna(subset=["score"]).copy()
        long["score"] = pd.to_numeric(long["score"], errors="coerce")
        bad = long["score"].isna().sum()
        if bad:
            raise TableError(f"{bad} row(s) of {str(path)!r} have a non-numeric score")
        long = long.drop_duplicates(subset=["model", "task"], keep="last")
    return long.reset_index(drop=True)


def import_table(
    path: str | Path,
    *,
    source: str | None = None,
    layout: str = "auto",
    model_facts_csv: str | Path | None = None,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    mlflow_client: MlflowClient | None = None,
    progress: bool = True,
) -> tuple[int, int]:
    """Write one ``external`` run per cell of the table; returns (created, already present)."""
    path = Path(path)
    source = source or path.stem
    table = read_table(path, layout, model_facts_csv)
    mlflow_client = mlflow_client or tracking.client()
    exp_id = tracking.experiment_id(mlflow_client, experiment)
    done = tracking.finished_cells(mlflow_client, experiment, "external")
    created = skipped = 0
    fact_columns = [c for c in table.columns if c.startswith(("model_", "task_"))]
    for row in tqdm(table.itertuples(index=False), total=len(table), desc=f"import {source}", disable=not progress):
        cell = tracking.cell_key("external", source=source, model=row.model, task=row.task)
        if cell in done:
            skipped += 1
            continue
        facts = {c: getattr(row, c) for c in fact_columns if pd.notna(getattr(row, c))}
        record = tracking.RunRecord(
            kind="external", model=row.model, task=row.task, cell=cell, tags={tracking.SOURCE_TAG: source},
            params={"estimator": f"external:{source}", "source_file": path.name, **facts},
            metrics={"score": row.score},
        )
        tracking.write_run(mlflow_client, exp_id, record)
        created += 1
    return created, skipped


BUNDLED_TABLES = {
    "parc_controlled": "parc_controlled.csv",
    "parc_all": "parc_all.csv",
    "transfergraph": "transfergraph_image_records.csv",
}


def bundled_table(name: str) -> Path:
    """Path of a public ground-truth table shipped with the package (copied from the projects named in its README)."""
    if name not in BUNDLED_TABLES:
        raise TableError(f"no bundled table {name!r}; choose one of {sorted(BUNDLED_TABLES)}")
    return PUBLIC_TABLES_DIR / BUNDLED_TABLES[name]


def transfergraph_model_facts() -> Path:
    return PUBLIC_TABLES_DIR / "transfergraph_image_models.csv"
