"""``benchmark=store``: the user's own ground truth (an imported table) evaluated and tuned like a public table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fennec_mlflow.bench import evaluate as evaluation_runs
from fennec_mlflow.bench import tuning
from fennec_mlflow.bench.store import store_benchmark
from fennec_mlflow.cli import main
from fennec_mlflow.core import evaluation as ev
from fennec_mlflow.core.recommender import Fennec
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.store import tracking
from fennec_mlflow.store.external import import_table
from tests.helpers import runs_in
from tests.planted import planted_long_table, write_table

METRICS = ("mean_pearson", "mean_spearman", "mean_weighted_tau", "mean_top1_regret", "mean_top5_hit", "std_pearson",
           "pearson.task0", "spearman.task3", "top1_regret.task5")


def imported(tmp_path, table: pd.DataFrame, source: str, allow_mixed_scale: bool = False) -> str:
    import_table(write_table(table, tmp_path / f"{source}.csv"), source=source, progress=False,
                 allow_mixed_scale=allow_mixed_scale)
    return source


def test_an_imported_table_with_facts_is_a_benchmark(store, tmp_path):
    bench = store_benchmark(source=imported(tmp_path, planted_long_table(), "planted"))
    assert bench.name == "store-planted" and evaluation_runs.experiment_name(bench.name) == "fennec-eval-store-planted"
    assert bench.P.shape == (12, 6) and bench.targets == [f"task{j}" for j in range(6)]
    assert int(bench.P.isna().sum().sum()) == 3 and bench.history is None
    # task facts given as task_class_count / task_train_size / task_domain columns
    assert {"log_class_count", "log_sample_count", "domain=medical"} <= set(bench.task_meta.columns)
    assert list(bench.model_meta.columns) == ["log_parameters"]  # the only model fact that varies
    assert bench.families.nunique() == 2 and not bench.notes
    import_table(write_table(planted_long_table(), tmp_path / "again.csv"), source="planted", experiment="other",
                 progress=False)
    assert store_benchmark(source="planted", experiment="other").name == "store-planted-in-other"  # kept apart


def test_numeric_model_facts_a_user_imports_enter_the_meta_regression(store, tmp_path):
    table = planted_long_table()
    size = np.log(table.pop("model_parameters")) - 14  # the planted model fact the scores depend on
    table["model_imagenet_top1"] = 75 + 2 * size  # an accuracy: stays linear
    table["model_flops"] = np.exp(20 + 3 * size)  # positive and spanning far more than 100x: its log
    bench = store_benchmark(source=imported(tmp_path, table, "facts"))
    assert sorted(bench.model_meta.columns) == ["imagenet_top1", "log_flops"]  # model_family is text: not meta
    np.testing.assert_allclose(bench.model_meta["log_flops"], 20 + 3 * (bench.model_meta["imagenet_top1"] - 75) / 2)
    runs = evaluation_runs.run_evaluation(bench, estimators="fennec-no-transfer,popularity", seeds=(0,),
                                          progress=False)
    meta, popularity = (runs.outcomes[n].result.summary["mean_pearson"] for n in ("fennec-no-transfer", "popularity"))
    assert meta > popularity + 0.2  # the scores follow the imported fact times the task's class count


def test_tasks_of_a_table_without_facts_stay_unknown_and_are_ranked_by_popularity(store, tmp_path):
    """A user's own tasks beside public ones: their facts are unknown, not average (filled in, the
    tasks without facts were each other's nearest neighbours)."""
    table = planted_long_table(n_tasks=8)
    own = table["task"].isin(["task1", "task4", "task6"])
    table.loc[own, ["task_class_count", "task_train_size", "task_domain"]] = np.nan
    bench = store_benchmark(source=imported(tmp_path, table, "partly"))
    assert bench.task_meta.loc[["task1", "task4", "task6"]].isna().all().all()
    assert bench.task_meta.drop(["task1", "task4", "task6"]).notna().all().all()
    history = bench.P.drop(columns="task4")
    fennec = Fennec(n_estimators=20).fit(history, task_meta=bench.task_meta.loc[history.columns])
    np.testing.assert_allclose(fennec.bias(bench.task_meta.loc["task4"]), fennec.bias_)  # like no task in particular


