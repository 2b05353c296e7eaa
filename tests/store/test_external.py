"""Import of external tables against a real sqlite store: idempotence, killed imports, read-back,
bad rows, public task facts by alias, and the knowledge built from an imported table."""
import re
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from fennec_mlflow.store import external, tracking
from fennec_mlflow.store.knowledge import build_knowledge, task_meta_table
from tests.helpers import runs_in


def write_csv(path, rows: dict) -> str:
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def imported(client, path, **kwargs):
    kwargs.setdefault("source", "mine")
    return external.import_table(path, mlflow_client=client, progress=False, **kwargs)


def without_facts_note(lines: list[str]) -> list[str]:
    """The report lines but the one about tasks without facts (these tables name tasks t0, t1, x, ...)."""
    return [line for line in lines if "have no facts" not in line]


def runs_per_cell(client) -> pd.Series:
    """Active runs of kind external per (model, task), counted by status."""
    runs = runs_in(client, tracking.DEFAULT_EXPERIMENT, max_results=5000)
    return pd.Series([(r.data.tags[tracking.MODEL_TAG], r.data.tags[tracking.TASK_TAG], r.info.status)
                      for r in runs]).value_counts()


@pytest.fixture()
def table(tmp_path):
    """A 5 models x 4 tasks long table with a hole and a model fact."""
    rng = np.random.default_rng(0)
    rows = [(f"m{i}", f"t{j}", float(rng.random())) for i in range(5) for j in range(4) if (i, j) != (2, 3)]
    frame = pd.DataFrame(rows, columns=["model", "task", "score"])
    frame["model_parameters"] = frame["model"].str[1:].astype(int) * 1_000_000 + 1
    frame.to_csv(tmp_path / "mine.csv", index=False)
    return tmp_path / "mine.csv", frame


def test_import_reads_back_exactly_and_is_idempotent(store, table):
    path, frame = table
    assert imported(store, path) == (19, 0)
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    truth = frame.pivot(index="model", columns="task", values="score")
    pd.testing.assert_frame_equal(km.values, truth, check_names=False)  # bit for bit
    assert km.model_facts.loc["m3", "parameters"] == 3_000_001
    assert imported(store, path) == (0, 19)
    counts = runs_per_cell(store)
    assert len(counts) == 19 and (counts == 1).all()
    assert {status for _, _, status in counts.index} == {"FINISHED"}


def test_a_killed_import_is_redone_and_leaves_one_run_per_cell(store, table):
    path, frame = table
    # an import killed midway: its first cells committed, one run of the next left RUNNING
    head = write_csv(path.parent / "head.csv", frame.head(7))
    assert imported(store, head) == (7, 0)
    record = external.cell_records(frame.iloc[[7]].reset_index(drop=True), source="mine", source_file="mine.csv")[0]
    half_written = tracking.start_run(store, tracking.experiment_id(store), record)
    assert tracking.load_matrix("external", source="mine", mlflow_client=store).values.notna().sum().sum() == 7

    assert imported(store, path) == (12, 7)
    assert store.get_run(half_written).info.lifecycle_stage == "deleted"
    counts = runs_per_cell(store)
    assert len(counts) == 19 and (counts == 1).all()
    assert {status for _, _, status in counts.index} == {"FINISHED"}
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    pd.testing.assert_frame_equal(km.values, frame.pivot(index="model", columns="task", values="score"),
                                  check_names=False)


def test_cells_written_by_two_imports_at_once_keep_one_run_each_after_the_next_import(store, tmp_path, table):
    """Two imports run at the same time each write the cells they both found missing: the next import
    deletes all but the newest run of each (and says so); --replace deletes every run of a dropped cell."""
    path, frame = table
    imported(store, path)
    records = external.cell_records(external.read_table(path), source="mine", source_file=path.name)
    tracking.write_runs(store, tracking.experiment_id(store), records)  # the other import's runs
    assert len(runs_per_cell(store)) == 19 and (runs_per_cell(store) == 2).all()
    lines = []
    assert imported(store, path, report=lines.append) == (0, 19)
    assert without_facts_note(lines) == ["mine.csv: 19 duplicate run(s) of cells imported twice (two imports at once) "
                                         "deleted; the newest run of each cell is kept"]
    counts = runs_per_cell(store)
    assert len(counts) == 19 and (counts == 1).all()
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    pd.testing.assert_frame_equal(km.values, frame.pivot(index="model", columns="task", values="score"),
                                  check_names=False)
    tracking.write_runs(store, tracking.experiment_id(store), records)
    smaller = frame[frame["model"] != "m4"]
    assert imported(store, write_csv(tmp_path / "trimmed.csv", smaller), replace=True, report=lambda line: None) == (
        0, len(smaller))
    counts = runs_per_cell(store)
    assert len(counts) == len(smaller) and (counts == 1).all()


def test_a_wide_table_imports_as_the_same_cells_as_its_long_form(store, tmp_path, table):
    long_path, frame = table
    wide = frame.pivot(index="model", columns="task", values="score")
    wide.insert(0, "model_parameters", frame.groupby("model")["model_parameters"].first())
    wide_path = tmp_path / "wide.csv"
    wide.reset_index().to_csv(wide_path, index=False)  # m2 x t3 is an empty cell: not measured
    lines = []
    assert imported(store, wide_path, source="wide", report=lines.append) == (len(frame), 0)
    assert without_facts_note(lines) == [
        "wide.csv: 1 cell(s) skipped, no score (empty, nan or a dash): line 4 (e.g. m2 x t3)"]
    imported(store, long_path, source="long")
    as_wide, as_long = (tracking.load_matrix("external", source=name, mlflow_client=store) for name in ("wide", "long"))
    pd.testing.assert_frame_equal(as_wide.values, as_long.values)
    assert as_wide.model_facts["parameters"].to_dict() == as_long.model_facts["parameters"].to_dict()
    assert imported(store, wide_path, source="wide") == (0, len(frame))  # idempotent like any layout
    assert external.detect_layout(["model", "model_family", "aircraft", "dtd"]) == "wide"


def test_a_transposed_table_imports_as_the_same_cells_and_facts_as_its_wide_form(store, tmp_path, table):
    """Tasks as rows, one column per model (papers with many models print it so): model_* rows are
    model facts, task_* columns task facts."""
    _, frame = table
    wide = frame.pivot(index="model", columns="task", values="score")
    wide.insert(0, "model_parameters", frame.groupby("model")["model_parameters"].first())
    wide.reset_index().to_csv(tmp_path / "wide.csv", index=False)
    transposed = wide.T
    transposed.insert(0, "task_class_count", [None, 10, 20, 30, 40])
    transposed.rename_axis("Dataset").reset_index().to_csv(tmp_path / "transposed.csv", index=False)

    assert external.detect_layout(["task", "task_domain", "resnet50", "vit_b16"]) == "transposed"
    assert imported(store, tmp_path / "transposed.csv", source="transposed") == (len(frame), 0)
    imported(store, tmp_path / "wide.csv", source="wide")
    as_transposed, as_wide = (tracking.load_matrix("external", source=name, mlflow_client=store)
                              for name in ("transposed", "wide"))
    pd.testing.assert_frame_equal(as_transposed.values, as_wide.values)
    assert as_transposed.model_facts["parameters"].to_dict() == as_wide.model_facts["parameters"].to_dict()
    assert as_transposed.task_facts["class_count"].to_dict() == {"t0": 10, "t1": 20, "t2": 30, "t3": 40}


@pytest.mark.parametrize("header", [" Model , Dataset ,Accuracy", "Method,Target,Top-1 Acc", "model,task,score",
                                    "name,dataset,score"])
def test_the_column_names_papers_use_are_read_as_model_task_and_score(store, tmp_path, header):
    path = tmp_path / "paper.csv"
    path.write_text(f"{header}\nresnet50,cifar10,96.3\nvit_b16,cifar10,98.1\n")
    assert imported(store, path) == (2, 0)
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    assert km.values.loc["vit_b16", "cifar10"] == 98.1


@pytest.mark.parametrize("corner", ["Model \\ Dataset", "Models / Tasks", "Dataset \\ Model"])
def test_a_corner_header_naming_both_axes_says_what_the_rows_are(tmp_path, corner):
    """The first header of a printed table often names both axes, rows first."""
    models_as_rows = corner.startswith("Model")
    body = ([["resnet50", 97.1, 74.0], ["vit_b16", 98.5, 78.1]] if models_as_rows
            else [["cifar10", 97.1, 98.5], ["dtd", 74.0, 78.1]])
    columns = ["cifar10", "dtd"] if models_as_rows else ["resnet50", "vit_b16"]
    pd.DataFrame(body, columns=[corner, *columns]).to_csv(tmp_path / "corner.csv", index=False)
    with pytest.warns(external.SkippedRowsWarning, match=re.escape(f"read {corner!r} as {'model' if models_as_rows else 'task'}")):
        cells = external.read_table(tmp_path / "corner.csv").set_index(["model", "task"])["score"]
    assert cells[("vit_b16", "dtd")] == 78.1 and cells[("resnet50", "cifar10")] == 97.1 and len(cells) == 4


