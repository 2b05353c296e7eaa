r"""Import external model x task tables (published benchmarks, a user's CSV) as ``external`` runs.

Supported layouts (``layout="auto"`` detects them from the header):

- ``parc``: PARC's oracle CSVs (``Architecture,Source Dataset,Target Dataset,Oracle``);
  model = ``<architecture>@<source dataset>``, score = Oracle (test accuracy in %), ``-1`` = missing.
- ``transfergraph``: TransferGraph's ``records.csv`` (``model,finetuned_dataset,...,eval_accuracy``);
  score = eval_accuracy in [0, 1]; a cell fine-tuned several times keeps its last record.
  Model facts come from ``model_config_dataset.csv`` when given (``model_facts_csv``).
- ``long``: ``model,task,score`` plus optional ``model_*`` / ``task_*`` fact columns.
- ``wide``: the matrix as most papers print it: a ``model`` column, then one column per task
  (the header names the task), empty = not measured; ``model_*`` columns are model facts.
- ``transposed``: the wide table the other way round, as papers with many models print it: a
  ``task`` column, then one column per model; ``task_*`` columns are task facts and ``model_*`` rows
  model facts.

Headers are matched stripped and in any case, and the names papers give the three columns are read as
them (``Model``/``Name``/``Method``/``Backbone``, ``Dataset``/``Target``, ``Accuracy``/``Top-1``:
:data:`COLUMN_NAMES`; beside a ``Model`` or ``Method`` column, an ``Arch`` or ``Backbone`` column is the
model's architecture, :data:`ARCHITECTURE_NAMES`, and a ``Name`` column is the model only where no other
column is named as one: a W&B export's ``Name`` is its run's). Where the model column names two rows alike ("Arch":
RN50 for SimCLR and BYOL) beside another column of text ("Feature"), that column is the model if it
names every row apart, else both together are ("DINOv2 ViT-g/14"), else a model fact that differs between
such rows names each ("ViT-L/16 (Epochs: 14)"); said. A header that tells no layout
is an error naming the options that tell it (``--layout``, ``--model-column``). So a table copied from a
paper imports as it is: its ``Params``, ``FLOPs``, ``ImageNet Top-1``, training compute (``exaFLOPs``,
``PFLOPs``, ``TPUv3-core-days``) and throughput (``im/sec``) columns (rows, if transposed) are model facts
(:data:`MODEL_FACT_HEADERS`; a count's unit in the header, ``Params (M)``, ``GFLOPs``, ``exaFLOPs``, or in a
cell, ``86.6M``, is applied: a parameter or FLOP count is stored as a raw count, and one that looks like
millions without a unit is said), and so are ``Epochs``, ``Pre-training epochs`` and ``Resolution``/``Res.``
beside the tasks of a wide table (:data:`WIDE_MODEL_FACT_HEADERS`; in a long table they are the fine-tune's
setting); its
``Avg.`` column and ``Mean`` row are skipped (:data:`SUMMARY_NAMES`), and so are a row-number column
(``#``), a row index saved with the table (pandas' ``to_csv()``: a first column without a name numbering
the rows) and a spread beside each score (``Aircraft std``, ``±``); a unit after a task's name in a
wide table's header (``Birdsnap (%)``) is not part of the task; each such reading is reported.
Task facts beyond the public ones are ``task_*`` columns (long or transposed layout) or rows
(``#Classes``, ``Train size``, ``Domain``: wide layout).

Fields may be separated by commas, tabs or semicolons (then with decimal commas, as a spreadsheet
saves them), in UTF-8 or UTF-16 (a spreadsheet's "Unicode text"); a markdown (pipe) table, as a model
zoo's README prints it, a LaTeX tabular copied from a paper's source, the first sheet of a
spreadsheet file (``.xlsx``, ``.xls``, ``.ods``), JSON (records, ``{task: {model: score}}`` as
evaluation scripts keep it, or pandas' ``to_json``) and a DataFrame saved as Parquet or Feather are
read too; rows of one cell above a table's header (a title) or under its last row (a source or
footnote), and a row of column groups above the header ("Fine-grained", "General"), are left out and
said. A row of one cell between the header and the last row ("Linear evaluation:", then "Fine-tuned:")
labels the rows below it: where a model's name repeats under two labels (the same method in two settings),
each name under a label is qualified with it ("BYOL, linear evaluation"), else the labels are left out;
said either way. In a LaTeX table, a header of two rows (``\multirow{2}{*}{Model}`` beside a
``\multicolumn`` group, the tasks under it) is read as one: a cell above an empty one names it, and a
cell under a group keeps its name unless that is a score's ("Top-1": the group's) or repeats under
other groups ("CIFAR-10 Linear"); citations (``~\cite{...}``) and footnote marks (``$^\dagger$``,
``^*``, ``\textsuperscript{a}``) are dropped from the cells, unless two names of a column would become
one. Each is said. A long table's score column may carry a unit ("Top-1 Acc. (%)") or a name of its own, when
it is the one column of numbers. Scores are stored as published (no
rescaling; a trailing % or a ± spread copied from a paper is dropped: "84.1 ± 0.3%" is 84.1). Names
are stripped of surrounding spaces; an empty model or task name, or a score that is not a number, is
an error naming the lines (every such cell at once, in file order). So is a cell on another scale than
the rest of its table (:func:`cells_off_scale`: 975 or 0.975 among percents, 87.5 among fractions), unless
``allow_mixed_scale`` (scores that are not accuracies); where most of a wide table's column is off the
scale, the error says it may be a model fact, read as one when named ``model_<name>``. Rows that cannot be a cell are not written and are reported
(:class:`SkippedRows`: count, line numbers and the first rows): a missing score (empty, nan, a dash; PARC's
-1), an infinite one (inf, or 1e309, beyond a float's range), and every row but the last of a
(model, task) cell given more than once (or, with ``repeats="mean"`` / ``"max"``, the rows of such a
cell are combined into their mean or max, and reported). Tasks named like a public dataset (its task
name or an alias in the task facts, :func:`~fennec_mlflow.core.evaluation.find_task_facts`) get its
class count, training-set size, domain and dataset name as ``task_*`` facts, unless the table gives
them.

An MLflow runs export (``mlflow experiments csv``; ``mlflow.search_runs()`` saved as CSV or Parquet) is a
long table: see :data:`MLFLOW_PREFIXES`. ``columns`` names the model, task or score column where the
header does not say it (``fennec import --score-column``). Its runs left out are named by run id, and each
cell's run keeps the ids of the runs it was read from (:data:`SOURCE_RUNS_TAG`).

Re-importing a table adds nothing for cells already imported from the same source with the same
value; a cell whose value changed (a corrected table), or whose earlier run holds no score, is
written again and its earlier run deleted (after the new one is written, and reported); a cell
whose earlier import was killed midway (an unfinished run) is written again and its unfinished run
deleted, so a cell never has two runs; a cell that two imports run at once both wrote keeps its newest
run, the others deleted by the next import of its table (and reported).
"""
from __future__ import annotations

import csv
import json
import re
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH
from fennec_mlflow.progress import tqdm

from fennec_mlflow.config import PUBLIC_TABLES_DIR
from fennec_mlflow.core.evaluation import find_task_facts, load_task_facts, task_name_key
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.store import tracking

LAYOUTS = ("auto", "parc", "transfergraph", "long", "wide", "transposed")
# Row and column names of a paper's summary lines (an "Avg." column, a "Mean" row): not a model or
# a task, so never imported as one (compared stripped and case-folded).
SUMMARY_NAMES = frozenset({"avg", "avg.", "average", "mean", "overall", "avg acc", "avg. acc", "avg. acc.",
                           "average accuracy", "mean accuracy", "mean acc", "rank", "avg rank", "avg. rank",
                           "average rank", "mean rank", "std", "std.", "median"})
# The header names a table may give the model, task and score columns (compared stripped and
# case-folded): the ones papers and spreadsheets use. A column is renamed only where the table has
# no column of the canonical name and exactly one of these.
COLUMN_NAMES = {
    "model": ("model", "models", "model name", "name", "method", "backbone", "network", "architecture", "arch",
              "pre-trained model", "pretrained model"),
    "task": ("task", "tasks", "task name", "dataset", "datasets", "dataset name", "target", "target dataset",
             "downstream task", "downstream dataset"),
    "score": ("score", "accuracy", "acc", "acc.", "top-1", "top1", "top-1 accuracy", "top-1 acc", "top-1 acc.",
              "top1 acc", "top1 accuracy", "acc@1", "accuracy@1", "test accuracy", "test acc",
              "test acc.", "fine-tune accuracy", "finetune accuracy", "fine-tuned accuracy", "fine-tuning accuracy",
              "finetuning accuracy"),
}
# Model column names that say the architecture: beside a column named as the model ("Model", "Method"), such a
# column is the model's architecture (a fact), not a second model column.
ARCHITECTURE_NAMES = frozenset({"backbone", "network", "architecture", "arch"})
# A model column name that is the model only where no other column is named as one (a W&B runs export's "Name" is
# its run's name, beside the logged model_name)
WEAK_MODEL_NAMES = frozenset({"name"})
# A header's unit or direction mark, dropped before its name is matched: "Top-1 Acc (%)", "Error [%]", "Acc. ↑"
_HEADER_MARK = re.compile(r"\s*(?:\(\s*%\s*\)|\[\s*%\s*\]|%|[↑↓]|\(\s*[↑↓]\s*\))$")


# An MLflow runs export (``mlflow experiments csv``, ``mlflow.search_runs()`` saved): the runs' params,
# metrics and tags as prefixed columns beside MLflow's own run columns. Its headers are read without the
# prefix (``params.model`` is the model column, ``params.dataset`` the task, ``params.seed`` a seed), only
# finished runs are cells, MLflow's run columns and ``tags.mlflow.*`` are left out, and the score is the
# metric named like a score (``metrics.test_acc``), or its one metric, or the one ``--score-column`` names.
MLFLOW_PREFIXES = ("params.", "metrics.", "tags.")
MLFLOW_RUN_COLUMNS = frozenset({"run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time"})
RUN_ID, PARENT_RUN_ID = "run_id", "tags.mlflow.parentRunId"
# A cell's lineage: the export's runs it was read from (comma-separated), kept as this run's tag so the
# user's own run is found from the cell (``tags.`fennec.source_run_ids` LIKE '%<id>%'``)
SOURCE_RUN_IDS = "source_run_ids"
SOURCE_RUNS_TAG = "fennec.source_run_ids"


def is_mlflow_export(columns) -> bool:
    names = {str(c).strip() for c in columns}
    return "run_id" in names and any(name.startswith(("params.", "metrics.")) for name in names)


# A unit after a task's name in a wide table's header ("Birdsnap (%)", "DTD [%]", "Cars %", "Pets (acc.)",
# "Flowers top-1"): not part of the name, so the task is the one another table names without it.
_TASK_UNIT = re.compile(r"(?:\s*(?:\(\s*%\s*\)|\[\s*%\s*\]|%|[(\[]\s*(?:top-?1\s*)?acc(?:uracy)?\.?\s*%?\s*[)\]]"
                        r"|[(\[]\s*top-?1\s*%?\s*[)\]])|\s+top-?1(?:\s+acc(?:uracy)?\.?)?)$", re.IGNORECASE)


def task_name_without_unit(name) -> str:
    """A task's name as a header writes it, stripped, without a trailing unit (:data:`_TASK_UNIT`), unless
    nothing else is left."""
    name = str(name).strip()
    while (shorter := _TASK_UNIT.sub("", name).strip()) and shorter != name:
        name = shorter
    return name


def _header_name(column) -> str:
    """A header as :data:`COLUMN_NAMES` and :data:`ERROR_COLUMN_NAMES` list it: stripped, case-folded,
    underscores as spaces (``model_name``, ``test_acc``: as code logs them), without an MLflow export's
    ``params.`` / ``metrics.`` / ``tags.`` prefix, nor a trailing unit or direction mark."""
    name = str(column).strip().lower()
    name = name.split(".", 1)[1] if name.startswith(MLFLOW_PREFIXES) else name
    name = name.replace("_", " ")
    while (shorter := _HEADER_MARK.sub("", name)) != name:
        name = shorter
    return name
# What the cells measure: accuracy (higher is better), or an error rate, stored as accuracy = 100 - error
# (1 - error for fractions) so that the ranking, the popularity and the predicted accuracy read it
# the right way up. "auto": an error rate when a long table's score column is named like one.
SCORES = ("auto", "accuracy", "error")
ERROR_COLUMN_NAMES = ("error", "err", "err.", "error rate", "top-1 error", "top1 error", "top-1 err", "top-1 err.",
                      "test error", "top-1 error rate", "classification error")
# What a (model, task) cell given on several lines becomes: the last line (a corrected re-run,
# TransferGraph's records), the mean (seeds) or the max (a hyperparameter grid: the fine-tune
# accuracy is the best configuration's).
REPEATS = ("last", "mean", "max")
# A long table's column that numbers a cell's repeated runs (compared as :func:`_header_name` gives them)
SEED_COLUMN_NAMES = frozenset({"seed", "seeds", "random seed", "run", "run id", "trial", "repeat",
                               "repetition", "rep"})
# fact params an imported task gets from the public task facts, and the facts column behind each
PUBLIC_TASK_FACTS = {"task_class_count": "class_count", "task_train_size": "train_size",
                     "task_domain": "domain", "task_dataset": "dataset"}
_SHOWN_LINES = 20
# How papers print a cell they did not measure: a dash of any width (pandas already reads NA, N/A, n/a)
_NOT_MEASURED = r"^\s*(?:-|–|—|―|--)\s*$"
# 84.1%, 84.1 ± 0.3, 84.1+-0.3%, 84.1 (0.3), 84.1 (±0.3)
_PAPER_DECORATION = r"\s*(?:%\s*)?(?:(?:±|\+/?-)\s*[0-9.]+\s*%?\s*|\(\s*(?:±|\+/?-)?\s*[0-9.]+\s*%?\s*\)\s*)?$"


class TableError(InvalidInputError):
    """The table cannot be read as asked; the message says what was wrong."""


class SkippedRowsWarning(UserWarning):
    """Rows of an imported table were skipped (see :class:`SkippedRows`)."""


@dataclass(frozen=True)
class SkippedRows:
    """Cells of a table that were not imported, why, and their line numbers in the file (header = line 1;
    in a wide table a line holds several cells)."""

    reason: str
    lines: tuple[int, ...]
    examples: tuple[str, ...] = ()  # the first few rows, as ``model x task = score``
    combined: int = 0  # the rows were not dropped but combined (``repeats``) into this many cells

    def __str__(self) -> str:
        shown = f" (e.g. {'; '.join(self.examples)})" if self.examples else ""
        what = f"combined into {self.combined}" if self.combined else "skipped"
        return f"{len(self.lines)} cell(s) {what}, {self.reason}: {_lines(self.lines)}{shown}"


_EXAMPLES = 3


def _examples(rows: pd.DataFrame) -> tuple[str, ...]:
    """The first rows as ``model x task = score``, an MLflow export's with their run id."""
    runs = rows[SOURCE_RUN_IDS] if SOURCE_RUN_IDS in rows.columns else pd.Series(None, index=rows.index)
    return tuple(f"{r.model} x {r.task} = {r.score}" + (f" (run {run})" if isinstance(run, str) else "")
                 for r, run in zip(rows.head(_EXAMPLES).itertuples(), runs.head(_EXAMPLES)))


def _cell_count(rows: pd.DataFrame) -> int:
    """How many (model, task) cells ``rows`` hold."""
    return len(rows[["model", "task"]].drop_duplicates())


def _lines(lines) -> str:
    lines = sorted(set(lines))  # a wide table's line holds several cells
    shown = ", ".join(str(line) for line in list(lines)[:_SHOWN_LINES])
    more = f" and {len(lines) - _SHOWN_LINES} more" if len(lines) > _SHOWN_LINES else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


_SHOWN_RUN_IDS = 5