def test_an_evaluation_on_a_small_table_says_that_fennec_weighs_no_interaction_there(store, tmp_path):
    """6 tasks: each target's history holds 5, fewer than an interaction needs; 9 tasks hold 8."""
    small = store_benchmark(source=imported(tmp_path, planted_long_table(n_tasks=6), "small"))
    notes = evaluation_runs.run_evaluation(small, estimators="popularity", seeds=(0,), progress=False).notes
    assert any(note.startswith("each target's history holds 5 tasks, fewer than the 8 that Fennec needs")
               for note in notes), notes
    large = store_benchmark(source=imported(tmp_path, planted_long_table(n_tasks=9), "large"))
    notes = evaluation_runs.run_evaluation(large, estimators="popularity", seeds=(0,), progress=False).notes
    assert not any("fewer than the 8" in note for note in notes), notes


def test_an_arch_column_gives_the_family_baseline_its_families(store, tmp_path):
    """Papers head the architecture column "Arch": imported as the fact model_arch, it names families."""
    table = planted_long_table().rename(columns={"model_family": "model_arch"})
    bench = store_benchmark(source=imported(tmp_path, table, "arch"))
    assert bench.families is not None and bench.families.nunique() == 2


def test_a_published_tables_model_names_give_the_family_baseline_its_families(store, tmp_path):
    """No family fact: "EfficientNet-B0" and "EfficientNet-B3" are one family by their names, and the notes say
    where the families came from."""
    names = ["EfficientNet-B0", "EfficientNet-B3", "ResNet-50", "ResNet-152", "ViT-B/16", "ViT-L/16", "BYOL"]
    table = planted_long_table(n_models=len(names), facts=False)
    table["model"] = table["model"].map(dict(zip([f"net{i:02d}" for i in range(len(names))], names)))
    bench = store_benchmark(source=imported(tmp_path, table, "named"))
    assert bench.families.to_dict() == {"BYOL": "byol", "EfficientNet-B0": "efficientnet",
                                        "EfficientNet-B3": "efficientnet", "ResNet-152": "resnet",
                                        "ResNet-50": "resnet", "ViT-B/16": "vit", "ViT-L/16": "vit"}
    assert any(note.startswith("model families read from the names' leading letters (4 families")
               for note in bench.notes)


def test_a_bare_table_evaluates_fennec_as_popularity_and_skips_what_needs_facts(store, tmp_path):
    table = planted_long_table(facts=False, holes=6)
    bench = store_benchmark(source=imported(tmp_path, table, "bare"))
    assert bench.model_meta is None and bench.task_meta is None and bench.families is None
    assert bench.summary()["model_meta_columns"] == 0 and bench.summary()["families"] == "unknown"
    runs = evaluation_runs.run_evaluation(bench, seeds=(0,), progress=False)
    assert set(runs.outcomes) == {"fennec", "fennec-warm-1", "fennec-warm-3", "fennec-warm-5", "popularity", "random"}
    assert any("family-mean" in note for note in runs.notes) and any("no task information" in n for n in runs.notes)
    assert any(note.startswith("skipped: fennec-no-transfer") for note in runs.notes)
    fennec, popularity = (runs.outcomes[n].result.summary["mean_pearson"] for n in ("fennec", "popularity"))
    assert fennec == pytest.approx(popularity, abs=1e-9)  # no task information: Fennec ranks by popularity
    # asked for by name, a row the benchmark cannot support is refused, in one clear sentence
    with pytest.raises(InvalidInputError, match="fennec-no-transfer .*no numeric model facts that differ"):
        evaluation_runs.run_evaluation(bench, estimators="fennec,fennec-no-transfer", progress=False)
    with pytest.raises(InvalidInputError, match="no numeric model facts"):
        evaluation_runs.evaluate_estimator(bench, "fennec-no-transfer", seeds=(0,))


def test_targets_need_three_known_models_and_three_targets(store, tmp_path):
    table = planted_long_table(n_models=6, n_tasks=4, holes=0)
    table = table[~((table["task"] == "task3") & (table["model"] != "net00"))]  # task3: one known model
    bench = store_benchmark(source=imported(tmp_path, table, "thin"))
    assert bench.targets == ["task0", "task1", "task2"]
    # task3 is no history either: one or two scores order nothing, and popularity would count them in full
    assert "task3" not in bench.P.columns
    assert "1 ground-truth task(s) with fewer than 3 known models left out: task3" in bench.notes
    too_few = table[table["task"].isin(["task0", "task1", "task3"])]
    with pytest.raises(InvalidInputError, match="2 task\\(s\\) with at least 3 known models"):
        store_benchmark(source=imported(tmp_path, too_few, "fewer"))
    with pytest.raises(InvalidInputError, match="give --source"):
        store_benchmark(truth_kind="external")
    with pytest.raises(InvalidInputError, match="holds no fine-tunes to be ground truth but imported tables: "
                                                "give --source NAME, one of fewer, thin"):
        store_benchmark()


