"""The embedded default: the real bootstrap (real models, real tasks, no pre-training) in a temp store."""
import pytest

from fennec_mlflow.serving import demo
from fennec_mlflow.serving import flavor as pyfunc
from fennec_mlflow.store import tracking

# A reduced configuration of the real default: the cheap digit CNNs and small tasks (< 60 s).
MODELS = ("real:mnist_cnn", "real:usps_cnn", "real:svhn_cnn", "real:digit_cnn")
HISTORY = ("real:digits", "real:digits-parity-fewshot-20", "real:digits-rotation", "real:digits-0to4-lowcontrast",
           "real:mnist-inverted")
PROBE = 40

needs_real = pytest.mark.skipif(bool(demo.missing_real_packages(MODELS)),
                                reason=f"real packages missing: {demo.missing_real_packages(MODELS)}")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FENNEC_CACHE_DIR", str(tmp_path / "cache"))


def kinds(client):
    exp = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    counts = {}
    for run in runs:
        kind = run.data.tags.get(tracking.KIND_TAG)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def test_default_target_is_held_out_and_explained():
    if demo.REAL_DEFAULT:
        assert demo.DEFAULT_TARGET == demo.REAL_TARGET
        assert demo.DEFAULT_TARGET not in demo.REAL_HISTORY + demo.FASHION_HISTORY
    else:
        assert demo.DEFAULT_TARGET == demo.SYNTHETIC_TARGET
    assert "held out" in demo.DEFAULT_TARGET_REASON


def test_missing_real_packages_fall_back_to_the_synthetic_demo(monkeypatch):
    lines = []
    monkeypatch.setattr(demo, "missing_real_packages", lambda models=demo.REAL_ZOO: ["real:mnist_cnn"])
    monkeypatch.setattr(demo, "synthetic_bootstrap", lambda experiment, progress, say: "synthetic")
    assert demo.bootstrap(progress=False, say=lines.append) == "synthetic"
    assert len(lines) == 1 and "real:mnist_cnn" in lines[0] and "synthetic demo instead" in lines[0]


@needs_real
@pytest.mark.slow
def test_real_bootstrap_registers_a_champion_that_ranks_the_default_target(store, cache):
    from fennec_mlflow.data.task_specs import load_task
    from fennec_mlflow.serving.rank import rank_task

    lines = []
    result = demo.bootstrap(progress=False, say=lines.append, models=MODELS, history=HISTORY, probe_size=PROBE)
    assert pyfunc.champion_exists(store)
    assert sorted(result.knowledge.P.index) == sorted(MODELS)
    assert sorted(result.knowledge.P.columns) == sorted(HISTORY)
    assert [line[:4] for line in lines if line[1:3] == "/5"] == ["1/5 ", "2/5 ", "3/5 ", "4/5 ", "5/5 "]
    assert any(demo.REAL_ENCODER in line for line in lines)
    first = kinds(store)
    assert first["fda"] == len(MODELS) * len(HISTORY)
    assert first["archi2vec"] == len(MODELS) and first["task-proxy"] == len(HISTORY)
    assert "pre-training" not in " ".join(lines)  # no synthetic pre-training step

    target = load_task(demo.REAL_TARGET, unlabelled_ok=True)
    assert target.name not in HISTORY
    ranking = rank_task(target, labels_known=True, top_k=0)
    assert sorted(ranking["model"]) == sorted(MODELS)
    assert ranking["score"].is_monotonic_decreasing and ranking.attrs["run_id"]

    # Resumable and idempotent: a second bootstrap reuses every cell (only a new fit is logged).
    demo.bootstrap(progress=False, say=lambda line: None, models=MODELS, history=HISTORY, probe_size=PROBE)
    again = kinds(store)
    for kind in ("fda", "archi2vec", "task-proxy"):
        assert again[kind] == first[kind], kind


def test_pretraining_is_a_run_per_model_and_a_rerun_adds_none(store, tmp_path):
    from fennec_mlflow.data.checkpoints import save_pretrained
    from fennec_mlflow.data.synthetic import synthetic_task
    from fennec_mlflow.training import pretrain as pt

    source = synthetic_task("gratings-orient-8", samples_per_class=8, seed=pt.SOURCE_RENDER_SEED)
    made = pt.pretrain("resnet20_cifar10", source, epochs=1, lr=0.05, seed=0, source_label="gratings-orient-8")
    path = tmp_path / "resnet20_cifar10@gratings-orient-8.pt"
    save_pretrained(made, path)
    [run_id] = demo.log_pretraining([path])
    assert demo.log_pretraining([path]) == []  # the same weights: logged once
    run = store.get_run(run_id)
    assert run.info.run_name == "pretrain-resnet20_cifar10@gratings-orient-8"
    assert run.data.tags[tracking.KIND_TAG] == "pretrain" and run.data.tags[demo.WEIGHTS_TAG] == made.info.weights
    assert run.data.tags[tracking.MODEL_TAG] == "resnet20_cifar10@gratings-orient-8"
    assert run.data.params["arch"] == "resnet20_cifar10" and run.data.params["epochs"] == "1"
    assert run.data.metrics["source_test_accuracy"] == pytest.approx(made.info.source_test_accuracy)
    assert "chance 0.125" in run.data.tags["mlflow.note.content"]
    assert "recipe.json" in {a.path for a in store.list_artifacts(run_id)}
