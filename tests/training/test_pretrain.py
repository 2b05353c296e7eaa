"""Pre-training the demo zoo and the fallback proxy: real training of real pytorchcv nets."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from fennec_mlflow.data import checkpoints as ckpt
from fennec_mlflow.training import pretrain as pt
from fennec_mlflow.data.features import extract_features
from fennec_mlflow.data.proxy import load_encoder, task_proxy_features
from fennec_mlflow.data.synthetic import FAMILIES, SYNTHETIC_TASKS, synthetic_task

# Enough for a 20-layer net to learn oriented gratings well above chance in a few seconds.
TINY = pt.PretrainBudget(images_per_source=160, epochs=4, mix_images=186, mix_epochs=1)


@pytest.fixture(scope="module")
def gratings_model():
    source = synthetic_task("gratings-orient-8", samples_per_class=20, seed=pt.SOURCE_RENDER_SEED)
    return pt.pretrain("resnet20_cifar10", source, epochs=4, lr=0.05, seed=0, source_label="gratings-orient-8")


def test_demo_zoo_crosses_architectures_with_sources_of_different_families():
    archs = {arch for arch, _ in pt.DEMO_ZOO}
    sources = {source for _, source in pt.DEMO_ZOO}
    assert len(archs) >= 4 and len(sources) >= 2 and len(pt.DEMO_ZOO) == len(archs) * len(sources)
    assert len({SYNTHETIC_TASKS[s].family for s in sources}) == len(sources)
    assert len(set(pt.demo_model_names())) == len(pt.DEMO_ZOO)
    assert not sources & {names[0] for names in FAMILIES.values()}  # the proxy's mix is a different source


def test_pretraining_beats_chance_on_the_source(gratings_model):
    info = gratings_model.info
    assert info.name == "resnet20_cifar10@gratings-orient-8" == gratings_model.model.name
    assert info.source_classes == 8 and info.source_samples == 160
    assert info.source_test_accuracy >= 3 * info.chance_accuracy, info
    assert info.weights.startswith("synthetic:gratings-orient-8:e4:s0:")
    assert gratings_model.model.weights == info.weights and gratings_model.model.source == ckpt.MODEL_SOURCE
    # The head now speaks the source's 8 classes.
    assert gratings_model.model.module(torch.zeros(1, 3, 32, 32)).shape == (1, 8)


def test_the_weights_tag_changes_with_the_recipe(gratings_model):
    source = synthetic_task("gratings-orient-8", samples_per_class=20, seed=pt.SOURCE_RENDER_SEED)
    recipe = dict(gratings_model.info.recipe)
    assert pt.weights_tag(source, recipe) == gratings_model.info.weights
    assert pt.weights_tag(source, {**recipe, "lr": 0.1}) != gratings_model.info.weights
    assert pt.weights_tag(source, {**recipe, "source_fingerprint": "other images"}) != gratings_model.info.weights


def test_save_and_load_give_identical_features(gratings_model, tmp_path):
    path = ckpt.save_pretrained(gratings_model, tmp_path / "m.pt")
    loaded = ckpt.load_pretrained(path)
    assert loaded.info == gratings_model.info and loaded.model.weights == gratings_model.model.weights
    images = synthetic_task("glyphs-lower-10", samples_per_class=3).images()
    np.testing.assert_array_equal(extract_features(loaded.model, images).features,
                                  extract_features(gratings_model.model, images).features)
    assert json.loads((tmp_path / "m.json").read_text())["weights"] == gratings_model.info.weights
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind
    # The saved model is a proxy encoder too, named by its weights, not by where the file lies.
    encoder = load_encoder(f"file:{path}")
    assert encoder.name == f"zoo:{gratings_model.info.name}:{gratings_model.info.weights}" and encoder.dim == 64


def test_bad_files_and_arguments_give_clear_errors(tmp_path, gratings_model):
    with pytest.raises(FileNotFoundError, match="pretrain_demo_zoo"):
        ckpt.load_pretrained(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    with pytest.raises(pt.PretrainError, match="not a readable fennec pre-trained model"):
        ckpt.load_pretrained(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(pt.PretrainError, match="expected keys"):
        ckpt.read_pretrained_info(foreign)
    with pytest.raises(pt.PretrainError, match="unknown budget"):
        pt.pretrain_demo_zoo(tmp_path, budget="huge")
    with pytest.raises(pt.PretrainError, match="unknown source"):
        pt.pretrain_demo_zoo(tmp_path, budget=TINY, models=[("resnet20_cifar10", "imagenet")])
    with pytest.raises(pt.PretrainError, match="source label"):
        pt.pretrain("resnet20_cifar10", synthetic_task("blobs-count-3", samples_per_class=6), source_label="a:b")
    with pytest.raises(pt.PretrainError, match="epochs"):
        pt.PretrainBudget(images_per_source=100, epochs=0)


def test_demo_zoo_is_idempotent_and_redoes_broken_or_stale_files(tmp_path):
    models = [("resnet20_cifar10", "blobs-count-3")]
    first = pt.pretrain_demo_zoo(tmp_path, budget=TINY, models=models, progress=False)
    assert first == [tmp_path / "resnet20_cifar10@blobs-count-3.pt"]
    stamp = first[0].stat().st_mtime_ns
    start = time.perf_counter()
    again = pt.pretrain_demo_zoo(tmp_path, budget=TINY, models=models, progress=False)
    assert again == first and first[0].stat().st_mtime_ns == stamp
    assert time.perf_counter() - start < 2.0
    info = ckpt.read_pretrained_info(first[0])
    assert info.recipe["source_build"] == {"tasks": ["blobs-count-3"], "samples_per_class": 54, "image_size": 32,
                                           "render_seed": pt.SOURCE_RENDER_SEED}
    # A file cut short by a crash is made again; so is one from another recipe.
    first[0].write_bytes(first[0].read_bytes()[:100])
    pt.pretrain_demo_zoo(tmp_path, budget=TINY, models=models, progress=False)
    assert ckpt.read_pretrained_info(first[0]).weights == info.weights  # same recipe, same images: same tag
    pt.pretrain_demo_zoo(tmp_path, budget=pt.PretrainBudget(images_per_source=160, epochs=1), models=models,
                         progress=False)
    assert ckpt.read_pretrained_info(first[0]).recipe["epochs"] == 1


def test_proxy_pretrained_on_the_mix_encodes_tasks(tmp_path):
    path = pt.pretrain_proxy(tmp_path, budget=TINY, progress=False)
    assert path.name == "resnet20_cifar10@mix.pt"
    info = ckpt.read_pretrained_info(path)
    assert info.source == "mix" and info.source_classes == 31 and info.weights.startswith("synthetic:mix:e1:s0:")
    encoder = load_encoder(f"file:{path}")
    features = task_proxy_features(encoder, synthetic_task("shapes-4", samples_per_class=5), sample_size=20)
    assert features.shape == (2 * 64 + 10,) and np.isfinite(features).all()
    assert pt.pretrain_proxy(tmp_path, budget=TINY, progress=False) == path  # idempotent too
