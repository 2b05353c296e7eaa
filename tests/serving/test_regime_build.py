"""Build and rank for one fine-tune regime (issue 16, "recipe"): the recommender learns from, is
validated on, and says it predicts the regime asked for. Real sqlite store, real pyfunc model."""
import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fennec_mlflow import config
from fennec_mlflow.cli import main
from fennec_mlflow.data.synthetic import synthetic_task
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.serving.build import build
from fennec_mlflow.serving.rank import rank_task
from fennec_mlflow.store import tracking
from tests.planted import planted_long_table


def write_finetunes(client, table: pd.DataFrame, regime: str | None) -> None:
    """``table``'s scores as finished finetune runs of ``regime`` (None: no tag, as before regimes existed)."""
    facts = [c for c in table.columns if c.startswith(("model_", "task_"))]
    records = [tracking.RunRecord(
        kind="finetune", model=row.model, task=row.task, cell=f"{regime}-{row.model}-{row.task}",
        tags={tracking.REGIME_TAG: regime} if regime else {},
        params={"regime": regime or "full", **{c: getattr(row, c) for c in facts}},
        metrics={"test_accuracy": row.score / 100}) for row in table.itertuples()]
    tracking.write_runs(client, tracking.experiment_id(client), records)


def test_build_on_probe_history_predicts_the_probe_and_says_so(store):
    probe_table = planted_long_table(n_models=8, n_tasks=5, seed=0)
    full_table = planted_long_table(n_models=8, n_tasks=5, seed=1)  # other accuracies for the same cells
    write_finetunes(store, probe_table, "linear-probe")
    write_finetunes(store, full_table, None)  # written before regimes existed: full fine-tunes

    common = ["build", "--kind", "finetune", "--encoder", "none", "--no-tune"]
    done = CliRunner().invoke(main, [*common, "--regime", "linear-probe"])
    assert done.exit_code == 0, done.output
    assert "it predicts linear-probe accuracy" in done.output
    assert "validated on the store's finetune:linear-probe ground truth, 5 targets" in done.output
    probe_version = store.get_model_version("fennec", "1")
    assert probe_version.tags["fennec.regime"] == "linear-probe"
    assert store.get_run(probe_version.run_id).data.params["regime"] == "linear-probe"
    training = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=probe_version.run_id,
                                                               artifact_path="training_matrix.csv"), index_col=0)
    expected = probe_table.pivot(index="model", columns="task", values="score") / 100
    pd.testing.assert_frame_equal(training, expected, check_names=False)  # the probe runs, not the full ones

    full = build(kind="finetune", encoder_spec="none", tune=False)  # the default regime: full
    assert full.regime == "full" and full.quality.truth == "finetune"
    assert full.knowledge.P.loc["net00", "task0"] == pytest.approx(
        full_table.set_index(["model", "task"]).loc[("net00", "task0"), "score"] / 100)

    target = synthetic_task("shapes-4", samples_per_class=5)
    probe_ranking = rank_task(target, model_uri="models:/fennec/1", top_k=3, log=False, regime="linear-probe")
    assert "predicts linear-probe accuracy" in probe_ranking.attrs["basis"]
    assert probe_ranking["predicted_accuracy"].notna().all()  # finetune history: on an accuracy scale
    full_ranking = rank_task(target, model_uri=f"models:/fennec/{full.version}", top_k=3, log=False)
    assert "predicts full fine-tune accuracy" in full_ranking.attrs["basis"]
    with pytest.raises(InvalidInputError, match="predicts full regime accuracy, not 'linear-probe'"):
        rank_task(target, model_uri=f"models:/fennec/{full.version}", log=False, regime="linear-probe")
    refused = CliRunner().invoke(main, ["rank", "--target", "shapes-4", "--model-uri", "models:/fennec/1",
                                        "--regime", "full"])
    assert refused.exit_code == 2 and "fennec build --regime full" in refused.output


def test_default_build_learns_from_each_tasks_fine_tunes_and_the_other_tasks_fda_scores(store):
    table = planted_long_table(n_models=8, n_tasks=6, seed=2, holes=0)
    tuned = ["task0", "task1", "task2"]
    write_finetunes(store, table[table["task"].isin(tuned)], None)
    facts = [c for c in table.columns if c.startswith(("model_", "task_"))]
    fda = table.assign(score=-table["score"])  # FDA ranks every task backwards: it must not lead
    tracking.write_runs(store, tracking.experiment_id(store), [tracking.RunRecord(
        kind="fda", model=row.model, task=row.task, cell=f"fda-{row.model}-{row.task}",
        params={c: getattr(row, c) for c in facts}, metrics={"fda_score": row.score}) for row in fda.itertuples()])

    result = build(encoder_spec="none", tune=False)  # kind "best" by default
    P = result.knowledge.P
    pd.testing.assert_frame_equal(P[tuned], table.pivot(index="model", columns="task", values="score")[tuned] / 100,
                                  check_names=False)
    assert (P.drop(columns=tuned) < 0).all().all()  # the FDA scores of the others
    weights = result.knowledge.task_weights
    assert set(weights[tuned]) == {1.0} and set(weights.drop(tuned)) == {config.SCORE_ONLY_TASK_WEIGHT}
    run = store.get_run(result.run_id)
    assert run.data.params["matrix"] == "best"
    np.testing.assert_allclose(result.fennec.evidence_weights_, weights.loc[P.columns])
    # Its popularity follows the fine-tuned tasks, not the backwards FDA majority of the others.
    fine_tuned = (P[tuned] - P[tuned].mean()) / P[tuned].std(ddof=0)
    assert np.corrcoef(result.fennec.bias_, fine_tuned.mean(axis=1))[0, 1] > 0.9
    ranking = rank_task(synthetic_task("shapes-4", samples_per_class=5), model_uri=result.model_uri, log=False)
    assert ranking["predicted_accuracy"].notna().all()  # the accuracy model reads the fine-tuned tasks


def test_a_store_of_linear_probes_only_is_evaluated_and_shown_as_such(store):
    """`fennec finetune --regime linear-probe` alone: evaluate and matrix find those fine-tunes without
    being told the regime (a store of probes is not a store without fine-tunes)."""
    from fennec_mlflow.bench.store import store_benchmark

    probe_table = planted_long_table(n_models=8, n_tasks=5, seed=0)
    write_finetunes(store, probe_table, "linear-probe")
    bench = store_benchmark(encoder=None)
    assert bench.name == "store-finetune-linear-probe-from-best-linear-probe" and len(bench.targets) == 5
    assert "finetune:linear-probe" in bench.description
    shown = CliRunner().invoke(main, ["matrix", "--kind", "finetune"])
    assert shown.exit_code == 0 and f"finetune (linear-probe) matrix: 8 models x 5 tasks, {len(probe_table)} cells known" in shown.output
    full = CliRunner().invoke(main, ["matrix", "--kind", "finetune", "--regime", "full"])
    assert full.exit_code == 0 and "finetune matrix: 0 models x 0 tasks" in full.output
    with pytest.raises(InvalidInputError, match="no finished finetune runs"):
        store_benchmark(encoder=None, regime="full")
    refused = CliRunner().invoke(main, ["evaluate", "--benchmark", "store", "--source", "x", "--regime", "full"])
    assert refused.exit_code == 2 and "--regime picks which fine-tunes are the ground truth" in refused.output
