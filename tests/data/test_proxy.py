"""The task encoder: real torch / open_clip models, no mocks."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fennec_mlflow.data import proxy
from fennec_mlflow.data.features import extract_features
from fennec_mlflow.data.synthetic import synthetic_task
from fennec_mlflow.data.tasks import from_arrays
from tests.helpers import REPO


@pytest.fixture(scope="module")
def encoder():
    """A seeded random-init CIFAR ResNet: a real encoder that needs no download."""
    return proxy.load_encoder("zoo:resnet20_cifar10:random")


@pytest.fixture(scope="module")
def clip():
    """open_clip's smallest ViT config with seeded random weights: the real CLIP code path.
    Unlike a random CNN, whose features all point one way, it already separates domains."""
    return proxy.ClipEncoder("ViT-S-32", pretrained=None, batch_size=32)


@pytest.fixture(scope="module")
def shapes():
    return synthetic_task("shapes-8", samples_per_class=12)


# ----------------------------------------------------------------------------- proxy features


def test_features_have_a_fixed_length_and_repeat_by_seed(encoder, shapes):
    first = proxy.task_proxy_features(encoder, shapes, sample_size=40, seed=3)
    again = proxy.task_proxy_features(encoder, shapes, sample_size=40, seed=3)
    other_seed = proxy.task_proxy_features(encoder, shapes, sample_size=40, seed=4)
    whole_task = proxy.task_proxy_features(encoder, shapes, sample_size=10_000)
    assert encoder.dim == 64
    for features in (first, other_seed, whole_task):
        assert features.shape == (2 * encoder.dim + 10,) and np.isfinite(features).all()
    assert len(proxy.proxy_feature_names(encoder.dim)) == first.size
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other_seed)  # 40 of 96 images: another sample


def test_features_never_read_labels(encoder, shapes):
    images = shapes.images()
    permuted = np.random.default_rng(0).permutation(shapes.labels)
    relabelled = from_arrays(images, permuted, name="relabelled", class_names=shapes.class_names)
    np.testing.assert_array_equal(proxy.task_proxy_features(encoder, shapes, sample_size=30, seed=1),
                                  proxy.task_proxy_features(encoder, relabelled, sample_size=30, seed=1))
    # The images of an unlabelled array give the same features as the task built on them.
    np.testing.assert_array_equal(proxy.task_proxy_features(encoder, shapes, sample_size=30, seed=1),
                                  proxy.image_proxy_features(encoder, images, sample_size=30, seed=1))


def test_sample_is_uniform_not_stratified():
    # A 95/5 task sampled 20 times: a stratified sample would always hold exactly one of the
    # rare class; a uniform one often holds none.
    labels = np.array([0] * 95 + [1] * 5)
    rare_counts = {int((labels[proxy.sample_indices(100, 20, seed)] == 1).sum()) for seed in range(20)}
    assert 0 in rare_counts and len(rare_counts) > 1


def test_families_differ_more_than_samples_of_one_family(clip):
    def features(name, render_seed, sample_seed=0):
        task = synthetic_task(name, samples_per_class=8, seed=render_seed)
        return proxy.task_proxy_features(clip, task, sample_size=32, seed=sample_seed)

    reference = features("shapes-8", 0)
    same_task = [features("shapes-8", 1), features("shapes-8", 0, sample_seed=1)]
    other_families = [features(name, 0) for name in ("glyphs-lower-10", "gratings-orient-8", "blobs-count-5")]
    within = max(np.linalg.norm(reference - f) for f in same_task)
    between = min(np.linalg.norm(reference - f) for f in other_families)
    assert between > 2 * within, (within, between)


def test_embedding_statistics_edge_cases():
    same = proxy.embedding_statistics(np.tile([[3.0, 4.0]], (5, 1)))
    dim = 2
    assert same[:dim] == pytest.approx([0.6, 0.8])  # mean of the L2-normalised rows
    assert np.all(same[dim:2 * dim] == 0)  # no spread
    assert same[2 * dim] == pytest.approx(1.0)  # concentration
    assert np.all(same[2 * dim + 2:] == 0)  # no variance on any axis
    with_zero = proxy.embedding_statistics(np.array([[0.0, 0.0], [1.0, 0.0]]))
    assert np.isfinite(with_zero).all()
    two_directions = proxy.embedding_statistics(np.array([[1.0, 0], [0, 1.0], [1.0, 0], [0, 1.0]]))
    assert two_directions[2 * dim] == pytest.approx(math.sqrt(0.5))
    assert two_directions[2 * dim + 2] == pytest.approx(1.0)  # all variance on one axis
    with pytest.raises(proxy.ProxyError, match="finite"):
        proxy.embedding_statistics(np.array([[np.nan, 1.0]]))


# ----------------------------------------------------------------------------- encoders


def test_zoo_encoder_gives_the_penultimate_features(encoder, shapes):
    images = shapes.images(np.arange(10))
    encoded = encoder.encode(images)
    assert encoded.dtype == np.float32 and encoded.shape == (10, 64)
    np.testing.assert_array_equal(encoded, extract_features(encoder.model, images).features)
    assert encoder.name == "zoo:resnet20_cifar10:random-init-seed0"
    assert isinstance(encoder, proxy.ProxyEncoder)
    with pytest.raises(proxy.ProxyError, match="uint8"):
        encoder.encode(images.astype(np.float32))


def test_clip_image_tower_with_random_weights_and_from_a_checkpoint(clip, tmp_path):
    import open_clip

    images = np.random.default_rng(0).integers(0, 256, (6, 40, 56, 3), dtype=np.uint8)  # not square, not 224
    embedded = clip.encode(images)
    assert embedded.shape == (6, clip.dim) and clip.dim == 384 and embedded.dtype == np.float32
    assert np.isfinite(embedded).all() and clip.name == "clip:ViT-S-32:random-init-seed0"
    # Random weights are seeded: the name stands for one set of weights, and a checkpoint of
    # those weights on disk loads through the local-path code path to the same embeddings.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(proxy.RANDOM_INIT_SEED)
        full_model = open_clip.create_model("ViT-S-32", pretrained=None)
    checkpoint = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(full_model.state_dict(), checkpoint)
    del full_model
    from_file = proxy.load_encoder(f"clip:ViT-S-32:{checkpoint}")
    try:
        np.testing.assert_allclose(from_file.encode(images), embedded, rtol=0, atol=1e-5)
        assert from_file.name.startswith("clip:ViT-S-32:open_clip_pytorch_model.bin#")
    finally:
        checkpoint.unlink()  # 250 MB


def test_clip_offline_without_weights_says_what_to_fetch(tmp_path):
    # A fresh interpreter: huggingface_hub reads HF_HUB_OFFLINE when imported. The bogus proxy
    # makes any request that slipped through fail at once instead of hanging.
    script = (
        "from fennec_mlflow.data.proxy import ClipEncoder, ProxyUnavailable\n"
        "for offline in (None, False):\n"
        "    try:\n"
        "        ClipEncoder('ViT-B-32', 'openai', offline=offline)\n"
        "    except ProxyUnavailable as exc:\n"
        "        print('MESSAGE', offline, exc)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    messages = [line for line in done.stdout.splitlines() if line.startswith("MESSAGE")]
    assert len(messages) == 2, done.stdout + done.stderr  # both: refused up front, and open_clip's failure wrapped
    for message in messages:
        assert "open_clip_pytorch_model.bin" in message and "timm/vit_base_patch32_clip_224.openai" in message
        assert str(tmp_path / "hf" / "hub") in message and "HF_HOME" in message
        assert "pretrained='/path/to/open_clip_pytorch_model.bin'" in message and "clip:ViT-B-32:/path" in message


def test_cached_clip_weights_are_found_without_network(tmp_path):
    assert proxy.cached_clip_weights("ViT-B-32", "openai", cache_dir=str(tmp_path)) is None
    # The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<revision>/<file>}.
    repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    found = proxy.cached_clip_weights("ViT-B-32", "openai", cache_dir=str(tmp_path))
    assert found == snapshot / "open_clip_pytorch_model.bin"


@pytest.mark.parametrize("spec,error,match", [
    ("resnet20_cifar10", proxy.ProxyError, "unknown encoder spec"),
    ("timm:resnet18", proxy.ProxyError, "unknown encoder kind 'timm'.*clip:MODEL"),
    ("zoo:resnet19_cifar10", proxy.ProxyError, "Did you mean"),
    ("clip:ViT-B-99", proxy.ProxyError, "unknown open_clip model"),
    ("clip:ViT-B-32:laion9000", proxy.ProxyError, "known tags: openai"),
    ("clip:ViT-B-32:/no/such/open_clip_pytorch_model.bin", proxy.ProxyUnavailable, "does not exist"),
    ("file:/no/such/proxy.pt", proxy.ProxyUnavailable, "does not exist.*pretrain_proxy"),
])
def test_bad_specs_say_what_is_wrong(spec, error, match):
    with pytest.raises(error, match=match):
        proxy.load_encoder(spec)


def test_zoo_proxy_without_published_weights_offline_is_unavailable(offline, tmp_path, monkeypatch):
    monkeypatch.setattr("fennec_mlflow.data.zoo.PYTORCHCV_ROOT", tmp_path)
    with pytest.raises(proxy.ProxyUnavailable, match="resnet20_cifar10"):
        proxy.load_encoder("zoo:resnet20_cifar10")  # default: published weights, never a silent random proxy


# ----------------------------------------------------------------------------- task meta


def test_task_meta_features(shapes):
    meta = proxy.task_meta_features(shapes)
    assert meta.as_dict() == {"class_count": 8.0, "log_class_count": pytest.approx(math.log(9)),
                              "image_count": 96.0, "log_image_count": pytest.approx(math.log(97))}
    assert list(meta.as_dict()) == list(proxy.TASK_META_NAMES)
    unknown = proxy.task_meta_features(shapes, labels_known=False).vector()
    assert math.isnan(unknown[0]) and math.isnan(unknown[1]) and unknown[2] == 96
    assert proxy.task_meta_features(shapes, 5, labels_known=False).class_count == 5
    with pytest.raises(proxy.ProxyError, match="contradicts"):
        proxy.task_meta_features(shapes, 5)
    with pytest.raises(proxy.ProxyError, match="class_count"):
        proxy.meta_features(10, class_count=1)
    assert json.dumps(proxy.meta_features(10).as_dict())  # NaN stays a float, serialisable
