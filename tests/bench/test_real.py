"""The real end-to-end benchmark: its definition, resolution-aware cell identity, and its reduced
configuration run for real through the CLI, twice, with the report written from its runs."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from fennec_mlflow.bench.real import ALL_REAL_MODELS, CONFIGS, load_real_models
from fennec_mlflow.bench.synthetic import cells_experiment, evaluation_names
from fennec_mlflow.data.real_tasks import parse_real_task
from fennec_mlflow.data.real_zoo import REAL_MODELS, real_model_names
from fennec_mlflow.store.knowledge import model_meta_table, model_source_domain
from tests.helpers import REPO, store_env


def test_the_full_benchmark_has_every_real_model_and_ten_real_targets_from_three_sources():
    config = CONFIGS["real"]
    assert set(config.models) == set(real_model_names()) == set(ALL_REAL_MODELS)
    assert len(config.targets) >= 10
    assert len({parse_real_task(t).base for t in config.targets}) >= 3
    assert not set(config.history) & set(config.targets)
    assert len(set(config.targets)) == len(config.targets) and len(set(config.history)) == len(config.history)
    # the proxy encoder is a real ImageNet model (the offline stand-in for CLIP)
    assert REAL_MODELS[config.encoder.removeprefix("zoo:real:")].source_dataset == "ImageNet-1k"
    assert evaluation_names(config, ["fda"])[-3:] == ["model-size", "source-accuracy", "random"]


def test_the_smoke_configuration_is_a_small_copy():
    smoke, full = CONFIGS["real-smoke"], CONFIGS["real"]
    assert len(smoke.models) * len(smoke.targets) < len(full.models) * len(full.targets) / 10
    assert smoke.fingerprint() != full.fingerprint()
    assert set(smoke.models) <= set(full.models)


def test_a_model_fed_at_another_size_is_another_cell():
    from fennec_mlflow.data.tasks import sample_probe
    from fennec_mlflow.data.real_tasks import load_real_task
    from fennec_mlflow.store.jobs import score_cell_key

    full = CONFIGS["real"]
    lite, digits = load_real_models(full)[0], load_real_models(CONFIGS["real-smoke"])[0]
    assert lite.name == "real:efficientnet_lite0" and lite.input_size == full.max_input_size
    assert lite.weights.endswith(f"@{full.max_input_size}px")
    assert digits.input_size == 28 and not digits.weights.endswith("px")  # below the cap: native, plain tag
    assert digits.at_input_size(28) is digits
    probe = sample_probe(load_real_task("real:digits", max_samples=60), size=20)
    assert score_cell_key("fda", lite, probe) != score_cell_key("fda", lite.at_input_size(96), probe)


def test_real_models_carry_their_source_domain_into_the_model_meta():
    import pandas as pd

    assert model_source_domain("real:mnist_cnn") == model_source_domain("real:usps_cnn") == "handwritten digits"
    assert model_source_domain("real:efficientnet_lite0") == "natural photos"
    assert model_source_domain("resnet20_cifar10") == "imagenet"  # pytorchcv names keep their meaning
    models = ["real:mnist_cnn", "real:efficientnet_lite0", "real:orinet"]
    meta = model_meta_table(models, pd.DataFrame(), pd.DataFrame(), pd.DataFrame({"parameters": 1e6}, index=models))
    assert meta.loc["real:orinet", "source=document images"] == 1.0
    assert meta.loc["real:mnist_cnn", "source=document images"] == 0.0


CELL_KINDS = ("finetune", "fda", "estimator", "task-proxy", "archi2vec")


@pytest.mark.slow
def test_the_smoke_benchmark_runs_from_the_cli_reruns_without_new_cells_and_reports(tmp_path):
    from mlflow import MlflowClient

    config = CONFIGS["real-smoke"]
    env = {**os.environ, **store_env(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    command = [sys.executable, "-m", "fennec_mlflow.cli", "evaluate", "--benchmark", config.name]
    first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "evaluation run(s) in experiment 'fennec-eval-real-smoke'" in first.stdout

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    cells = client.get_experiment_by_name(cells_experiment(config.name)).experiment_id
    runs = client.search_runs([cells], max_results=5000)
    by_kind = {kind: [r for r in runs if r.data.tags.get("fennec.kind") == kind] for kind in CELL_KINDS}
    models, targets, tasks = len(config.models), len(config.targets), len(config.targets) + len(config.history)
    estimators = len({r.data.params["estimator"] for r in by_kind["estimator"]})
    expected = {"finetune": models * targets, "fda": models * tasks,
                "estimator": estimators * models * targets + models * len(config.history),  # LogME is also history
                "task-proxy": tasks, "archi2vec": models}
    for kind, count in expected.items():
        per_cell = Counter(r.data.tags["fennec.cell"] for r in by_kind[kind])
        assert len(per_cell) == count and max(per_cell.values()) == 1, kind
    finetuned = {(r.data.tags["fennec.model"], r.data.tags["fennec.task"]) for r in by_kind["finetune"]}
    assert finetuned == {(m, t) for m in config.models for t in config.targets}

    evaluation = client.get_experiment_by_name(f"fennec-eval-{config.name}").experiment_id
    rows = {r.data.params["estimator"]: r
            for r in client.search_runs([evaluation], "tags.`fennec.kind` = 'evaluation'", max_results=1000)}
    # one leaderboard parent, as for the public tables: every row is its child, and the CLI names it
    (leaderboard,) = client.search_runs([evaluation], "tags.`fennec.kind` = 'leaderboard'")
    assert {r.data.tags["mlflow.parentRunId"] for r in rows.values()} == {leaderboard.info.run_id}
    assert leaderboard.info.run_name == "leaderboard-real-smoke" and leaderboard.info.status == "FINISHED"
    assert f"Leaderboard: run {leaderboard.info.run_id}" in first.stdout
    assert leaderboard.data.metrics["mean_pearson.fennec"] == rows["fennec"].data.metrics["mean_pearson"]
    assert len(rows) == len(evaluation_names(config, ["fda", *sorted({r.data.params["estimator"]
                                                                       for r in by_kind["estimator"]})]))
    for name in ("fennec", "popularity", "model-size", "logme"):
        assert np.isfinite(rows[name].data.metrics["mean_pearson"]), name
    assert rows["fennec"].data.params["needs_target_labels"] == "False"
    assert rows["logme"].data.params["needs_target_labels"] == "True"

    count = len(runs) + len(rows)
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(client.search_runs([cells], max_results=5000)) + len(client.search_runs([evaluation])) == count + 1

    report = tmp_path / "docs" / "evaluation.md"
    report.parent.mkdir()
    report.write_text("# Kept\n\n<!-- real-benchmark:begin -->\nstale\n<!-- real-benchmark:end -->\n\ntail kept\n")
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_end_to_end_report.py"), "--benchmark", config.name,
                    "--output", str(report)], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    text = report.read_text()
    assert text.startswith("# Kept") and text.rstrip().endswith("tail kept") and "stale" not in text
    assert "## Real models, real images, real fine-tunes: `real-smoke`" in text
    assert "| **Fennec** (defaults: each task's best evidence + proxy) | no |" in text and "### Time per stage" in text
    assert "| model size (parameters, larger first) | no |" in text