def test_no_ground_truth_says_which_imported_sources_to_give(store, tmp_path):
    imported(tmp_path, planted_long_table(n_tasks=4), "kornblith")
    runner = CliRunner()
    missing = runner.invoke(main, ["evaluate", "--benchmark", "store", "--source", "kornblit"])
    assert missing.exit_code == 2 and missing.output.strip() == (
        "error: no finished external runs of source 'kornblit' in experiment 'fennec'; the imported sources are "
        "kornblith: give one as --source NAME, or import another table with `fennec import TABLE --source NAME`")
    built = runner.invoke(main, ["build", "--kind", "external", "--source", "kornblit", "--encoder", "none"])
    assert built.exit_code == 2 and built.output.strip().splitlines()[-1] == missing.output.strip()


def test_scrambling_the_targets_own_columns_does_not_change_its_prediction(store, tmp_path, monkeypatch):
    """History of another kind (here a second table standing for FDA scores): the target's own column of
    the history, like its ground truth, is never seen."""
    truth = planted_long_table(seed=1)
    history = planted_long_table(seed=1).assign(score=lambda t: t["score"] / 100 + 0.01 * np.sin(t.index))
    target = "task2"
    rng = np.random.default_rng(0)

    def scrambled(table: pd.DataFrame) -> pd.DataFrame:
        table = table.copy()
        rows = table.index[table["task"] == target]
        table.loc[rows, "score"] = rng.permutation(table.loc[rows, "score"].to_numpy()) * 3 - 7
        return table

    for name, table in {"truth": truth, "fda-like": history, "truth-s": scrambled(truth),
                        "fda-like-s": scrambled(history)}.items():
        imported(tmp_path, table, name, allow_mixed_scale=name.endswith("-s"))  # scrambled off the scale on purpose
    seen = []
    real_fit = Fennec.fit

    def spy_fit(self, P, *args, **kwargs):
        seen.append(set(P.columns))
        return real_fit(self, P, *args, **kwargs)

    monkeypatch.setattr(Fennec, "fit", spy_fit)
    predicted = {}
    for suffix in ("", "-s"):
        bench = store_benchmark(source=f"truth{suffix}", history_source=f"fda-like{suffix}")
        assert bench.history_name == f"external:fda-like{suffix}" and target in bench.history.columns
        assert bench.name == f"store-truth{suffix}-from-external-fda-like{suffix}"
        seen.clear()
        outcome = evaluation_runs.evaluate_estimator(bench, "fennec", seeds=(0,))
        assert len(seen) == 6 and all(len(columns) == 5 for columns in seen)
        cells = outcome.result.predictions
        predicted[suffix] = cells[cells["target"] == target].set_index("model")["predicted"]
    pd.testing.assert_series_equal(predicted[""], predicted["-s"])


def _write_cells(client, table: pd.DataFrame, kind: str) -> None:
    facts = [c for c in table.columns if c.startswith(("model_", "task_"))]
    metric = tracking.MATRIX_METRIC[kind]
    tracking.write_runs(client, tracking.experiment_id(client), [tracking.RunRecord(
        kind=kind, model=row.model, task=row.task, cell=f"{kind}-{row.model}-{row.task}",
        params={c: getattr(row, c) for c in facts}, metrics={metric: row.score}) for row in table.itertuples()])


def test_fine_tune_ground_truth_is_evaluated_on_the_best_evidence_without_the_targets_own_cells(store, monkeypatch):
    table = planted_long_table(n_models=8, n_tasks=8, seed=3, holes=0)
    tuned = [f"task{j}" for j in range(5)]
    _write_cells(store, table[table["task"].isin(tuned)].assign(score=lambda t: t["score"] / 100), "finetune")
    _write_cells(store, table.assign(score=lambda t: -t["score"]), "fda")  # every task, the fine-tuned ones too
    bench = store_benchmark()
    assert bench.history_name == "best" and bench.targets == tuned
    assert (bench.history[tuned] > 0).all().all() and (bench.history.drop(columns=tuned) < 0).all().all()
    assert bench.history_weights[tuned].eq(1.0).all() and bench.history_weights.drop(tuned).lt(1.0).all()
    seen = []
    real_fit = Fennec.fit

    def spy_fit(self, P, *args, task_weights=None, **kwargs):
        seen.append((set(P.columns), task_weights))
        return real_fit(self, P, *args, task_weights=task_weights, **kwargs)

    monkeypatch.setattr(Fennec, "fit", spy_fit)
    outcome = evaluation_runs.evaluate_estimator(bench, "fennec", seeds=(0,))
    assert len(seen) == len(tuned)
    for target, (columns, weights) in zip(tuned, seen):
        assert target not in columns and len(columns) == 7  # the other 4 fine-tuned tasks + 3 FDA-only ones
        assert weights is not None and weights[target] == 1.0
    assert outcome.result.summary["mean_pearson"] > 0.5


