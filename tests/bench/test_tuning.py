"""Optuna tuning on a real sqlite store: parent and nested trial runs, best params for build, nested CV without leaks."""
from __future__ import annotations

import pandas as pd
import pytest

from fennec_mlflow.serving import build as ranking
from fennec_mlflow.store import tracking
from fennec_mlflow.bench import tuning
from tests.helpers import planted_benchmark, runs_in


def tune_runs(store, experiment: str):
    runs = runs_in(store, experiment)
    parents = [r for r in runs if r.data.tags[tracking.KIND_TAG] == "tune"]
    trials = [r for r in runs if r.data.tags[tracking.KIND_TAG] == "tune-trial"]
    return parents, trials


def test_tune_logs_a_parent_with_nested_trials_and_best_params_that_build_reads(store):
    outcome = tuning.run_tuning("parc", n_trials=3, nested_cv=False, progress=False)
    (parent,), trials = tune_runs(store, "fennec-tune-parc")
    assert parent.info.run_id == outcome.parent_run_id and parent.info.status == "FINISHED"
    assert len(trials) == 3
    for trial in trials:
        assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert trial.info.status == "FINISHED"
        assert {"k", "alpha", "nmf_l2"} <= set(trial.data.params)
        assert {"mean_pearson", "pearson.cifar10"} <= set(trial.data.metrics)
    first = next(t for t in trials if t.data.params["trial_number"] == "0")
    assert (first.data.params["k"], first.data.params["alpha"], first.data.params["nmf_l2"],
            first.data.params["shrinkage"]) == ("4", "0.5", "0.1", "auto")
    # Ties (trials that all fall back to popularity) go to the earliest trial, as Optuna's best_trial.
    best = max(trials, key=lambda t: (t.data.metrics["mean_pearson"], -int(t.data.params["trial_number"])))
    assert parent.data.metrics["best_mean_pearson"] == pytest.approx(best.data.metrics["mean_pearson"])
    assert parent.data.metrics["best_mean_pearson"] >= parent.data.metrics["default_mean_pearson"]
    assert parent.data.metrics["popularity_mean_pearson"] == pytest.approx(0.7031504, abs=1e-6)
    assert ranking.tuned_parameters("fennec-tune-parc") == outcome.best_params == {
        "k": int(best.data.params["k"]), "alpha": float(best.data.params["alpha"]),
        "nmf_l2": float(best.data.params["nmf_l2"]), "shrinkage": ranking._shrinkage(best.data.params["shrinkage"]),
        "formulation": best.data.params["formulation"]}  # PARC has task facts: the paper's formulation is searched
    assert 1 <= outcome.best_params["k"] <= 5  # each fit sees 6 of PARC's 7 tasks
    assert {a.path for a in store.list_artifacts(parent.info.run_id)} >= {"trials.csv", "optimization_history.png"}


@pytest.mark.slow
def test_tune_with_nested_cv_logs_the_honest_figure(store):
    outcome = tuning.run_tuning(planted_benchmark(), n_trials=2, inner_trials=2, progress=False)
    (parent,), trials = tune_runs(store, "fennec-tune-planted")
    assert len(trials) == 2
    metrics = parent.data.metrics
    assert metrics["nested_cv_mean_pearson"] == pytest.approx(outcome.nested.mean_pearson)
    assert {f"nested_cv_pearson.t{j}" for j in range(5)} <= set(metrics)
    assert "nested_cv.csv" in {a.path for a in store.list_artifacts(parent.info.run_id)}


def test_optuna_never_shares_the_mlflow_sqlite_file(tmp_path):
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(ValueError, match="MLflow tracking store"):
        tuning.optuna_storage(mlflow_uri, mlflow_uri)
    with pytest.raises(ValueError, match="MLflow tracking store"):
        tuning.optuna_storage(str(tmp_path / "mlflow.db"), mlflow_uri)
    assert tuning.optuna_storage(None, mlflow_uri) is None
    journal = tuning.optuna_storage(str(tmp_path / "optuna" / "study.log"), mlflow_uri)
    rdb = tuning.optuna_storage(f"sqlite:///{tmp_path / 'optuna.db'}", mlflow_uri)
    import optuna

    assert isinstance(journal, optuna.storages.JournalStorage) and isinstance(rdb, optuna.storages.RDBStorage)


@pytest.mark.slow
def test_parallel_workers_share_one_study_and_one_parent(store, tmp_path):
    journal = tmp_path / "optuna.log"
    outcome = tuning.run_tuning(planted_benchmark(), n_trials=4, nested_cv=False, workers=2, storage=str(journal),
                                study_name="shared", progress=False)
    (parent,), trials = tune_runs(store, "fennec-tune-planted")
    assert len(trials) == 4 and {t.data.tags["mlflow.parentRunId"] for t in trials} == {parent.info.run_id}
    assert parent.data.params["best_k"] == str(outcome.best_params["k"])
    # the study lives in the journal, not in MLflow: a second session resumes it under a new parent
    again = tuning.run_tuning(planted_benchmark(), n_trials=1, nested_cv=False, storage=f"journal:{journal}",
                              study_name="shared", progress=False)
    assert again.n_trials == 5 and again.parent_run_id != outcome.parent_run_id
    parents, trials = tune_runs(store, "fennec-tune-planted")
    assert len(parents) == 2 and len(trials) == 5


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n_trials"):
        tuning.run_tuning("parc", n_trials=0)
    with pytest.raises(ValueError, match="workers"):
        tuning.run_tuning("parc", workers=0)
    assert tuning._split_trials(5, 2) == [3, 2]
    assert isinstance(planted_benchmark().tuning_data().P, pd.DataFrame)