def _runs(raw: pd.DataFrame, rows: pd.Index) -> str:
    """``rows`` of a table for the user: their line numbers, and in an MLflow runs export their run ids,
    which the MLflow UI and ``search_runs`` find them by."""
    if RUN_ID not in raw.columns:
        return _lines(rows)
    ids = raw.loc[rows, RUN_ID].astype(str).tolist()
    more = f" and {len(ids) - _SHOWN_RUN_IDS} more" if len(ids) > _SHOWN_RUN_IDS else ""
    return f"run{'s' if len(ids) > 1 else ''} {', '.join(ids[:_SHOWN_RUN_IDS])}{more} ({_lines(rows)})"


# How `fennec import` is told what the header does not say (as ``fennec import --help`` names the options)
_LAYOUT_OPTIONS = ("--layout (long, wide or transposed) and --model-column, --task-column or --score-column (the "
                   "header of the model, task or score column)")
LAYOUT_COLUMNS = {"parc": "Architecture, Source Dataset, Target Dataset, Oracle",
                  "transfergraph": "model, finetuned_dataset, eval_accuracy", "long": "model, task, score",
                  "wide": "model, then one column per task", "transposed": "task, then one column per model"}
# Column names that belong to another layout: a header with one of them (after stripping, in any
# case) is never read as wide, so a long table with a typo in its header is an error, not tasks.
_NOT_WIDE = {"task", "score", "finetuned_dataset", "eval_accuracy"}


def detect_layout(columns: list[str]) -> str:
    cols = set(columns)
    if {"Architecture", "Source Dataset", "Target Dataset", "Oracle"} <= cols:
        return "parc"
    if {"model", "finetuned_dataset", "eval_accuracy"} <= cols:
        return "transfergraph"
    if {"model", "task", "score"} <= cols:
        return "long"
    folded = {str(c).strip().lower() for c in cols}
    if "model" in cols and not folded & _NOT_WIDE and _wide_columns(columns, "model"):
        return "wide"
    if "task" in cols and not folded & (_NOT_WIDE - {"task"}) and "model" not in folded \
            and _wide_columns(columns, "task"):
        return "transposed"
    raise TableError(
        f"cannot tell the table layout from its columns {sorted(map(str, cols))}; expected PARC's "
        "(Architecture, Source Dataset, Target Dataset, Oracle), TransferGraph's records "
        "(model, finetuned_dataset, eval_accuracy), a long table (model, task, score), a wide one "
        "(model, then one column per task) or a transposed one (task, then one column per model); say which with "
        f"{_LAYOUT_OPTIONS}"
    )


# Columns of a wide (or transposed) table that hold no scores, left out and said so that they never
# become tasks (or models): a row number ("#", "No.": integers) and the spread printed beside each
# score ("Aircraft std", "DTD (±)", or a bare "std" after its score column; its values well below
# the scores').
ROW_NUMBER_NAMES = frozenset({"#", "no", "no.", "nr", "nr.", "id", "idx", "index", "s/n", "sl. no."})
_SPREAD_COLUMN = re.compile(r"^(?:(?P<of>.*?\S)[\s_\-]+)?\(?\s*(?:std\.?|sd|s\.d\.|stdev|std\.?\s*dev\.?|sem|95\s*%\s*ci|ci"
                            r"|±|\+/?-)\s*\)?(?:\.\d+)?$", re.IGNORECASE)


def _columns_without_scores(raw: pd.DataFrame, key: str) -> tuple[pd.DataFrame, list[Note]]:
    """``raw`` without its row-number and spread columns (noted), and without unnamed empty columns
    (a spreadsheet's trailing separators)."""
    other = "task" if key == "model" else "model"
    columns = _wide_columns(raw.columns, key)
    empty = [c for c in columns if _unnamed(c) and raw[c].isna().all()]

    def numbers(column) -> pd.Series:
        return pd.to_numeric(_number_text(raw[column]), errors="coerce").dropna()

    def counts_rows(column) -> bool:  # every cell an integer
        values = numbers(column)
        return len(values) == raw[column].notna().sum() and bool((values % 1 == 0).all())

    row_numbers = [c for c in columns if str(c).strip().lower() in ROW_NUMBER_NAMES and counts_rows(c)]
    spreads = {}
    for i, column in enumerate(columns):
        match = _SPREAD_COLUMN.match(str(column).strip())
        if not match or column in row_numbers or i == 0:
            continue
        of = next((c for c in columns if str(c).strip() == match["of"]), None) if match["of"] else columns[i - 1]
        spread, scores = numbers(column), (numbers(of) if of is not None else pd.Series(dtype=float))
        if len(spread) and len(scores) and (spread >= 0).all() and spread.median() < 0.25 * scores.abs().median():
            spreads[column] = of
    notes = []
    if row_numbers:
        notes.append(Note(f"left out {', '.join(map(repr, row_numbers))}: row numbers, not a {other}"))
    if spreads:
        notes.append(Note(f"left out {', '.join(f'{c!r} (beside {o!r})' for c, o in spreads.items())}: the spread of "
                          f"the scores beside it, not a {other}"))
    return raw.drop(columns=[*empty, *row_numbers, *spreads]), notes


def _wide_columns(columns, key: str) -> list[str]:
    """A wide (``key="model"``) or transposed (``key="task"``) table's value columns: all but the key
    column and its ``<key>_*`` facts."""
    return [c for c in columns if c != key and not str(c).startswith(f"{key}_")]


# A count's unit after its name in a header, as papers print it: "Params (M)", "Params [M]", "Params M",
# "Params/M", "Params (Mil.)", "Params (in millions)", "FLOPs (G)" (any other text in brackets is matched,
# and no unit).
_UNIT_AFTER = r"(?P<unit>\s*\(.*\)|\s*\[.*\]|\s*/\s*[a-z.]+|\s+(?:[kmbgt]|bn|mil\.?|(?:thousand|million|billion)s?))?"
# Model facts papers print as columns beside the tasks (or rows, in a transposed table), read as the
# facts the knowledge base uses: parameter count, compute, and the source (ImageNet) accuracy. A
# count's unit in the header ("Params (M)", "GFLOPs": :func:`count_unit`) is applied, so that a
# parameter or FLOP count is always a raw count, as the built-in models' are and as ``--max-parameters``
# reads it.
MODEL_FACT_HEADERS = {
    "model_parameters": re.compile(r"#?\s*(params?|parameters|param\.)" + _UNIT_AFTER),
    "model_flops": re.compile(r"#?\s*(?P<prefix>[kmgt])?(flops|macs)" + _UNIT_AFTER),
    # the compute of the model's (pre-)training, as scaling papers print it: "exaFLOPs", "PFLOPs", "training FLOPs"
    "model_training_flops": re.compile(r"(?:(?:pre-?)?train(?:ing)?\s+(?:compute\s+)?)?(?P<prefix>exa|peta|tera|giga|[kmgtpe])?"
                                       r"flops" + _UNIT_AFTER + r"|(?:pre-?)?train(?:ing)?\s+(?:compute|flops)" + _UNIT_AFTER
                                       .replace("unit", "unit2")),
    "model_tpu_core_days": re.compile(r"tpu\s*(?:v\d+)?[\s-]*core[\s-]*days"),
    # images per second, as "im/sec", "img/s", "throughput (im/s)"
    "model_throughput": re.compile(r"(?:im(?:g|age)?s?\s*/\s*s(?:ec)?|throughput|images?\s+per\s+sec(?:ond)?)(?:\s*\(.*\))?"),
    # "ImageNet Top-1", "IN-1k acc.": a bare "ImageNet" stays a task (a linear-probe or zero-shot target)
    "model_source_accuracy": re.compile(r"(imagenet|in-?1k|imagenet-1k)\s*(top-?1|acc\.?|accuracy)(\s*(acc\.?|accuracy))?"
                                        r"\s*(\(.*\))?|source accuracy"),
    # the weights' licence, which `fennec rank --licence` filters on (an imported model has no other)
    "model_licence": re.compile(r"((model|weights?)\s+)?licen[cs]es?"),
}


# Model facts a column beside the tasks of a wide table (or a row of a transposed one) names, where it can be no
# task; in a long table or a runs export such a column is the fine-tune's own setting (its epochs, its resolution).
WIDE_MODEL_FACT_HEADERS = {
    "model_pretraining_epochs": re.compile(r"#?\s*pre-?train(?:ing)?\s+ep(?:ochs?|\.)?"),
    "model_epochs": re.compile(r"#?\s*(?:train(?:ing)?\s+)?(?:epochs?|ep\.)"),
    "model_resolution": re.compile(r"(?:(?:input|image|img|crop)\s+size|(?:input\s+|image\s+|img\s+|train(?:ing)?\s+|"
                                   r"test\s+|eval\s+)?(?:resolution|res\.?))(?:\s*\(.*\))?"),
}


# Task facts papers print as columns beside the models in a transposed table (a task per row), read as
# the facts Fennec places a task by. A column of text (a domain) is a task fact by its own name.
TASK_FACT_HEADERS = {
    "task_class_count": re.compile(r"#\s*(classes|class|cls|categories)|(num(ber)?\.? (of )?)?(classes|categories)"
                                   r"|class[ _]count|n[ _]classes"),
    "task_train_size": re.compile(r"#\s*(train|training|train images|training images|train samples|samples|images)"
                                  r"|train(ing)?[ _](size|set|set size|images|samples)|size \(train\)"),
    "task_domain": re.compile(r"domain"),
}


@dataclass(frozen=True)
class ReadAs:
    """Columns (or a transposed table's rows) read under another name: said, so that nothing is guessed silently."""

    names: tuple[tuple[str, str], ...]  # (as written, as read)

    def __str__(self) -> str:
        return "read " + ", ".join(f"{written!r} as {read}" for written, read in self.names)


@dataclass(frozen=True)
class Note:
    """Something the reader did to the table that is not a renaming (error rates stored as accuracy,
    rows of column groups left out): said like every other reading."""

    text: str
    words: str = ""  # a title or caption left out: its own text, which may say what the cells are

    def __str__(self) -> str:
        return self.text


NOTES = (ReadAs, Note)  # what a reader notes rather than warns about


def model_fact_name(name: str, beside_tasks: bool = False) -> str | None:
    """The ``model_*`` fact a paper's column (or row) name stands for (:data:`MODEL_FACT_HEADERS`; ``beside_tasks``,
    a wide table's column or a transposed one's row: :data:`WIDE_MODEL_FACT_HEADERS` too), or None."""
    return _fact_name(name, {**MODEL_FACT_HEADERS, **(WIDE_MODEL_FACT_HEADERS if beside_tasks else {})})


def task_fact_name(name: str) -> str | None:
    """The ``task_*`` fact a paper's column (or row) name stands for (:data:`TASK_FACT_HEADERS`), or None."""
    return _fact_name(name, TASK_FACT_HEADERS)


def _fact_name(name: str, headers: dict[str, re.Pattern]) -> str | None:
    folded = " ".join(str(name).strip().lower().split())
    return next((fact for fact, pattern in headers.items() if pattern.fullmatch(folded)), None)


# The model facts that are counts, each with the unit its cells are likely in when a table gives none
# but they look like one (all below :data:`_SMALLEST_COUNT`), and a header that would say so.
COUNT_FACTS = {"model_parameters": ("millions", "'Params (M)'"),
               "model_flops": ("millions or billions", "'FLOPs (M)' or 'GFLOPs'"),
               "model_training_flops": ("a multiple such as exaFLOPs (1e18)", "'exaFLOPs' or 'PFLOPs'")}
# No vision model has fewer parameters (or FLOPs) than this: a column of counts all below it is in millions
_SMALLEST_COUNT = 10_000
# A count's unit as a header ("Params (M)", "GFLOPs") or a cell ("86.6M", "1.3B", "390K") writes it
_COUNT_UNITS = {"k": 1e3, "thousand": 1e3, "thousands": 1e3, "m": 1e6, "mil": 1e6, "mil.": 1e6, "million": 1e6,
                "millions": 1e6, "b": 1e9, "bn": 1e9, "g": 1e9, "billion": 1e9, "billions": 1e9, "t": 1e12,
                "giga": 1e9, "tera": 1e12, "p": 1e15, "peta": 1e15, "e": 1e18, "exa": 1e18}
_COUNT_CELL = re.compile(r"^(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*(?P<unit>[kmbgt]|bn)?$",
                         re.IGNORECASE)


def count_unit(name: str) -> float:
    """How many of a count fact (:data:`COUNT_FACTS`) one cell of a column (or row) so named holds: 1e6
    for "Params (M)" or "#Params [M]", 1e9 for "GFLOPs" or "FLOPs (G)"; 1 when the name gives no unit."""
    folded = " ".join(str(name).strip().lower().split())
    for fact in COUNT_FACTS:
        match = MODEL_FACT_HEADERS[fact].fullmatch(folded)
        if match:
            unit = match.groupdict().get("prefix") or match["unit"] or match.groupdict().get("unit2") or ""
            return _COUNT_UNITS.get(re.sub(r"^[\s(\[/]*(?:in\s+)?|[\s)\]]*$", "", unit), 1.0)
    return 1.0


def _read_with_unit(written: str, read: str) -> str:
    """A column's name as :class:`ReadAs` says it was read: a count's with the unit applied
    ("model_parameters (x 1e6)" for "Params (M)")."""
    unit = count_unit(written) if read in COUNT_FACTS else 1.0
    return read if unit == 1.0 else f"{read} (x 1e{np.log10(unit):.0f})"


def _raw_counts(cells: pd.Series, header: str, fact: str) -> tuple[pd.Series, Note | None]:
    """A count fact's cells as raw counts: times the unit of their header (``header``, as the table wrote it;
    "Params (M)": 86.6 is 86,600,000) or their own ("86.6M", "1.3B", "390K"), which wins; cells that are not a
    number are kept as written. Cells without a unit are kept as they are; when they look like millions (all
    below :data:`_SMALLEST_COUNT`), a note says so rather than guess."""
    header_unit = count_unit(header)
    text = _number_text(cells.astype(object).where(cells.isna(), cells.astype(str)))  # a dash: NaN
    parts = text.str.extract(_COUNT_CELL)
    numbers, cell_units = pd.to_numeric(parts["number"], errors="coerce"), parts["unit"].str.lower().map(_COUNT_UNITS)
    plain = numbers[cell_units.isna()].dropna() if header_unit == 1.0 else pd.Series(dtype=float)
    note = None
    if len(plain) and plain.abs().max() < _SMALLEST_COUNT:
        unit, example = COUNT_FACTS[fact]
        note = Note(f"{header!r} holds {plain.min():g} to {plain.max():g}: that looks like {unit}, not a count (no "
                    f"vision model has fewer than {_SMALLEST_COUNT:,}); imported as written; if they are {unit}, write "
                    f"the unit in the header, e.g. {example}, and import again")
    if header_unit == 1.0 and cell_units.isna().all():
        return cells, note
    counts = (numbers * cell_units.fillna(header_unit)).round()
    return _numbers_where_all_are(counts.astype(object).where(numbers.notna(), text)), note


# A wide table's corner cell naming both of its axes, rows first: "Model \ Dataset", "Models / Tasks",
# "Dataset | Model" (transposed), "model→task".
_CORNER = re.compile(r"^(?P<rows>[^\\/|→]+?)\s*(?:\\|/|\||→|->)\s*(?P<columns>[^\\/|→]+)$")


def _corner_role(column: str) -> str | None:
    """"model" or "task": what the rows of a table hold whose first header names both axes, rows
    first ("Model \\ Dataset"); None for any other header."""
    match = _CORNER.match(column)
    if match is None:
        return None
    rows, columns = _header_name(match["rows"]), _header_name(match["columns"])
    for role, other in (("model", "task"), ("task", "model")):
        if rows in COLUMN_NAMES[role] and columns in COLUMN_NAMES[other]:
            return role
    return None