def test_label_based_scores_of_the_targets_are_evaluated_as_rankers_of_their_own_target(store):
    """`fennec fda` (or another estimator) run on the targets themselves: each ranks its own target,
    beside Fennec, which never sees them."""
    table = planted_long_table(n_models=8, n_tasks=6, seed=3, holes=0)
    tuned = [f"task{j}" for j in range(4)]
    _write_cells(store, table[table["task"].isin(tuned)].assign(score=lambda t: t["score"] / 100), "finetune")
    _write_cells(store, table.assign(score=lambda t: -t["score"]), "fda")  # a perfectly wrong estimator
    logme = table[table["task"].isin(tuned[:2])]
    tracking.write_runs(store, tracking.experiment_id(store), [tracking.RunRecord(
        kind="estimator", model=row.model, task=row.task, cell=f"logme-{row.model}-{row.task}",
        params={"estimator": "logme"}, metrics={"score": row.score}) for row in logme.itertuples()])
    bench = store_benchmark()
    assert sorted(bench.target_scores) == ["fda", "logme"]
    assert list(bench.target_scores["logme"].dropna(axis=1, how="all").columns) == tuned[:2]
    runs = evaluation_runs.run_evaluation(bench, estimators="fda,logme,popularity", seeds=(0,), progress=False)
    pearson = runs.outcomes["fda"].result.per_target["pearson"]
    assert pearson.to_dict() == pytest.approx({t: -1.0 for t in tuned})
    logme_pearson = runs.outcomes["logme"].result.per_target["pearson"]
    assert logme_pearson[tuned[:2]].tolist() == pytest.approx([1.0, 1.0]) and logme_pearson[tuned[2:]].isna().all()
    with pytest.raises(InvalidInputError, match="unknown estimator.*'leep'"):
        evaluation_runs.run_evaluation(bench, estimators="leep", progress=False)


def test_the_store_benchmark_places_targets_by_the_task_proxies_build_computed(store):
    """What `fennec build` serves (task vectors from an encoder's proxies) is what `evaluate` measures."""
    table = planted_long_table(n_models=8, n_tasks=5, seed=3, holes=0)
    _write_cells(store, table.assign(score=lambda t: t["score"] / 100), "finetune")
    rng = np.random.default_rng(0)
    tracking.write_runs(store, tracking.experiment_id(store), [tracking.RunRecord(
        kind="task-proxy", task=task, cell=f"proxy-{encoder}-{task}", params={"encoder": encoder},
        artifacts={"proxy.json": rng.normal(size=6).tolist()})
        for encoder, tasks in (("zoo:wide", sorted(set(table["task"]))), ("zoo:narrow", ["task0"])) for task in tasks])
    bench = store_benchmark()
    assert bench.task_vector_source == "task_proxy" and bench.task_proxy.shape == (5, 6)
    assert store_benchmark(encoder=None).task_proxy is None
    # A task fine-tuned after the last build has no proxy yet: it is left out, not every task placed by facts.
    later = planted_long_table(n_models=8, n_tasks=6, seed=3, holes=0)
    _write_cells(store, later[later["task"] == "task5"].assign(score=lambda t: t["score"] / 100), "finetune")
    bench = store_benchmark(encoder="zoo:wide")
    assert bench.task_proxy.shape == (5, 6) and "task5" not in bench.P.columns
    assert any("1 task(s) without a zoo:wide task proxy left out (task5" in note for note in bench.notes)


