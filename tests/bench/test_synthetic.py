"""The end-to-end synthetic benchmark: its definition, its evaluation protocol, and its reduced
configuration run for real, killed twice and restarted, without a redone or duplicated cell."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from fennec_mlflow import __version__, config

from fennec_mlflow.core.estimators import available_estimators
from fennec_mlflow.core.estimators.etran import etran_combine
from fennec_mlflow.core.evaluation import leave_one_task_out
from fennec_mlflow.core.recommender import Fennec, behaviour_digest
from fennec_mlflow.store.knowledge import Knowledge
from fennec_mlflow.data.synthetic import SYNTHETIC_TASKS
from fennec_mlflow.bench.synthetic import (CONFIGS, BenchmarkData, Costs, TargetFennecFits, cells_experiment,
                                           estimator_predictor, evaluation_names, fennec_predictor,
                                           finetuned_predictor, nested_cv_choices, nested_cv_predictor)
from tests.helpers import REPO, store_env


def pytorchcv_family(arch: str) -> str:
    """The pytorchcv module that defines ``arch`` (e.g. ``seresnet_cifar``): its architecture family."""
    from pytorchcv.model_provider import _models

    return _models[arch].__module__.rsplit(".", 1)[-1]


# --------------------------------------------------------------------------- the definition

def test_the_full_benchmark_has_the_zoo_and_targets_it_promises():
    config = CONFIGS["synthetic"]
    zoo = config.zoo
    assert len(zoo) >= 16 and len(set(zoo)) == len(zoo)
    assert all(arch.endswith("_cifar10") for arch in config.archs)  # CIFAR-size: trainable on a CPU
    assert len({pytorchcv_family(arch) for arch in config.archs}) >= 8
    per_arch = Counter(arch for arch, _ in zoo)
    assert set(per_arch.values()) == {config.sources_per_arch}
    assert all(len({s for a, s in zoo if a == arch}) == config.sources_per_arch for arch in config.archs)
    assert set(s for _, s in zoo) == set(config.sources)  # every source pre-trains some model

    targets = config.targets
    assert len(targets) >= 8
    assert len({SYNTHETIC_TASKS[t.name].family for t in targets}) >= 4
    class_counts = {SYNTHETIC_TASKS[t.name].num_classes for t in targets}
    sizes = {SYNTHETIC_TASKS[t.name].num_classes * t.samples_per_class for t in targets}
    assert len(class_counts) >= 4 and len(sizes) >= 3
    history = {t.name for t in config.history}
    assert not history & set(config.target_names)
    assert not set(config.sources) & (history | set(config.target_names))


def test_the_smoke_configuration_is_a_small_copy_of_the_same_pipeline():
    smoke, full = CONFIGS["synthetic-smoke"], CONFIGS["synthetic"]
    assert len(smoke.zoo) * len(smoke.targets) < len(full.zoo) * len(full.targets) / 8
    assert smoke.fingerprint() != full.fingerprint()
    assert evaluation_names(smoke, ["fda", "etran_energy", "etran_lda"]) == [
        "fennec", "fennec-no-transfer", "fennec-no-meta", f"fennec-finetuned-{smoke.warm_known[0]}",
        "fennec-fda-history", f"fennec-warm-{smoke.warm_known[0]}",
        "fennec-finetune-history", "fennec-nested-cv", "fda", "etran_energy", "etran_lda", "etran", "popularity", "family-mean", "archi2vec-family-mean", "model-size", "source-accuracy", "random"]


# --------------------------------------------------------------------------- the protocol, on made-up data

@pytest.fixture()
def made_up_data():
    rng = np.random.default_rng(0)
    models = [f"arch{i % 3}@src{i % 2}" for i in range(6)]
    models = [f"{m}-{i}" for i, m in enumerate(models)]
    tasks = [f"h{j}" for j in range(5)] + ["t0", "t1", "t2"]
    targets = ["t0", "t1", "t2"]
    P = pd.DataFrame(rng.random((6, 8)), index=models, columns=tasks)
    knowledge = Knowledge(
        P=P, model_meta=pd.DataFrame(rng.random((6, 3)), index=models, columns=["a", "b", "c"]),
        model_parameters=pd.Series(1e5, index=models),
        task_meta=pd.DataFrame(rng.random((8, 2)), index=tasks, columns=["log_class_count", "log_sample_count"]),
        task_proxy=pd.DataFrame(rng.random((8, 4)), index=tasks, columns=[f"proxy_{i}" for i in range(4)]),
        domains=[], task_meta_fill=pd.Series({"log_class_count": 1.0, "log_sample_count": 5.0}))
    scores = {name: pd.DataFrame(rng.random((6, 3)), index=models, columns=targets)
              for name in ("fda", "etran_energy", "etran_lda")}
    return BenchmarkData(
        truth=pd.DataFrame(rng.random((6, 3)), index=models, columns=targets), knowledge=knowledge,
        scores=scores, feature_seconds=pd.DataFrame(0.5, index=models, columns=targets),
        score_seconds={name: pd.DataFrame(0.01, index=models, columns=targets) for name in scores},
        proxy_seconds=pd.Series(0.2, index=tasks), encoder="test-encoder")


@pytest.mark.parametrize("history", ["fda", "finetune"])
def test_cold_fennec_never_reads_the_targets_own_scores(made_up_data, history):
    matrix = made_up_data.knowledge.P if history == "fda" else made_up_data.truth

    def predictions(target):
        fits = TargetFennecFits(made_up_data, {"k": 2}, history=matrix.copy())
        cells = leave_one_task_out(made_up_data.truth, fennec_predictor(fits, 0, 0.5, Costs()), [target]).predictions
        return cells.set_index("model")["predicted"]

    for target in made_up_data.truth.columns:  # the other targets' scores are history: only its own is hidden
        before = predictions(target)
        original = matrix[target].copy()
        matrix[target] = np.random.default_rng(1).random(len(matrix)) * 100
        pd.testing.assert_series_equal(before, predictions(target))
        matrix[target] = original


def test_default_history_uses_the_other_targets_fine_tunes_but_never_the_targets_own(made_up_data):
    data = made_up_data

    def predictions(target):
        fits = TargetFennecFits(data, {"k": 2}, *data.best_evidence())
        cells = leave_one_task_out(data.truth, fennec_predictor(fits, 0, 0.5, Costs()), [target]).predictions
        return cells.set_index("model")["predicted"]

    matrix, weights = data.best_evidence()
    pd.testing.assert_frame_equal(matrix[data.truth.columns], data.truth)  # the targets' columns: fine-tunes
    assert set(weights[data.truth.columns]) == {1.0}
    assert set(weights.drop(data.truth.columns)) == {config.SCORE_ONLY_TASK_WEIGHT}
    for target in data.truth.columns:
        before = predictions(target)
        saved = [(table, table[target].copy()) for table in (data.knowledge.P, data.truth)]
        for table, _ in saved:  # its FDA scores and its fine-tunes
            table[target] = np.random.default_rng(4).random(len(table)) * 100
        pd.testing.assert_series_equal(before, predictions(target))
        other = next(t for t in data.truth.columns if t != target)
        data.truth[other] = data.truth[other].to_numpy()[::-1]  # another target's fine-tunes do count
        assert not before.equals(predictions(target))
        for table, column in saved:
            table[target] = column
        data.truth[other] = data.truth[other].to_numpy()[::-1]


def test_the_finetuned_warm_start_reads_only_the_known_cells_of_the_target_and_leaves_them_unjudged(made_up_data,
                                                                                                 monkeypatch):
    # 2 other fine-tuned targets are too few for the posterior's history check, which would leave the
    # told scores unused; forced on, the told scores must move the ranking and nothing else of the target may
    monkeypatch.setattr(Fennec, "_posterior_expected_gain", lambda self, known: 1.0)
    data = made_up_data
    truth = data.truth
    target, n_known = "t1", 2

    def predictions():
        fits = TargetFennecFits(data, {"k": 2}, *data.best_evidence())
        record = {}
        cells = leave_one_task_out(truth, finetuned_predictor(fits, truth, 0, 0.5, Costs(), n_known, record), [target],
                                   missing_predictions="skip").predictions
        return cells.set_index("model")["predicted"], record["0"][target]

    before, told = predictions()
    assert len(told) == n_known and set(told) <= set(truth.index)
    assert set(before.index) == set(truth.index) - set(told)  # the told models are not judged
    saved = [(table, table[target].copy()) for table in (data.knowledge.P, truth)]
    unknown = truth.index.difference(list(told))
    data.knowledge.P[target] = np.random.default_rng(5).random(len(truth)) * 100  # its FDA scores
    truth.loc[unknown, target] = np.random.default_rng(6).random(len(unknown))  # its other fine-tunes
    after, _ = predictions()
    pd.testing.assert_series_equal(before, after)
    truth.loc[list(told), target] = truth.loc[list(told), target].to_numpy()[::-1]  # what it is told does count
    assert not predictions()[0].equals(before)
    for table, column in saved:
        table[target] = column


def test_nested_cv_chooses_without_reading_the_outer_target(made_up_data):
    data = made_up_data
    data.history_scores = {"logme": data.knowledge.P * -1 + np.random.default_rng(2).random(data.knowledge.P.shape)}

    def predictions(target):
        fits = TargetFennecFits(data, {"k": 2})
        histories = {"fda": fits, "logme": TargetFennecFits(data, {"k": 2}, history=data.history_scores["logme"].copy())}
        choices: dict = {}
        cells = leave_one_task_out(data.truth.copy(), nested_cv_predictor(histories, 0, Costs(), choices), [target])
        assert set(choices["0"][target]) == {"history", "alpha", "inner_mean_pearson"}
        return cells.predictions.set_index("model")["predicted"], choices["0"][target]

    for target in data.truth.columns:
        before = predictions(target)
        saved = [(table, table[target].copy()) for table in (data.knowledge.P, data.history_scores["logme"], data.truth)]
        for table, _ in saved:  # the target's scores in both histories and its own truth
            table[target] = np.random.default_rng(3).random(len(table)) * 100
        after = predictions(target)
        pd.testing.assert_series_equal(before[0], after[0])
        assert before[1] == after[1]
        for table, column in saved:
            table[target] = column


def test_nested_cv_chooses_the_same_on_two_worker_processes_as_in_turn(made_up_data):
    data = made_up_data
    finetunes = data.knowledge.P.copy()
    finetunes[data.truth.columns] = data.truth  # the targets' fine-tunes as history, as the benchmark has it

    def histories():
        return {"fda": TargetFennecFits(data, {"k": 2}), "finetune": TargetFennecFits(data, {"k": 2}, history=finetunes)}

    done = []
    in_turn = nested_cv_choices(histories(), (0, 1), workers=1)
    forked = nested_cv_choices(histories(), (0, 1), workers=2, done=lambda: done.append(1))
    assert set(in_turn) == {(seed, target) for seed in (0, 1) for target in data.truth.columns}
    assert forked == in_turn and len(done) == len(in_turn)
    assert {history for _, history, _ in in_turn.values()} == {"fda", "finetune"}  # a real choice was made
    # the predictor given these choices answers as the one that makes them itself
    made = leave_one_task_out(data.truth, nested_cv_predictor(histories(), 1, Costs(), choices=forked))
    itself = leave_one_task_out(data.truth, nested_cv_predictor(histories(), 1, Costs()))
    pd.testing.assert_frame_equal(made.predictions, itself.predictions)


def test_costs_count_every_candidate_forward_for_estimators_and_only_the_proxy_for_fennec(made_up_data):
    data = made_up_data
    estimator_costs, fennec_costs, warm_costs = Costs(), Costs(), Costs()
    result = leave_one_task_out(data.truth, estimator_predictor(data, "etran", estimator_costs))
    target = "t1"
    expected = etran_combine(data.scores["etran_energy"][target], data.scores["etran_lda"][target])
    got = result.predictions.set_index(["target", "model"]).loc[target, "predicted"]
    np.testing.assert_allclose(got.to_numpy(), expected)
    assert estimator_costs.feature[target] == pytest.approx(6 * 0.5)  # every model's forward passes
    assert estimator_costs.calculation[target] >= 2 * 6 * 0.01  # both parts on every model

    fits = TargetFennecFits(data, {"k": 2})
    leave_one_task_out(data.truth, fennec_predictor(fits, 0, 0.5, fennec_costs))
    leave_one_task_out(data.truth, fennec_predictor(fits, 0, 0.5, warm_costs, n_known=2))
    assert fennec_costs.feature[target] == pytest.approx(0.2)  # the proxy's pass, no candidate forward
    assert warm_costs.feature[target] == pytest.approx(0.2 + 2 * 0.5)  # plus two candidates' forwards
    assert set(fennec_costs.metrics()) >= {"feature_seconds", "calculation_seconds", "feature_seconds.t1"}


# --------------------------------------------------------------------------- the reduced configuration, for real

CELL_KINDS = ("finetune", "fda", "estimator", "task-proxy", "archi2vec", "evaluation")


def _count_finished(db, kind: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as connection:
        try:
            return connection.execute(
                "select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
                "where t.key = 'fennec.kind' and t.value = ? and r.status = 'FINISHED' "
                "and r.lifecycle_stage = 'active'", (kind,)).fetchone()[0]
        except sqlite3.OperationalError:  # the store is still being created
            return 0


def _run_smoke(tmp_path, env, kill_when: tuple[str, int] | None = None) -> subprocess.CompletedProcess | None:
    command = [sys.executable, "-m", "fennec_mlflow.cli", "evaluate", "--benchmark", "synthetic-smoke"]
    log = open(tmp_path / "smoke.log", "a")
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        if kill_when is None:
            assert process.wait(timeout=600) == 0, (tmp_path / "smoke.log").read_text()[-3000:]
            return None
        kind, count = kill_when
        deadline = time.monotonic() + 600
        while _count_finished(tmp_path / "mlflow.db", kind) < count:
            assert process.poll() is None, f"the benchmark ended before {count} {kind} runs existed"
            assert time.monotonic() < deadline
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        return None
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


@pytest.mark.slow
def test_the_smoke_benchmark_survives_kills_without_redoing_or_duplicating_a_cell(tmp_path):
    from mlflow import MlflowClient

    config = CONFIGS["synthetic-smoke"]
    env = {**os.environ, **store_env(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    _run_smoke(tmp_path, env, kill_when=("finetune", 4))  # killed among the fine-tunes
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(cells_experiment(config.name)).experiment_id
    finished_first = {r.info.run_id for r in client.search_runs(
        [experiment], "tags.`fennec.kind` = 'finetune' and attributes.status = 'FINISHED'")}
    assert len(finished_first) >= 4
    _run_smoke(tmp_path, env, kill_when=("estimator", 40))  # killed among the estimator cells
    _run_smoke(tmp_path, env)  # runs to the end

    def active_runs():
        return client.search_runs([experiment], max_results=5000)

    runs = active_runs()
    by_kind = {kind: [r for r in runs if r.data.tags.get("fennec.kind") == kind] for kind in CELL_KINDS[:-1]}
    models, targets = len(config.zoo), len(config.targets)
    tasks = targets + len(config.history)
    estimators = len({r.data.params["estimator"] for r in by_kind["estimator"]})
    assert estimators == len(available_estimators()) - 1  # every registered estimator but FDA
    on_history = len(config.history_estimators) * models * len(config.history)  # estimators that are also history
    expected = {"finetune": models * targets, "fda": models * tasks,
                "estimator": estimators * models * targets + on_history,
                "task-proxy": tasks, "archi2vec": len(config.archs)}
    for kind, count in expected.items():
        cells = Counter(r.data.tags["fennec.cell"] for r in by_kind[kind])
        assert len(cells) == count, kind
        assert max(cells.values()) == 1, f"a {kind} cell has two runs"
        assert {r.info.status for r in by_kind[kind]} == {"FINISHED"}, kind
    assert finished_first <= {r.info.run_id for r in by_kind["finetune"]}  # not redone
    trials = Counter((r.data.tags["mlflow.parentRunId"], r.data.params["lr"]) for r in runs
                     if r.data.tags.get("fennec.kind") == "finetune-trial" and r.info.status == "FINISHED")
    assert len(trials) == models * targets and max(trials.values()) == 1

    evaluation = client.get_experiment_by_name(f"fennec-eval-{config.name}").experiment_id
    rows = client.search_runs([evaluation], "tags.`fennec.kind` = 'evaluation'", max_results=1000)
    names = Counter(r.data.params["estimator"] for r in rows)
    assert set(names) == set(evaluation_names(config, sorted({r.data.params["estimator"]
                                                               for r in by_kind["estimator"]} | {"fda"})))
    assert max(names.values()) == 1
    # keyed by the recommender that produced them: an upgrade that changes a ranking evaluates again
    assert {r.data.params["recommender_version"] for r in rows} == {f"{__version__}+{behaviour_digest()}"}
    for row in rows:
        metrics = row.data.metrics
        for name in ("mean_pearson", "mean_spearman", "mean_weighted_tau", "mean_top1_regret",
                     "feature_seconds", "calculation_seconds"):
            assert np.isfinite(metrics[name]), (row.data.params["estimator"], name)
        # per target (a correlation is NaN, so not logged, where a tiny target's truth is all ties)
        assert {f"top1_regret.{t.name}" for t in config.targets} <= set(metrics)
    assert {a.path for a in client.list_artifacts(rows[0].info.run_id)} >= {"scatter.png", "per_target.csv"}

    (leaderboard,) = client.search_runs([evaluation], "tags.`fennec.kind` = 'leaderboard'")  # the rows' parent
    assert {r.data.tags["mlflow.parentRunId"] for r in rows} == {leaderboard.info.run_id}
    count = len(active_runs()) + len(rows) + 1
    _run_smoke(tmp_path, env)  # a finished benchmark run again writes nothing new
    assert len(active_runs()) + len(client.search_runs([evaluation], max_results=1000)) == count

    # the report section is generated from these runs, and replaces only its own block
    report = tmp_path / "docs" / "evaluation.md"
    report.parent.mkdir()
    report.write_text("# Public tables\n\nkept\n\n<!-- synthetic-benchmark:begin -->\nstale\n"
                      "<!-- synthetic-benchmark:end -->\n\ntail kept\n")
    script = REPO / "benchmarks" / "make_end_to_end_report.py"
    subprocess.run([sys.executable, str(script), "--benchmark", config.name, "--output", str(report)],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    text = report.read_text()
    assert text.startswith("# Public tables\n\nkept") and text.rstrip().endswith("tail kept")
    assert "stale" not in text and text.count("synthetic-benchmark:begin") == 1
    assert "| **Fennec** (defaults: each task's best evidence + proxy) | no |" in text
    assert (report.parent / "img" / f"evaluation-{config.name}-cost.png").stat().st_size > 0