def test_a_header_with_two_names_for_one_column_is_not_guessed(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("model,dataset,target,score\nresnet50,cifar10,x,96.3\n")
    with pytest.raises(external.TableError, match="cannot tell the table layout"):
        external.read_table(path)


def test_a_papers_average_row_and_column_are_not_imported_as_a_model_and_a_task(store, tmp_path):
    path = tmp_path / "paper.csv"
    path.write_text("Method,cifar10,dtd,Avg.\nresnet50,96.3,72.1,84.2\nvit_b16,98.1,75.3,86.7\n"
                    "Average,97.2,73.7,85.5\n")
    lines = []
    assert imported(store, path, report=lines.append) == (4, 0)
    assert without_facts_note(lines) == [
        "paper.csv: read 'Method' as model",
        "paper.csv: 5 cell(s) skipped, a summary row or column ('Average', 'Avg.'), not a model or a "
        "task: lines 2, 3, 4 (e.g. Average x cifar10 = 97.2; Average x dtd = 73.7; resnet50 x Avg. = 84.2)"]
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    assert list(km.values.index) == ["resnet50", "vit_b16"] and list(km.values.columns) == ["cifar10", "dtd"]


@pytest.mark.parametrize("text, models", [
    (",cifar10,dtd\nresnet50,96.3,72.1\nvit_b16,98.1,75.3\n", ["resnet50", "vit_b16"]),  # pandas' to_csv()
    (",resnet50,vit_b16\ncifar10,96.3,98.1\ndtd,72.1,75.3\n", ["resnet50", "vit_b16"]),  # transposed
])
def test_a_first_column_without_a_name_is_read_by_which_side_names_public_datasets(tmp_path, text, models):
    path = tmp_path / "index.csv"
    path.write_text(text)
    with pytest.warns(external.SkippedRowsWarning, match=r"read '\(the first column, without a name\)' as (model|task)"):
        table = external.read_table(path)
    assert sorted(table["model"].unique()) == models and sorted(table["task"].unique()) == ["cifar10", "dtd"]
    path.write_text(",a,b\nx,1,2\n")
    with pytest.raises(external.TableError, match="first column has no name.*name it model .* or task"):
        external.read_table(path)


def test_a_papers_model_columns_and_rows_are_read_as_model_facts_and_said_so(store, tmp_path):
    """Params (M), GFLOPs, ImageNet Top-1 beside the tasks (or as rows of a transposed table) are model
    facts, not tasks; every column read under another name is reported."""
    wide = tmp_path / "wide.csv"
    wide.write_text("Method,Params (M),GFLOPs,ImageNet Top-1,CIFAR-10,DTD\nResNet-50,25.6,4.1,76.1,96.3,72.1\n"
                    "ViT-B/16,86.6,17.6,81.1,98.1,75.3\n")
    transposed = tmp_path / "transposed.csv"
    transposed.write_text("Dataset,ResNet-50,ViT-B/16\n#Params (M),25.6,86.6\nCIFAR-10,96.3,98.1\nDTD,72.1,75.3\n")
    lines = []
    imported(store, wide, source="wide", report=lines.append)
    imported(store, transposed, source="transposed", report=lines.append)
    assert without_facts_note(lines) == [
        "wide.csv: read 'Method' as model, 'Params (M)' as model_parameters (x 1e6), 'GFLOPs' as model_flops "
        "(x 1e9), 'ImageNet Top-1' as model_source_accuracy",
        "transposed.csv: read 'Dataset' as task", "transposed.csv: read '#Params (M)' as model_parameters (x 1e6)"]
    as_wide, as_transposed = (tracking.load_matrix("external", source=name, mlflow_client=store)
                              for name in ("wide", "transposed"))
    pd.testing.assert_frame_equal(as_wide.values, as_transposed.values)
    assert list(as_wide.values.columns) == ["CIFAR-10", "DTD"]
    assert as_wide.model_facts.loc["ViT-B/16"].to_dict() == {"parameters": 86.6e6, "flops": 17.6e9,
                                                             "source_accuracy": 81.1}
    assert as_transposed.model_facts["parameters"].to_dict() == {"ResNet-50": 25.6e6, "ViT-B/16": 86.6e6}


@pytest.mark.parametrize("header, cell, fact, count", [
    ("Params (M)", "86.6", "model_parameters", 86.6e6), ("#Params [M]", "86.6", "model_parameters", 86.6e6),
    ("Params M", "86.6", "model_parameters", 86.6e6), ("Params/M", "86.6", "model_parameters", 86.6e6),
    ("Params (Mil.)", "86.6", "model_parameters", 86.6e6), ("Params (millions)", "86.6", "model_parameters", 86.6e6),
    ("Params (B)", "1.3", "model_parameters", 1.3e9), ("Params (billions)", "1.3", "model_parameters", 1.3e9),
    ("Params (K)", "390", "model_parameters", 390e3), ("Params (thousands)", "390", "model_parameters", 390e3),
    ("GFLOPs", "17.6", "model_flops", 17.6e9), ("FLOPs (G)", "17.6", "model_flops", 17.6e9),
    ("MFLOPs", "600", "model_flops", 600e6), ("FLOPs (M)", "600", "model_flops", 600e6),
    ("FLOPs (T)", "1.2", "model_flops", 1.2e12)])
def test_a_counts_unit_in_the_header_is_applied_and_said(tmp_path, header, cell, fact, count):
    """Papers print parameters in millions ("Params (M)": 86.6 for ViT-B/16) and FLOPs in billions: stored as the
    raw count the built-in models store and --max-parameters compares, the unit said with the column's reading."""
    path = tmp_path / "units.csv"
    path.write_text(f"Model,{header},CIFAR-10\nvit_b16,{cell},98.1\n")
    table, notes = external.read_rows(path)
    assert table[fact].tolist() == [count]
    assert f"{header!r} as {fact} (x 1e{np.log10(count / float(cell)):.0f})" in str(notes[0])
    assert len(notes) == 1  # no note that the counts look like millions


def test_a_counts_unit_in_its_cells_is_applied(tmp_path):
    """'86.6M', '25.6 M', '1.3B', '390K' in a parameters column are raw counts; a dash is not measured."""
    path = tmp_path / "cells.csv"
    path.write_text("Model,Params,GFLOPs,CIFAR-10\nvit_b16,86.6M,17.6,98.1\nr50,25.6 M,4.1,96.3\n"
                    "vit_g14,1.3B,-,99.0\ntiny,390K,0.1,80.0\n")
    table, notes = external.read_rows(path)
    assert table.set_index("model")["model_parameters"].to_dict() == {
        "vit_b16": 86.6e6, "r50": 25.6e6, "vit_g14": 1.3e9, "tiny": 390e3}
    assert table.set_index("model")["model_flops"].dropna().to_dict() == {"vit_b16": 17.6e9, "r50": 4.1e9, "tiny": 1e8}
    assert [str(note) for note in notes] == [
        "read 'Params' as model_parameters, 'GFLOPs' as model_flops (x 1e9)"]


def test_counts_that_look_like_millions_without_a_unit_are_kept_and_said(tmp_path):
    """A 'Params' column of 25.6 and 86.6 is in millions (no vision model has fewer than 10,000 parameters),
    but nothing is guessed: imported as written, with a note asking for the unit in the header."""
    path = tmp_path / "no_unit.csv"
    path.write_text("Model,Params,CIFAR-10\nr50,25.6,96.3\nvit_b16,86.6,98.1\n")
    table, notes = external.read_rows(path)
    assert table["model_parameters"].tolist() == [25.6, 86.6]
    assert [str(note) for note in notes] == [
        "read 'Params' as model_parameters",
        "'Params' holds 25.6 to 86.6: that looks like millions, not a count (no vision model has fewer than 10,000); "
        "imported as written; if they are millions, write the unit in the header, e.g. 'Params (M)', and import again"]
    path.write_text("Model,Params,CIFAR-10\nr50,25557032,96.3\nvit_b16,86567656,98.1\n")  # raw counts: nothing said
    table, notes = external.read_rows(path)
    assert table["model_parameters"].tolist() == [25557032, 86567656]
    assert [str(note) for note in notes] == ["read 'Params' as model_parameters"]


def test_a_markdown_table_from_a_model_zoo_readme_imports_like_its_csv(store, tmp_path):
    """A pipe table as READMEs print it: links keep their text, bold and code marks go, the caption is ignored."""
    (tmp_path / "zoo.md").write_text(
        "| Model | Params (M) | CIFAR-10 | DTD |\n|:------|-----------:|---------:|----:|\n"
        "| [ResNet-50](https://example.org/r50) | 25.6 | 96.3 | 72.1 |\n| **ViT-B/16** | 86.6 | **98.1** | - |\n"
        "| `mnv2` | 3.5 | 94.0 | 70.0 |\n\nTable 1: fine-tune accuracy.\n")
    (tmp_path / "zoo.csv").write_text("model,model_parameters,CIFAR-10,DTD\nResNet-50,25600000,96.3,72.1\n"
                                      "ViT-B/16,86600000,98.1,\nmnv2,3500000,94.0,70.0\n")
    lines = []
    imported(store, tmp_path / "zoo.md", source="md", report=lines.append)
    assert "zoo.md: 1 cell(s) skipped, no score (empty, nan or a dash): line 4 (e.g. ViT-B/16 x DTD)" in lines
    imported(store, tmp_path / "zoo.csv", source="csv")
    as_md, as_csv = (tracking.load_matrix("external", source=name, mlflow_client=store) for name in ("md", "csv"))
    pd.testing.assert_frame_equal(as_md.values, as_csv.values)
    assert as_md.model_facts["parameters"].to_dict() == as_csv.model_facts["parameters"].to_dict()


def test_a_latex_tabular_from_a_papers_source_imports_like_its_csv(store, tmp_path):
    """Rules, formatting, spreads after a plus-minus, escaped percent signs and comments, as arXiv sources write them."""
    (tmp_path / "table.tex").write_text(
        "\\begin{tabular}{lcc}\n\\toprule\nModel & Aircraft & DTD \\\\\n\\midrule\n"
        "ResNet-50 & 84.1$\\pm$0.3 & 72.1 \\\\\n"
        "ViT-B/16 & \\textbf{\\underline{85.0}} & - \\\\ % the best\n"
        "mnv2 & 80.2\\,\\% & 70.0 \\\\\n\\bottomrule\n\\end{tabular}\n")
    (tmp_path / "table.csv").write_text("model,Aircraft,DTD\nResNet-50,84.1,72.1\nViT-B/16,85.0,\nmnv2,80.2,70.0\n")
    imported(store, tmp_path / "table.tex", source="tex")
    imported(store, tmp_path / "table.csv", source="csv")
    as_tex, as_csv = (tracking.load_matrix("external", source=name, mlflow_client=store) for name in ("tex", "csv"))
    pd.testing.assert_frame_equal(as_tex.values, as_csv.values)
    (tmp_path / "spans.tex").write_text("Model & \\multicolumn{2}{c}{Fine-grained} \\\\\nr50 & 1 & 2 \\\\\n")
    with pytest.raises(external.TableError, match=r"line 1 spans columns \(\\multicolumn\) and no row after it names"):
        external.read_table(tmp_path / "spans.tex")


def test_a_latex_tabular_with_groups_of_columns_and_rows_imports_its_cells_and_groups(store, tmp_path):
    r"""As papers group their tables: a \multicolumn row over the tasks, a \multicolumn line naming a
    group of models, a \multirow cell over the models of a type (also from below, with a negative count)."""
    (tmp_path / "groups.tex").write_text(
        "\\begin{tabular}{llccc}\n\\toprule\n"
        " & & \\multicolumn{2}{c}{Fine-grained} & General \\\\\n\\cmidrule(lr){3-4}\n"
        " & Model & Aircraft & Cars & CIFAR-10 \\\\\n\\midrule\n"
        "\\multicolumn{5}{l}{\\emph{ImageNet-1k}} \\\\\n"
        "\\multirow{2}{*}{Supervised} & ResNet-50 & 84.6 & 89.1 & 96.3 \\\\\n"
        " & ResNet-101 & 85.5 & 89.5 & 97.4 \\\\\n"
        " & BYOL & 84.0 & 88.5 & 96.5 \\\\\n"
        "\\multirow{-2}{*}{\\textbf{Self-sup.}} & MoCo & 83.0 & 88.0 & 96.0 \\\\\n\\bottomrule\n\\end{tabular}\n")
    notes = []
    assert imported(store, tmp_path / "groups.tex", note=notes.append, report=lambda line: None) == (12, 0)
    assert notes == ["groups.tex: line 3 left out: a row of column groups (\\multicolumn), not cells",
                     "groups.tex: line 7 left out: section label ('ImageNet-1k') over the rows below it; the model "
                     "names do not repeat across it, so they are kept as written",
                     "groups.tex: read '(a column without a name)' as model_group"]
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    assert km.values.loc["MoCo", "Cars"] == 88.0 and km.values.shape == (4, 3)
    assert km.model_facts["group"].to_dict() == {"BYOL": "Self-sup.", "MoCo": "Self-sup.", "ResNet-101": "Supervised",
                                                 "ResNet-50": "Supervised"}


def test_a_column_of_text_is_read_as_a_fact_of_the_rows_and_said_so(tmp_path):
    """A score column holds numbers: a wide table's column of text is a model fact (its type, its
    pre-training data), a transposed table's a task fact (its domain); dataset statistics papers print
    beside the tasks (columns of a transposed table, rows of a wide one) are task facts."""
    path = tmp_path / "types.csv"
    path.write_text("model,Pre-training,cifar10,pets\nresnet50,ImageNet-1k,96.3,92.1\nvit_b16,JFT-300M,98.1,-\n")
    table, notes = external.read_rows(path)
    assert table.set_index(["model", "task"])["model_pre_training"].to_dict() == {
        ("resnet50", "cifar10"): "ImageNet-1k", ("resnet50", "pets"): "ImageNet-1k", ("vit_b16", "cifar10"): "JFT-300M"}
    assert "read 'Pre-training' as model_pre_training" in [str(note) for note in notes]
    path = tmp_path / "domains.csv"  # with the columns of dataset statistics papers print beside a task
    path.write_text("Dataset,#Classes,Train size,Domain,resnet50,vit_b16\n"
                    "cifar10,10,50000,natural,96.3,98.1\nmy_scans,7,8000,medical,80.2,84.0\n")
    table, notes = external.read_rows(path)
    facts = table.groupby("task")[["task_class_count", "task_train_size", "task_domain"]].first()
    assert facts.to_dict("index") == {
        "cifar10": {"task_class_count": 10, "task_train_size": 50000, "task_domain": "natural"},
        "my_scans": {"task_class_count": 7, "task_train_size": 8000, "task_domain": "medical"}}
    assert set(table["model"]) == {"resnet50", "vit_b16"}
    assert [str(note) for note in notes] == [
        "read 'Dataset' as task, '#Classes' as task_class_count, 'Train size' as task_train_size, 'Domain' as "
        "task_domain"]
    path = tmp_path / "statistics_rows.csv"  # the same statistics as rows above a wide table's models
    path.write_text("model,cifar10,my_scans\n#Classes,10,7\nTrain size,50000,8000\nDomain,natural,medical\n"
                    "resnet50,96.3,80.2\nvit_b16,98.1,84.0\n")
    wide, notes = external.read_rows(path)
    assert wide.groupby("task")[["task_class_count", "task_train_size", "task_domain"]].first().equals(facts)
    assert set(wide["model"]) == {"resnet50", "vit_b16"}
    assert [str(note) for note in notes] == [
        "read '#Classes' as task_class_count, 'Train size' as task_train_size, 'Domain' as task_domain"]


def test_replace_makes_the_source_exactly_the_new_table(store, tmp_path, table):
    """A corrected table that drops a row and a column: without --replace the old cells stay, with it they go."""
    path, frame = table
    imported(store, path)
    smaller = frame[(frame["model"] != "m4") & (frame["task"] != "t0")]
    trimmed = write_csv(tmp_path / "trimmed.csv", smaller.assign(score=smaller["score"] + 1))
    said = []
    assert imported(store, trimmed, report=said.append) == (len(smaller), 0)  # every value changed: written again
    assert tracking.load_matrix("external", source="mine", mlflow_client=store).values.shape == (5, 4)
    assert f"trimmed.csv: {len(frame) - len(smaller)} cell(s) of source 'mine' imported before are not in this " \
           "table and were kept; import with --replace to delete them" in said
    lines = []
    assert imported(store, trimmed, replace=True, report=lines.append) == (0, len(smaller))
    assert without_facts_note(lines) == [
        f"trimmed.csv: {len(frame) - len(smaller)} cell(s) of source 'mine' that this table no longer "
        "holds deleted (--replace)"]
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    pd.testing.assert_frame_equal(km.values, smaller.pivot(index="model", columns="task", values="score") + 1,
                                  check_names=False)
    assert len(runs_per_cell(store)) == len(smaller)


@pytest.mark.parametrize("name, layout", [("transfergraph", "transfergraph"), ("parc_all", "parc")])
def test_the_published_tables_are_told_apart_by_their_header(name, layout):
    """TransferGraph's records start with an unnamed index column: that is no key column to guess."""
    path = external.bundled_table(name)
    pd.testing.assert_frame_equal(external.read_rows(path)[0], external.read_rows(path, layout=layout)[0])


def test_tasks_fennec_cannot_place_are_named_at_import(store, tmp_path):
    """A task named neither like a public dataset nor given facts of its own: said at import, not found
    out from a ranking that quietly fell back on popularity."""
    path = tmp_path / "mixed.csv"
    path.write_text("model,task,score,task_class_count\na,cifar10,0.9,\na,inhouse-1,0.5,\na,inhouse-2,0.6,7\n")
    lines = []
    imported(store, path, report=lines.append)
    assert lines == ["mixed.csv: 1 of 3 task(s) have no facts ('inhouse-1'): they are not named like a public "
                     "dataset and the table gives no task_class_count, task_train_size or task_domain for them, so "
                     "Fennec cannot tell which history tasks they resemble; name them like the public dataset "
                     "(fennec_mlflow/resources/task_facts.csv), or give those facts: as columns (long or transposed "
                     "layout) or as rows named #Classes, Train size, Domain (wide layout)"]


def test_the_cli_offers_every_layout_and_every_way_to_combine_repeats():
    from fennec_mlflow.cli import import_

    options = {option.name: option for option in import_.params}
    assert list(options["layout"].type.choices) == list(external.LAYOUTS)
    assert list(options["repeats"].type.choices) == list(external.REPEATS)
    assert list(options["scores"].type.choices) == list(external.SCORES)
    assert options["allow_mixed_scale"].is_flag and options["allow_mixed_scale"].opts == ["--allow-mixed-scale"]


def test_error_rates_are_stored_as_accuracy_so_that_the_best_model_ranks_first(store, tmp_path):
    """A table of top-1 errors (lower is better) read as accuracy would rank the worst model first:
    a long table says so by its score column's name, a wide one by --scores error; a grid's best cell
    is its lowest error."""
    long = tmp_path / "long.csv"
    long.write_text("Model,Dataset,Top-1 error (%)\nresnet,cifar10,3.5\nresnet,cifar10,3.0\nvit,cifar10,1.5\n"
                    "resnet,pets,7.5\nvit,pets,6.0\n")
    notes = []
    assert imported(store, long, repeats="max", note=notes.append, report=lambda line: None) == (4, 0)
    assert notes == ["long.csv: read 'Dataset' as task, 'Top-1 error (%)' as score",
                     "long.csv: the cells are error rates (lower is better), stored as accuracy = 100 - error (%)"]
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    assert km.values.to_dict() == {"cifar10": {"resnet": 97.0, "vit": 98.5}, "pets": {"resnet": 92.5, "vit": 94.0}}
    wide = tmp_path / "wide.csv"
    wide.write_text("model,cifar10,pets\nresnet,0.030,0.075\nvit,0.015,0.060\n")
    assert imported(store, wide, source="fractions", scores="error", report=lambda line: None) == (4, 0)
    km = tracking.load_matrix("external", source="fractions", mlflow_client=store)
    assert km.values.loc["vit", "cifar10"] == pytest.approx(0.985) and km.values.loc["resnet", "pets"] == 0.925
    with pytest.raises(external.TableError, match="named as an error rate; import it with --scores error"):
        external.read_rows(long, scores="accuracy")
    (tmp_path / "bad.csv").write_text("model,task,error\na,x,-3\n")
    with pytest.raises(external.TableError, match=r"error rates must lie in \[0, 100\].*a x x = -3.0"):
        external.read_rows(tmp_path / "bad.csv")


def test_a_title_that_names_error_rates_reads_the_cells_as_error_rates(tmp_path):
    """A transposed TSV of top-1 errors under a title: read with the tabs (a comma in the title once
    made the whole file one comma-separated column) and as error rates, said so; --scores accuracy
    keeps them, and a title about accuracy with its standard error stays accuracy."""
    path = tmp_path / "errors.tsv"
    path.write_text("Top-1 error (%) after fine-tuning, Ericsson et al. (approximate)\n"
                    "Dataset\tSupervised\tSimCLR\nCaltech-101\t8.99\t8.63\nCars\t17.39\t9.54\n")
    with pytest.warns(external.SkippedRowsWarning) as said:
        long = external.read_table(path)
    assert long.set_index(["model", "task"])["score"].to_dict() == pytest.approx({
        ("Supervised", "Caltech-101"): 91.01, ("SimCLR", "Caltech-101"): 91.37,
        ("Supervised", "Cars"): 82.61, ("SimCLR", "Cars"): 90.46})
    assert any("says 'Top-1 error': the cells are read as error rates (import with --scores accuracy"
               in str(w.message) for w in said)
    with pytest.warns(external.SkippedRowsWarning):
        assert external.read_table(path, scores="accuracy")["score"].max() == 17.39
    path.write_text("Accuracy (%), mean and standard error over 3 seeds\nmodel\taircraft\na\t84.1\nb\t80\n")
    with pytest.warns(external.SkippedRowsWarning):
        assert external.read_table(path)["score"].tolist() == [84.1, 80.0]


@pytest.mark.parametrize("repeats, expected", [("mean", 0.6), ("max", 0.8), ("last", 0.4)])
def test_a_cell_given_on_several_lines_is_combined_as_asked(store, tmp_path, repeats, expected):
    """Seeds (mean) or a hyperparameter grid (max): the cell's rows become one cell, reported by line."""
    path = tmp_path / "seeds.csv"
    path.write_text("model,task,score,seed\na,x,0.6,0\nb,x,0.5,0\na,x,0.8,1\na,x,0.4,2\n")
    lines = []
    assert imported(store, path, repeats=repeats, report=lines.append) == (2, 0)
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    assert km.values.loc["a", "x"] == pytest.approx(expected) and km.values.loc["b", "x"] == 0.5
    if repeats != "last":
        assert without_facts_note(lines) == [
            "seeds.csv: not read: column(s) 'seed' (a long table's cells are its score column; facts are model_* "
            "or task_* columns)",
            f"seeds.csv: 3 cell(s) combined into 1, a (model, task) cell given on several lines (one line per 'seed'), "
            f"imported as their {repeats} (--repeats): lines 2, 4, 5 (e.g. a x x = 0.6; a x x = 0.8; a x x = 0.4)"]
    assert imported(store, path, repeats=repeats) == (0, 2)  # idempotent


def test_a_table_in_another_unit_than_the_stores_other_tables_is_flagged(store, tmp_path):
    """Merged without --source, a task's column would hold % from one table and fractions from another."""
    percent = write_csv(tmp_path / "percent.csv", {"model": ["a", "b"], "cifar10": [96.5, 98.5], "pets": [92.5, 94.0]})
    fractions = write_csv(tmp_path / "fractions.csv", {"model": ["a", "b"], "cifar10": [0.96, 0.98], "dtd": [0.7, 0.8]})
    lines = []
    imported(store, percent, source="percent", report=lines.append)
    imported(store, fractions, source="fractions", report=lines.append)
    assert [line for line in lines if "another unit" in line] == [
        "fractions.csv: 1 task(s) ('cifar10') are in another unit here (% or [0, 1]) than in the other tables "
        "imported into this store: a matrix of all sources (build or evaluate without --source) would mix the two "
        "in one column; re-import one table in the other's unit, or give --source"]
    lines.clear()  # the same source corrected to % is in step with the store: no warning
    imported(store, percent, source="fractions", replace=True, report=lines.append)
    assert not [line for line in lines if "another unit" in line]


def test_bad_rows_are_skipped_and_reported_with_their_lines(store, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("model,task,score\n"
                    "a,x,0.5\n"       # line 2: superseded by line 7
                    "a,y,nan\n"       # line 3
                    "b,x,inf\n"       # line 4
                    "b,y,\n"          # line 5
                    "c,x,0.25\n"      # line 6
                    "a,x,0.75\n"      # line 7: kept
                    "\n"              # line 8: blank, ignored
                    "c,y,-inf\n")     # line 9
    lines = []
    assert imported(store, path, report=lines.append) == (2, 0)
    assert without_facts_note(lines) == [
        "bad.csv: 2 cell(s) skipped, no score (empty, nan or a dash): lines 3, 5 (e.g. a x y; b x y)",
        "bad.csv: 2 cell(s) skipped, an infinite score (inf, or a number beyond a float's range such as "
        "1e309); fix these rows and import again: lines 4, 9 (e.g. b x x = inf; c x y = -inf)",
        "bad.csv: 1 cell(s) skipped, a (model, task) cell given again on a later line, which is kept "
        "(--repeats mean or max combines them instead); 1 of them disagrees with the line kept, by up to 0.25: "
        "check which is right: line 2 (e.g. a x x = 0.5 (kept: 0.75))"]
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    assert km.values.loc["a", "x"] == 0.75 and km.values.loc["c", "x"] == 0.25
    assert int(km.values.notna().sum().sum()) == 2
    with pytest.warns(external.SkippedRowsWarning) as warned:
        external.read_table(path)
    assert [str(w.message) for w in warned] == without_facts_note(lines)


def test_a_repeated_line_with_the_same_score_is_said_to_agree(tmp_path):
    path = tmp_path / "twice.csv"
    path.write_text("model,task,score\na,x,0.5\nb,x,0.6\na,x,0.5\na,y,0.4\nb,y,0.3\n")
    with pytest.warns(external.SkippedRowsWarning) as warned:
        external.read_table(path)
    assert [str(w.message) for w in warned if "given again" in str(w.message)] == [
        "twice.csv: 1 cell(s) skipped, a (model, task) cell given again on a later line, which is kept (--repeats "
        "mean or max combines them instead); every repeat has the kept line's score: line 2 (e.g. a x x = 0.5)"]


def test_parc_missing_marker_and_a_later_duplicate_are_reported(store, tmp_path):
    path = tmp_path / "parc.csv"
    path.write_text("Architecture,Source Dataset,Target Dataset,Oracle\n"
                    "resnet50,imagenet,cifar10,90.5\n"
                    "resnet50,imagenet,cub200,-1\n"
                    "resnet50,imagenet,cifar10,91.5\n")
    lines = []
    assert imported(store, path, report=lines.append) == (1, 0)
    assert without_facts_note(lines) == [
        "parc.csv: 1 cell(s) skipped, negative Oracle (PARC's -1 marks a missing result): line 3 "
        "(e.g. resnet50@imagenet x cub200 = -1)",
        "parc.csv: 1 cell(s) skipped, a (model, task) cell given again on a later line, which is kept "
        "(--repeats mean or max combines them instead); 1 of them disagrees with the line kept, by up to 1: "
        "check which is right: line 2 (e.g. resnet50@imagenet x cifar10 = 90.5 (kept: 91.5))"]
    assert tracking.load_matrix("external", source="mine", mlflow_client=store).values.loc[
        "resnet50@imagenet", "cifar10"] == 91.5


def test_infinite_rows_are_refused_and_a_corrected_table_replaces_values(store, tmp_path):
    path = tmp_path / "inf.csv"
    path.write_text("model,task,score\na,x,1e309\na,y,0.5\nb,x,-1e400\nb,y,0.25\n")
    lines = []
    assert imported(store, path, report=lines.append) == (2, 0)
    assert without_facts_note(lines) == [
        "inf.csv: 2 cell(s) skipped, an infinite score (inf, or a number beyond a float's range such "
        "as 1e309); fix these rows and import again: lines 2, 4 (e.g. a x x = inf; b x x = -inf)"]
    exp_id = tracking.experiment_id(store)
    # a run without a score, as an older version wrote for such rows
    record = external.cell_records(pd.DataFrame({"model": ["b"], "task": ["x"], "score": [np.nan]}),
                                   source="mine", source_file="inf.csv")[0]
    scoreless = tracking.write_run(store, exp_id, record)
    path.write_text("model,task,score\na,x,0.75\na,y,0.5\nb,x,0.125\nb,y,0.3\n")  # corrected, one value changed
    lines = []
    assert imported(store, path, report=lines.append) == (3, 1)
    assert without_facts_note(lines) == [
        "inf.csv: 2 cell(s) imported before with another value (or none) replaced by this table's "
        "(b x x: no score -> 0.125; b x y: 0.25 -> 0.3)"]
    assert store.get_run(scoreless).info.lifecycle_stage == "deleted"
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    assert km.values.to_dict() == {"x": {"a": 0.75, "b": 0.125}, "y": {"a": 0.5, "b": 0.3}}
    counts = runs_per_cell(store)
    assert len(counts) == 4 and (counts == 1).all()
    assert imported(store, path) == (0, 4)


@pytest.mark.parametrize("text, message", [
    ("model,task,score\na,x,0.5\n,x,0.7\n", r"empty 'model' on line 3"),
    ("model,task,score\na,x,0.5\nb,  ,0.7\nc,,0.1\n", r"empty 'task' on lines 3, 4"),
    ("model,finetuned_dataset,eval_accuracy\n,x,0.5\n", r"empty 'model' on line 2"),
    ("model,task,score\na,x,0.5\nb,x,high\n", r"'score' is not a number on line 3 \('high'\)"),
    ("Architecture,Source Dataset,Target Dataset,Oracle\nr,,x,1\n", r"empty 'Source Dataset' on line 2"),
    ("model,task,score,task_#labels\na,x,0.5,3\n", r"fact column 'task_#labels' is not a valid MLflow"),
    ("model,aircraft,dtd\na,0.5,0.7\nb,0.6,high\n", r"1 cell\(s\) are not a number \(line 3 \(model 'b', task 'dtd'\): "
                                                 r"'high'\); correct them"),
    ("model,aircraft,,dtd\na,0.5,0.1,0.7\n", r"a task column has no name in the header \(column 3\)"),
    ("model,task,score\n\n", r"has a header but no rows"),
    ("Model,Fine-grained,,Natural\n,Aircraft,Cars,DTD\nr50,84.1,89.0,72.1\n",
     r"no name in the header \(column 3\).*next line names them \('Aircraft', 'Cars', 'DTD'.*header of two rows"),
    ("model,tsak,score\na,x,0.5\n", r"cannot tell the table layout"),  # a long table's header with a typo
    ("Table 3\n,aircraft\nr50,84.1\n", r"its header \(line 1\) has fewer fields than the lines below it"),
    ("PK\x03\x04 zipped sheet", r"cannot read '.*broken.xlsx' as a spreadsheet \(BadZipFile.*save it as CSV"),
])
def test_unusable_tables_are_clear_errors_naming_the_line(store, tmp_path, text, message):
    path = tmp_path / ("broken.xlsx" if text.startswith("PK") else "broken.csv")
    path.write_text(text)
    with pytest.raises(external.TableError, match=message):
        imported(store, path)
    assert store.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT) is None  # nothing written


def test_names_and_header_are_stripped(store, tmp_path):
    path = tmp_path / "spaces.csv"
    path.write_text("model, task, score\n a , x ,0.5\n")  # typed by hand, a space after each comma
    imported(store, path)
    assert tracking.load_matrix("external", source="mine", mlflow_client=store).values.loc["a", "x"] == 0.5


def test_scores_copied_from_a_paper_keep_their_number(store, tmp_path):
    """A trailing % and a spread (± or +-, or in brackets) are dropped; the number is stored as written; a dash is
    not measured."""
    path = tmp_path / "paper.csv"
    path.write_text("model,aircraft,dtd\na,84.1%,70.2 ± 0.3\nb, 80 % ,71.5+-1.2%\nc,79.5,\nd,—,-\n"
                    "e,**85.2**,69.9†\nf,−0.5,_70.0_\ng,83.2 (0.4),68.1(±1.1)\n")
    imported(store, path)
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    assert km.values.stack().dropna().to_dict() == {
        ("a", "aircraft"): 84.1, ("b", "aircraft"): 80.0, ("c", "aircraft"): 79.5, ("e", "aircraft"): 85.2,
        ("f", "aircraft"): -0.5, ("g", "aircraft"): 83.2, ("a", "dtd"): 70.2, ("b", "dtd"): 71.5, ("e", "dtd"): 69.9,
        ("f", "dtd"): 70.0, ("g", "dtd"): 68.1}


@pytest.mark.parametrize("name, text, encoding", [
    ("tabs.tsv", "model\taircraft\tdtd\na\t84.1\t70.2\nb\t80\t71.5\n", "utf-8"),  # copied from a spreadsheet
    ("semicolons.csv", "model;aircraft;dtd\na;84,1;70,2\nb;80;71,5\n", "utf-8"),  # saved in a comma-decimal locale
    ("titled.tsv", "Fine-tune accuracy, approximate\nmodel\taircraft\tdtd\na\t84.1\t70.2\nb\t80\t71.5\n", "utf-8"),
    ("unicode.txt", "model\taircraft\tdtd\r\na\t84.1\t70.2\r\nb\t80\t71.5\r\n", "utf-16"),  # "Unicode text"
    ("bom.csv", "\ufeffmodel,aircraft,dtd\r\na,84.1,70.2\r\nb,80,71.5\r\n", "utf-8"),  # "CSV UTF-8"
])
def test_tab_and_semicolon_separated_tables_read_like_csv(store, tmp_path, name, text, encoding):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    imported(store, path)
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    assert km.values.stack().dropna().to_dict() == {("a", "aircraft"): 84.1, ("a", "dtd"): 70.2,
                                                    ("b", "aircraft"): 80.0, ("b", "dtd"): 71.5}


@pytest.mark.parametrize("name", ["table.xlsx", "table.ods"])
def test_spreadsheets_import_their_first_sheet_and_say_what_they_left(store, tmp_path, name):
    """A spreadsheet as users keep one: a title row and a blank row above the header, a column of
    text (the model's family), a dash for a cell not measured, a note on a second sheet."""
    path = tmp_path / name
    with pd.ExcelWriter(path) as writer:
        pd.DataFrame([["Fine-tuning accuracy (%)"]]).to_excel(writer, sheet_name="Table 3", header=False, index=False)
        pd.DataFrame({"Model": ["r50", "vit"], "Family": ["CNN", "ViT"], "Aircraft": [84.1, "-"],
                      "DTD": [70.2, 71.5]}).to_excel(writer, sheet_name="Table 3", startrow=2, index=False)
        pd.DataFrame({"note": ["from the appendix"]}).to_excel(writer, sheet_name="notes", index=False)
    said = []
    imported(store, path, note=said.append, report=said.append)
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    assert km.values.stack().dropna().to_dict() == {("r50", "Aircraft"): 84.1, ("r50", "DTD"): 70.2,
                                                    ("vit", "DTD"): 71.5}
    assert km.model_facts["family"].to_dict() == {"r50": "CNN", "vit": "ViT"}
    said = "\n".join(said)
    assert "line 1 above the header left out ('Fine-tuning accuracy (%)': a title)" in said
    assert "not read: sheet(s) 'notes'" in said


def test_a_title_line_above_a_csv_header_is_left_out_and_said(store, tmp_path):
    path = tmp_path / "titled.csv"
    path.write_text("Table 3: fine-tuning accuracy\nModel,Aircraft,DTD\nr50,84.1,70.2\nvit,80,oops\n")
    with pytest.raises(external.TableError, match=r"not a number \(line 4 \(model 'vit'"):  # lines as in the file
        imported(store, path)
    path.write_text("Table 3: fine-tuning accuracy,,\n,,\nModel,Aircraft,DTD\nr50,84.1,70.2\nvit,80,71.5\n")
    said = []
    assert imported(store, path, note=said.append, report=said.append) == (4, 0)
    assert said == ["titled.csv: lines 1, 2 above the header left out ('Table 3: fine-tuning accuracy': a title)"]
    path.write_text(",aircraft\nr50,84.1\nvit,80\n")  # a header of one name (pandas' to_csv): not a title
    assert imported(store, path, replace=True, report=lambda line: None) == (2, 0)


@pytest.mark.parametrize("text, said", [
    ("#,Model,Aircraft,DTD\n1,r50,84.1,70.2\n2,vit,80,71.5\n", "left out '#': row numbers, not a task"),
    ("Model,Aircraft,Aircraft std,DTD,DTD std\nr50,84.1,0.3,70.2,0.2\nvit,80,0.5,71.5,0.1\n",
     "left out 'Aircraft std' (beside 'Aircraft'), 'DTD std' (beside 'DTD'): the spread of the scores beside it"),
    ("Model,Aircraft,±,DTD,(±)\nr50,84.1,0.3,70.2,0.2\nvit,80,0.5,71.5,0.1\n",
     "left out '±' (beside 'Aircraft'), '(±)' (beside 'DTD')"),
    ("Model,Aircraft,DTD,,\nr50,84.1,70.2,,\nvit,80,71.5,,\n", None),  # a spreadsheet's trailing separators
])
def test_row_numbers_spreads_and_empty_columns_are_not_tasks(store, tmp_path, text, said):
    path = tmp_path / "table.csv"
    path.write_text(text)
    notes = []
    imported(store, path, note=notes.append, report=notes.append)
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    assert km.values.stack().dropna().to_dict() == {("r50", "Aircraft"): 84.1, ("r50", "DTD"): 70.2,
                                                    ("vit", "Aircraft"): 80.0, ("vit", "DTD"): 71.5}
    assert (said is None and not notes) or said in notes[0]


@pytest.mark.parametrize("text", [
    "model,task,score\nr50,Aircraft,84.1\nvit,Aircraft,80\n\nSource: Table 3 of [12],,\n",
    "Model,Aircraft,DTD\nr50,84.1,70.2\nvit,80,71.5\n* numbers from [12]\n",
])
def test_a_note_under_the_table_is_left_out_and_said(store, tmp_path, text):
    path = tmp_path / "noted.csv"
    path.write_text(text)
    notes = []
    imported(store, path, note=notes.append, report=notes.append)
    assert tracking.load_matrix("external", source="mine", mlflow_client=store).values.loc["vit", "Aircraft"] == 80.0
    assert [note for note in notes if "below the table left out" in note] == [
        f"noted.csv: line {len(text.splitlines())} below the table left out "
        f"({text.splitlines()[-1].rstrip(',')!r}: read as a note under the table)"]


@pytest.mark.parametrize("name, text, title", [
    ("titled.md", "Table 3: Fine-tuning top-1 accuracy (%).\n\n| # | Model | CIFAR-10 | DTD |\n|---|---|---|---|\n"
                  "| 1 | ResNet-50 | 96.8 | 74.1 |\n| 2 | ViT-B/16 | 98.1 | 78.0 |\n\nSource: made up.\n",
     # the blank line under the title too, as a CSV's
     "lines 1, 2 above the header left out ('Table 3: Fine-tuning top-1 accuracy (%).': a title)"),
    ("untitled.md", "| Model | CIFAR-10 | DTD |\n|:--|--:|--:|\n| ResNet-50 | 96.8 | 74.1 |\n"
                    "| ViT-B/16 | 98.1 | 78.0 |\nSource: made up.\n", None),
    ("captioned.tex", "\\begin{table}\n\\caption{Fine-tuning top-1 accuracy (\\%).}\n\\begin{tabular}{lcc}\n"
                      "Model & CIFAR-10 & DTD \\\\\n\\midrule\nResNet-50 & 96.8 & 74.1 \\\\\n"
                      "ViT-B/16 & 98.1 & 78.0 \\\\\n\\end{tabular}\n\\end{table}\nSource: made up.\n",
     "line 2 above the header left out ('Fine-tuning top-1 accuracy (%).': a title)"),
])
def test_a_title_above_a_markdown_or_latex_table_and_a_source_under_it_are_left_out_and_said(tmp_path, name, text,
                                                                                               title):
    path = tmp_path / name
    path.write_text(text)
    table, notes = external.read_rows(path)
    assert sorted(table[["model", "task", "score"]].values.tolist()) == [
        ["ResNet-50", "CIFAR-10", 96.8], ["ResNet-50", "DTD", 74.1], ["ViT-B/16", "CIFAR-10", 98.1],
        ["ViT-B/16", "DTD", 78.0]]
    assert [str(note) for note in notes if "left out (" in str(note)] == [title] * (title is not None) + [
        f"line {len(text.splitlines())} below the table left out ('Source: made up.': read as a note under the table)"]


def test_a_long_tables_columns_beyond_its_cells_and_facts_are_said_not_read(store, tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("Model,Dataset,Top-1,Top-5,model_family\nr50,Aircraft,84.1,95.0,cnn\nvit,Aircraft,80,94,vit\n")
    notes = []
    imported(store, path, note=notes.append, report=notes.append)
    assert tracking.load_matrix("external", source="mine", mlflow_client=store).values["Aircraft"].to_dict() == {
        "r50": 84.1, "vit": 80.0}
    assert any("not read: column(s) 'Top-5'" in note for note in notes)


@pytest.mark.parametrize("header, said", [
    ("Model,Dataset,Top-1 Acc. (%)", "'Top-1 Acc. (%)' as score"),  # a unit after a score name
    ("Model,Dataset,Full FT", "'Full FT' as score"),  # a name of its own: the one column of numbers
    ("#,Model,Dataset,Ours", "'Ours' as score"),  # a row number is not a second column of numbers
])
def test_a_long_tables_score_column_is_found_under_the_names_papers_give_it(store, tmp_path, header, said):
    path = tmp_path / "long.csv"
    numbered = header.startswith("#")
    rows = [("r50", "Aircraft", "84.1"), ("vit", "Aircraft", "80"), ("vit", "DTD", "71.5")]
    path.write_text(header + "\n" + "".join(f"{f'{i},' if numbered else ''}{','.join(row)}\n"
                                            for i, row in enumerate(rows, start=1)))
    notes = []
    imported(store, path, note=notes.append, report=notes.append)
    assert tracking.load_matrix("external", source="mine", mlflow_client=store).values.stack().dropna().to_dict() == {
        ("r50", "Aircraft"): 84.1, ("vit", "Aircraft"): 80.0, ("vit", "DTD"): 71.5}
    assert said in notes[0]


def test_a_long_table_with_several_unnamed_columns_of_numbers_asks_which_is_the_score(store, tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("Model,Dataset,Full FT,Linear\nr50,Aircraft,84.1,40.2\nvit,Aircraft,80,43\n")
    with pytest.raises(external.TableError, match=r"several columns of numbers \('Full FT', 'Linear'\) and none named "
                                                  r"score; say which to import with --score-column"):
        imported(store, path)
    imported(store, path, columns={"score": "Linear"})
    assert tracking.load_matrix("external", source="mine", mlflow_client=store).values["Aircraft"].to_dict() == {
        "r50": 40.2, "vit": 43.0}


def test_columns_named_by_the_user_must_exist_and_not_clash(store, tmp_path):
    path = tmp_path / "named.csv"
    path.write_text("arch,model,task,score\nr50,x,Aircraft,84.1\n")
    with pytest.raises(external.TableError, match=r"no column 'backbone' \(given as the model column\); its columns: "
                                                  r"'arch', 'model', 'task', 'score'"):
        imported(store, path, columns={"model": "backbone"})
    with pytest.raises(external.TableError, match=r"a column named 'model' besides 'arch'"):
        imported(store, path, columns={"model": "arch"})


def _my_finetune_runs(client, experiment_name: str, score_metric: str = "test_acc") -> pd.DataFrame:
    """Fine-tunes as a user's own training script logs them (params model, dataset, seed; a validation
    curve and a test metric), a run that crashed, and the experiment as `mlflow experiments csv` exports it."""
    import mlflow

    experiment_id = client.create_experiment(experiment_name)
    accuracy = {("r50", "dtd"): (70.0, 72.0), ("r50", "pets"): (90.0, 91.0), ("vit", "dtd"): (75.0, 76.0),
                ("vit", "pets"): (93.0, 92.0)}
    for (model, dataset), by_seed in accuracy.items():
        for seed, test in enumerate(by_seed):
            run = client.create_run(experiment_id, tags={"mlflow.runName": f"{model}-{dataset}-{seed}"})
            for key, value in {"model": model, "dataset": dataset, "seed": seed, "lr": 0.01,
                               "task_class_count": 40 if dataset == "dtd" else 37}.items():
                client.log_param(run.info.run_id, key, value)
            for step in range(3):
                client.log_metric(run.info.run_id, "val_acc", test - 3 + step, step=step)
            client.log_metric(run.info.run_id, score_metric, test)
            client.set_terminated(run.info.run_id)
    crashed = client.create_run(experiment_id)
    client.log_param(crashed.info.run_id, "model", "r50")
    client.log_param(crashed.info.run_id, "dataset", "dtd")
    client.log_metric(crashed.info.run_id, score_metric, 3.0)
    client.set_terminated(crashed.info.run_id, "FAILED")
    return mlflow.search_runs([experiment_id])


def test_an_mlflow_runs_export_imports_its_finished_runs_and_reads_test_acc_as_the_score(store, tmp_path):
    path = tmp_path / "runs.csv"
    _my_finetune_runs(store, "my-finetunes").to_csv(path, index=False)  # what `mlflow experiments csv` writes
    notes = []
    imported(store, path, repeats="mean", note=notes.append, report=notes.append)
    cells = tracking.load_matrix("external", source="mine", mlflow_client=store)
    assert cells.values.stack().to_dict() == {("r50", "dtd"): 71.0, ("r50", "pets"): 90.5, ("vit", "dtd"): 75.5,
                                              ("vit", "pets"): 92.5}  # the crashed run's 3.0 is no seed of r50 x dtd
    assert cells.task_facts.loc["dtd", "class_count"] == 40  # a fact logged as a param (DTD has 47)
    said = "\n".join(notes)
    assert "left out: runs that did not finish (status FAILED)" in said
    assert all(f"'{column}' as {role}" in said for column, role in (
        ("params.model", "model"), ("params.dataset", "task"), ("metrics.test_acc", "score")))
    assert "one line per 'params.seed'" in said and "not read: column(s)" in said and "'metrics.val_acc'" in said
    assert "run_id" not in said.split("not read")[1]  # MLflow's run columns are left out, not listed as unread
    assert "one line per 'params.seed')" in said  # val_acc is another result of the run, not what tells them apart


def test_an_mlflow_export_keeps_a_cells_latest_run_a_sweeps_parent_and_leaves_out_runs_that_are_no_fine_tune(
        store, tmp_path):
    import mlflow

    experiment_id = store.create_experiment("sweeps")

    def run(params: dict, score: float | None = None, parent: str | None = None) -> str:
        tags = {"mlflow.parentRunId": parent} if parent else {}
        run_id = store.create_run(experiment_id, tags=tags).info.run_id
        for key, value in params.items():
            store.log_param(run_id, key, value)
        if score is not None:
            store.log_metric(run_id, "test_acc", score)
        store.set_terminated(run_id)
        time.sleep(0.01)  # distinct start times: MLflow lists the newest first
        return run_id

    run({"model": "r50", "dataset": "dtd"}, 50.0)  # a buggy first run, then its fix
    run({"model": "r50", "dataset": "dtd"}, 72.0)
    run({"step": "prepare data"})  # no model, no task: not a fine-tune
    sweep = run({"model": "vit", "dataset": "dtd"}, 76.0)  # the parent re-logs its best trial's score
    run({"model": "vit", "dataset": "dtd", "lr": 0.1}, 60.0, parent=sweep)
    run({"model": "vit", "dataset": "dtd", "lr": 0.01}, 76.0, parent=sweep)
    run({"lr": 0.001}, parent=sweep)  # a trial logging only its hyperparameter
    path = tmp_path / "runs.csv"
    mlflow.search_runs([experiment_id]).to_csv(path, index=False)
    notes = []
    imported(store, path, repeats="mean", note=notes.append, report=notes.append)
    assert tracking.load_matrix("external", source="mine", mlflow_client=store).values.stack().to_dict() == {
        ("r50", "dtd"): 61.0, ("vit", "dtd"): 76.0}  # r50's two runs are its repeats; vit is its sweep's parent
    imported(store, path, source="latest", note=notes.append, report=notes.append)  # --repeats last: the latest
    assert tracking.load_matrix("external", source="latest", mlflow_client=store).values.loc["r50", "dtd"] == 72.0
    said = "\n".join(notes)
    assert "left out: runs without a model or a task (not fine-tunes)" in said
    assert "left out: trials of a sweep whose parent run holds its result (the parent is the cell)" in said


def test_an_mlflow_exports_runs_are_named_by_run_id_and_each_cell_keeps_the_runs_it_was_read_from(store, tmp_path):
    import mlflow

    experiment_id = store.create_experiment("lineage")

    def run(params: dict, score: float, status: str = "FINISHED") -> str:
        run_id = store.create_run(experiment_id).info.run_id
        for key, value in params.items():
            store.log_param(run_id, key, value)
        store.log_metric(run_id, "test_acc", score)
        store.set_terminated(run_id, status)
        time.sleep(0.01)  # distinct start times
        return run_id

    seeds = [run({"model": "r50", "dataset": "dtd", "seed": seed}, 70.0 + seed) for seed in (0, 1)]
    vit = run({"model": "vit", "dataset": "dtd"}, 75.0)
    killed = run({"model": "vit", "dataset": "dtd"}, 5.0, status="KILLED")
    unnamed = run({"step": "prepare"}, 0.0)
    path = tmp_path / "runs.csv"
    mlflow.search_runs([experiment_id]).to_csv(path, index=False)
    notes = []
    imported(store, path, repeats="mean", note=notes.append, report=notes.append)
    said = "\n".join(notes)
    assert f"run {killed} (line " in said and f"run {unnamed} (line " in said  # what the MLflow UI finds them by
    assert f"r50 x dtd = 70.0 (run {seeds[0]})" in said
    lineage = {run.data.tags["fennec.model"]: run.data.tags[external.SOURCE_RUNS_TAG]
               for run in store.search_runs([tracking.experiment_id(store, tracking.DEFAULT_EXPERIMENT)],
                                            "tags.`fennec.source` = 'mine'")}
    assert lineage == {"r50": ",".join(seeds), "vit": vit}  # a seeds' mean keeps every seed's run
    imported(store, path, source="latest")
    found = store.search_runs([tracking.experiment_id(store, tracking.DEFAULT_EXPERIMENT)],
                              f"tags.`fennec.source` = 'latest' and tags.`fennec.source_run_ids` LIKE '%{seeds[1]}%'")
    assert [run.data.tags["fennec.model"] for run in found] == ["r50"]  # --repeats last: the latest run's cell only
    plain = tmp_path / "plain.csv"
    plain.write_text("model,task,score\nr50,dtd,70\n")
    assert list(external.read_table(plain).columns) == ["model", "task", "score"]  # other tables have no lineage


def test_two_names_of_one_public_dataset_are_one_task_and_alike_model_names_are_said(store, tmp_path):
    path = tmp_path / "spellings.csv"
    path.write_text("model,task,score\nresnet50,oxford_pets,91.0\nvit,oxford_pets,93.0\nvit,Oxford-IIIT Pet,92.0\n"
                    "ResNet-50,Pets,90.0\nresnet50,dtd,72.0\nvit,DTD,75.0\n")
    notes = []
    imported(store, path, repeats="mean", note=notes.append, report=notes.append)
    values = tracking.load_matrix("external", source="mine", mlflow_client=store).values
    assert sorted(values.columns) == ["dtd", "oxford_pets"]  # not a target that is its own history
    assert values.loc["vit", "oxford_pets"] == 92.5
    said = "\n".join(notes)
    assert "read 'oxford_pets', 'Oxford-IIIT Pet', 'Pets' as one task, 'oxford_pets': each names the public dataset " \
           "Oxford-IIIT Pet" in said
    assert "model names that differ only in case or punctuation: 'resnet50', 'ResNet-50'" in said


def test_seeds_of_a_hyperparameter_grid_import_as_the_best_configurations_mean_and_both_are_named(tmp_path):
    path = tmp_path / "grid.csv"
    path.write_text("model,task,lr,wd,seed,score\nr50,dtd,0.1,,0,60\nr50,dtd,0.1,,1,70\nr50,dtd,0.01,1e-4,0,72\n"
                    "r50,dtd,0.01,1e-4,1,68\nvit,dtd,0.01,1e-4,0,75\nvit,dtd,0.01,1e-4,1,77\n")  # one script logs no wd
    table, notes = external.read_rows(path, repeats="max")
    # r50: lr 0.01's seeds average 70, lr 0.1's 65 (its single best seed, 72, would flatter it)
    assert table.set_index("model")["score"].to_dict() == {"r50": 70.0, "vit": 76.0}
    assert "(one line per 'seed', 'lr', 'wd'), imported as its best configuration's mean over seeds" in \
        "\n".join(map(str, notes))
    table, notes = external.read_rows(path, repeats="mean")
    assert table.set_index("model")["score"].to_dict() == {"r50": 67.5, "vit": 76.0}


def test_an_mlflow_export_of_scripts_that_log_the_model_differently_reads_the_columns_given_in_order(tmp_path):
    path = tmp_path / "scripts.csv"
    path.write_text("run_id,status,params.model_name,params.arch,params.dataset,params.num_classes,metrics.test_acc\n"
                    "a,FINISHED,r50,,dtd,47,72.0\nb,FINISHED,,vit,dtd,47,75.0\nc,FINISHED,,vit,pets,37,93.0\n")
    with pytest.raises(external.TableError, match=r"an MLflow runs export without one model column: several params "
                                                  r"or tags are named like one \('params.model_name', 'params.arch'\); "
                                                  r"name it with --model-column \(several, comma-separated, are taken "
                                                  r"in order\), from its params and tags: 'params.model_name', "
                                                  r"'params.arch'$"):
        external.read_rows(path)
    table, _ = external.read_rows(path, columns={"model": "params.model_name,params.arch"})
    assert table[["model", "task", "score"]].values.tolist() == [["r50", "dtd", 72.0], ["vit", "dtd", 75.0],
                                                                 ["vit", "pets", 93.0]]
    assert table.set_index("task")["task_class_count"].to_dict() == {"dtd": 47, "pets": 37}  # params.num_classes


def test_a_weights_and_biases_runs_export_keeps_its_finished_runs(store, tmp_path):
    path = tmp_path / "wandb_export.csv"
    path.write_text("Name,State,Runtime,model_name,dataset,lr,test_acc\n"
                    "a,finished,3600,r50,dtd,0.01,71.5\nb,crashed,120,r50,pets,0.01,12.0\n"
                    "c,finished,3500,vit,dtd,0.01,75.0\nd,finished,3400,vit,pets,0.01,92.5\n")
    notes = []
    imported(store, path, note=notes.append, report=notes.append)
    assert tracking.load_matrix("external", source="mine", mlflow_client=store).values.stack().dropna().to_dict() == {
        ("r50", "dtd"): 71.5, ("vit", "dtd"): 75.0, ("vit", "pets"): 92.5}  # the crashed run's 12.0 is no cell
    said = "\n".join(notes)
    assert "line 3 left out: runs that did not finish (State crashed)" in said
    assert "'model_name' as model" in said and "'test_acc' as score" in said


def test_an_mlflow_runs_export_takes_its_one_metric_or_the_one_named(store, tmp_path):
    path = tmp_path / "runs.parquet"
    runs = _my_finetune_runs(store, "ema", score_metric="top1_ema")
    runs.to_parquet(path)
    with pytest.raises(external.TableError, match=r"several metrics \('metrics\.\w+', 'metrics\.\w+'\) and none "
                                                  r"named score; say which to import with --score-column"):
        imported(store, path)
    imported(store, path, columns={"score": "metrics.top1_ema"}, repeats="max")
    assert tracking.load_matrix("external", source="mine", mlflow_client=store).values.loc["vit"].to_dict() == {
        "dtd": 76.0, "pets": 93.0}
    runs.drop(columns=["metrics.val_acc"]).to_parquet(path)  # one metric: the score
    imported(store, path, source="one-metric", repeats="max")
    assert tracking.load_matrix("external", source="one-metric", mlflow_client=store).values.loc["r50"].to_dict() == {
        "dtd": 72.0, "pets": 91.0}


@pytest.mark.parametrize("groups", [",Fine-grained,,General\n", ",Fine-grained,\n"])
def test_a_row_of_column_groups_above_the_header_is_left_out_and_said(store, tmp_path, groups):
    path = tmp_path / "grouped.csv"
    path.write_text(groups + "Model,Aircraft,Cars,DTD\nr50,84.1,89.1,70.2\nvit,80,88,71.5\n")
    notes = []
    assert imported(store, path, note=notes.append, report=notes.append) == (6, 0)
    assert tracking.load_matrix("external", source="mine", mlflow_client=store).values.loc["vit"].to_dict() == {
        "Aircraft": 80.0, "Cars": 88.0, "DTD": 71.5}
    names = ", ".join(repr(name) for name in groups.strip().split(",") if name)
    assert notes[0] == f"grouped.csv: line 1 above the header left out: column groups ({names}), not tasks"


@pytest.mark.parametrize("name, write", [
    ("nested.json", lambda path, frame: path.write_text(  # as evaluation scripts keep fine-tune accuracies
        __import__("json").dumps({task: frame[task].dropna().to_dict() for task in frame}))),
    ("records.json", lambda path, frame: frame.rename_axis("model").reset_index().melt(
        id_vars="model", var_name="dataset", value_name="accuracy").dropna().to_json(path, orient="records")),
    ("split.json", lambda path, frame: frame.to_json(path, orient="split")),
    ("pivot.parquet", lambda path, frame: frame.rename_axis("model").to_parquet(path)),
    ("pivot.feather", lambda path, frame: frame.rename_axis("model").reset_index().to_feather(path)),
])
def test_json_parquet_and_feather_tables_import_like_their_csv(store, tmp_path, name, write):
    frame = pd.DataFrame({"aircraft": [84.1, 80.0, np.nan], "dtd": [70.2, 71.5, 69.0]}, index=["r50", "vit", "b16"])
    path = tmp_path / name
    write(path, frame)
    notes = []
    imported(store, path, report=lambda line: None, note=notes.append)
    values = tracking.load_matrix("external", source="mine", mlflow_client=store).values
    pd.testing.assert_frame_equal(values.reindex(index=frame.index, columns=frame.columns), frame, check_names=False)
    if name == "nested.json":  # a JSON object has no column: its keys are said as keys
        assert notes[0] == "nested.json: read '(the row keys of the JSON)' as model", notes


@pytest.mark.parametrize("text, message", [
    ("[1, 2, 3]", r"cannot read its JSON \(list at the top\) as a table; expected a list of records"),
    ('{"aircraft": {"r50": {"mean": 84.1, "std": 0.2}}}', r"the value at 'r50', 'aircraft' is itself a dict"),
    ("{not json", r"cannot read '.*bad.json' as JSON"),
])
def test_json_that_is_not_a_table_is_a_clear_error(store, tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(external.TableError, match=message):
        imported(store, path)


def test_a_task_named_like_a_spread_whose_cells_are_scores_stays_a_task(store, tmp_path):
    path = tmp_path / "dogs.csv"
    path.write_text("Model,Aircraft,SD\nr50,84.1,80.3\nvit,80,81.5\n")  # SD: Stanford Dogs, not a deviation
    imported(store, path)
    assert list(tracking.load_matrix("external", source="mine", mlflow_client=store).values.columns) == [
        "Aircraft", "SD"]


def test_a_spreadsheet_in_percent_format_imports_the_fractions_it_holds(store, tmp_path):
    """A cell shown as 84.1% holds 0.841: the table is in [0, 1], as its cells say."""
    path = tmp_path / "percent.xlsx"
    pd.DataFrame({"model": ["a", "b", "c"], "cifar10": [0.841, 0.802, 0.9]}).to_excel(path, index=False)
    imported(store, path)
    assert tracking.load_matrix("external", source="mine", mlflow_client=store).values["cifar10"].max() == 0.9


def test_tasks_named_like_public_datasets_get_their_facts(store, tmp_path):
    path = write_csv(tmp_path / "aliases.csv", {
        "model": ["m1", "m1", "m1", "m2"], "task": ["FGVC-Aircraft", "cars (%)", "my-own-task", "Food-101"],
        "score": [0.5, 0.6, 0.7, 0.8], "task_class_count": [None, None, 3, 99]})
    imported(store, path)
    facts = tracking.load_matrix("external", source="mine", mlflow_client=store).task_facts
    assert facts.loc["FGVC-Aircraft", ["class_count", "train_size", "domain", "dataset"]].tolist() == [
        100, 6667, "fine-grained", "FGVC-Aircraft"]
    assert facts.loc["cars (%)", ["class_count", "train_size", "dataset"]].tolist() == [196, 8144, "Stanford Cars"]
    assert facts.loc["my-own-task", "class_count"] == 3 and np.isnan(facts.loc["my-own-task", "train_size"])
    assert facts.loc["Food-101", "class_count"] == 99  # the table's own fact wins
    assert facts.loc["Food-101", "train_size"] == 75750


def test_knowledge_from_a_table_without_task_facts(store, tmp_path):
    rng = np.random.default_rng(1)
    path = write_csv(tmp_path / "bare.csv", {"model": [f"m{i}" for i in range(6) for _ in range(3)],
                                             "task": ["alpha", "beta", "gamma"] * 6, "score": rng.random(18)})
    imported(store, path)
    knowledge = build_knowledge(kind="external", source="mine", mlflow_client=store)
    assert list(knowledge.task_meta.columns) == ["log_class_count", "log_sample_count"]
    assert knowledge.task_meta.isna().all().all()  # unknown facts stay unknown: no task is like another
    assert knowledge.P.shape == (6, 3)


def test_task_meta_table_takes_whatever_facts_there_are():
    tasks = pd.Index(["a", "b"], name="task")
    bare = task_meta_table(pd.DataFrame(index=tasks), ["natural"])
    assert list(bare.columns) == ["log_class_count", "log_sample_count", "domain=natural"]
    assert bare[["log_class_count", "log_sample_count"]].isna().all().all()
    assert bare["domain=natural"].isna().all()  # an unknown domain is not "another domain"
    assert task_meta_table(pd.DataFrame(index=tasks[:0]), []).columns.tolist() == ["log_class_count", "log_sample_count"]
    # train_size (imported tables) stands in for sample_count (cell jobs) where that is unknown
    facts = pd.DataFrame({"class_count": [10, np.nan], "sample_count": [np.nan, 20.0], "train_size": [100, 50],
                          "domain": ["natural", np.nan]}, index=tasks)
    table = task_meta_table(facts, ["natural"])
    np.testing.assert_allclose(table["log_sample_count"], np.log([100, 20]))
    assert np.isnan(table.loc["b", "log_class_count"]) and table.loc["a", "domain=natural"] == 1.0
    assert np.isnan(table.loc["b", "domain=natural"])
    assert task_meta_table(facts.assign(domain=["natural", "medical"]), ["natural"])["domain=natural"].tolist() == [1, 0]


@pytest.mark.slow
def test_import_through_a_tracking_server(tmp_path, table):
    """The REST path: runs written by the client on threads, same read-back and idempotence."""
    path, frame = table
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--default-artifact-root", str(tmp_path / "artifacts")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        local = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP(S)_PROXY
        for _ in range(180):
            try:
                local.open(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
        assert tracking._sql_engine(client) is None
        assert imported(client, path) == (19, 0)
        assert imported(client, path) == (0, 19)
        km = tracking.load_matrix("external", source="mine", mlflow_client=client)
        pd.testing.assert_frame_equal(km.values, frame.pivot(index="model", columns="task", values="score"),
                                      check_names=False)
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- cells on another scale, pandas' index column, markdown alignment, bad cells, seeds, units ---------------

PERCENT_ROWS = "Model,Aircraft,CIFAR-10,DTD\nr50,84.1,96.2,72.1\nvit,80.5,{cell},71.5\nb16,82.0,97.1,70.9\n"


@pytest.mark.parametrize("cell, why", [("975", "above 100"), ("0.975", "a fraction")])
def test_a_cell_on_another_scale_than_its_table_is_refused_naming_it(store, tmp_path, cell, why):
    """975 for 97.5 or 0.975 among percents would decide the ranking: refused, naming the cell; imported with
    allow_mixed_scale (scores that are not accuracies)."""
    path = tmp_path / "typo.csv"
    path.write_text(PERCENT_ROWS.format(cell=cell))
    with pytest.raises(external.TableError) as refused:
        imported(store, path)
    assert str(refused.value) == (
        f"{str(path)!r}: 1 cell(s) on another scale than the table's other scores, accuracies in %: "
        f"vit x CIFAR-10 = {cell} (line 3, {why}); correct them (a typo, or a fraction or percent to rescale) and "
        "import again, or import with --allow-mixed-scale if the scores are not accuracies")
    assert imported(store, path, allow_mixed_scale=True, report=lambda line: None) == (9, 0)


def test_percents_among_fractions_are_refused_in_file_order_and_other_scores_are_not_checked(tmp_path):
    path = tmp_path / "fractions.csv"
    path.write_text("model,task,score\na,x,0.91\nb,x,0.88\na,y,87.5\nb,y,0.7\nc,x,0.5\nc,y,1.2\nd,x,0.6\nd,y,0.65\n")
    with pytest.raises(external.TableError, match=r"2 cell\(s\) on another scale than the table's other scores, "
                                                  r"accuracies in \[0, 1\]: a x y = 87.5 \(line 4, above 1\); "
                                                  r"c x y = 1.2 \(line 7, above 1\); correct them"):
        external.read_rows(path)
    path.write_text("model,task,score\na,x,-1.3\nb,x,0.4\na,y,2.9\nb,y,0.7\nc,x,140\n")  # e.g. LogME: no scale
    assert len(external.read_rows(path)[0]) == 5
    path.write_text("model,task,top-1 error\na,x,0.8\nb,x,3.5\nc,x,4.0\nd,x,5.2\n")  # an error under 1% is no fraction
    assert external.read_rows(path)[0]["score"].tolist() == [99.2, 96.5, 96.0, 94.8]


def test_a_table_half_in_fractions_half_in_percents_is_refused_naming_the_smaller_half(tmp_path):
    # two training scripts logging to one experiment, one in %, one as a fraction: neither scale has 75% of the
    # cells, yet every cell is an accuracy on one of them, and mixed they would decide the ranking
    path = tmp_path / "two_scripts.csv"
    path.write_text("model,task,score\na,x,91.5\nb,x,0.88\na,y,83.2\nb,y,0.79\nc,x,90.1\nc,y,81.0\n")
    with pytest.raises(external.TableError, match=r"2 cell\(s\) on another scale than the table's other scores, "
                                                  r"accuracies in %: b x x = 0.88 \(line 3, a fraction\); "
                                                  r"b x y = 0.79 \(line 5, a fraction\); correct them"):
        external.read_rows(path)
    assert len(external.read_rows(path, allow_mixed_scale=True)[0]) == 6


def test_an_index_saved_with_the_table_is_left_out_and_said(store, tmp_path):
    """pandas' to_csv() without index=False writes a first column without a name (or 'Unnamed: 0'), 0..n-1."""
    frame = pd.DataFrame({"Model": ["r50", "vit", "b16"], "Aircraft": [84.1, 80.5, 82.0], "DTD": [72.1, 71.5, 70.9]})
    frame.to_csv(tmp_path / "index.csv")
    frame.to_csv(tmp_path / "index.tsv", sep="\t")
    frame.rename_axis("Unnamed: 0").to_csv(tmp_path / "unnamed.csv")
    frame.set_axis(range(1, 4)).to_csv(tmp_path / "from_one.csv")
    for name, layout in [("index.csv", "auto"), ("index.tsv", "wide"), ("unnamed.csv", "wide"), ("from_one.csv", "auto")]:
        notes = []
        assert imported(store, tmp_path / name, source=name, layout=layout, note=notes.append) == (6, 0)
        first = "1 to 3" if name == "from_one.csv" else "0 to 2"
        assert notes == [f"{name}: left out the first column (no name, numbered {first}): a row index saved with the "
                         "table (pandas' to_csv() without index=False)"]
        assert tracking.load_matrix("external", source=name, mlflow_client=store).values.loc["vit", "DTD"] == 71.5
    (tmp_path / "before.csv").write_text(",Model,Aircraft\n7,r50,84.1\n3,vit,80.5\n")  # numbers, not an index
    with pytest.raises(external.TableError, match=r"column 1, before the model column, has no name in the header; "
                                                  r"name it \(model_<fact> for a fact of the models\) or delete it"):
        external.read_rows(tmp_path / "before.csv", layout="wide")


@pytest.mark.parametrize("rule", ["|:--|--:|--:|", "|-|-|-|", "| :-: | -: | :--- |", "|--|--|--|"])
def test_a_markdown_tables_delimiter_row_may_align_with_any_number_of_dashes(tmp_path, rule):
    path = tmp_path / "zoo.md"
    path.write_text(f"| Model | CIFAR-10 | DTD |\n{rule}\n| r50 | 96.3 | 72.1 |\n| vit | - | 70.0 |\n")
    table = external.read_rows(path)[0]
    assert table[["model", "task", "score"]].values.tolist() == [
        ["r50", "CIFAR-10", 96.3], ["r50", "DTD", 72.1], ["vit", "DTD", 70.0]]


@pytest.mark.parametrize("text, cells", [
    ("Model,Aircraft,DTD,SUN397\nr50,84.1,70.2,oops\nvit,80x,71.5,60\nb16,82,n.a,61\n",
     "3 cell(s) are not a number (line 2 (model 'r50', task 'SUN397'): 'oops'; line 3 (model 'vit', task "
     "'Aircraft'): '80x'; line 4 (model 'b16', task 'DTD'): 'n.a')"),
    ("Dataset,r50,vit\nAircraft,84.1,?\nDTD,bad,71.5\n",
     "2 cell(s) are not a number (line 2 (task 'Aircraft', model 'vit'): '?'; line 3 (task 'DTD', model 'r50'): "
     "'bad')"),
])
def test_every_cell_that_is_not_a_number_is_named_at_once_in_file_order(tmp_path, text, cells):
    path = tmp_path / "garbage.csv"
    path.write_text(text)
    with pytest.raises(external.TableError) as bad:
        external.read_rows(path)
    assert str(bad.value) == (f"{str(path)!r}: {cells}; correct them, or empty them (or write a dash) where nothing "
                              "was measured, and import again")


def test_the_lines_of_a_cell_told_apart_by_a_seed_say_which_was_kept_and_how_to_combine_them(tmp_path):
    path = tmp_path / "seeds.csv"
    path.write_text("model,task,seed,top1\na,x,0,90.5\na,x,1,91.5\nb,x,0,88.0\n")
    table, said = external.read_rows(path)
    assert table["score"].tolist() == [91.5, 88.0]
    assert str(said[-1]) == ("1 cell(s) skipped, a (model, task) cell given on several lines (one line per 'seed'), "
                             "of which the last is kept (--repeats last, the default); --repeats mean imports their "
                             "mean, --repeats max their best: line 2 (e.g. a x x = 90.5)")
    table, said = external.read_rows(path, repeats="mean")
    assert table["score"].tolist() == [91.0, 88.0]
    assert str(said[-1]).startswith("2 cell(s) combined into 1, a (model, task) cell given on several lines (one "
                                    "line per 'seed'), imported as their mean (--repeats): lines 2, 3")


def test_a_unit_after_a_task_name_in_the_header_is_not_part_of_the_task(store, tmp_path):
    """'Birdsnap (%)' in one table and 'Birdsnap' in another are one task; a name that would clash is kept."""
    (tmp_path / "units.csv").write_text("Model,Birdsnap (%),DTD [%],Pets top-1,Cars (acc.)\nr50,73.2,72.1,92.5,91.7\n")
    notes = []
    imported(store, tmp_path / "units.csv", note=notes.append, report=lambda line: None)
    assert notes == ["units.csv: read 'Birdsnap (%)' as Birdsnap, 'DTD [%]' as DTD, 'Pets top-1' as Pets, "
                     "'Cars (acc.)' as Cars"]
    (tmp_path / "plain.csv").write_text("Model,Birdsnap\nvit,74.8\n")
    imported(store, tmp_path / "plain.csv", source="plain")
    assert list(tracking.load_matrix("external", mlflow_client=store).values.columns) == [
        "Birdsnap", "Cars", "DTD", "Pets"]
    (tmp_path / "clash.csv").write_text("Model,DTD,DTD (%)\nr50,72.1,72.5\n")
    assert set(external.read_rows(tmp_path / "clash.csv")[0]["task"]) == {"DTD", "DTD (%)"}


def test_tasks_given_facts_as_rows_of_a_wide_table_are_placed(store, tmp_path):
    """#Classes / Train size / Domain rows describe a wide table's tasks: no 'no facts' warning for them, and
    the warning for others names that way too."""
    (tmp_path / "rows.csv").write_text("Model,xray,inhouse\nr50,63.6,70.1\nvit,64.3,71.2\n#Classes,3,\n"
                                       "Train size,5000,\nDomain,medical,\n")
    lines = []
    imported(store, tmp_path / "rows.csv", report=lines.append, note=lambda line: None)
    assert lines == ["rows.csv: 1 of 2 task(s) have no facts ('inhouse'): they are not named like a public dataset "
                     "and the table gives no task_class_count, task_train_size or task_domain for them, so Fennec "
                     "cannot tell which history tasks they resemble; name them like the public dataset "
                     "(fennec_mlflow/resources/task_facts.csv), or give those facts: as columns (long or transposed "
                     "layout) or as rows named #Classes, Train size, Domain (wide layout)"]
    assert tracking.load_matrix("external", source="mine", mlflow_client=store).task_facts.loc[
        "xray", "class_count"] == 3


_SECTIONED_TEX = ("\\begin{tabular}{lccc}\n\\toprule\nMethod & Food101 & Cars & DTD \\\\\n\\midrule\n"
                  "{linear}"
                  "BYOL (ours) & \\textbf{75.3} & 67.8 & 75.5 \\\\\nSimCLR & 68.4 & 50.3 & 74.5 \\\\\n\\midrule\n"
                  "{fine}"
                  "BYOL (ours) & 88.5 & 91.6 & 76.2 \\\\\nSimCLR & 88.2 & 91.3 & 73.2 \\\\\n"
                  "Random init & 86.9 & 91.4 & 64.8 \\\\\n\\bottomrule\n\\end{tabular}\n")


@pytest.mark.parametrize("name, text", [
    ("multicolumn.tex", _SECTIONED_TEX.replace("{linear}", "\\multicolumn{4}{l}{\\textit{Linear evaluation:}} \\\\\n")
     .replace("{fine}", "\\multicolumn{4}{l}{\\textit{Fine-tuned:}} \\\\\n")),
    ("text.tex", _SECTIONED_TEX.replace("{linear}", "\\textit{Linear evaluation:} \\\\\n")
     .replace("{fine}", "Fine-tuned: & & & \\\\\n")),
    ("sections.md", "| Method | Food101 | Cars | DTD |\n|---|---|---|---|\n| **Linear evaluation:** | | | |\n"
                    "| BYOL (ours) | 75.3 | 67.8 | 75.5 |\n| SimCLR | 68.4 | 50.3 | 74.5 |\n| *Fine-tuned:* | | | |\n"
                    "| BYOL (ours) | 88.5 | 91.6 | 76.2 |\n| SimCLR | 88.2 | 91.3 | 73.2 |\n"
                    "| Random init | 86.9 | 91.4 | 64.8 |\n"),
], ids=["multicolumn", "line-of-text", "markdown"])
def test_rows_of_one_cell_between_the_rows_are_section_labels_that_name_the_models_they_repeat(tmp_path, name, text):
    """BYOL's Table 3: the same methods under "Linear evaluation:" and under "Fine-tuned:" are two models each,
    not one cell given twice."""
    path = tmp_path / name
    path.write_text(text)
    table, notes = external.read_rows(path)
    cells = table.set_index(["model", "task"])["score"]
    assert len(cells) == 15 and cells[("BYOL (ours), linear evaluation", "Food101")] == 75.3
    assert cells[("BYOL (ours), fine-tuned", "Food101")] == 88.5 and cells[("Random init, fine-tuned", "DTD")] == 64.8
    said = [str(note) for note in notes if "section labels" in str(note)]
    assert len(said) == 1 and "('Linear evaluation:', 'Fine-tuned:')" in said[0] and \
        "model names repeat under several ('BYOL (ours)', 'SimCLR')" in said[0] and \
        "(e.g. 'BYOL (ours), linear evaluation' and 'BYOL (ours), fine-tuned')" in said[0]
    assert not [note for note in notes if isinstance(note, external.SkippedRows)]


def test_a_table_mixing_linear_probes_and_fine_tunes_says_that_both_are_ranked_side_by_side(store, tmp_path):
    path = tmp_path / "byol.md"
    path.write_text("| Method | Food101 | Cars | DTD |\n|---|---|---|---|\n| **Linear evaluation:** | | | |\n"
                    "| BYOL | 75.3 | 67.8 | 75.5 |\n| SimCLR | 68.4 | 50.3 | 74.5 |\n| *Fine-tuned:* | | | |\n"
                    "| BYOL | 88.5 | 91.6 | 76.2 |\n| SimCLR | 88.2 | 91.3 | 73.2 |\n")
    notes = []
    imported(store, path, note=notes.append, report=notes.append)
    assert "byol.md: the models mix linear probes ('BYOL, linear evaluation', 'SimCLR, linear evaluation') and " \
           "fine-tunes ('BYOL, fine-tuned', 'SimCLR, fine-tuned'): each is taken as a model of its own" in "\n".join(notes)
    one_regime = tmp_path / "tuned.csv"  # a fine-tune table whose model names say nothing of a probe: no note
    one_regime.write_text("Model,Food101,Cars\nBYOL fine-tuned,88.5,91.6\nSimCLR fine-tuned,88.2,91.3\n")
    notes = []
    imported(store, one_regime, source="tuned", note=notes.append, report=notes.append)
    assert not any("linear probes" in line for line in notes)


def test_section_labels_over_names_that_do_not_repeat_are_left_out_and_a_source_row_stays_a_note(tmp_path):
    path = tmp_path / "kinds.tex"
    path.write_text("Model & Aircraft & Cars \\\\\n\\midrule\n\\multicolumn{3}{l}{Supervised} \\\\\n"
                    "ResNet-50 & 84.6 & 89.1 \\\\\n\\multicolumn{3}{l}{Self-supervised} \\\\\nBYOL & 84.0 & 88.5 \\\\\n"
                    "\\bottomrule\n\\multicolumn{3}{l}{\\footnotesize Numbers from [12].} \\\\\n")
    table, notes = external.read_rows(path)
    assert sorted(set(table["model"])) == ["BYOL", "ResNet-50"] and len(table) == 4
    assert [str(note) for note in notes] == [
        "line 8 below the table left out ('footnotesize Numbers from [12].': read as a note under the table)",
        "lines 3, 5 left out: section labels ('Supervised', 'Self-supervised') over the rows below them; the model "
        "names do not repeat across them, so they are kept as written"]


def test_citations_and_footnote_marks_are_dropped_from_latex_names_unless_two_names_become_one(tmp_path):
    path = tmp_path / "cited.tex"
    path.write_text("Model & Cars & Pets \\\\\n\\midrule\n"
                    "SimCLR~\\cite{chen2020simple} & 50.3 & 83.6 \\\\\nResNet-50$^\\dagger$ & 91.2 & 93.0 \\\\\n"
                    "Swin-T^* & 92.0 & 93.8 \\\\\nViT-B$^{*}$ & 90.1 & 92.2 \\\\\nDeiT-S\\textsuperscript{a} & 89.0 & 91.0 \\\\\n"
                    "MoCo \\citep[Tab.~2]{he2020} & 49.0 & 80.1 \\\\\nMoCo\\footnotemark[3] & 50.0 & 81.0 \\\\\n")
    table, notes = external.read_rows(path)
    assert sorted(set(table["model"])) == ["DeiT-S", "MoCo [he2020]", "MoCo3", "ResNet-50", "SimCLR", "Swin-T", "ViT-B"]
    said = [str(note) for note in notes]
    assert "dropped citations (\\cite) and footnote marks from 5 cell(s): read 'SimCLR~\\\\cite{chen2020simple}' " \
           "as 'SimCLR'; 'ResNet-50$^\\\\dagger$' as 'ResNet-50'; 'Swin-T^*' as 'Swin-T', ..." in said
    assert "kept the citations or footnote marks of 'MoCo [he2020]', 'MoCo3': without them, two names in a column " \
           "would be one" in said


@pytest.mark.parametrize("cmidrule", ["\\cmidrule{3-5}\n", ""], ids=["cmidrule", "no-cmidrule"])
def test_a_latex_header_of_two_rows_reads_as_its_flat_form(tmp_path, cmidrule):
    """ConvNeXt's style: \\multirow{2} cells beside a \\multicolumn group, the tasks on the second row."""
    rows = ("\\midrule\nResNet-50$^\\dagger$ & 25.6M & 97.1 $\\pm$ 0.2 & 93.0 $\\pm$ 0.1 & 91.2 $\\pm$ 0.3 \\\\\n"
            "Swin-T$^*$ & 28.3M & 98.2 $\\pm$ 0.1 & 93.8 $\\pm$ 0.2 & 92.0 $\\pm$ 0.1 \\\\\n\\bottomrule\n")
    (tmp_path / "two.tex").write_text(
        "\\begin{tabular}{l|c|ccc}\n\\toprule\n\\multirow{2}{*}{Model} & \\multirow{2}{*}{Params} & "
        "\\multicolumn{3}{c}{Fine-grained} \\\\\n" + cmidrule + " & & Flowers & Pets & Cars \\\\\n" + rows)
    (tmp_path / "flat.tex").write_text("Model & Params & Flowers & Pets & Cars \\\\\n" + rows)
    two, notes = external.read_rows(tmp_path / "two.tex")
    flat, _ = external.read_rows(tmp_path / "flat.tex")
    pd.testing.assert_frame_equal(two, flat)
    assert two.set_index(["model", "task"]).loc[("Swin-T", "Cars"), "model_parameters"] == 28_300_000
    assert [str(note) for note in notes if "header" in str(note) or "groups" in str(note)] == [
        f"line {4 + bool(cmidrule)}: the header's empty cells named from the row above it (\\multirow): 'Model', "
        "'Params'", "line 3 left out: a row of column groups (\\multicolumn), not cells"]


def test_a_latex_header_under_groups_takes_the_groups_name_for_a_scores_name_or_a_repeated_one(tmp_path):
    path = tmp_path / "settings.tex"
    path.write_text("Model & \\multicolumn{1}{c}{ImageNet} & \\multicolumn{2}{c}{CIFAR-10} & \\multicolumn{2}{c}{Pets} \\\\\n"
                    " & Top-1 & Linear & Fine-tuned & Linear & Fine-tuned \\\\\n\\midrule\n"
                    "ResNet-50 & 76.1 & 90.1 & 97.0 & 91.0 & 93.5 \\\\\n")
    table, notes = external.read_rows(path)
    assert table.set_index("task")["score"].to_dict() == {
        "ImageNet": 76.1, "CIFAR-10 Linear": 90.1, "CIFAR-10 Fine-tuned": 97.0, "Pets Linear": 91.0,
        "Pets Fine-tuned": 93.5}
    assert "line 2: columns named with their group above them, their own names being a score's or repeated under " \
           "other groups: 'ImageNet', 'CIFAR-10 Linear', 'CIFAR-10 Fine-tuned', 'Pets Linear', 'Pets Fine-tuned'" \
           in [str(note) for note in notes]


def test_two_columns_that_could_name_the_model_are_read_together_where_only_together_they_tell_the_rows_apart(tmp_path):
    """DINOv2's linear-probe table: "Feature" (the method) beside "Arch"; neither names every row apart."""
    path = tmp_path / "features.csv"
    path.write_text("Feature,Arch,Params (M),Food,Cars,Avg\nSimCLR,RN50,24,72.8,49.3,61.1\nBYOL,RN50,24,75.3,67.8,71.6\n"
                    "DINOv2,ViT-S/14,21,89.1,81.6,85.4\nDINOv2,ViT-g/14,1100,94.0,91.4,92.7\n")
    table, notes = external.read_rows(path)
    assert sorted(set(table["model"])) == ["BYOL RN50", "DINOv2 ViT-S/14", "DINOv2 ViT-g/14", "SimCLR RN50"]
    facts = table.groupby("model")[["model_feature", "model_architecture"]].first()
    assert facts.loc["DINOv2 ViT-g/14"].tolist() == ["DINOv2", "ViT-g/14"] and len(table) == 8
    assert "read 'Feature' and 'Arch' together as the model (e.g. 'DINOv2 ViT-g/14'): neither names every row apart, " \
           "both together do; each is kept as a model fact ('Feature' as model_feature, 'Arch' as " \
           "model_architecture)" in [str(note) for note in notes]
    # "Method" is the model column by its name: that first reading, overruled, is not said beside this one
    method = tmp_path / "method.csv"
    method.write_text(path.read_text().replace("Feature,", "Method,"))
    table, notes = external.read_rows(method)
    assert sorted(set(table["model"])) == ["BYOL RN50", "DINOv2 ViT-S/14", "DINOv2 ViT-g/14", "SimCLR RN50"]
    assert not any(" as model," in f"{note}," for note in notes), [str(note) for note in notes]


def test_a_column_of_text_that_tells_the_rows_apart_is_the_model_beside_one_named_as_the_model_that_does_not(tmp_path):
    path = tmp_path / "checkpoints.csv"
    path.write_text("Backbone,Checkpoint,Cars,DTD\nRN50,simclr_rn50,49.3,75.7\nRN50,byol_rn50,67.8,75.5\n")
    table, notes = external.read_rows(path)
    assert table.set_index(["model", "task"])["model_architecture"].to_dict() == {
        ("simclr_rn50", "Cars"): "RN50", ("byol_rn50", "Cars"): "RN50", ("simclr_rn50", "DTD"): "RN50",
        ("byol_rn50", "DTD"): "RN50"}
    assert "read 'Checkpoint' as the model: it names every row apart, and 'Backbone' (read as the model by its name) " \
           "names rows alike; 'Backbone' is kept as model_architecture" in [str(note) for note in notes]


@pytest.mark.parametrize("layout", ["auto", "wide"])
def test_a_model_column_beside_an_architecture_column_is_the_model_and_the_architecture_a_fact(tmp_path, layout):
    path = tmp_path / "named.csv"
    path.write_text("Model,Arch,Params (M),Food,Cars,Avg\nSimCLR RN50,RN50,24,72.8,49.3,61.1\n"
                    "BYOL RN50,RN50,24,75.3,67.8,71.6\nDINOv2 S,ViT-S/14,21,89.1,81.6,85.4\n"
                    "DINOv2 g,ViT-g/14,1100,94.0,91.4,92.7\n")
    table, notes = external.read_rows(path, layout=layout)
    assert table.groupby("model")["model_architecture"].first().to_dict() == {
        "BYOL RN50": "RN50", "DINOv2 S": "ViT-S/14", "DINOv2 g": "ViT-g/14", "SimCLR RN50": "RN50"}
    assert str(notes[0]) == "read 'Arch' as model_architecture, 'Params (M)' as model_parameters (x 1e6)"


def test_a_layout_the_header_does_not_tell_says_which_options_tell_it(tmp_path):
    path = tmp_path / "unknown.csv"
    path.write_text("Checkpoint,Cars,DTD\nsimclr_rn50,49.3,75.7\n")
    with pytest.raises(external.TableError, match=r"cannot tell the table layout .* say which with --layout \(long, "
                                                  r"wide or transposed\) and --model-column, --task-column or "
                                                  r"--score-column"):
        external.read_rows(path)
    with pytest.raises(external.TableError, match=r"lacks column\(s\) \['model'\] .* name its columns with "
                                                  r"--model-column"):
        external.read_rows(path, layout="wide")
    assert set(external.read_rows(path, layout="wide", columns={"model": "Checkpoint"})[0]["model"]) == {"simclr_rn50"}


def test_a_layouts_columns_are_matched_in_any_case(tmp_path):
    path = tmp_path / "parc.csv"
    path.write_text("architecture,source dataset,target dataset,oracle\nresnet50,imagenet,cifar10,96.3\n")
    for layout in ("parc", "auto"):
        table, _ = external.read_rows(path, layout=layout)
        assert table[["model", "task", "score"]].values.tolist() == [["resnet50@imagenet", "cifar10", 96.3]]
    path = tmp_path / "records.csv"
    path.write_text("Model,Finetuned_Dataset,Eval_Accuracy\nresnet50,cifar10,0.963\n")
    table, _ = external.read_rows(path, layout="transfergraph")
    assert table[["model", "task", "score"]].values.tolist() == [["resnet50", "cifar10", 0.963]]


@pytest.mark.parametrize("flops, unit", [("exaFLOPs", 1e18), ("EFLOPs", 1e18), ("PFLOPs", 1e15)])
def test_a_models_epochs_compute_speed_and_resolution_beside_the_tasks_are_model_facts(tmp_path, flops, unit):
    """ViT's scaling table and DeiT's transfer table: columns of numbers that are no accuracies, read as model facts
    (training compute as raw FLOPs), not as tasks."""
    path = tmp_path / "scaling.md"
    path.write_text(f"| name | Epochs | Pre-training epochs | ImageNet | Pets | {flops} | im/sec | TPUv3-core-days | Res. |\n"
                    "|---|---|---|---|---|---|---|---|---|\n"
                    "| ViT-B/32 | 7 | 7 | 80.73 | 93.40 | 55 | 394.5 | 1.2 | 224 |\n"
                    "| ViT-H/14 | 14 | 14 | 88.08 | 97.11 | 4262 | 85.9 | 2.5 | 384 |\n")
    table, notes = external.read_rows(path)
    assert sorted(set(table["task"])) == ["ImageNet", "Pets"]
    facts = table.groupby("model").first()
    assert facts.loc["ViT-H/14", "model_training_flops"] == 4262 * unit
    assert facts.loc["ViT-H/14", ["model_epochs", "model_pretraining_epochs", "model_throughput", "model_tpu_core_days",
                                  "model_resolution"]].astype(float).tolist() == [14, 14, 85.9, 2.5, 384]
    assert str(notes[0]) == (f"read 'name' as model, 'Epochs' as model_epochs, 'Pre-training epochs' as "
                             f"model_pretraining_epochs, {flops!r} as model_training_flops (x 1e{np.log10(unit):.0f}), "
                             "'im/sec' as model_throughput, 'TPUv3-core-days' as model_tpu_core_days, 'Res.' as "
                             "model_resolution")


def test_a_long_tables_epochs_stay_the_fine_tunes_setting(tmp_path):
    path = tmp_path / "grid.csv"
    path.write_text("model,task,epochs,score\nr50,pets,10,90.1\nr50,pets,30,91.0\n")
    table, notes = external.read_rows(path, repeats="max")
    assert table["score"].tolist() == [91.0] and "model_epochs" not in table.columns
    assert any("not read: column(s) 'epochs'" in str(note) for note in notes)


def test_a_column_of_cells_off_the_scale_is_said_to_be_maybe_a_model_fact(tmp_path):
    path = tmp_path / "speed.csv"
    path.write_text("Model,ImageNet,Pets,Speed\nDeiT-B,81.8,95.0,292.3\nViT-B/16,77.9,94.1,85.9\nR50,76.1,92.0,1226.1\n")
    with pytest.raises(external.TableError, match=r"--allow-mixed-scale if the scores are not accuracies; if 'Speed' is "
                                                  r"no task but a fact of the models \(a speed, a size, a compute\), "
                                                  r"rename its column model_<name> \(e.g. 'model_speed'\) and import "
                                                  r"again: a model fact, not a score"):
        external.read_rows(path)
    path.write_text("Model,ImageNet,Pets,model_speed\nDeiT-B,81.8,95.0,292.3\nViT-B/16,77.9,94.1,85.9\n")
    assert sorted(set(external.read_rows(path)[0]["task"])) == ["ImageNet", "Pets"]
    path.write_text("Model,ImageNet,Pets\nDeiT-B,81.8,950\nViT-B/16,77.9,94.1\nR50,76.1,92.0\n")  # a typo: no hint
    with pytest.raises(external.TableError, match=r"not accuracies$"):
        external.read_rows(path)


def test_models_named_alike_on_two_rows_are_told_apart_by_the_model_fact_that_differs(tmp_path):
    """ViT's scaling table: ViT-L/16 pre-trained for 7 and for 14 epochs, two models on two rows."""
    path = tmp_path / "scaling.md"
    path.write_text("| name | Epochs | ImageNet | Pets | exaFLOPs |\n|---|---|---|---|---|\n"
                    "| ViT-B/32 | 7 | 80.73 | 93.40 | 55 |\n| ViT-L/16 | 7 | 86.30 | 96.81 | 783 |\n"
                    "| ViT-L/16 | 14 | 87.12 | 97.11 | 1567 |\n")
    table, notes = external.read_rows(path)
    assert table.set_index(["model", "task"])["score"].to_dict() == {
        ("ViT-B/32", "ImageNet"): 80.73, ("ViT-L/16 (Epochs: 7)", "ImageNet"): 86.3,
        ("ViT-L/16 (Epochs: 14)", "ImageNet"): 87.12, ("ViT-B/32", "Pets"): 93.4,
        ("ViT-L/16 (Epochs: 7)", "Pets"): 96.81, ("ViT-L/16 (Epochs: 14)", "Pets"): 97.11}
    assert "models named alike on several rows ('ViT-L/16') are told apart by 'Epochs': each is named with it " \
           "(e.g. 'ViT-L/16 (Epochs: 7)' and 'ViT-L/16 (Epochs: 14)')" in [str(note) for note in notes]


def test_a_vtab_table_is_told_to_give_its_training_set_size(store, tmp_path):
    """VTAB-1k trains on 1,000 images per task; the public facts give the full training sets."""
    header = "Method,CIFAR-100,DTD,Clevr-Count,DMLab,KITTI,sNORB-Azim\n"
    path = tmp_path / "vtab.csv"
    path.write_text(header + "Full,68.9,64.3,56.3,43.9,67.2,25.3\nLinear,63.4,63.2,37.8,34.8,61.0,14.5\n"
                    "VPT,78.8,65.8,68.5,48.4,78.1,31.5\n")
    notes = []
    imported(store, path, note=notes.append, report=notes.append)
    # CIFAR-100 and DTD are VTAB-1k tasks too: the note names every task that would take the size
    assert any(line.startswith("vtab.csv: 6 tasks are VTAB's ('CIFAR-100', 'DTD', 'Clevr-Count' and 3 more): their "
                               "training-set size is the full dataset's") for line in notes)
    sized = tmp_path / "sized.csv"
    sized.write_text(header + "Train size,1000,1000,1000,1000,1000,1000\n" + path.read_text().split("\n", 1)[1])
    notes = []
    imported(store, sized, source="sized", note=notes.append, report=notes.append)
    assert not any("VTAB" in line for line in notes)