@pytest.mark.slow
def test_evaluate_store_logs_one_run_per_estimator_with_the_standard_metrics(store, tmp_path):
    # 8 tasks: with fewer, Fennec's confidence bounds (rightly) keep it near popularity
    bench = store_benchmark(source=imported(tmp_path, planted_long_table(n_tasks=8), "planted"))
    outcome = evaluation_runs.run_evaluation(bench, seeds=(0,), progress=False)
    runs = [r for r in runs_in(store, "fennec-eval-store-planted") if r.data.tags[tracking.KIND_TAG] == "evaluation"]
    by_estimator = {run.data.params["estimator"]: run for run in runs}
    supported = {e for e in evaluation_runs.ESTIMATORS if not evaluation_runs.unavailable(bench, e)}
    assert len(runs) == len(supported) and set(by_estimator) == supported
    assert set(evaluation_runs.ESTIMATORS) - supported <= {"source-accuracy", "model-size", "archi2vec-family-mean"}  # facts the table lacks
    for name, run in by_estimator.items():
        assert run.data.tags[tracking.KIND_TAG] == "evaluation" and run.data.params["benchmark"] == "store-planted"
        assert set(METRICS) <= set(run.data.metrics), name
        assert {"scatter.png", "predictions.csv", "per_target.csv"} <= {a.path for a in store.list_artifacts(run.info.run_id)}
    popularity = ev.leave_one_task_out(bench.P, ev.popularity).summary["mean_pearson"]
    assert by_estimator["popularity"].data.metrics["mean_pearson"] == pytest.approx(popularity)
    # the planted re-ordering follows facts Fennec is given: it must beat popularity clearly
    assert outcome.outcomes["fennec"].result.summary["mean_pearson"] > popularity + 0.2


def test_cli_evaluate_store_after_import(store, tmp_path):
    path = write_table(planted_long_table(), tmp_path / "mine.csv")
    runner = CliRunner()
    assert runner.invoke(main, ["import", str(path), "--source", "mine"]).exit_code == 0
    result = runner.invoke(main, ["evaluate", "--benchmark", "store", "--source", "mine",
                                  "--estimators", "popularity,family-mean"])  # Fennec's rows: the slow test
    assert result.exit_code == 0, result.output
    assert "experiment 'fennec-eval-store-mine'" in result.output
    assert {"popularity", "family-mean"} <= {line.split()[0] for line in result.output.splitlines() if line.strip()}
    assert sorted(r.data.tags[tracking.KIND_TAG] for r in runs_in(store, "fennec-eval-store-mine")) == [
        "evaluation", "evaluation", "leaderboard"]
    missing = runner.invoke(main, ["evaluate", "--benchmark", "store", "--source", "nothing-imported"])
    assert missing.exit_code == 2 and missing.output.startswith(
        "error: no finished external runs of source 'nothing-imported' in experiment 'fennec'; the imported sources "
        "are mine: give one as --source NAME")
    wrong = runner.invoke(main, ["evaluate", "--benchmark", "parc", "--source", "mine"])
    assert wrong.exit_code == 2 and "--benchmark store only" in wrong.output


def test_tasks_named_with_characters_mlflow_refuses_in_metric_names_evaluate(store, tmp_path):
    """A paper's header 'Aircraft (%)' is a fine task name; its per-task metric is 'pearson.Aircraft ___'."""
    table = planted_long_table()
    table["task"] = table["task"] + " (%)"
    path = write_table(table, tmp_path / "mine.csv")
    runner = CliRunner()
    assert runner.invoke(main, ["import", str(path), "--source", "mine"]).exit_code == 0
    result = runner.invoke(main, ["evaluate", "--benchmark", "store", "--source", "mine", "--estimators", "popularity"])
    assert result.exit_code == 0, result.output
    run = next(r for r in runs_in(store, "fennec-eval-store-mine") if r.data.tags[tracking.KIND_TAG] == "evaluation")
    assert {"pearson.task0 ___", "top1_regret.task5 ___"} <= set(run.data.metrics)


def test_tune_on_the_store_logs_best_params_with_shrinkage(store, tmp_path):
    bench = store_benchmark(source=imported(tmp_path, planted_long_table(n_tasks=5), "planted"))
    outcome = tuning.run_tuning(bench, n_trials=2, nested_cv=False, progress=False)
    (parent,) = [r for r in runs_in(store, "fennec-tune-store-planted") if r.data.tags[tracking.KIND_TAG] == "tune"]
    assert {"best_k", "best_alpha", "best_nmf_l2", "best_shrinkage"} <= set(parent.data.params)
    assert parent.data.params["history"] == "truth" and parent.data.params["shrinkage_range"] == "auto or 0..1"
    shrinkage = outcome.best_params["shrinkage"]
    assert parent.data.params["best_shrinkage"] == str(shrinkage) and (shrinkage == "auto" or 0 <= shrinkage <= 1)
    assert parent.data.metrics["popularity_mean_pearson"] == pytest.approx(
        ev.leave_one_task_out(bench.P, ev.popularity).summary["mean_pearson"])
    # the chosen trial is below Optuna's best only when that one's gain is not beyond doubt
    assert outcome.highest_value == pytest.approx(max(outcome.trials["value"].dropna()))
    assert outcome.best_value <= outcome.highest_value
