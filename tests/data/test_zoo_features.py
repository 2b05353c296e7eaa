"""Candidate models and their features, with real (randomly initialised) torch models."""
import numpy as np
import pytest
import torch
from torch import nn

from fennec_mlflow.data import zoo
from fennec_mlflow.data.features import FeatureCache, extract_features
from fennec_mlflow.data.tasks import from_arrays, sample_probe
from tests.helpers import blob_images


def test_unknown_model_suggests_close_names():
    with pytest.raises(zoo.ZooError, match="Did you mean: resnet18"):
        zoo.load_model("resnet19")
    with pytest.raises(zoo.ZooError, match="Did you mean: real:mnist_cnn"):  # the weights this install ships first
        zoo.load_model("mnist_cnn")
    with pytest.raises(zoo.ZooError, match="unknown model hub"):
        zoo.load_model("timm:resnet18")


def test_pretrained_weights_unreachable_offline_name_the_file(offline, tmp_path):
    with pytest.raises(zoo.WeightsUnavailable) as info:
        zoo.load_model("resnet20_cifar10", weights="pretrained", root=tmp_path)
    message = str(info.value)
    assert "resnet20_cifar10-" in message and str(tmp_path) in message and "weights='random'" in message
    with pytest.raises(zoo.WeightsUnavailable, match="Download .*resnet18"):
        zoo.load_model("torchvision:resnet18", weights="pretrained", root=tmp_path)


def test_auto_weights_never_download_and_say_which(offline, tmp_path):
    model = zoo.load_model("resnet20_cifar10", weights="auto", root=tmp_path)
    assert model.weights == f"random-init-seed{zoo.random_init_seed('resnet20_cifar10')}" and model.input_size == 32 and model.mean == zoo.CIFAR_MEAN


@pytest.mark.parametrize("name,head,dim", [
    ("resnet20_cifar10", "output", 64),
    ("nin_cifar10", "output.final_conv.conv", 192),  # convolutional head: features are pooled
    ("torchvision:squeezenet1_1", "classifier.1", 512),
])
def test_penultimate_features_and_source_logits(name, head, dim):
    model = zoo.load_model(name, weights="random")
    assert zoo.find_head(model) == head
    images, _ = blob_images(3, 2, size=20)  # resized to the model's own input size
    feats = extract_features(model, images, batch_size=4)
    assert feats.features.shape == (6, dim) and feats.features.dtype == np.float32
    assert feats.logits.shape[0] == 6 and feats.logits.shape[1] in (10, 1000)
    assert np.isfinite(feats.features).all()


def test_custom_module_and_head_replacement():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    model = zoo.from_module(net, "tiny", input_size=16)
    images, _ = blob_images(2, 2, size=16)
    assert extract_features(model, images).features.shape == (4, 8)
    zoo.replace_head(model, 3)
    assert model.module(torch.zeros(1, 3, 16, 16)).shape == (1, 3)
    with pytest.raises(zoo.ZooError, match="torch.nn.Module"):
        zoo.from_module("not a module", "x")


def test_feature_cache_computes_each_forward_once(tmp_path):
    images, labels = blob_images(10, 3)
    probe = sample_probe(from_arrays(images, labels, name="blobs"), 12, seed=0)
    model = zoo.load_model("resnet20_cifar10", weights="random")
    cache = FeatureCache(tmp_path)
    first = cache.get_or_compute(model, probe)
    second = cache.get_or_compute(model, probe)
    assert not first.cached and second.cached
    np.testing.assert_array_equal(first.features, second.features)
    other = sample_probe(probe.task, 12, seed=1)
    assert cache.path(model, other) != cache.path(model, probe)
    assert len(list(tmp_path.glob("*.npz"))) == 1


def test_random_init_is_the_same_in_fresh_processes(tmp_path):
    """A cell computed from a random-init model must have one value on any machine (issue 15)."""
    import subprocess
    import sys

    code = ("import torch, sys\n"
            "from fennec_mlflow.data.zoo import load_model\n"
            "torch.manual_seed(int(sys.argv[1]))  # whatever the caller's RNG, the weights are the name's\n"
            "m = load_model('resnet20_cifar10', weights='random')\n"
            "print(m.weights, float(sum(p.double().sum() for p in m.module.parameters())))\n")
    outputs = {subprocess.run([sys.executable, "-c", code, str(seed)], capture_output=True, text=True, check=True,
                              cwd=tmp_path).stdout for seed in (1, 2)}
    assert len(outputs) == 1