def canonical_columns(columns) -> list[str]:
    """The header with surrounding spaces stripped and the model, task and score columns under their
    canonical names (:data:`COLUMN_NAMES`; a first header naming both axes, :func:`_corner_role`, is
    its rows' role). PARC's header is kept as it is (in PARC's case)."""
    stripped = [str(c).strip() for c in columns]
    parc = {name.lower(): name for name in ("Architecture", "Source Dataset", "Target Dataset", "Oracle")}
    if set(parc) <= {c.lower() for c in stripped}:  # in any case
        return [parc.get(c.lower(), c) for c in stripped]
    corner = _corner_role(stripped[0]) if stripped else None
    if corner is not None and corner not in stripped:
        stripped[0] = corner
    renamed = list(stripped)
    for role, names in COLUMN_NAMES.items():
        if role in stripped:
            continue
        matches = [i for i, c in enumerate(stripped) if _header_name(c) in names]
        if role == "model" and len(matches) > 1:  # "Name" beside "model_name": a W&B export's run name
            matches = [i for i in matches if _header_name(stripped[i]) not in WEAK_MODEL_NAMES]
        # beside it, an MLflow export's params.arch is the model as another script logs it (--model-column takes both)
        architectures = [i for i in matches if _header_name(stripped[i]) in ARCHITECTURE_NAMES
                         and not stripped[i].startswith(MLFLOW_PREFIXES)]
        if role == "model" and len(matches) - len(architectures) == 1:  # "Model" beside "Arch": the arch is a fact
            renamed[next(i for i in matches if i not in architectures)] = role
            if len(architectures) == 1 and "model_architecture" not in stripped:
                renamed[architectures[0]] = "model_architecture"
        elif len(matches) == 1:
            renamed[matches[0]] = role
    if "task" in renamed and "model" not in renamed:  # transposed: its columns are models (or task facts)
        for i, column in enumerate(stripped):
            fact = task_fact_name(column)
            if fact is not None and fact not in renamed:
                renamed[i] = fact
        return renamed
    beside_tasks = "task" not in renamed  # a wide table's columns: its tasks and the models' facts
    for i, column in enumerate(stripped):
        fact = model_fact_name(column, beside_tasks)
        if fact is not None and fact not in renamed:
            renamed[i] = fact
    return renamed


