"""Evaluation runs on a real sqlite store: one run per estimator, the design's metric names, artifacts."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from fennec_mlflow.bench import evaluate as evaluation_runs
from fennec_mlflow.bench import public as benchmarks
from fennec_mlflow.core import evaluation as ev
from fennec_mlflow.store import tracking
from tests.helpers import planted_benchmark, runs_in


def estimator_runs(store, experiment: str):
    """The per-estimator evaluation runs of an experiment (not their leaderboard parent)."""
    return [r for r in runs_in(store, experiment) if r.data.tags[tracking.KIND_TAG] == "evaluation"]


PARC_TARGETS = ["caltech101", "cifar10", "cub200", "nabird", "oxford_pets", "stanford_dogs", "voc2007"]


# --------------------------------------------------------------------------- benchmarks

def test_public_benchmarks_have_the_documented_shapes_and_numeric_meta():
    parc, parc6, tg = (benchmarks.load_benchmark(n) for n in ("parc", "parc6", "transfergraph"))
    assert parc.P.shape == (32, 7) and int(parc.P.isna().sum().sum()) == 28
    assert sorted(parc.targets) == PARC_TARGETS
    assert parc6.targets == [t for t in parc.P.columns if t != "voc2007"] and "voc2007" in parc6.P.columns
    assert tg.P.shape == (180, 13) and tg.P.notna().mean().mean() > 0.9
    for bench in (parc, parc6, tg):
        assert list(bench.model_meta.index) == list(bench.P.index)
        assert list(bench.task_meta.index) == list(bench.P.columns)
        for table in (bench.model_meta, bench.task_meta):
            assert np.isfinite(table.to_numpy(dtype=float)).all()
        assert bench.families.reindex(bench.P.index).notna().all()
    # PARC: archi2vec dimensions, architecture and source one-hot, source facts (ImageNet's from SOURCE_FACTS)
    columns = set(parc.model_meta.columns)
    assert {"a2v_0", "arch=resnet50", "source=imagenet", "source_log_train_size", "log_parameters"} <= columns
    assert parc.model_meta.loc["alexnet@imagenet", "source_log_class_count"] == pytest.approx(np.log(1000))
    assert parc.task_meta.loc["nabird", "log_class_count"] == pytest.approx(np.log(555))
    # TransferGraph: the model without model_type gets one from its architecture class
    assert tg.families["michaelbenayoun/vit-base-beans"] == "vit"
    with pytest.raises(ValueError, match="unknown benchmark"):
        benchmarks.load_benchmark("imagenet")


# --------------------------------------------------------------------------- runs

@pytest.mark.slow
def test_every_estimator_is_one_evaluation_run_in_one_experiment(store):
    outcome = evaluation_runs.run_evaluation("parc", seeds=(0,), progress=False)
    outcome_bench = benchmarks.load_benchmark("parc")
    assert outcome.experiment == "fennec-eval-parc"
    runs = estimator_runs(store, "fennec-eval-parc")
    by_estimator = {run.data.params["estimator"]: run for run in runs}
    supported = {e for e in evaluation_runs.ESTIMATORS if not evaluation_runs.unavailable(outcome_bench, e)}
    assert supported == set(evaluation_runs.ESTIMATORS) - {"source-accuracy"}  # PARC publishes no source accuracy
    assert len(runs) == len(supported) and set(by_estimator) == supported
    assert any("source-accuracy" in note for note in outcome.notes)
    for name, run in by_estimator.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags[tracking.KIND_TAG] == "evaluation"
        assert run.data.params["benchmark"] == "parc"
        for metric in ("mean_pearson", "mean_spearman", "mean_weighted_tau", "mean_top1_regret", "mean_top5_hit",
                       "std_pearson", "pearson.cifar10", "spearman.nabird", "top1_regret.voc2007"):
            assert metric in run.data.metrics, (name, metric)
        artifacts = {a.path for a in store.list_artifacts(run.info.run_id)}
        assert {"scatter.png", "predictions.csv", "per_target.csv"} <= artifacts, name
        assert run.data.metrics["mean_pearson"] == pytest.approx(outcome.outcomes[name].result.summary["mean_pearson"])

    # popularity: exactly evaluation.py's number, the documented 70.3
    popularity = by_estimator["popularity"].data.metrics
    reference = ev.leave_one_task_out(benchmarks.load_benchmark("parc").P, ev.popularity)
    assert popularity["mean_pearson"] == pytest.approx(reference.summary["mean_pearson"], abs=1e-12)
    assert 100 * popularity["mean_pearson"] == pytest.approx(70.3, abs=0.1)
    assert by_estimator["fennec-no-meta"].data.params["alpha"] == "0.0"
    assert by_estimator["fennec-no-transfer"].data.params["alpha"] == "1.0"
    assert by_estimator["fennec"].data.params["task_vector_source"] == "task_meta"
    assert abs(by_estimator["random"].data.metrics["mean_pearson"]) < 0.3


def test_warm_start_known_entries_are_given_and_not_judged(store):
    bench = planted_benchmark()
    evaluation_runs.run_evaluation(bench, estimators="fennec,fennec-warm-3", seeds=(0, 1), progress=False)
    runs = {r.data.params["estimator"]: r for r in estimator_runs(store, "fennec-eval-planted")}
    warm = runs["fennec-warm-3"]
    assert warm.data.params["known_entries_in_metric"] == "False"
    for metric in ("paired_cold_mean_pearson", "paired_popularity_mean_pearson", "seed_std_pearson"):
        assert metric in warm.data.metrics
    known = tracking.download_json(store, warm.info.run_id, "known_entries.json")
    assert set(known) == {"0", "1"} and all(len(models) == 3 for seed in known.values() for models in seed.values())
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        predictions = pd.read_csv(store.download_artifacts(warm.info.run_id, "predictions.csv", tmp))
    for repeat, seed in enumerate(("0", "1")):
        for target, given in known[seed].items():
            scored = set(predictions[(predictions["repeat"] == repeat) & (predictions["target"] == target)]["model"])
            assert not scored & set(given)  # a known entry is never judged
            assert len(scored) == bench.P[target].notna().sum() - 3
            for model, value in given.items():  # the given values are the table's
                assert value == pytest.approx(bench.P.at[model, target])


def test_the_leaderboard_shows_the_warm_starts_fair_comparison_and_refuses_unjudgeable_rows(store):
    """With 6 models, 5 known leave too few to correlate: that row is refused when named."""
    bench = planted_benchmark(n_models=6)
    with pytest.raises(ValueError, match="fennec-warm-5 is judged on the models it is not told, and with at most 6 "
                                         "known models per target it would keep 1, fewer than 3"):
        evaluation_runs.run_evaluation(bench, estimators="fennec,fennec-warm-5", seeds=(0,), progress=False)
    runs = evaluation_runs.run_evaluation(bench, estimators="fennec,fennec-warm-3", seeds=(0,), progress=False)
    board = runs.leaderboard()
    assert list(board["rank"]) == [1, 2]
    warm = {r.data.params["estimator"]: r for r in estimator_runs(store, "fennec-eval-planted")}["fennec-warm-3"]
    assert board.loc["fennec-warm-3", "cold_same_models_pearson"] == pytest.approx(
        warm.data.metrics["paired_cold_mean_pearson"])
    assert pd.isna(board.loc["fennec", "cold_same_models_pearson"])


def test_warm_rows_of_a_table_with_too_few_models_are_skipped_with_one_note(store):
    bench = planted_benchmark(n_models=4)  # warm-1 keeps 3 models to judge; warm-3 and warm-5 keep 1 or none
    runs = evaluation_runs.run_evaluation(bench, seeds=(0,), progress=False)
    board = runs.leaderboard()
    assert "fennec-warm-1" in board.index and not {"fennec-warm-3", "fennec-warm-5"} & set(board.index)
    assert board["rank"].notna().all()
    warm_notes = [note for note in runs.notes if "warm" in note]
    assert warm_notes == ["skipped: fennec-warm-3, fennec-warm-5: a warm start is judged on the models it is not "
                          "told, and with at most 4 known models per target it keeps fewer than 3"]
    # every ranker's top 5 holds all 4 models: the leaderboard says the column tells nothing here
    assert (board["mean_top5_hit"] == 1.0).all()
    assert any(note.startswith("top5_hit is 1 for every ranker here") for note in runs.notes)


def test_warm_start_leaves_exactly_the_known_entries_unscored():
    bench = planted_benchmark()
    fits = evaluation_runs.FennecFits(bench)
    outcome = evaluation_runs.evaluate_estimator(bench, "fennec-warm-5", seeds=(3,), fits=fits)
    assert (outcome.result.per_target["n_unscored"] == 5).all()
    assert (outcome.result.per_target["n_models"] == bench.P.notna().sum() - 5).all()


def test_a_warm_start_told_a_model_known_only_on_its_target_is_evaluated():
    """A published table's one-cell row (a baseline measured on one dataset): held out with that
    dataset, the model has no history, yet a warm start may be told its score."""
    bench = planted_benchmark()
    P = bench.P.copy()
    P.loc["solo"] = np.nan
    P.loc["solo", "t0"] = 75.0
    seed = next(seed for seed in range(50) if "solo" in evaluation_runs.draw_known(P["t0"], 3, seed, "t0"))
    bench = dataclasses.replace(bench, P=P, model_meta=None, families=bench.families.reindex(P.index, fill_value="A"))
    outcome = evaluation_runs.evaluate_estimator(bench, "fennec-warm-3", seeds=(seed,))
    assert (outcome.result.per_target["n_unscored"] == 3).all()
    assert np.isfinite(outcome.result.summary["mean_pearson"])
    # told only such a model, the warm start has nothing to tell: it ranks cold
    P.loc[P.index != "solo", "t0"] = np.nan
    P.loc[P.index[:3], "t0"] = [61.0, 62.0, 63.0]
    fits = evaluation_runs.FennecFits(dataclasses.replace(bench, P=P))
    assert fits.rank(P, "t0", 0, 0.5, {"solo": 75.0}).equals(fits.rank(P, "t0", 0, 0.5))


def test_fennec_fits_never_see_the_target(monkeypatch):
    from fennec_mlflow.core.recommender import Fennec

    bench, seen = planted_benchmark(), []
    real_fit = Fennec.fit

    def spy_fit(self, P, *args, **kwargs):
        seen.append(set(P.columns))
        return real_fit(self, P, *args, **kwargs)

    monkeypatch.setattr(Fennec, "fit", spy_fit)
    fits = evaluation_runs.FennecFits(bench)
    for name in ("fennec", "fennec-no-meta", "fennec-additive-meta", "fennec-warm-3"):
        outcome = evaluation_runs.evaluate_estimator(bench, name, seeds=(0,), fits=fits)
        assert list(outcome.result.per_target.index) == bench.targets
    # one fit per target and alpha (alpha enters the shrunk fit): the default alpha, shared by fennec
    # and its warm start, alpha = 0, and the additive meta regression
    assert len(seen) == 3 * len(bench.targets)
    assert all(len(columns) == bench.P.shape[1] - 1 for columns in seen)
    assert sorted(t for columns in seen for t in set(bench.P.columns) - columns) == sorted(3 * bench.targets)


def test_evaluation_under_mlflow_run_writes_runs_of_its_own(store, monkeypatch):
    project = store.create_run(tracking.experiment_id(store, "project"))
    monkeypatch.setenv("MLFLOW_RUN_ID", project.info.run_id)
    evaluation_runs.run_evaluation(planted_benchmark(), estimators=["popularity"], experiment="evals", progress=False)
    (run,) = estimator_runs(store, "evals")
    assert run.info.run_id != project.info.run_id
    annotated = store.get_run(project.info.run_id).data
    assert annotated.tags["fennec.job"] == "evaluate" and "popularity.mean_pearson" in annotated.metrics


def test_unknown_estimator_is_refused_before_anything_is_logged(store):
    with pytest.raises(ValueError, match="unknown estimator"):
        evaluation_runs.run_evaluation(planted_benchmark(), estimators="fennec,logme", progress=False)
    assert store.get_experiment_by_name("fennec-eval-planted") is None


def test_model_size_is_a_data_free_baseline_and_missing_facts_skip_it():
    from fennec_mlflow.bench.public import load_benchmark

    bench = load_benchmark("transfergraph")
    outcome = evaluation_runs.evaluate_estimator(bench, "model-size", seeds=(0,))
    larger_first = bench.model_meta["log_parameters"]
    for target in bench.targets[:3]:
        truth = bench.P[target].dropna()
        expected = np.corrcoef(larger_first.reindex(truth.index), truth)[0, 1]
        assert outcome.result.per_target.loc[target, "pearson"] == pytest.approx(expected)
    reason = evaluation_runs.unavailable(bench, "source-accuracy")
    assert "source_accuracy" in reason


def test_an_evaluation_is_a_leaderboard_parent_with_one_child_run_per_estimator(store):
    runs = evaluation_runs.run_evaluation(planted_benchmark(), estimators="fennec,popularity,random", seeds=(0,),
                                          progress=False)
    (parent,) = [r for r in runs_in(store, "fennec-eval-planted") if r.data.tags[tracking.KIND_TAG] == "leaderboard"]
    assert parent.info.run_id == runs.leaderboard_run_id and parent.info.status == "FINISHED"
    assert parent.info.run_name == "leaderboard-planted"
    children = estimator_runs(store, "fennec-eval-planted")
    assert len(children) == 3
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    for child in children:  # one metric per estimator, on the children's own scale (fractions)
        name = child.data.params["estimator"]
        assert parent.data.metrics[f"mean_pearson.{name}"] == pytest.approx(child.data.metrics["mean_pearson"])
        assert "fractions in [-1, 1]" in child.data.tags["mlflow.note.content"]
    assert {"leaderboard.csv", "leaderboard.json", "leaderboard.png"} <= {
        a.path for a in store.list_artifacts(parent.info.run_id)}
    note = parent.data.tags["mlflow.note.content"]
    assert "Leaderboard of 3 estimators on planted" in note and "fractions in [-1, 1]" in note
    board = runs.leaderboard()
    assert list(board["rank"]) == [1, 2, 3] and board["mean_pearson"].is_monotonic_decreasing
    assert board["mean_pearson"].between(-1, 1).all()  # fractions, as logged
    assert parent.data.params["estimators"] == ",".join(board.index)


def test_cli_evaluate_prints_the_logged_units_and_where_the_leaderboard_is(store, tmp_path):
    from click.testing import CliRunner

    from fennec_mlflow.cli import main
    from fennec_mlflow.store.external import import_table
    from tests.planted import planted_long_table, write_table

    import_table(write_table(planted_long_table(), tmp_path / "planted.csv"), source="planted", progress=False)
    result = CliRunner().invoke(main, ["evaluate", "--benchmark", "store", "--source", "planted",
                                       "--estimators", "popularity,random"])
    assert result.exit_code == 0, result.output
    (parent,) = [r for r in runs_in(store, "fennec-eval-store-planted")
                 if r.data.tags[tracking.KIND_TAG] == "leaderboard"]
    assert f"Leaderboard: run {parent.info.run_id} ('leaderboard-store-planted'" in result.output
    assert evaluation_runs.UNITS in result.output and "mlflow ui --backend-store-uri sqlite:///" in result.output
    printed = float(next(line for line in result.output.splitlines() if line.startswith("popularity")).split()[2])
    assert printed == pytest.approx(parent.data.metrics["mean_pearson.popularity"], abs=1e-3)
    assert "Default Fennec" not in result.output  # no fennec row to compare


def test_the_cli_says_how_the_default_fares_against_popularity_and_what_to_do_when_below():
    import pandas as pd

    from fennec_mlflow.cli import _against_popularity

    public = pd.DataFrame({"mean_pearson": [0.71, 0.69], "mean_top1_regret": [1.2, 0.9]}, index=["fennec", "popularity"])
    line = _against_popularity(public)
    assert "mean Pearson 0.710 vs 0.690 (+0.020), top-1 regret 1.2 vs 0.9." in line and "below" not in line
    end_to_end = pd.DataFrame({"pearson": [0.60, 0.65], "top1_regret": [0.02, 0.01]}, index=["fennec", "popularity"])
    line = _against_popularity(end_to_end)
    assert "mean Pearson 0.600 vs 0.650 (-0.050)" in line and "Here it is below popularity" in line
    assert "serves popularity itself where what it tuned still validates below it" in line
    assert _against_popularity(public.drop(index="popularity")) is None
    saturated = pd.DataFrame({"pearson": [0.9948, 0.9950], "top1_regret": [0.0, 0.0]}, index=["fennec", "popularity"])
    line = _against_popularity(saturated)  # a table where every ranker is at 0.995: no verdict on -0.0002
    assert "(-0.000)" in line and "below popularity" not in line and "The two are level here" in line
    ahead = pd.concat([public, pd.DataFrame({"mean_pearson": [0.80], "mean_top1_regret": [0.5]}, index=["fennec-paper"])])
    assert "`fennec build` tunes the formulation too (or `--formulation paper` fixes it)" in _against_popularity(ahead)
    level = pd.concat([public, pd.DataFrame({"mean_pearson": [0.72], "mean_top1_regret": [0.5]}, index=["fennec-paper"])])
    assert "--formulation paper" not in _against_popularity(level)  # within the seeds' spread: not worth a switch
