"""A user's own image folders as tasks: named by their folder, never confused, rebuilt from the store."""
import pytest
from click.testing import CliRunner

from fennec_mlflow.cli import main
from fennec_mlflow.data.task_specs import load_task
from fennec_mlflow.store import tracking
from fennec_mlflow.store.jobs import score_cells
from fennec_mlflow.store.tracking import TrackingError
from tests.helpers import image_folder

MODELS = ["resnet20_cifar10", "nin_cifar10"]


def fda(client, *folders):
    return score_cells(MODELS, [load_task(f"folder:{folder}") for folder in folders], weights="random",
                       probe_size=30, mlflow_client=client, progress=False)


def test_two_folders_with_one_name_are_refused_before_anything_is_written(store, tmp_path):
    """/a/train and /b/train would both be task 'train': the newer cells would replace the older."""
    first, second = image_folder(tmp_path / "a" / "train", 0), image_folder(tmp_path / "b" / "train", 1)
    fda(store, first)
    with pytest.raises(TrackingError, match=f"already holds cells of another task of that name, from {first}"):
        fda(store, second)
    with pytest.raises(TrackingError, match="two tasks are named 'train'"):
        fda(store, first, second)
    assert len(tracking.runs_of_kind("fda", mlflow_client=store)) == 2
    assert [o.reused for o in fda(store, first)] == [True, True]  # the same folder again is the same task


def test_build_finds_the_stores_folder_tasks_by_the_folder_their_runs_logged(store, tmp_path):
    folders = [image_folder(tmp_path / "data" / name, seed) for seed, name in enumerate(["pets", "leaves", "cells"])]
    fda(store, *folders)
    result = CliRunner().invoke(main, ["build", "--kind", "fda", "--encoder", f"zoo:{MODELS[0]}:random", "--k", "1",
                                       "--no-tune"])
    assert result.exit_code == 0, result.output
    proxies = tracking.runs_of_kind("task-proxy", mlflow_client=store)
    assert sorted(run.data.params["task_source"] for run in proxies) == sorted(f"folder:{f}" for f in folders)


def test_cli_finetune_flags_chance_level_cells_and_says_when_newer_cells_replace_older(store, tmp_path):
    folder = image_folder(tmp_path / "data" / "pets", 0)
    common = ["finetune", "--models", MODELS[0], "--tasks", f"folder:{folder}", "--wds", "0", "--epochs", "1",
              "--patience", "1", "--weights", "random"]
    stalled = CliRunner().invoke(main, [*common, "--lrs", "1e-9"])  # no step moves the weights
    assert stalled.exit_code == 0, stalled.output
    assert "(chance is 0.333)" in stalled.output and "did no better than chance" in stalled.output
    assert "already had" not in stalled.output
    # 36 images: 9 in the test split, accuracy in steps of 11 points
    assert ("warning: task 'pets' leaves only 9 test image(s) in its 6:2:2 split, so its test accuracy is no "
            "reliable ground truth; give it at least 50 images") in stalled.output
    again = CliRunner().invoke(main, [*common, "--lrs", "0.05"])
    assert again.exit_code == 0, again.output
    assert "1 (model, task) pair(s) already had a full fine-tune with another configuration" in again.output


def test_cli_reports_an_unreadable_image_as_one_warning_line(store, tmp_path):
    folder = image_folder(tmp_path / "data" / "pets", 0)
    (folder / "a" / "broken.png").write_bytes(b"not a png")
    result = CliRunner().invoke(main, ["fda", "--models", ",".join(MODELS), "--tasks", f"folder:{folder}",
                                       "--weights", "random", "--probe-size", "30"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "broken.png" in line]
    assert lines == [f"warning: skipped 1 unreadable image(s) in {folder}: a/broken.png (UnidentifiedImageError)"]


def test_the_stores_names_of_a_folder_and_its_namesakes_are_found_by_the_folder_its_runs_logged(store, tmp_path):
    mine, other = image_folder(tmp_path / "a" / "pets", 0), image_folder(tmp_path / "b" / "pets", 1)
    (tmp_path / "linked").symlink_to(mine)
    tasks = [load_task(str(tmp_path / "linked")), load_task(f"folder:{mine}")]
    assert tasks[0].source == tasks[1].source == f"folder:{mine}"  # a link is the folder it points to
    tracking.write_runs(store, tracking.experiment_id(store), [tracking.RunRecord(
        kind="fda", model=MODELS[0], task=task.name, cell=task.name, metrics={"fda_score": 0.5},
        params={"task_source": task.source}) for task in tasks])
    found = tracking.task_names_of_source(store, tracking.DEFAULT_EXPERIMENT, f"folder:{mine}")
    assert sorted(found) == ["linked", "pets"]
    assert tracking.task_names_of_source(store, tracking.DEFAULT_EXPERIMENT, f"folder:{other}") == []
    assert tracking.other_task_source(store, tracking.DEFAULT_EXPERIMENT, load_task(f"folder:{other}")) == \
        f"folder:{mine}"
    assert tracking.other_task_source(store, tracking.DEFAULT_EXPERIMENT, tasks[1]) is None
