"""The FDA job end to end on real models, real synthetic tasks and a real sqlite store."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fennec_mlflow.store import tracking
from fennec_mlflow.data import zoo
from fennec_mlflow.core.estimators import get_estimator
from fennec_mlflow.store.jobs import FeatureError, score_cells, score_cell_key
from fennec_mlflow.data.synthetic import synthetic_task
from fennec_mlflow.data.tasks import TaskError, from_arrays, sample_probe
from tests.helpers import blob_images, crash_on_second_trial, run_entry_point


@pytest.fixture(scope="module")
def small_tasks():
    return [synthetic_task("shapes-4", samples_per_class=30), synthetic_task("digits-5class", samples_per_class=30)]


def count_runs(client, kind):
    return len(tracking.runs_of_kind(kind, mlflow_client=client))


def test_fda_job_logs_each_cell_once_and_the_matrix_reads_back(store, small_tasks):
    models = ["resnet20_cifar10", "diaresnet20_cifar10"]
    first = score_cells(models, small_tasks, probe_size=60, mlflow_client=store, progress=False)
    assert len(first) == 4 and not any(o.reused for o in first)
    again = score_cells(models, small_tasks, probe_size=60, mlflow_client=store, progress=False)
    assert all(o.reused for o in again) and count_runs(store, "fda") == 4
    km = tracking.load_matrix("fda", mlflow_client=store)
    for outcome in first:
        assert km.values.loc[outcome.model, outcome.task] == pytest.approx(outcome.score)
        assert 0 < outcome.score <= 1
    run = store.get_run(first[0].run_id)
    assert run.data.tags["fennec.kind"] == "fda" and run.data.tags["fennec.model"] == "resnet20_cifar10"
    assert run.data.params["probe_size"] == "60" and run.data.params["feature_dim"] == "64"
    assert {"fda_score", "fda_score_sum", "feature_seconds", "score_seconds"} <= set(run.data.metrics)
    assert run.inputs.dataset_inputs[0].dataset.name == "shapes-4-probe"
    assert km.task_facts.loc["shapes-4", "class_count"] == 4
    # a different probe is a different cell
    score_cells(models[:1], small_tasks[:1], probe_size=40, mlflow_client=store, progress=False)
    assert count_runs(store, "fda") == 5


def test_a_crashed_cell_is_redone_and_its_half_written_run_discarded(store, small_tasks):
    model = zoo.load_model("resnet20_cifar10", weights="random")
    probe = sample_probe(small_tasks[0], 60, 0)
    exp_id = tracking.experiment_id(store)
    crashed = tracking.start_run(store, exp_id, tracking.RunRecord(
        kind="fda", model=model.name, task=probe.task.name, cell=score_cell_key("fda", model, probe, get_estimator("fda").get_params())))
    [outcome] = score_cells([model], small_tasks[:1], probe_size=60, mlflow_client=store, progress=False)
    assert not outcome.reused and outcome.run_id != crashed
    assert store.get_run(crashed).info.lifecycle_stage == "deleted"  # one run per cell, never two
    assert [r.info.run_id for r in store.search_runs([exp_id])] == [outcome.run_id]
    assert tracking.load_matrix("fda", mlflow_client=store).run_ids.iloc[0, 0] == outcome.run_id


def test_bad_input_leaves_no_run(store, small_tasks):
    with pytest.raises(zoo.ZooError, match="resnet20_cifar1"):
        score_cells(["resnet20_cifar10", "resnet20_cifar1"], small_tasks, mlflow_client=store, progress=False)
    images, labels = blob_images(2, 3)
    with pytest.raises(TaskError, match="cannot cover 3 classes"):
        score_cells(["resnet20_cifar10"], [from_arrays(images, labels, name="t")], probe_size=2,
                    mlflow_client=store, progress=False)

    class NaNNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x.mean(dim=(2, 3)) * torch.tensor(float("nan")))

    with pytest.raises(FeatureError, match="NaN/inf features for 60 of 60"):
        score_cells([zoo.from_module(NaNNet(), "nan-net", input_size=32)], small_tasks[:1], probe_size=60,
                    mlflow_client=store, progress=False)
    with pytest.raises(KeyError, match="unknown transferability estimator 'fdaa'"):
        score_cells(["resnet20_cifar10"], small_tasks, estimator="fdaa", mlflow_client=store, progress=False)
    assert store.search_runs([tracking.experiment_id(store)]) == []


@pytest.mark.slow
def test_mlflow_run_fda_entry_point_in_an_empty_directory(tmp_path):
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "HOME": str(tmp_path),
           "FENNEC_CACHE_DIR": str(tmp_path / "cache")}
    params = {"models": "resnet20_cifar10,nin_cifar10", "tasks": "shapes-4,gratings-orient-4", "probe_size": 80}
    for attempt in range(2):
        done = run_entry_point("fda", params, cwd=tmp_path, env=env)
    client = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert count_runs(client, "fda") == 4  # the second run reused every cell
    assert "0 new fda run(s), 4 cell(s) already in the store" in done.stdout
    project_runs = client.search_runs(["0"])
    assert len(project_runs) == 2 and all(r.data.tags.get("fennec.job") == "fda" for r in project_runs)


def test_finetune_job_logs_parent_and_trials_and_resumes_after_a_crash(store, monkeypatch):
    from fennec_mlflow.store import jobs
    from fennec_mlflow.training.finetune import FinetuneConfig

    task = synthetic_task("gratings-orient-4", samples_per_class=25)
    config = FinetuneConfig(learning_rates=(0.05, 0.01), weight_decays=(1e-4,), max_epochs=2, patience=1,
                            progress=False)
    restore = crash_on_second_trial(monkeypatch)
    with pytest.raises(RuntimeError, match="simulated kill"):
        jobs.finetune_cells(["resnet20_cifar10"], [task], config=config, mlflow_client=store)
    restore()
    assert count_runs(store, "finetune") == 0 and count_runs(store, "finetune-trial") == 1

    [outcome] = jobs.finetune_cells(["resnet20_cifar10"], [task], config=config, mlflow_client=store)
    parent = store.get_run(outcome.run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_resumed"] == 1
    assert parent.data.metrics["test_accuracy"] == pytest.approx(outcome.score)
    trials = tracking.runs_of_kind("finetune-trial", mlflow_client=store)
    assert len(trials) == 2 and {t.data.tags["mlflow.parentRunId"] for t in trials} == {outcome.run_id}
    history = store.get_metric_history(trials[0].info.run_id, "val_accuracy")
    assert [m.step for m in history][:2] == [1, 2]
    assert tracking.load_matrix("finetune", mlflow_client=store).values.loc["resnet20_cifar10", task.name] == outcome.score
    [again] = jobs.finetune_cells(["resnet20_cifar10"], [task], config=config, mlflow_client=store)
    assert again.reused and count_runs(store, "finetune-trial") == 2


def test_any_estimator_fills_a_matrix_that_loads_back(store, small_tasks):
    models = ["resnet20_cifar10", "nin_cifar10"]
    for estimator in ("logme", "leep"):  # leep reads the source head's logits
        outcomes = score_cells(models, small_tasks, estimator=estimator, probe_size=60, mlflow_client=store,
                               progress=False)
        km = tracking.load_matrix("estimator", estimator=estimator, mlflow_client=store)
        assert km.shape == (2, 2)
        for outcome in outcomes:
            assert km.values.loc[outcome.model, outcome.task] == pytest.approx(outcome.score)
    run = tracking.runs_of_kind("estimator", mlflow_client=store)[0]
    assert run.data.params["estimator"] in ("logme", "leep") and "score" in run.data.metrics
    assert {"feature_seconds", "score_seconds"} <= set(run.data.metrics)
    assert score_cells(models, small_tasks, estimator="logme", probe_size=60, mlflow_client=store,
                       progress=False)[0].reused
    assert count_runs(store, "fda") == 0