def read_table(path: str | Path, layout: str = "auto", model_facts_csv: str | Path | None = None,
               repeats: str = "last", scores: str = "auto", *, allow_mixed_scale: bool = False,
               columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The table as long rows: model, task, score, and model_* / task_* fact columns.

    Skipped rows are reported with a :class:`SkippedRowsWarning` each reason.
    """
    table, skipped = read_rows(path, layout, model_facts_csv, repeats, scores, allow_mixed_scale=allow_mixed_scale,
                               columns=columns)
    for rows in skipped:
        warnings.warn(f"{Path(path).name}: {rows}", SkippedRowsWarning, stacklevel=2)
    return table


def read_rows(path: str | Path, layout: str = "auto", model_facts_csv: str | Path | None = None,
              repeats: str = "last", scores: str = "auto", *, allow_mixed_scale: bool = False,
              columns: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, list[SkippedRows | ReadAs | Note]]:
    """:func:`read_table`'s rows, and the rows it skipped (or combined), by reason.

    ``scores`` (:data:`SCORES`): "error" reads every cell as an error rate and stores it as accuracy.
    A cell on another scale than the table's (:func:`cells_off_scale`: 975 or 0.975 among percents) is an
    error naming it, unless ``allow_mixed_scale`` (scores that are not accuracies).
    ``columns``: the header of the model, task or score column ({"score": "metrics.test_acc"}), where
    the table's names do not say it.
    """
    path = Path(path)
    if layout not in LAYOUTS:
        raise TableError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if repeats not in REPEATS:
        raise TableError(f"repeats must be one of {REPEATS}, got {repeats!r}")
    if scores not in SCORES:
        raise TableError(f"scores must be one of {SCORES}, got {scores!r}")
    if not path.is_file():
        raise TableError(f"table {str(path)!r} does not exist")
    notes: list[SkippedRows | ReadAs | Note] = []
    group_rows = ()
    suffix = path.suffix.lower()
    if suffix in SPREADSHEET_SUFFIXES:
        raw, notes = _spreadsheet_table(path)
    elif suffix in FRAME_SUFFIXES:
        raw = _frame_file_table(path)
    elif suffix == ".json":
        raw = _json_table(path)
    elif suffix in (".html", ".htm", ".pdf", ".docx"):
        raise TableError(f"{str(path)!r}: {suffix} files are not read; copy the table into a CSV, a spreadsheet or a "
                         "markdown table (or, for a web page, pandas.read_html(path)[i].to_csv(...)) and import that")
    else:
        try:
            encoding = _encoding(path)
            lines = path.read_text(encoding=encoding, errors="replace").splitlines()
            raw = _markdown_table(lines)
            raw = _latex_table(lines, path) if raw is None else raw
            group_rows = raw.attrs.get("group_rows", ()) if raw is not None else ()
            notes = list(raw.attrs.get("notes", ())) if raw is not None else []
            if raw is None:
                delimiter = _delimiter(path, encoding)
                above, notes = _rows_above_header([row for _, row in zip(range(_TITLE_ROWS_MAX + 3),
                                                                         csv.reader(lines, delimiter=delimiter))])
                # a table saved by a spreadsheet in a comma-decimal locale separates its fields with ';'
                raw = pd.read_csv(path, sep=delimiter, decimal="," if delimiter == ";" else ".", encoding=encoding,
                                  skip_blank_lines=False, skiprows=above)
                if not isinstance(raw.index, pd.RangeIndex):  # pandas makes the extra leading fields an index
                    raise TableError(f"{str(path)!r}: its header (line {above + 1}) has fewer fields than the "
                                     "lines below it; give every column a name in the header")
                raw.index = raw.index + 2 + above  # line numbers in the file: the header is line above + 1
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise TableError(f"cannot read {str(path)!r} as a CSV table: {exc}") from exc
    raw = raw.dropna(how="all")
    footnotes = _footnote_rows(raw)
    if len(footnotes):
        notes.append(_footnote_note({number: str(cell).strip() for number, cell in footnotes.iloc[:, 0].items()}))
        raw = raw.drop(footnotes.index)
    raw, sections = _section_rows(raw)
    if raw.empty:
        raise TableError(f"{str(path)!r} has a header but no rows")
    raw, index_notes = _without_index_column(raw)
    notes += index_notes
    if columns:
        raw = _named_columns(raw, columns, path)
    raw, unfinished = _finished_rows(raw, path)
    notes += unfinished
    mlflow_export = is_mlflow_export(raw.columns)
    if mlflow_export:
        raw, export_notes = _mlflow_columns(raw)
        notes += export_notes
    written = [str(c).strip() for c in raw.columns]
    raw.columns = canonical_columns(raw.columns)
    count_headers = {read: as_written for as_written, read in zip(written, raw.columns) if read in COUNT_FACTS}
    error_column = _error_column(raw.columns)
    if error_column is not None and scores == "accuracy":
        raise TableError(f"{str(path)!r}: its score column {error_column!r} is named as an error rate; import it "
                         "with --scores error (or auto), or rename the column if it holds accuracies")
    if error_column is not None:
        raw = raw.rename(columns={error_column: "score"})
        scores = "error"
    elif scores == "auto" and (said := _error_rate_words(notes)):
        scores = "error"  # else the worst models would be recommended, and no correlation would show it
        notes.append(Note(f"the table's title or caption says {said!r}: the cells are read as error rates "
                          "(import with --scores accuracy if they are accuracies)"))
    if layout in ("auto", "long") and {"model", "task"} <= set(raw.columns) and "score" not in raw.columns:
        score = _only_number_column(raw, path, metrics_only=mlflow_export)
        if score is not None:
            raw = raw.rename(columns={score: "score"})
    if layout == "auto" and str(raw.columns[0]).startswith("Unnamed:") and _layout_or_none(raw.columns) is None:
        raw = raw.rename(columns={raw.columns[0]: _unnamed_key_column(raw, path)})
        # a nested JSON object's inner keys (or a split one's index) are that first column (_json_table)
        written[0] = ("(the row keys of the JSON)" if path.suffix.lower() == ".json"
                      else "(the first column, without a name)")
    read_as = tuple((w, _read_with_unit(w, c)) for w, c in zip(written, raw.columns) if w.lower() != c.lower())
    if read_as:
        notes.insert(0, ReadAs(read_as))
    if group_rows:
        notes.append(Note(f"{_lines(group_rows)} left out: a row of column groups (\\multicolumn), not cells"))
    if mlflow_export and not {"model", "task"} <= set(raw.columns):
        role = next(role for role in ("model", "task") if role not in raw.columns)
        logged = [str(c) for c in raw.columns if str(c).startswith(("params.", "tags."))]
        alike = [c for c in logged if _header_name(c) in COLUMN_NAMES[role]]
        why = (f"several params or tags are named like one ({', '.join(map(repr, alike))})" if alike else
               f"no param or tag is named like one ({', '.join(COLUMN_NAMES[role][:6])}, ...)")
        raise TableError(f"{str(path)!r} is an MLflow runs export without one {role} column: {why}; name it with "
                         f"--{role}-column (several, comma-separated, are taken in order), from its params and "
                         f"tags: {', '.join(map(repr, logged)) or 'none'}")
    layout = detect_layout(list(raw.columns)) if layout == "auto" else layout
    required = {"parc": ["Architecture", "Source Dataset", "Target Dataset", "Oracle"],
                "transfergraph": ["model", "finetuned_dataset", "eval_accuracy"],
                "long": ["model", "task", "score"], "wide": ["model"], "transposed": ["task"]}[layout]
    raw = _required_columns_in_any_case(raw, required)
    missing = set(required) - set(raw.columns)
    if missing:
        actual = _layout_or_none(raw.columns)
        if actual and actual != layout:  # the layout asked for is not the file's: say which it is
            raise TableError(f"{str(path)!r} is a {actual} table ({LAYOUT_COLUMNS[actual]}), not the {layout} layout "
                             f"({LAYOUT_COLUMNS[layout]}); import it with --layout {actual} or --layout auto")
        raise TableError(f"{layout} table {str(path)!r} lacks column(s) {sorted(missing)} "
                         f"(the {layout} layout: {LAYOUT_COLUMNS[layout]}); name its columns with "
                         "--model-column, --task-column or --score-column")
    if layout in ("wide", "transposed", "long"):  # a name under two section labels is two models (or tasks)
        key = "task" if layout == "transposed" else "model"
        raw, section_notes = _qualified_by_section(raw, sections, key, "task" if layout == "long" else None)
        notes += section_notes
    elif sections.attrs.get("labels"):
        notes.append(Note(f"{_lines(sections.attrs['labels'])} left out: rows of one cell (section labels)"))
    skipped: list[SkippedRows | ReadAs | Note] = list(notes)
    seed_columns: list[str] = []  # a long table's columns telling a cell's repeated lines apart
    if layout == "parc":
        oracle = _numbers(raw, "Oracle", path)
        marked = raw.index[oracle < 0]
        if len(marked):
            skipped.append(SkippedRows("negative Oracle (PARC's -1 marks a missing result)", tuple(marked), tuple(
                f"{raw.at[i, 'Architecture']}@{raw.at[i, 'Source Dataset']} x {raw.at[i, 'Target Dataset']} "
                f"= {oracle.at[i]:g}" for i in marked[:_EXAMPLES])))
        rows = raw.loc[~(oracle < 0)]
        architecture, source = _names(rows, "Architecture", path), _names(rows, "Source Dataset", path)
        long = pd.DataFrame({"model": architecture + "@" + source, "task": _names(rows, "Target Dataset", path),
                             "score": oracle.loc[rows.index], "model_architecture": architecture,
                             "model_source_dataset": source})
    elif layout == "transfergraph":
        long = pd.DataFrame({"model": _names(raw, "model", path), "task": _names(raw, "finetuned_dataset", path),
                             "score": _numbers(raw, "eval_accuracy", path)})
    elif layout in ("wide", "transposed"):
        if layout == "wide":
            as_written = dict(zip(raw.columns, written))
            before = list(raw.columns)
            raw, said = _model_column_telling_rows_apart(raw, as_written)
            if said:  # the columns it read otherwise are said there, not as first read
                overruled = {as_written[c] for c in before if c == "model" or c not in raw.columns}
                skipped = [ReadAs(tuple(n for n in item.names if n[0] not in overruled))
                           if isinstance(item, ReadAs) else item for item in skipped]
                skipped = [item for item in skipped if not isinstance(item, ReadAs) or item.names]
            skipped.extend(said)
        raw, left_out = _columns_without_scores(raw, key="model" if layout == "wide" else "task")
        skipped.extend(left_out)
        long, fact_rows = _wide_rows(raw, path, key="model" if layout == "wide" else "task")
        if fact_rows:
            skipped.append(ReadAs(tuple((k, _read_with_unit(k, f)) for k, f in fact_rows)))
            count_headers.update({f: k for k, f in fact_rows if f in COUNT_FACTS})
    else:
        run_ids = None
        if mlflow_export:
            raw, run_ids, left_out = _fine_tune_runs(raw)
            skipped.extend(left_out)
        facts = _fact_columns(raw, ("model_", "task_"), path)
        unread = [c for c in raw.columns if c not in ("model", "task", "score", *facts)]
        # what tells a cell's lines apart: a seed (by its name) and any other column that varies within a cell
        # (a hyperparameter grid), said by name
        values_per_cell = raw.groupby([raw["model"].astype(str), raw["task"].astype(str)])[unread].nunique(dropna=False)
        # an MLflow export's other metrics (val_acc beside test_acc) are results, not settings of the run
        varying = [c for c in unread if len(raw) and values_per_cell[c].max() > 1
                   and not str(c).startswith("metrics.")]
        seed_columns = sorted(varying, key=lambda c: _header_name(c) not in SEED_COLUMN_NAMES)
        configurations = [c for c in varying if _header_name(c) not in SEED_COLUMN_NAMES]
        if unread:  # a second metric (Top-5), a spread, a seed or a hyperparameter: said, so none is lost unseen
            skipped.append(Note(f"not read: column(s) {', '.join(map(repr, unread))} (a long table's cells are its "
                                "score column; facts are model_* or task_* columns)"))
        long = pd.DataFrame({"model": _names(raw, "model", path), "task": _names(raw, "task", path),
                             "score": _numbers(raw, "score", path)}).join(raw[facts])
        if run_ids is not None:
            long[SOURCE_RUN_IDS] = run_ids
        if configurations and len(configurations) < len(varying):  # seeds of several configurations
            written = raw[configurations].map(lambda value: "" if pd.isna(value) else str(value))
            long[_CONFIGURATION] = written.agg(" | ".join, axis=1)
    long, skipped_here = _without_summaries(long)
    skipped += skipped_here
    if layout == "long":  # a wide table's two columns of one dataset are two settings, kept apart
        long, said = _one_name_per_dataset(long)
        skipped += said
    for fact in [fact for fact in COUNT_FACTS if fact in long.columns]:  # "Params (M)", "86.6M": raw counts
        long[fact], note = _raw_counts(long[fact], count_headers.get(fact, fact), fact)
        skipped += [note] if note else []
    if not allow_mixed_scale and scores != "error":  # an error under 1% is no fraction (and one above 100 an error)
        _refuse_cells_off_scale(long, path, layout)
    if scores == "error":  # before the repeats: the best of a grid is its lowest error
        long, note = _accuracy_from_error(long, path)
        skipped.append(note)
    long, skipped_here = _cells(long, repeats, seed_columns)
    skipped += skipped_here
    if layout == "transfergraph" and model_facts_csv is not None:
        facts = pd.read_csv(model_facts_csv).drop_duplicates(subset=["model"])
        facts = facts[["model", "model_type", "number_of_parameters", "dataset", "#labels"]].rename(columns={
            "model_type": "model_type", "number_of_parameters": "model_parameters",
            "dataset": "model_source_dataset", "#labels": "model_source_classes"})
        long = long.merge(facts, on="model", how="left")
    return long.reset_index(drop=True), skipped


def _required_columns_in_any_case(raw: pd.DataFrame, required: list[str]) -> pd.DataFrame:
    """``raw`` with the columns a layout requires under their names where its header writes them in another case
    ("Model" for a wide table's model): headers are matched in any case."""
    folded = {str(c).strip().lower(): c for c in raw.columns}
    renames = {folded[name.lower()]: name for name in required
               if name not in raw.columns and name.lower() in folded and folded[name.lower()] not in required}
    return raw.rename(columns=renames)


def _error_column(columns) -> str | None:
    """A long table's score column named as an error rate ("Top-1 error", "Error (%)"), when the table
    has no score column; None otherwise."""
    if "score" in columns or not {"model", "task"} <= set(columns):
        return None
    matches = [c for c in columns if _header_name(c) in ERROR_COLUMN_NAMES]
    return matches[0] if len(matches) == 1 else None


# How a title or caption names the cells as error rates ("Top-1 error (%)", "error rates"); "standard
# error" or "error bars" name no score, and a text that speaks of accuracy too is left as accuracy.
_ERROR_RATE_WORDS = re.compile(r"\b(?:top-?\s?\d+\s+err(?:or|\.)?|error rates?|test error|classification error|"
                               r"(?<!standard )error\s*\(%\))", re.IGNORECASE)
_ACCURACY_WORDS = re.compile(r"\bacc(?:uracy|uracies|\.)?\b", re.IGNORECASE)


def _error_rate_words(notes) -> str | None:
    """The words of a table's title or caption (its notes' ``words``) that name its cells as error rates."""
    text = " ".join(note.words for note in notes if isinstance(note, Note) and note.words)
    found = _ERROR_RATE_WORDS.search(text)
    return found.group(0) if found and not _ACCURACY_WORDS.search(text) else None


def _accuracy_from_error(long: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, Note]:
    """Error rates as accuracies: 100 - error for a table in %, 1 - error for one in [0, 1]."""
    errors = long["score"]
    percent = _in_percent(errors)
    top = 100.0 if percent else 1.0
    outside = long[(errors < 0) | (errors > 100)]
    if len(outside):
        raise TableError(f"{str(path)!r}: error rates must lie in [0, 100] (or [0, 1]); "
                         f"{'; '.join(_examples(outside))} do not")
    unit = "100 - error (%)" if percent else "1 - error"
    return long.assign(score=top - errors), Note(f"the cells are error rates (lower is better), stored as accuracy = {unit}")


def _layout_or_none(columns) -> str | None:
    try:
        return detect_layout(list(columns))
    except TableError:
        return None


def _only_number_column(raw: pd.DataFrame, path: Path, metrics_only: bool = False) -> str | None:
    """A long table's score column under a name of its own ("Ours", "Full FT"): its one column of
    numbers besides facts and a row number (``metrics_only``: its one ``metrics.*`` column, an MLflow
    export's params being numbers too); None without one, an error naming them when there are several."""
    numbers = [c for c in raw.columns if c not in ("model", "task") and not str(c).startswith(("model_", "task_"))
               and _header_name(c) not in ROW_NUMBER_NAMES and _all_numbers(raw[c])
               and (not metrics_only or str(c).startswith("metrics."))]
    if len(numbers) > 1:
        raise TableError(f"{str(path)!r} has model and task columns but several {'metrics' if metrics_only else 'columns of numbers'} "
                         f"({', '.join(map(repr, numbers))}) and none named score; say which to import with "
                         f"--score-column (e.g. --score-column {numbers[0]!r})")
    return numbers[0] if numbers else None


def _named_columns(raw: pd.DataFrame, columns: Mapping[str, str], path: Path) -> pd.DataFrame:
    """``raw`` with the columns the user named for the model, task and score under those names. Several
    columns, comma-separated ("params.model_name,params.arch,tags.model": scripts that log it differently),
    are taken in order: a row's first one given."""
    header = {str(c).strip(): c for c in raw.columns}
    for role, given in columns.items():
        names = [name.strip() for name in str(given).split(",") if name.strip()]
        missing = [name for name in names if name not in header]
        if missing or not names:
            raise TableError(f"{str(path)!r} has no column {(missing or [given])[0]!r} (given as the {role} column); "
                             f"its columns: {', '.join(map(repr, header))}")
        if role in header and role not in names:
            raise TableError(f"{str(path)!r} has a column named {role!r} besides {given!r}, given as the {role} "
                             f"column; rename one of them")
        cells = [raw[header[name]].mask(raw[header[name]].astype(str).str.strip() == "") for name in names]
        first_given = cells[0]
        for more in cells[1:]:
            first_given = first_given.fillna(more)
        position = sum(1 for c in raw.columns[:list(raw.columns).index(header[names[0]])]
                       if str(c).strip() not in names)
        raw = raw.drop(columns=[header[name] for name in names])
        raw.insert(position, role, first_given)
        header = {str(c).strip(): c for c in raw.columns}
    return raw


# A run's state as MLflow (FINISHED, FAILED, KILLED, RUNNING, SCHEDULED) and Weights & Biases (finished,
# crashed, failed, killed, running) export it: only a finished run's metric is a result.
RUN_STATES = frozenset({"finished", "failed", "killed", "crashed", "running", "scheduled", "preempted"})


def _finished_rows(raw: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, list[Note]]:
    """A runs export's finished runs: rows whose ``status`` or ``state`` column, all run states
    (:data:`RUN_STATES`), says another; what was left out."""
    for column in [c for c in raw.columns if str(c).strip().lower() in ("status", "state")]:
        state = raw[column].astype(str).str.strip()
        if not state.str.lower().isin(RUN_STATES).all():
            continue  # a column of something else ("Status: published")
        unfinished = raw.index[state.str.lower() != "finished"]
        if len(unfinished) == len(raw):
            raise TableError(f"{str(path)!r} holds no finished run (its {str(column).strip()!r} column: "
                             f"{', '.join(sorted(set(state)))})")
        notes = [Note(f"{_runs(raw, unfinished)} left out: runs that did not finish ({str(column).strip()} "
                      f"{', '.join(sorted(set(state[unfinished])))})")] if len(unfinished) else []
        return raw.drop(unfinished), notes
    return raw, []


def _mlflow_columns(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[Note]]:
    """An MLflow runs export without MLflow's run columns and ``tags.mlflow.*`` (see :data:`MLFLOW_PREFIXES`),
    its facts logged as params or tags under their fact names; what was left out."""
    header = {str(c).strip(): c for c in raw.columns}
    if "start_time" in header:  # MLflow lists the newest run first: in the order they ran, a cell's last is its latest
        raw = raw.iloc[np.argsort(pd.to_datetime(raw[header["start_time"]], errors="coerce", utc=True).to_numpy(),
                                  kind="stable")]
    bookkeeping = [c for name, c in header.items() if (name in MLFLOW_RUN_COLUMNS or name.startswith("tags.mlflow."))
                   and name not in (RUN_ID, PARENT_RUN_ID)]
    run_columns = ", ".join(name for name in header if name in MLFLOW_RUN_COLUMNS)
    note = Note(f"an MLflow runs export: its params.*, metrics.* and tags.* are read without the prefix, its runs in "
                f"the order they started (--repeats last keeps a cell's latest run); left out MLflow's run columns "
                f"({run_columns}{' and tags.mlflow.*' if any(n.startswith('tags.mlflow.') for n in header) else ''})")
    # facts logged as params or tags (params.task_class_count, or as code names them: params.num_classes)
    # are fact columns, as in any long table
    facts = {}
    for name, column in header.items():
        if name.startswith(("params.", "tags.")):
            logged = name.split(".", 1)[1]
            spoken = logged.replace("_", " ")
            if any(_header_name(logged) in names for names in COLUMN_NAMES.values()):
                continue  # params.model_name is the model column, not a model fact
            fact = logged if logged.startswith(("model_", "task_")) else (task_fact_name(spoken)
                                                                          or model_fact_name(spoken))
            if fact is not None and fact not in facts.values() and fact not in header:
                facts[column] = fact
    return raw.drop(columns=bookkeeping).rename(columns=facts), [note]


def _fine_tune_runs(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, list[Note]]:
    """An MLflow export's runs that are fine-tunes, their run ids (:data:`SOURCE_RUN_IDS`) apart: runs without a model or
    task (a data-preparation run, a sweep's trial that logs only its hyperparameters) and the trials of a
    sweep whose parent run, in the export, holds the result are left out (the parent re-logs its best
    trial's score: both would count it twice); what was left out."""
    notes = []
    unnamed = raw["model"].isna() | raw["task"].isna() | (raw["model"].astype(str).str.strip() == "") \
        | (raw["task"].astype(str).str.strip() == "")
    if unnamed.any():
        notes.append(Note(f"{_runs(raw, raw.index[unnamed])} left out: runs without a model or a task (not "
                          "fine-tunes)"))
        raw = raw[~unnamed]
    if RUN_ID in raw.columns and PARENT_RUN_ID in raw.columns:
        scored = pd.to_numeric(_number_text(raw["score"]), errors="coerce").notna() if "score" in raw.columns \
            else pd.Series(False, index=raw.index)
        summarised = set(raw.loc[scored, RUN_ID].astype(str))  # parents that carry a score themselves
        trials = raw[PARENT_RUN_ID].astype(str).isin(summarised)
        if trials.any():
            notes.append(Note(f"{_runs(raw, raw.index[trials])} left out: trials of a sweep whose parent run holds its "
                              "result (the parent is the cell)"))
            raw = raw[~trials]
    return raw.drop(columns=[c for c in (RUN_ID, PARENT_RUN_ID) if c in raw.columns]), raw[RUN_ID].astype(str), notes


def _all_numbers(cells: pd.Series) -> bool:
    """Every cell given is a number as a paper prints one (84.1, 84.1%, 84.1 ± 0.3), and one is given."""
    text = _number_text(cells).dropna()
    return len(text) > 0 and bool(pd.to_numeric(text, errors="coerce").notna().all())


def _unnamed_key_column(raw: pd.DataFrame, path: Path) -> str:
    """What a first column without a header holds (a table saved with its index, e.g. pandas'
    ``to_csv()`` of a pivot): models when the other columns are named like public datasets, tasks when
    its own values are; otherwise an error saying how to name it."""
    header_tasks = sum(find_task_facts(str(c)) is not None for c in raw.columns[1:])
    value_tasks = sum(find_task_facts(str(v)) is not None for v in raw.iloc[:, 0].dropna().unique())
    if header_tasks > value_tasks:
        return "model"
    if value_tasks > header_tasks:
        return "task"
    raise TableError(f"{str(path)!r}: the first column has no name in the header; name it model (a row per "
                     "model, a column per task) or task (a row per task, a column per model)")


def _without_summaries(long: pd.DataFrame) -> tuple[pd.DataFrame, list[SkippedRows]]:
    """The rows of a summary line or column (:data:`SUMMARY_NAMES`) dropped, and reported."""
    summary = (long["model"].str.strip().str.lower().isin(SUMMARY_NAMES)
               | long["task"].str.strip().str.lower().isin(SUMMARY_NAMES))
    if not summary.any():
        return long, []
    names = sorted(set(long.loc[summary, "model"]) | set(long.loc[summary, "task"]), key=str)
    names = [n for n in names if str(n).strip().lower() in SUMMARY_NAMES]
    return long[~summary], [SkippedRows(f"a summary row or column ({', '.join(map(repr, names))}), not a model or "
                                        "a task", tuple(long.index[summary]), _examples(long[summary]))]


def _cells_frame(rows: list[tuple[int, list[str]]]) -> pd.DataFrame:
    """Raw cells of a table read line by line ((line number, cells), the header first) as a frame indexed by
    line number, short rows padded and empty cells NaN, as ``read_csv`` gives them."""
    if not rows:
        return pd.DataFrame()
    header, body = rows[0][1], rows[1:]
    width = len(header)
    frame = pd.DataFrame([(cells + [""] * width)[:width] for _, cells in body], columns=header,
                         index=[number for number, _ in body])
    return frame.replace("", np.nan)


# A cell of the line under a markdown table's header (its delimiter row): dashes, with a colon at either
# end for the alignment ("---", ":--", "--:", ":-:"); further down, a lone dash is a cell not measured.
_MARKDOWN_RULE = re.compile(r":?-+:?")
_MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")  # [ResNet-50](https://...) -> ResNet-50


SPREADSHEET_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")


def _spreadsheet_table(path: Path) -> tuple[pd.DataFrame, list[Note]]:
    """The first non-empty sheet of a spreadsheet file (its index the row numbers), and notes on
    what was left: the other sheets, rows of one cell above the header (a title).

    The header is the first row with two cells or more. A cell shown as "84.1%" holds 0.841, which
    is read: the table is then in [0, 1]."""
    try:
        sheets = pd.read_excel(path, sheet_name=None, header=None, dtype=object)
    except ImportError as exc:  # openpyxl, xlrd and odfpy are dependencies; an install may lack one
        raise TableError(f"reading {path.suffix} files needs a package this install lacks ({exc}); "
                         f"save {str(path)!r} as CSV and import that") from exc
    except Exception as exc:  # each engine raises its own errors (BadZipFile, XLRDError, KeyError, ...)
        raise TableError(f"cannot read {str(path)!r} as a spreadsheet ({type(exc).__name__}: {exc}); "
                         "save it as CSV and import that") from exc
    filled = [name for name, sheet in sheets.items() if sheet.notna().any().any()]
    if not filled:
        raise TableError(f"{str(path)!r} has no cells: every sheet is empty")
    sheet = sheets[filled[0]].dropna(how="all").dropna(how="all", axis=1)
    sheet.index = sheet.index + 1  # the spreadsheet's row numbers
    notes = []
    if len(filled) > 1:
        notes.append(Note(f"read the first sheet, {filled[0]!r}; not read: sheet(s) {', '.join(map(repr, filled[1:]))} "
                          "(to import one, make it the first sheet or save it as CSV)"))
    above, above_notes = _rows_above_header([["" if pd.isna(cell) else str(cell) for cell in row]
                                             for row in sheet.iloc[:_TITLE_ROWS_MAX + 3].itertuples(index=False)],
                                            row_numbers=list(sheet.index))
    notes += above_notes
    sheet = sheet.iloc[above:]
    header = [("" if pd.isna(cell) else str(cell).strip()) for cell in sheet.iloc[0]]
    raw = pd.DataFrame(sheet.iloc[1:].to_numpy(), index=sheet.index[1:],
                       columns=[name or f"Unnamed: {i}" for i, name in enumerate(header)])
    return raw.apply(_as_csv_column), notes


FRAME_SUFFIXES = (".parquet", ".pq", ".feather")  # a pandas DataFrame saved as it is (pyarrow comes with mlflow)


def _frame_file_table(path: Path) -> pd.DataFrame:
    """A DataFrame saved with ``to_parquet`` or ``to_feather``, as raw cells indexed by row number; an
    index it was saved with (a pivot's models) is its first column."""
    try:
        frame = pd.read_feather(path) if path.suffix.lower() == ".feather" else pd.read_parquet(path)
    except ImportError as exc:
        raise TableError(f"reading {path.suffix} files needs pyarrow ({exc}); save {str(path)!r} as CSV") from exc
    except Exception as exc:  # pyarrow's errors for a file that is not one
        raise TableError(f"cannot read {str(path)!r} as a {path.suffix} file ({type(exc).__name__}: {exc})") from exc
    return _cells_of(frame)


def _json_table(path: Path) -> pd.DataFrame:
    """A table saved as JSON, as raw cells indexed by row number: a list of records
    (``[{"model": ..., "task": ..., "score": ...}]``), pandas' ``to_json`` (by column, by index, split),
    a column of values per key (``{"model": [...], "aircraft": [...]}``) or scores nested by task and
    model either way round (``{"aircraft": {"resnet50": 84.6}}``: which key is which is told as for a
    CSV whose first column has no name)."""
    try:
        data = json.loads(path.read_text(encoding=_encoding(path)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TableError(f"cannot read {str(path)!r} as JSON: {exc}") from exc
    expected = ("a list of records, {column: [values]}, {task: {model: score}} (or models outside), "
                "or pandas' to_json")
    if isinstance(data, dict) and {"columns", "data"} <= set(data):  # to_json(orient="split")
        frame = pd.DataFrame(data["data"], columns=data["columns"], index=data.get("index"))
    elif isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        frame = pd.DataFrame(data)
    elif isinstance(data, dict) and data and all(isinstance(value, (dict, list)) for value in data.values()):
        frame = pd.DataFrame(data)
    else:
        raise TableError(f"{str(path)!r}: cannot read its JSON ({type(data).__name__} at the top) as a table; "
                         f"expected {expected}")
    nested = frame.map(lambda cell: isinstance(cell, (dict, list))).to_numpy()
    if nested.any():
        row, column = np.argwhere(nested)[0]
        raise TableError(f"{str(path)!r}: the value at {frame.index[row]!r}, {frame.columns[column]!r} is itself "
                         f"a {type(frame.iat[row, column]).__name__}; expected a score, in {expected}")
    return _cells_of(frame)


def _cells_of(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame read from a typed file as a CSV reader gives it: names as text, columns of numbers as
    floats, rows numbered from 1; an index other than row numbers becomes the first column
    (unnamed: told apart as a CSV's first column without a name)."""
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.rename_axis(frame.index.name if frame.index.name is not None else "Unnamed: 0").reset_index()
    frame = frame.set_axis([str(column) for column in frame.columns], axis=1)
    frame.index = pd.RangeIndex(1, len(frame) + 1)
    return frame.apply(_as_csv_column)


_TITLE_ROWS_MAX = 5  # a table's title and a note or two above its header; more is not a title


def _title_rows(rows: list[list[str]]) -> dict[int, str]:
    """The leading rows (by position) above a header that are a title, each with its text: empty rows
    and rows whose only filled cell is the first, followed by a row with two cells or more (the
    header); none when no row of the first :data:`_TITLE_ROWS_MAX` + 1 has two. (A header of one
    name after an empty first cell, ",aircraft", is a header.)"""
    cells = [[cell.strip() for cell in row] for row in rows]
    header = next((i for i, row in enumerate(cells) if sum(map(bool, row)) >= 2), 0)
    if not all(not any(row[1:]) for row in cells[:header]):
        return {}
    return {i: (row[0] if row else "") for i, row in enumerate(cells[:header])}


def _group_rows(rows: list[list[str]]) -> int:
    """How many of the leading ``rows`` (at most two) are column groups above the header, as papers
    print them (",Fine-grained,,,General,,"): a row of text with an empty first cell, above a row of
    text (the header) that fills a cell it leaves empty, above a row of cells."""
    count = 0
    while count < 2 and len(rows) >= count + 3:
        group, header = ([cell.strip() for cell in row] for row in rows[count:count + 2])
        filled = pd.Series([cell for cell in group + header if cell], dtype=object)
        text_only = pd.to_numeric(_number_text(filled), errors="coerce").isna().all()
        fills = any(cell and (i >= len(group) or not group[i]) for i, cell in enumerate(header) if i > 0)
        if group[:1] != [""] or not any(group) or not text_only or not fills:
            break
        count += 1
    return count


def _rows_above_header(rows: list[list[str]], row_numbers: list[int] | None = None) -> tuple[int, list[Note]]:
    """How many of the leading ``rows`` are above the header (a title, then column groups), and the
    notes saying so; ``row_numbers``: the rows' numbers in the file (default: lines from 1)."""
    titles = _title_rows(rows[:_TITLE_ROWS_MAX + 1])
    groups = _group_rows(rows[len(titles):])
    number = (lambda i: i + 1) if row_numbers is None else row_numbers.__getitem__
    notes = [_title_note({number(i): text for i, text in titles.items()})] if titles else []
    if groups:
        positions = range(len(titles), len(titles) + groups)
        names = [cell.strip() for i in positions for cell in rows[i] if cell.strip()]
        notes.append(Note(f"{_lines(number(i) for i in positions)} above the header left out: column groups "
                          f"({', '.join(map(repr, names))}), not tasks"))
    return len(titles) + groups, notes


def _title_note(titles: dict[int, str]) -> Note:
    """``titles``: line (or row) number -> text."""
    text = "; ".join(text for text in titles.values() if text)
    return Note(f"{_lines(titles)} above the header left out" + (f" ({text!r}: a title)" if text else ""), text)


def _footnote_note(footnotes: dict[int, str]) -> Note:
    """``footnotes``: line (or row) number -> text."""
    text = "; ".join(text for text in footnotes.values() if text)
    return Note(f"{_lines(footnotes)} below the table left out ({text!r}: read as a note under the table)", text)


def _notes_around(above: dict[int, str], below: dict[int, str]) -> list[Note]:
    """The notes on the lines of text left out around a table read line by line (markdown, LaTeX):
    ``above`` its header (a title), ``below`` its last row (a caption or source); line number -> text."""
    return ([_title_note(above)] if any(above.values()) else []) + \
        ([_footnote_note(below)] if any(below.values()) else [])


def _footnote_rows(raw: pd.DataFrame) -> pd.DataFrame:
    """The last rows of a table of three columns or more whose only filled cell is the first: a
    source or footnote line under the table ("* numbers from [12]"), which no layout reads as a row."""
    if raw.shape[1] < 3:
        return raw.iloc[:0]
    filled = raw.notna() & raw.astype(str).apply(lambda column: column.str.strip() != "")
    rows = np.flatnonzero(~((filled.sum(axis=1) == 1) & filled.iloc[:, 0]).to_numpy())  # the others
    return raw.iloc[rows[-1] + 1 if rows.size else 0:]


def _section_rows(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """``raw`` without its rows of one cell between the header and the last row: labels of the rows below them,
    as papers print them ("Linear evaluation:", then "Fine-tuned:", each over the same methods), no model or task
    themselves; and the label over each row left (None above the first label), the labels by line in its
    ``attrs["labels"]`` (footnote rows under the last row are gone by now: :func:`_footnote_rows`)."""
    sections = pd.Series(None, index=raw.index, dtype=object)
    if raw.shape[1] < 3:
        return raw, sections
    filled = raw.notna() & raw.astype(str).apply(lambda column: column.str.strip() != "")
    first = raw.iloc[:, 0].astype(str).str.strip()
    one_cell = ((filled.sum(axis=1) == 1) & filled.iloc[:, 0]).to_numpy() \
        & pd.to_numeric(_number_text(first), errors="coerce").isna().to_numpy()
    labels = first[one_cell]
    sections = first.where(one_cell).ffill().where(~one_cell)
    sections.attrs["labels"] = labels.to_dict()
    return raw[~one_cell], sections.drop(labels.index)


def _section_name(label: str) -> str:
    """A section label as a name's qualifier: "Linear evaluation:" is "linear evaluation" ("ImageNet-21k" keeps
    its capitals)."""
    label = label.strip().rstrip(":").strip()
    return re.sub(r"^[A-Z][a-z]*(?:-[a-z]+)*(?=\s|$)", lambda word: word.group(0).lower(), label)


def _qualified_by_section(raw: pd.DataFrame, sections: pd.Series, key: str, other: str | None) -> \
        tuple[pd.DataFrame, list[Note]]:
    """``raw`` with each name in its ``key`` column (the model) qualified by the section label over its row
    (:func:`_section_rows`: "BYOL (ours), linear evaluation") where a name (with its ``other`` column's, in a long
    table: a cell) repeats under several labels: the same method in two settings, two models; else the labels are
    only left out. Said either way."""
    labels = sections.attrs.get("labels", {})
    if not labels:
        return raw, []
    section = sections.reindex(raw.index)
    names = raw[key].astype(str).str.strip() + ("" if other is None else " x " + raw[other].astype(str).str.strip())
    under = pd.DataFrame({"name": names, "section": section.fillna("")}).drop_duplicates()
    repeated = under["name"].duplicated(keep=False)
    shown = ", ".join(f"{label!r}" for label in dict.fromkeys(labels.values()))
    if not repeated.any():
        several = len(labels) > 1
        return raw, [Note(f"{_lines(labels)} left out: section label{'s' if several else ''} ({shown}) over the rows "
                          f"below {'them' if several else 'it'}; the {key} names do not repeat across "
                          f"{'them' if several else 'it'}, so they are kept as written")]
    qualified = raw[key].astype(str).str.strip().where(section.isna(), raw[key].astype(str).str.strip() + ", "
                                                       + section.map(_section_name, na_action="ignore"))
    repeats = list(dict.fromkeys(under.loc[repeated, "name"]))
    first = raw[key].astype(str).str.strip() == raw.loc[names == repeats[0], key].astype(str).str.strip().iloc[0]
    examples = list(dict.fromkeys(qualified[first]))
    return raw.assign(**{key: qualified}), [Note(
        f"{_lines(labels)} read as section labels ({shown}) over the rows below them: {key} names repeat under "
        f"several ({', '.join(map(repr, repeats))}), so each {key} under a label is named with it "
        f"(e.g. {' and '.join(map(repr, examples))})")]


def _as_csv_column(cells: pd.Series) -> pd.Series:
    """A spreadsheet column as a CSV reader gives it: floats where every cell is a number, else text."""
    def is_number(value) -> bool:
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))

    if cells.dropna().map(is_number).all():
        return pd.to_numeric(cells, errors="coerce").astype(float)
    return cells.map(str, na_action="ignore")


def _markdown_table(lines: list[str]) -> pd.DataFrame | None:
    """A markdown (pipe) table, as model zoos print them in their READMEs, as raw cells indexed by line
    number; None when the file's ``lines`` hold none: their first line of text is no table row, nor the
    header of one (a row, then its delimiter row) under lines of text. Links keep their text and bold/code
    marks go; the lines of text above the table (a title) and after it (a caption, a source) are left out,
    and the frame's ``attrs["notes"]`` say so."""
    numbered = [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]
    start = next((i for i, (_, line) in enumerate(numbered) if line.startswith("|")), len(numbered))
    under = numbered[start + 1][1] if start + 1 < len(numbered) else ""
    if start == len(numbered) or start > 0 and not _markdown_delimiter_row(under):  # text above: a title over a header
        return None
    end = next((i for i in range(start, len(numbered)) if not numbered[i][1].startswith("|")), len(numbered))
    rows = []
    for number, line in numbered[start:end]:
        cells = _markdown_cells(line)
        if _markdown_rule(cells, under_header=len(rows) == 1):
            continue
        rows.append((number, cells))
    frame = _cells_frame(rows)
    first = numbered[start][0]
    frame.attrs["notes"] = _notes_around({number: lines[number - 1].strip() for number in range(1, first)},
                                         dict(numbered[end:]))
    return frame


def _markdown_delimiter_row(line: str) -> bool:
    """Whether ``line`` is the row under a markdown table's header: rules ("|---|:-:|"), so the row above
    is a header."""
    cells = _markdown_cells(line)
    return line.startswith("|") and any(cells) and _markdown_rule(cells, under_header=True)


def _markdown_cells(line: str) -> list[str]:
    """A markdown table row's cells: links keep their text, bold and code marks go."""
    return [_MARKDOWN_LINK.sub(r"\1", cell).strip().strip("*`_").strip() for cell in line.strip().strip("|").split("|")]


def _markdown_rule(cells: list[str], under_header: bool) -> bool:
    """Whether a markdown table's row holds no cells: an empty row, or a rule: its delimiter row under the
    header, or one further down that a row of cells not measured ("-") cannot be (a cell "--" or ":-")."""
    filled = [cell for cell in cells if cell]
    if not all(_MARKDOWN_RULE.fullmatch(cell) for cell in filled):
        return False
    return not filled or under_header or any(cell != "-" for cell in filled)


_LATEX_RULE = re.compile(r"\\(?:hline|toprule|midrule|bottomrule|cline\{[^}]*\}|cmidrule(?:\([^)]*\))?\{[^}]*\})")
_LATEX_COMMENT = re.compile(r"(?<!\\)%.*$")  # to the end of the line, unless escaped (\%)
_LATEX_CAPTION = re.compile(r"\\caption(?:\[[^\]]*\])?\{(.*)\}")  # \caption[short]{text}
_LATEX_FORMAT = re.compile(r"\\(?:textbf|textit|emph|underline|mathbf|text|texttt|textsc)\{([^{}]*)\}")


def _latex_cell(cell: str) -> str:
    r"""A LaTeX cell's text: formatting commands keep their argument, ``$\pm$`` is ±, ``\%`` is %."""
    text = re.sub(r"\\[,;:! ]", "", cell)  # LaTeX's thin and thick spaces: 84.1\,\%
    text = text.replace("\\%", "%").replace("\\pm", "±").replace("\\_", "_")
    for _ in range(3):  # nested formatting: \textbf{\underline{84.1}}
        text = _LATEX_FORMAT.sub(r"\1", text)
    return re.sub(r"[${}]", "", text).replace("\\", "").strip()


# A citation after a name in a LaTeX cell ("SimCLR~\cite{chen2020simple}", "\citep[p.~3]{x}"): not part of the name
_LATEX_CITE = re.compile(r"\s*~?\s*\\cite[a-z]*\*?(?:\[[^\]]*\])*\{(?P<keys>[^}]*)\}")
# A footnote mark after a name: "ResNet-50$^\dagger$", "Swin-T^*", "$^{*}$", "\textsuperscript{a}", "\footnotemark[2]"
# ("10^6" is no mark: only symbols are)
_LATEX_MARK_SYMBOLS = {"dagger": "†", "dag": "†", "ddagger": "‡", "ddag": "‡", "star": "*", "ast": "*", "S": "§",
                       "P": "¶", "#": "#"}
_LATEX_MARK_SYMBOL = r"(?:\\(?:dagger|ddagger|dag|ddag|star|ast|S|P|#)(?![A-Za-z])|[*+†‡§¶#])"
_LATEX_MARK = re.compile(r"\s*\$?\s*\^\s*(?:\{\s*(?:" + _LATEX_MARK_SYMBOL + r"\s*)+\}|" + _LATEX_MARK_SYMBOL
                         + r")\s*\$?|\s*\\textsuperscript\{[^{}]*\}|\s*\\footnotemark(?:\[[^\]]*\])?"
                         r"|\s*\\tnote\{[^{}]*\}")


def _latex_name(cell: str) -> tuple[str, str]:
    r"""A LaTeX cell's text without its citations and footnote marks (:func:`_latex_cell`), and with them kept
    readable ("SimCLR [chen2020simple]", "ResNet-50†"): the name to use where dropping them would make two
    names one."""
    plain = _latex_cell(_LATEX_MARK.sub("", _LATEX_CITE.sub("", cell)))

    def symbols(mark: re.Match) -> str:
        found = re.findall(r"\\(?:textsuperscript|tnote)\{([^{}]*)\}|\\footnotemark(?:\[([^\]]*)\])?|\\([A-Za-z#]+)"
                           r"|([*+†‡§¶#])", mark.group(0))
        return "".join(written or number or _LATEX_MARK_SYMBOLS.get(command, "") or char
                       for written, number, command, char in found)

    kept = _latex_cell(_LATEX_MARK.sub(symbols, _LATEX_CITE.sub(lambda cite: f" [{cite['keys']}]", cell)))
    return plain, kept


_LATEX_SPAN = re.compile(r"\\(multirow|multicolumn)\{(-?\d+)\}(?:\[[^\]]*\])?\{[^}]*\}(?:\[[^\]]*\])?\{")


def _latex_span(cell: str) -> tuple[str, str | None, int]:
    r"""A cell that is one ``\multirow{n}{width}{text}`` or ``\multicolumn{n}{align}{text}``: (text, the
    command, n); any other cell: (cell, None, 1)."""
    match = _LATEX_SPAN.match(cell.strip())
    if match is None:
        return cell, None, 1
    depth, rest = 1, cell.strip()[match.end():]
    for end, char in enumerate(rest):  # the argument's closing brace, past nested ones (\textbf{...})
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[:end], match.group(1), int(match.group(2))
    return cell, None, 1


def _latex_table(lines: list[str], path: Path) -> pd.DataFrame | None:
    r"""A LaTeX tabular copied from a paper's source (rows ``a & b \\``, rules ``\midrule``), as raw
    cells indexed by line number; None when the file (its ``lines``) holds none. The first row is the header.

    A row with a ``\multicolumn`` over several columns above the header names groups of columns
    (``Fine-grained`` over three tasks): it is left out, its line numbers in the frame's
    ``attrs["group_rows"]``, but its other cells (``\multirow{2}{*}{Model}``) name the header's empty
    cells under them (:func:`_header_under_groups`). A row of one cell under the header (``\multicolumn{13}{l}{Linear
    evaluation:}``, or a line of text ending a row) is kept as a row of one cell: a section label over the
    rows below it (:func:`_section_rows`). A ``\multirow`` cell fills the empty cells below it (above it, for a
    negative count) that it spans. Citations and footnote marks are dropped from the cells
    (:func:`_latex_name`), unless that makes two names in a column one. A ``\caption`` or a line of text
    above the header or below the last row (a title, a source) is left out; the frame's ``attrs["notes"]`` say
    what was read so."""
    if not (path.suffix.lower() == ".tex" or any("\\\\" in line for line in lines)):
        return None  # no row ends: not LaTeX (a CSV is read as one)
    rows, group_rows, spans = [], [], {}  # spans: column -> (text, rows still to fill)
    kept_marks: dict[int, list[str]] = {}  # line number -> its cells with their citations and marks kept
    as_written: dict[int, list[str]] = {}  # line number -> its cells as the file writes them
    above_header: list[list[tuple[str, str | None, int]]] = []  # the cells of the rows of column groups
    texts_around: dict[int, str] = {}  # line number -> the text of a \caption or of a line of text
    for number, line in enumerate(lines, start=1):
        line = _LATEX_RULE.sub("", _LATEX_COMMENT.sub("", line)).strip()
        if "&" not in line and "\\multicolumn" not in line or line.startswith("\\begin") or line.startswith("\\end"):
            label = _latex_row_of_text(line) if rows else None
            if label is not None:  # a line of text ending a row under the header: a section label
                rows.append((number, [label]))
                continue
            # not a row: a caption or a line of text ("{\small" holds none) is said if above the header or below
            # the last row (a title, a source)
            caption = _LATEX_CAPTION.match(line)
            text = _latex_cell(caption.group(1) if caption else "" if line.startswith("\\") else
                               re.sub(r"\\[A-Za-z]+", "", line))
            if text:
                texts_around[number] = text
            continue
        cells = [_latex_span(cell) for cell in line.rstrip("\\ ").split("&")]
        filled = [(column, text, command) for column, (text, command, _) in enumerate(cells) if _latex_cell(text)]
        if rows and len(filled) == 1 and (filled[0][0] == 0 or filled[0][2] == "multicolumn"):
            rows.append((number, [_latex_cell(filled[0][1])]))  # one cell under the header: a section label
            continue
        if any(command == "multicolumn" and count > 1 for _, command, count in cells):
            group_rows.append(number)
            if not rows:
                above_header.append(cells)
            continue
        texts, marked = [], []
        for column, (text, command, count) in enumerate(cells):
            if command == "multirow" and count < 0:  # spans the rows above it: fill their empty cells
                for above_number, above in rows[count + 1:]:
                    if column < len(above) and not above[column]:
                        above[column] = kept_marks[above_number][column] = _latex_cell(text)
            elif command == "multirow":
                spans[column] = (text, count - 1)
            elif not text.strip() and spans.get(column, ("", 0))[1] > 0:
                text, left = spans[column]
                spans[column] = (text, left - 1)
            plain, kept = _latex_name(text)
            texts.append(plain)
            marked.append(kept)
        as_written[number] = [text.strip() for text, _, _ in cells]
        kept_marks[number] = marked
        rows.append((number, texts))
    if not rows:
        return None
    notes = []
    if above_header:
        rows[0], header_notes = _header_under_groups(rows[0], above_header)
        notes += header_notes
    header = rows[0][1]
    if group_rows and group_rows[0] < rows[0][0] and \
            pd.to_numeric(_number_text(pd.Series(header[1:], dtype=object)), errors="coerce").notna().any():
        raise TableError(f"{str(path)!r}: line {group_rows[0]} spans columns (\\multicolumn) and no row after it names "
                         "every column; keep one header row that names every column, then import again")
    notes += _latex_marks_dropped(rows, kept_marks, as_written)
    frame = _cells_frame(rows)
    frame.attrs["group_rows"] = tuple(group_rows)
    frame.attrs["notes"] = _notes_around({n: text for n, text in texts_around.items() if n < rows[0][0]},
                                         {n: text for n, text in texts_around.items() if n > rows[-1][0]}) + notes
    return frame


def _latex_row_of_text(line: str) -> str | None:
    r"""The text of a LaTeX row of one cell without a ``&`` ("\textit{Linear evaluation:} \\"); None for any
    other line (a command such as ``\addlinespace \\``, a line that ends no row)."""
    if not line.endswith("\\\\"):
        return None
    cell = line[:-2].strip()
    unwrapped = cell
    for _ in range(3):
        unwrapped = _LATEX_FORMAT.sub(r"\1", unwrapped)
    if re.match(r"\\[A-Za-z]", unwrapped.lstrip("{")):
        return None
    return _latex_cell(cell) or None


def _header_under_groups(header: tuple[int, list[str]], groups: list[list[tuple[str, str | None, int]]]) -> \
        tuple[tuple[int, list[str]], list[Note]]:
    r"""A LaTeX header of two rows read as one: the header row (line number, cells) under its rows of column groups
    (``groups``, each cell as :func:`_latex_span` gives it). A cell above the header's empty one
    (``\multirow{2}{*}{Model}``) names it; a cell under a group keeps its own name (the task: "Flowers" under
    "Fine-grained"), unless it is only a score's name ("Top-1" under "ImageNet": the group's name) or it
    repeats under other groups ("Linear" under "CIFAR-10" and "Pets": "CIFAR-10 Linear"); said."""
    number, cells = header
    cells = list(cells)
    filled, combined = [], []
    for group_row in groups:
        position, spanned = 0, []
        for text, command, count in group_row:
            text = _latex_name(text)[0]
            width = max(count, 1) if command == "multicolumn" else 1
            if command == "multicolumn":
                spanned.append((position, width, text))
            elif text and position < len(cells) and not cells[position]:
                cells[position] = text
                filled.append(text)
            position += width
        names = list(cells)
        for start, width, group in spanned:
            for column in range(start, min(start + width, len(cells))):
                name = names[column]
                score_name = _header_name(name) in COLUMN_NAMES["score"]
                if not group or not name or not score_name and names.count(name) == 1:
                    cells[column] = name or group
                    continue
                cells[column] = group if score_name and width == 1 else f"{group} {name}"
                combined.append(cells[column])
    notes = []
    if filled:
        notes.append(Note(f"line {number}: the header's empty cells named from the row above it (\\multirow): "
                          f"{', '.join(map(repr, filled))}"))
    if combined:
        notes.append(Note(f"line {number}: columns named with their group above them, their own names being a "
                          f"score's or repeated under other groups: {', '.join(map(repr, combined))}"))
    return (number, cells), notes


def _latex_marks_dropped(rows: list[tuple[int, list[str]]], kept_marks: dict[int, list[str]],
                         as_written: dict[int, list[str]]) -> list[Note]:
    """Which cells of a LaTeX table lost a citation or footnote mark (:func:`_latex_name`), said; in a column where
    that made two names one ("ResNet-50" and "ResNet-50$^\\dagger$", a reproduction), those cells keep them,
    readable ("ResNet-50†"). ``rows`` are changed in place."""
    dropped, kept = [], []
    for column in range(max(len(cells) for _, cells in rows)):
        body = [(number, cells) for number, cells in rows[1:] if number in kept_marks and column < len(cells)]
        spellings: dict[str, set[str]] = {}  # a name without its marks -> the names with them
        for number, cells in body:
            spellings.setdefault(cells[column], set()).add(kept_marks[number][column])
        for number, cells in body:
            if cells[column] == kept_marks[number][column]:
                continue  # nothing dropped
            if len(spellings[cells[column]]) > 1:  # two names become one without their marks
                cells[column] = kept_marks[number][column]
                kept.append(cells[column])
            else:
                dropped.append((as_written[number][column], cells[column]))
    notes = []
    if dropped:
        shown = "; ".join(f"{written!r} as {read!r}" for written, read in list(dict.fromkeys(dropped))[:_EXAMPLES])
        more = ", ..." if len(set(dropped)) > _EXAMPLES else ""
        notes.append(Note(f"dropped citations (\\cite) and footnote marks from {len(dropped)} cell(s): read {shown}{more}"))
    if kept:
        notes.append(Note(f"kept the citations or footnote marks of {', '.join(map(repr, kept))}: without them, two "
                          "names in a column would be one"))
    return notes


def _encoding(path: Path) -> str:
    """UTF-16 where the file starts with its byte-order mark (a spreadsheet's "Unicode text"), else UTF-8
    (with or without its mark)."""
    with path.open("rb") as handle:
        start = handle.read(2)
    return "utf-16" if start in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"


def _delimiter(path: Path, encoding: str = "utf-8-sig") -> str:
    """The table's field separator: comma, tab (a spreadsheet's copy) or semicolon, from its first lines.

    The one that splits the most lines into the same number (two or more) of fields: a title line
    above the header has its own punctuation (csv.Sniffer took a TSV's titled header for one comma
    field), and a comma-decimal locale's ';' table has commas in its cells but not in its header.
    """
    with path.open(newline="", encoding=encoding, errors="replace") as handle:
        lines = [line for line in handle.read(16384).splitlines()[:50] if line.strip()]
    best, best_lines = ",", 0  # one column, or too little to tell: a CSV
    for delimiter in (",", "\t", ";"):
        widths = Counter(len(row) for row in csv.reader(lines, delimiter=delimiter))
        width, count = max(widths.items(), key=lambda item: (item[1], item[0]), default=(1, 0))
        if width >= 2 and count > best_lines:
            best, best_lines = delimiter, count
    return best


def _fact_columns(raw: pd.DataFrame, prefixes: tuple[str, ...], path: Path) -> list[str]:
    """The fact columns (names starting with ``prefixes``), each checked to be a valid param name."""
    facts = [c for c in raw.columns if c.startswith(prefixes)]
    for column in facts:
        try:
            tracking.checked_name(column)
        except tracking.TrackingError as exc:
            raise TableError(f"{str(path)!r}: fact column {exc}") from None
    return facts


def _wide_rows(raw: pd.DataFrame, path: Path, key: str = "model") -> \
        tuple[pd.DataFrame, tuple[tuple[str, str], ...]]:
    """A wide table (``key="model"``: a model per row, one column per task, ``model_*`` facts) or a
    transposed one (``key="task"``: a task per row, one column per model, ``task_*`` facts) as long
    rows (index = line), and the transposed table's rows read as model facts under another name."""
    other = "task" if key == "model" else "model"
    raw, text_read_as = _text_columns_as_facts(raw, key)
    columns = _wide_columns(raw.columns, key)
    unnamed = [c for c in columns if _unnamed(c)]
    if unnamed:
        first_row = raw.iloc[0][columns] if len(raw) else pd.Series(dtype=object)
        two_rows = (raw.iloc[0].isna()[key] if len(raw) else False) and pd.to_numeric(
            _number_text(first_row.astype(str)), errors="coerce").isna().all()
        hint = (f"; the next line names them ({', '.join(map(repr, first_row.dropna().astype(str)[:3]))}, ...): "
                "a header of two rows (groups above tasks), as papers print it? keep only the row of "
                f"{other} names") if two_rows else ""
        position = list(raw.columns).index(unnamed[0])
        if position < list(raw.columns).index(key):
            raise TableError(f"{str(path)!r}: column {position + 1}, before the {key} column, has no name in the "
                             f"header; name it ({key}_<fact> for a fact of the {key}s) or delete it")
        raise TableError(f"{str(path)!r}: a {other} column has no name in the header (column "
                         f"{position + 1}); every column after {key} needs one{hint}")
    if not columns:
        raise TableError(f"{str(path)!r} has no {other} column: after {key}, one column per {other}")
    facts = _fact_columns(raw, (f"{key}_",), path)
    keys = _names(raw, key, path)
    other_facts, read_as = None, text_read_as
    # Rows named model_* (Params, FLOPs, ...) in a transposed table are the models' facts, rows named task_*
    # (#Classes, Train size, Domain) in a wide one the tasks': as columns in the other layout.
    fact_name = (lambda name: model_fact_name(name, beside_tasks=True)) if key == "task" else task_fact_name
    fact_names = keys.map(lambda name: name if name.startswith(f"{other}_") else fact_name(name))
    fact_rows = fact_names.notna()
    if fact_rows.any():
        read_as += tuple((k, f) for k, f in zip(keys[fact_rows], fact_names[fact_rows]) if k != f)
        other_facts = raw.loc[fact_rows, columns].set_axis(fact_names[fact_rows]).T
        _fact_columns(other_facts, (f"{other}_",), path)
        raw, keys = raw.loc[~fact_rows], keys[~fact_rows]
    numbers = _wide_numbers(raw.assign(**{key: keys}), columns, key, path)
    names = _task_names(columns) if other == "task" else {column: str(column).strip() for column in columns}
    read_as += tuple((str(column).strip(), name) for column, name in names.items() if name != str(column).strip())
    long = pd.concat([pd.DataFrame({key: keys, other: names[column], "score": numbers[column]})
                      .join(raw[facts]) for column in columns])
    if other_facts is not None and len(other_facts.columns):
        other_facts.index = other_facts.index.map(lambda c: str(c).strip())
        long = long.join(other_facts.apply(_numbers_where_all_are), on=other)
        facts = [*facts, *other_facts.columns]
    return long[["model", "task", "score", *facts]], read_as


def _model_column_telling_rows_apart(raw: pd.DataFrame, written: Mapping[str, str]) -> tuple[pd.DataFrame, list[Note]]:
    """A wide table whose model column names two rows alike ("Arch": RN50 for SimCLR and for BYOL) beside another
    column of text that could name the model ("Feature": the method): that column as the model where it tells every
    row apart, else the two together ("DINOv2 ViT-g/14", in the table's order) where they do, the others kept as
    model facts; said. Otherwise as it is (a cell given twice is reported). ``written``: each column's header as
    the table writes it."""
    rows = ~raw["model"].astype(str).str.strip().str.lower().isin(SUMMARY_NAMES)
    model = raw.loc[rows, "model"].astype(str).str.strip()
    if model.is_unique:
        return raw, []
    texts = [c for c in raw.columns if c != "model" and not str(c).startswith("task_") and raw.loc[rows, c].notna().all()
             and pd.to_numeric(_number_text(raw.loc[rows, c].astype(str)), errors="coerce").isna().all()]
    for column in texts:
        names = raw.loc[rows, column].astype(str).str.strip()
        fact = _fact_for_model_column(raw, written)
        if names.is_unique:
            raw = raw.rename(columns={"model": fact}).rename(columns={column: "model"})
            return raw, [Note(f"read {written[column]!r} as the model: it names every row apart, and "
                              f"{written['model']!r} (read as the model by its name) names rows alike; "
                              f"{written['model']!r} is kept as {fact}")]
    for column in texts:
        first, second = sorted(["model", column], key=list(raw.columns).index)
        pairs = raw[first].astype(str).str.strip() + " " + raw[second].astype(str).str.strip()
        if pairs[rows].is_unique:
            facts = {"model": _fact_for_model_column(raw, written),
                     column: column if str(column).startswith("model_") else _fact_slug(written[column])}
            raw = raw.rename(columns=facts).assign(model=pairs)
            kept = ", ".join(f"{written[c]!r} as {facts[c]}" for c in (first, second))
            return raw, [Note(f"read {written[first]!r} and {written[second]!r} together as the model (e.g. "
                              f"{pairs[rows].iloc[-1]!r}): neither names every row apart, both together do; each is "
                              f"kept as a model fact ({kept})")]
    return _models_told_apart_by_a_fact(raw, rows, written)


def _models_told_apart_by_a_fact(raw: pd.DataFrame, rows: pd.Series, written: Mapping[str, str]) -> \
        tuple[pd.DataFrame, list[Note]]:
    """A wide table's models named alike on two rows that a model fact tells apart (ViT's scaling table: ViT-L/16
    pre-trained for 7 and for 14 epochs), each such model named with its fact ("ViT-L/16 (Epochs: 14)"), the first
    such fact in the table's order; said. As it is where none does."""
    model = raw["model"].astype(str).str.strip()
    alike = model.duplicated(keep=False) & rows
    for column in [c for c in raw.columns if str(c).startswith("model_") and raw.loc[alike, c].notna().all()]:
        values = raw[column].astype(str).str.strip()
        if not (model[alike] + "\0" + values[alike]).is_unique:
            continue
        header = written.get(column, column)
        named = model.where(~alike, model + " (" + str(header) + ": " + values + ")")
        examples = " and ".join(map(repr, named[alike & (model == model[alike].iloc[0])]))
        return raw.assign(model=named), [Note(
            f"models named alike on several rows ({', '.join(map(repr, dict.fromkeys(model[alike])))}) are told apart "
            f"by {str(header)!r}: each is named with it (e.g. {examples})")]
    return raw, []


def _fact_for_model_column(raw: pd.DataFrame, written: Mapping[str, str]) -> str:
    """The model fact that the column read as the model by its name ("Arch") becomes, when another names the model."""
    fact = "model_architecture" if _header_name(written["model"]) in ARCHITECTURE_NAMES else _fact_slug(written["model"])
    return fact if fact not in raw.columns else f"{fact}_as_written"


def _fact_slug(header: str) -> str:
    """A header as a model fact's name: "Pre-training" is model_pre_training."""
    return f"model_{re.sub(r'[^0-9a-z]+', '_', str(header).lower()).strip('_') or 'name'}"


def _task_names(columns: list[str]) -> dict[str, str]:
    """A wide table's task columns -> their tasks: the header without a trailing unit
    (:func:`task_name_without_unit`), unless that is another column's name too."""
    written = [str(column).strip() for column in columns]
    stripped = [task_name_without_unit(column) for column in columns]
    uses = pd.Series(written + [name for name, as_written in zip(stripped, written) if name != as_written]).value_counts()
    return {column: name if uses[name] == 1 else as_written
            for column, as_written, name in zip(columns, written, stripped)}


def _without_index_column(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[Note]]:
    """``raw`` without a row index saved with the table (pandas' ``to_csv()`` without ``index=False``): a
    first column without a name (or "Unnamed: 0") numbering the rows 0..n-1 or 1..n; noted."""
    if raw.shape[1] < 3 or not _unnamed(raw.columns[0]):
        return raw, []
    numbers = pd.to_numeric(_number_text(raw.iloc[:, 0]), errors="coerce").to_numpy(dtype=float)
    first = next((start for start in (0, 1) if np.array_equal(numbers, np.arange(start, start + len(raw)))), None)
    if first is None:
        return raw, []
    return raw.iloc[:, 1:], [Note(f"left out the first column (no name, numbered {first} to {first + len(raw) - 1}): "
                                  "a row index saved with the table (pandas' to_csv() without index=False)")]


def _unnamed(column) -> bool:
    return str(column).startswith("Unnamed:") or not str(column).strip()


def _text_columns_as_facts(raw: pd.DataFrame, key: str) -> tuple[pd.DataFrame, tuple[tuple[str, str], ...]]:
    """A wide table's columns of text (a model's type, a pre-training dataset; a transposed table's
    task domain) renamed as ``<key>_<name>`` facts: a column of scores holds numbers. A column of
    text without a name (a LaTeX ``\\multirow`` group) is ``<key>_group``."""
    renamed, read_as = {}, []
    for column in _wide_columns(raw.columns, key):
        text = _number_text(raw[column]).dropna()
        if not len(text) or pd.to_numeric(text, errors="coerce").notna().any():
            continue
        slug = "group" if _unnamed(column) else re.sub(r"[^0-9a-z]+", "_", str(column).lower()).strip("_") or "group"
        name = f"{key}_{slug}"
        if name in raw.columns or name in renamed.values():
            continue  # a second column of that name: left as a task, whose text is an error naming its lines
        renamed[column] = name
        read_as.append(("(a column without a name)" if _unnamed(column) else str(column), name))
    return raw.rename(columns=renamed), tuple(read_as)


def _numbers_where_all_are(values: pd.Series) -> pd.Series:
    """The column as numbers when every value given is one (a fact read from a row of text), else as it is."""
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers if numbers.notna().sum() == values.notna().sum() else values


def _names(raw: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """A name column, stripped; an empty name is an error naming its lines."""
    names = raw[column].astype(str).str.strip()
    empty = raw.index[raw[column].isna() | (names == "")]
    if len(empty):
        raise TableError(f"{str(path)!r}: empty {column!r} on {_lines(empty)}; every row needs a model and a task name")
    return names


def _number_text(text: pd.Series) -> pd.Series:
    """A column of cells as typed in a paper, reduced to the numbers' text (a dash: NaN)."""
    if pd.api.types.is_numeric_dtype(text):
        return text
    text = text.mask(text.astype(str).str.fullmatch(_NOT_MEASURED))  # a dash: not measured (NaN)
    # best-result and footnote marks (**84.1**, 84.1*, 84.1†) and a typeset minus sign (−0.5)
    text = text.str.strip().str.strip("*_†‡§ ").str.replace("\u2212", "-", regex=False)
    return text.str.replace(_PAPER_DECORATION, "", regex=True)


def _numbers(raw: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """A score column as floats (empty = NaN); text that is not a number is an error naming its lines.

    Cells copied from a paper keep their number: a trailing ``%`` ("84.1%") and a spread after it
    ("84.1 ± 0.3", "84.1+-0.3") are dropped, and so are bold and footnote marks ("**84.1**", "84.1†");
    the number is stored as written (84.1, not 0.841). A dash ("-", "—") is a cell the paper did not
    measure, as an empty one.
    """
    values, bad = _numbers_and_not(raw, column)
    if len(bad):
        examples = ", ".join(repr(str(v)) for v in raw.loc[bad[:3], column])
        raise TableError(f"{str(path)!r}: {column!r} is not a number on {_lines(bad)} ({examples})")
    return values


def _numbers_and_not(raw: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Index]:
    """A score column as floats (as :func:`_numbers` reads it; text that is not a number: NaN), and the
    lines of its text that is not a number."""
    text = _number_text(raw[column])
    values = pd.to_numeric(text, errors="coerce").astype(float)
    return values, raw.index[values.isna() & text.notna()]


def _wide_numbers(raw: pd.DataFrame, columns: list[str], key: str, path: Path) -> dict[str, pd.Series]:
    """A wide (or transposed) table's score columns as floats; text that is not a number in any of them is
    one error naming every such cell, in file order."""
    other = "task" if key == "model" else "model"
    values, bad = {}, []
    for column in columns:
        values[column], lines = _numbers_and_not(raw, column)
        bad += [(line, raw.at[line, key], column, raw.at[line, column]) for line in lines]
    if bad:
        bad.sort(key=lambda cell: cell[0])  # by line; a line's cells in column order (a stable sort)
        cells = "; ".join(f"line {line} ({key} {name!r}, {other} {str(column).strip()!r}): {str(text)!r}"
                          for line, name, column, text in bad[:_SHOWN_CELLS])
        more = f"; and {len(bad) - _SHOWN_CELLS} more" if len(bad) > _SHOWN_CELLS else ""
        raise TableError(f"{str(path)!r}: {len(bad)} cell(s) are not a number ({cells}{more}); correct them, or "
                         "empty them (or write a dash) where nothing was measured, and import again")
    return values


_CONFIGURATION = "(configuration)"  # a long table's hyperparameters, for --repeats max over seeded configurations


def _cells(long: pd.DataFrame, repeats: str = "last", seed_columns: list[str] | tuple[str, ...] = ()) -> \
        tuple[pd.DataFrame, list[SkippedRows]]:
    """One row per (model, task): rows without a finite score dropped, then each cell given on
    several lines reduced to one by ``repeats`` (:data:`REPEATS`; "max" of lines that are seeds of several
    configurations, column ``(configuration)``: the best configuration's mean over its seeds); its facts are
    its last line's. ``seed_columns``: the table's columns that tell the repeated lines apart (a seed, a
    hyperparameter), named in the report."""
    skipped = []
    configurations = long[_CONFIGURATION] if _CONFIGURATION in long.columns else None
    long = long.drop(columns=_CONFIGURATION, errors="ignore")
    scores = long["score"].to_numpy()
    missing = np.isnan(scores)
    infinite = np.isinf(scores)  # inf, -inf, and numbers too large for a float (1e309)
    if missing.any():
        # the cell as written (a dash, an empty field) is gone by now: "= nan" would misquote it
        skipped.append(SkippedRows("no score (empty, nan or a dash)", tuple(long.index[missing]), tuple(
            f"{r.model} x {r.task}" for r in long[missing].head(_EXAMPLES).itertuples())))
    if infinite.any():
        skipped.append(SkippedRows("an infinite score (inf, or a number beyond a float's range such as 1e309); "
                                   "fix these rows and import again", tuple(long.index[infinite]),
                                   _examples(long[infinite])))
    long = long[~(missing | infinite)]
    repeated = long.duplicated(subset=["model", "task"], keep="last")
    if not repeated.any():
        return long, skipped
    seeds = f" (one line per {', '.join(map(repr, seed_columns))})" if seed_columns else ""
    if repeats == "max" and configurations is not None:  # the best configuration, each as its seeds' mean
        combined = long.duplicated(subset=["model", "task"], keep=False)
        skipped.append(SkippedRows(f"a (model, task) cell given on several lines{seeds}, imported as its best "
                                   "configuration's mean over seeds (--repeats max)", tuple(long.index[combined]),
                                   _examples(long[combined]), combined=_cell_count(long[combined])))
        means = long.groupby([long["model"], long["task"], configurations.reindex(long.index)],
                             sort=False)["score"].transform("mean")
        scores = means.groupby([long["model"], long["task"]], sort=False).transform("max")
        return _all_source_runs(long.assign(score=scores))[~repeated], skipped
    if repeats == "last" and seed_columns:
        skipped.append(SkippedRows(f"a (model, task) cell given on several lines{seeds}, of which the last is kept "
                                   "(--repeats last, the default); --repeats mean imports their mean, --repeats max "
                                   "their best",
                                   tuple(long.index[repeated]), _examples(long[repeated])))
        return long[~repeated], skipped
    if repeats == "last":
        dropped = long[repeated]
        kept = long[~repeated].set_index(["model", "task"])["score"]
        kept_scores = kept.reindex(pd.MultiIndex.from_arrays([dropped["model"], dropped["task"]])).to_numpy()
        gaps = np.abs(dropped["score"].to_numpy() - kept_scores)
        differ = gaps > 1e-9 * np.maximum(np.abs(kept_scores), 1.0)
        agreement = (f"; {int(differ.sum())} of them {'disagrees' if differ.sum() == 1 else 'disagree'} with the "
                     f"line kept, by up to {gaps.max():.4g}: check which is right" if differ.any()
                     else "; every repeat has the kept line's score")
        examples = tuple(f"{r.model} x {r.task} = {r.score} (kept: {k})" for r, k, d
                         in zip(dropped.itertuples(), kept_scores, differ) if d)[:_EXAMPLES] or _examples(dropped)
        skipped.append(SkippedRows("a (model, task) cell given again on a later line, which is kept "
                                   f"(--repeats mean or max combines them instead){agreement}",
                                   tuple(long.index[repeated]), examples))
        return long[~repeated], skipped
    combined = long.duplicated(subset=["model", "task"], keep=False)
    skipped.append(SkippedRows(f"a (model, task) cell given on several lines{seeds}, imported as their {repeats} "
                               "(--repeats)", tuple(long.index[combined]), _examples(long[combined]),
                               combined=_cell_count(long[combined])))
    scores = long.groupby(["model", "task"], sort=False)["score"].transform(repeats)
    return _all_source_runs(long.assign(score=scores))[~repeated], skipped


def _all_source_runs(long: pd.DataFrame) -> pd.DataFrame:
    """A combined cell's lineage: the runs of all its lines (:data:`SOURCE_RUN_IDS`), not its last line's."""
    if SOURCE_RUN_IDS not in long.columns:
        return long
    return long.assign(**{SOURCE_RUN_IDS: long.groupby(["model", "task"], sort=False)[SOURCE_RUN_IDS].transform(",".join)})


def _warn(message: str) -> None:
    warnings.warn(message, SkippedRowsWarning, stacklevel=3)


def _one_name_per_dataset(long: pd.DataFrame) -> tuple[pd.DataFrame, list[Note]]:
    """A long table's tasks that name one public dataset ("Oxford-IIIT Pet" and "oxford_pets": rows logged by
    two scripts) under one name, its most used: apart, the dataset would count twice in popularity and be
    its own history when one is the target. Models whose names differ only in case or punctuation are said, not merged (two
    checkpoints may share a name's letters)."""
    notes = []
    facts = load_task_facts()
    uses = long["task"].value_counts(sort=False)
    datasets: dict[str, list[str]] = {}
    for task in uses.index:
        row = find_task_facts(task, facts)
        if row is not None:
            datasets.setdefault(str(row["dataset"]), []).append(task)
    renames = {}
    for dataset, names in datasets.items():
        if len(names) > 1:
            kept = max(names, key=lambda name: uses[name])  # the first of the most used
            renames.update({name: kept for name in names if name != kept})
            notes.append(Note(f"read {', '.join(map(repr, names))} as one task, {kept!r}: each names the public "
                              f"dataset {dataset}"))
    if renames:
        long = long.assign(task=long["task"].replace(renames))
    spellings: dict[str, list[str]] = {}
    for model in long["model"].drop_duplicates():
        spellings.setdefault(task_name_key(model), []).append(model)
    alike = [names for names in spellings.values() if len(names) > 1]
    if alike:
        notes.append(Note("model names that differ only in case or punctuation: "
                          f"{'; '.join(', '.join(map(repr, names)) for names in alike)}; if each group is one "
                          "model, name it alike and import again"))
    return long, notes


def public_task_facts(tasks) -> dict[str, dict[str, object]]:
    """task -> its ``task_*`` fact params from the public task facts, for the tasks named like a public dataset."""
    facts = load_task_facts()
    found = {}
    for task in tasks:
        row = find_task_facts(task, facts)
        if row is not None:
            found[task] = {param: row[column] for param, column in PUBLIC_TASK_FACTS.items()}
    return found


def tasks_without_facts(table: pd.DataFrame) -> list[str]:
    """The table's tasks with neither public task facts nor a ``task_class_count``, ``task_train_size`` or
    ``task_domain`` of their own: Fennec's similar-task weighting and meta phase cannot place them."""
    tasks = table["task"].drop_duplicates()
    own = [c for c in ("task_class_count", "task_train_size", "task_domain") if c in table.columns]
    described = set(table.loc[table[own].notna().any(axis=1), "task"]) if own else set()
    public = public_task_facts(tasks)
    return [t for t in tasks if t not in described and t not in public]


# Datasets almost only ever reported as VTAB tasks, whose papers (adapters, prompt and low-rank tuning)
# mostly train on VTAB-1k's 1,000 images per task rather than the full training set the public facts give.
VTAB_ONLY_TASKS = frozenset({"clevr_count", "clevr_distance", "dmlab", "kitti", "dsprites_location",
                             "dsprites_orientation", "smallnorb_label_azimuth", "smallnorb_label_elevation",
                             "patch_camelyon", "diabetic_retinopathy_detection"})
VTAB_HINT_TASKS = 3  # this many of them in one table: likely a VTAB table
# VTAB's other tasks, also on 1,000 training images in VTAB-1k (oxford_pets: VTAB's oxford_iiit_pet).
VTAB_TASKS = VTAB_ONLY_TASKS | {"caltech101", "cifar100", "dtd", "flowers", "pets", "oxford_pets", "sun397", "svhn",
                                "eurosat", "resisc45"}


# Names saying how the model was adapted: a linear probe on frozen features, or a fine-tune.
_LINEAR_PROBE_WORDS = re.compile(r"\blinear\b|\blin\.|\bfrozen\b|\bprob(?:e|ing)\b", re.IGNORECASE)
_FINE_TUNE_WORDS = re.compile(r"fine[- ]?tun|\bft\b|end[- ]to[- ]end", re.IGNORECASE)


def mixed_regime_note(table: pd.DataFrame) -> str | None:
    """What to know when the models (or tasks) are named as linear probes and as fine-tunes, as a paper's
    "Linear evaluation:" and "Fine-tuned:" sections are read: each is ranked as one of its own."""
    for key in ("model", "task"):
        names = pd.Series(table[key].drop_duplicates().astype(str))
        linear = names[names.str.contains(_LINEAR_PROBE_WORDS)].tolist()
        tuned = names[names.str.contains(_FINE_TUNE_WORDS)].tolist()
        if linear and tuned:
            return (f"the {key}s mix linear probes ({_named_examples(linear)}) and fine-tunes "
                    f"({_named_examples(tuned)}): each is taken as a {key} of its own, so the two regimes are ranked "
                    "side by side (a fine-tune mostly scores higher); to measure or serve one regime, import each "
                    "part under a --source of its own")
    return None


def vtab_train_size_note(table: pd.DataFrame) -> str | None:
    """What to check when the table looks like VTAB's and its tasks take their training-set size from the
    public facts: VTAB-1k trains on 1,000 images per task, which would place them among the history's
    tasks by another size."""
    if "task_train_size" in table.columns and table["task_train_size"].notna().any():
        return None
    facts = load_task_facts()
    found = {task: row.name for task in table["task"].drop_duplicates()
             if (row := find_task_facts(task, facts)) is not None}
    if sum(name in VTAB_ONLY_TASKS for name in found.values()) < VTAB_HINT_TASKS:
        return None
    vtab = [task for task, name in found.items() if name in VTAB_TASKS]
    return (f"{len(vtab)} tasks are VTAB's ({_named_examples(vtab)}): their training-set size is the full dataset's "
            "(public task facts); if the table reports VTAB-1k (1,000 training images each, as adapter and prompt "
            "tuning papers do), give that size: a row named 'Train size' (wide layout) or a task_train_size column")


def cell_records(table: pd.DataFrame, *, source: str, source_file: str) -> list[tracking.RunRecord]:
    """The ``external`` run of each row of ``table`` (:func:`read_table`'s rows), public task facts included,
    and the runs of an MLflow export it was read from (:data:`SOURCE_RUNS_TAG`)."""
    public = public_task_facts(table["task"].unique())
    fact_columns = [c for c in table.columns if c.startswith(("model_", "task_"))]
    records = []
    for row in table.to_dict("records"):
        facts = {**public.get(row["task"], {}), **{c: row[c] for c in fact_columns if pd.notna(row[c])}}
        lineage = {SOURCE_RUNS_TAG: row[SOURCE_RUN_IDS][:MAX_TAG_VAL_LENGTH]} if pd.notna(row.get(SOURCE_RUN_IDS)) else {}
        records.append(tracking.RunRecord(
            kind="external", model=row["model"], task=row["task"], tags={tracking.SOURCE_TAG: source, **lineage},
            cell=tracking.cell_key("external", source=source, model=row["model"], task=row["task"]),
            params={"estimator": f"external:{source}", "source_file": source_file, **facts},
            metrics={"score": row["score"]},
        ))
    return records


def import_table(
    path: str | Path,
    *,
    source: str | None = None,
    layout: str = "auto",
    model_facts_csv: str | Path | None = None,
    repeats: str = "last",
    scores: str = "auto",
    replace: bool = False,
    allow_mixed_scale: bool = False,
    columns: Mapping[str, str] | None = None,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    mlflow_client: MlflowClient | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
    summary: Callable[[str], None] | None = None,
) -> tuple[int, int]:
    """Write one ``external`` run per cell of the table; returns (created, already present).

    ``replace``: the source becomes this table; its cells imported before that the table no longer
    holds (a dropped row or column, a renamed task) are deleted, after the new cells are written.
    ``allow_mixed_scale``: import cells on another scale than the table's (:func:`cells_off_scale`),
    an error otherwise. ``columns``: the model, task or score column's header (:func:`read_rows`).

    Skipped rows are passed to ``report``, one line per reason (default: a
    :class:`SkippedRowsWarning`); columns read under another name to ``note`` (default: ``report``). The finished cells are read first, in one query; the others are
    written with :func:`tracking.write_runs` (batched transactions on a SQL store). ``summary`` gets
    one line on what was read: the models x tasks, the cells, the first names.
    """
    path = Path(path)
    source = source or path.stem
    table, skipped = read_rows(path, layout, model_facts_csv, repeats, scores, allow_mixed_scale=allow_mixed_scale,
                               columns=columns)
    for rows in skipped:
        (note if isinstance(rows, NOTES) and note else report or _warn)(f"{path.name}: {rows}")
    if summary:  # what was read, to check against the paper before anything is learned from it
        models, tasks = table["model"].unique(), table["task"].unique()
        summary(f"{path.name}: read {len(models)} models x {len(tasks)} tasks, {len(table)} cells; models "
                f"{_named_examples(models)}; tasks {_named_examples(tasks)}")
    mlflow_client = mlflow_client or tracking.client()
    exp_id = tracking.experiment_id(mlflow_client, experiment)
    # two imports run at once each write the cells they both found missing, so a cell may have several runs
    cell_runs = tracking.finished_cell_runs(mlflow_client, experiment, "external")
    done = {cell: run_ids[0] for cell, run_ids in cell_runs.items()}
    stored = tracking.load_matrix("external", source=source, experiment=experiment, mlflow_client=mlflow_client)
    mixed = tasks_in_other_units(table, stored, tracking.load_matrix(
        "external", experiment=experiment, mlflow_client=mlflow_client))
    if mixed:
        (report or _warn)(
            f"{path.name}: {len(mixed)} task(s) ({_named_examples(mixed)}) are in another unit here (% or [0, 1]) "
            "than in the other tables imported into this store: a matrix of all sources (build or evaluate without "
            "--source) would mix the two in one column; re-import one table in the other's unit, or give --source")
    records, replaced, changes, duplicates = [], [], [], []
    for record in cell_records(table, source=source, source_file=path.name):
        duplicates += cell_runs.get(record.cell, [])[1:]
        if record.cell not in done:
            records.append(record)
        elif (before := _stored_value(stored, record.model, record.task)) != record.metrics["score"]:
            records.append(record)  # a changed value, or a run without a score (an older import): replaced
            replaced.append(done[record.cell])
            changes.append(f"{record.model} x {record.task}: {'no score' if before is None else before} -> "
                           f"{record.metrics['score']}")
    # runs of these cells left unfinished by a killed import: deleted, the cells written again below
    stale = tracking.unfinished_cells(mlflow_client, experiment, "external")
    tracking.discard_runs(mlflow_client, [run_id for r in records for run_id in stale.get(r.cell, [])])
    with tqdm(total=len(records), desc=f"import {source}", disable=not progress) as bar:
        tracking.write_runs(mlflow_client, exp_id, records, on_written=bar.update)
    tracking.discard_runs(mlflow_client, replaced)  # after the new values are in: a killed import loses none
    tracking.discard_runs(mlflow_client, duplicates)  # the newest run of each cell stays
    if duplicates:
        (report or _warn)(f"{path.name}: {len(duplicates)} duplicate run(s) of cells imported twice (two imports at "
                          "once) deleted; the newest run of each cell is kept")
    if replaced:
        more = f"; and {len(changes) - _SHOWN_CELLS} more" if len(changes) > _SHOWN_CELLS else ""
        (report or _warn)(f"{path.name}: {len(replaced)} cell(s) imported before with another value (or none) "
                          f"replaced by this table's ({'; '.join(changes[:_SHOWN_CELLS])}{more})")
    unplaced = tasks_without_facts(table)
    if unplaced:
        (report or _warn)(
            f"{path.name}: {len(unplaced)} of {table['task'].nunique()} task(s) have no facts "
            f"({_named_examples(unplaced)}): they "
            "are not named like a public dataset and the table gives no task_class_count, task_train_size or "
            "task_domain for them, so Fennec cannot tell which history tasks they resemble; name them like the "
            "public dataset (fennec_mlflow/resources/task_facts.csv), or give those facts: as columns (long or "
            "transposed layout) or as rows named #Classes, Train size, Domain (wide layout)")
    for said in (vtab_train_size_note(table), mixed_regime_note(table)):
        if said:
            (note or report or _warn)(f"{path.name}: {said}")
    kept = set(zip(table["model"], table["task"]))
    dropped = [cell for model in stored.values.index for task in stored.values.columns
               if (model, task) not in kept
               and (cell := tracking.cell_key("external", source=source, model=model, task=task)) in done]
    if replace:
        tracking.discard_runs(mlflow_client, [run_id for cell in dropped for run_id in cell_runs[cell]])
        if dropped:
            (report or _warn)(f"{path.name}: {len(dropped)} cell(s) of source {source!r} that this table no longer "
                              "holds deleted (--replace)")
    elif dropped:  # a table that lost rows or columns since: the store keeps them unless told
        (report or _warn)(f"{path.name}: {len(dropped)} cell(s) of source {source!r} imported before are not in this "
                          "table and were kept; import with --replace to delete them")
    return len(records), len(table) - len(records)


def _named_examples(names) -> str:
    """The first few of ``names``, quoted, and how many more."""
    more = f" and {len(names) - _EXAMPLES} more" if len(names) > _EXAMPLES else ""
    return ", ".join(map(repr, list(names)[:_EXAMPLES])) + more


def _in_percent(scores: pd.Series) -> bool:
    return bool(scores.max() > 1.0)


# A table of accuracies is in % or in [0, 1]: a cell on the other scale (0.975 among percents, 87.5 among
# fractions) or above 100 (975 for 97.5) is a typo that would decide the ranking. A table is on a scale
# when at least this share of its scores are (so that a few typos among many cells stand out).
_ON_SCALE_SHARE = 0.75
_MIXED_SCALES_SHARE = 0.9
# A wide table's column with at least this share of its cells off the table's scale is likely no task
_NO_TASK_SHARE = 0.5
_SHOWN_CELLS = 10


def table_scale(scores: pd.Series) -> str | None:
    """"%" when most of the finite ``scores`` lie in (1.5, 100], "[0, 1]" when most lie in [0, 1], None
    otherwise (another kind of score, e.g. LogME's); "most": :data:`_ON_SCALE_SHARE`."""
    finite = scores.to_numpy(dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size and ((finite > 1.5) & (finite <= 100)).mean() >= _ON_SCALE_SHARE:
        return "%"
    if finite.size and ((finite >= 0) & (finite <= 1)).mean() >= _ON_SCALE_SHARE:
        return "[0, 1]"
    # Half fractions, half percents (two training scripts logging to one experiment): accuracies on both
    # scales, not another kind of score, when nearly every cell is a fraction or above 10 (chance level
    # in % for up to 10 classes). The larger share is the table's scale; the other cells are off it.
    fractions, percents = (finite > 0) & (finite <= 1), finite > 10
    if finite.size and (finite <= 100).all() and fractions.any() and percents.any() \
            and (fractions | percents).mean() >= _MIXED_SCALES_SHARE:
        return "%" if percents.sum() >= fractions.sum() else "[0, 1]"
    return None


def cells_off_scale(long: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``long`` (model, task, score; index = line) whose score is on another scale than the
    table's (:func:`table_scale`), with a column ``why``: above 100 or a fraction in (0, 1] in a table in %,
    above 1 in a table in [0, 1]; none in a table on neither scale."""
    scale = table_scale(long["score"])
    scores = long["score"].to_numpy(dtype=float)
    finite = np.isfinite(scores)
    if scale == "%":
        why = np.select([finite & (scores > 100), (scores > 0) & (scores <= 1)], ["above 100", "a fraction"], "")
    elif scale == "[0, 1]":
        why = np.where(finite & (scores > 1), "above 1", "")
    else:
        why = np.full(len(scores), "")
    return long.assign(why=why)[why != ""]


def _refuse_cells_off_scale(long: pd.DataFrame, path: Path, layout: str = "long") -> None:
    """A :class:`TableError` naming each cell of :func:`cells_off_scale`, in file order, and how to fix it; a wide
    (or transposed) table's task with most of its cells off the scale is likely no task but a fact of the models
    (a speed, a compute), and the error says how to mark it one."""
    off = cells_off_scale(long).sort_index(kind="stable")
    if off.empty:
        return
    off_per_task, cells_per_task = off["task"].value_counts(), long["task"].value_counts()
    no_tasks = [task for task, count in off_per_task.items() if count >= _NO_TASK_SHARE * cells_per_task[task]]
    fact_hint = ""
    if no_tasks and layout in ("wide", "transposed"):
        where = "column" if layout == "wide" else "row"
        fact_hint = (f"; if {', '.join(map(repr, no_tasks))} {'is' if len(no_tasks) == 1 else 'are'} no task but a "
                     f"fact of the models (a speed, a size, a compute), rename its {where} model_<name> (e.g. "
                     f"{_fact_slug(no_tasks[0])!r}) and import again: a model fact, not a score")
    cells = "; ".join(f"{r.model} x {r.task} = {r.score:g} (line {r.Index}, {r.why})"
                      for r in off.head(_SHOWN_CELLS).itertuples())
    more = f"; and {len(off) - _SHOWN_CELLS} more" if len(off) > _SHOWN_CELLS else ""
    raise TableError(f"{str(path)!r}: {len(off)} cell(s) on another scale than the table's other scores, accuracies "
                     f"in {table_scale(long['score'])}: {cells}{more}; correct them (a typo, or a fraction or percent "
                     f"to rescale) and import again, or import with --allow-mixed-scale if the scores are not accuracies"
                     f"{fact_hint}")


def tasks_in_other_units(table: pd.DataFrame, own: tracking.KnowledgeMatrix,
                         merged: tracking.KnowledgeMatrix) -> list[str]:
    """Tasks whose scores lie in [0, 1] in ``table`` and above 1 in the other sources' cells of the
    store (``merged`` less the table's own source ``own``), or the other way round. Only for tables of
    accuracies or error rates, whose cells all lie in [0, 100]."""
    if not table["score"].between(0, 100).all():
        return []  # another kind of score (e.g. LogME's): no unit to compare
    others = merged.values.mask(own.values.reindex_like(merged.values).notna())
    mixed = []
    for task, scores in table.groupby("task")["score"]:
        theirs = others[task].dropna() if task in others.columns else pd.Series(dtype=float)
        if len(theirs) and theirs.between(0, 100).all() and _in_percent(scores) != _in_percent(theirs):
            mixed.append(str(task))
    return sorted(mixed)


def _stored_value(stored: tracking.KnowledgeMatrix, model: str, task: str) -> float | None:
    try:
        value = stored.values.loc[model, task]
    except KeyError:
        return None
    return None if pd.isna(value) else float(value)


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
