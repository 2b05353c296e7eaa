"""The project's checkpoint format: one ``.pt`` file per pre-trained model.

A file holds the state dict and the metadata as JSON text, loadable with
``torch.load(weights_only=True)`` (nothing is unpickled), plus a ``.json`` sidecar with the same
metadata for people and the MLflow UI. Files are written to a temporary name and renamed, so a
killed run never leaves a half-written model. Training lives in
:mod:`fennec_mlflow.training.pretrain`; reading needs only this module.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fennec_mlflow.data.zoo import ZooModel, load_model, replace_head
from fennec_mlflow.errors import InvalidInputError, MissingFileError

PRETRAIN_FORMAT_VERSION = 1
MODEL_SOURCE = "fennec-pretrain"  # ZooModel.source of every model made by pre-training


class PretrainError(InvalidInputError):
    """A model cannot be pre-trained, saved or loaded as asked; the message says what to change."""





@dataclass(frozen=True)
class PretrainInfo:
    """Everything known about a pre-trained model: how it was made and how well it learned.

    ``recipe`` holds every input that shaped the weights (architecture, source fingerprint,
    schedule, seed, split, how the source was built); ``weights`` is the short tag derived
    from it. ``source_test_accuracy`` is measured on the held-out 15% of the source task.
    """

    arch: str
    source: str
    source_task: str
    source_classes: int
    source_samples: int
    recipe: dict[str, Any]
    weights: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source_test_accuracy: float
    source_val_accuracy: float
    best_epoch: int
    seconds: float
    format_version: int = PRETRAIN_FORMAT_VERSION

    @property
    def name(self) -> str:
        return f"{self.arch}@{self.source}"

    @property
    def chance_accuracy(self) -> float:
        return 1.0 / self.source_classes

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "PretrainInfo":
        data = json.loads(text)
        data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
        return cls(**data)


@dataclass
class PretrainedModel:
    """A pre-trained candidate (``model``, usable wherever a ZooModel is) and its ``info``."""

    model: ZooModel = field(repr=False)
    info: PretrainInfo


def random_init(arch: str, seed: int) -> ZooModel:
    """The architecture with seeded random weights (the caller's torch RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return load_model(arch, weights="random")


def as_zoo_model(module: torch.nn.Module, info: PretrainInfo) -> ZooModel:
    return ZooModel(name=info.name, module=module, input_size=info.input_size, mean=info.mean, std=info.std,
                    weights=info.weights, source=MODEL_SOURCE)


def _atomic_write(path: Path, write) -> None:
    """``write(tmp_path)`` then rename over ``path``: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_pretrained(pretrained: PretrainedModel, path: str | Path) -> Path:
    """Write ``path`` (.pt: state dict + metadata) and its ``.json`` sidecar; returns ``path``."""
    path = Path(path)
    info = pretrained.info
    state = {k: v.detach().cpu().clone() for k, v in pretrained.model.module.state_dict().items()}
    payload = {"format_version": PRETRAIN_FORMAT_VERSION, "metadata_json": info.to_json(), "state_dict": state}
    # Sidecar first: if a kill lands between the two writes, the .pt (the only file loading
    # trusts) is still the previous complete model or absent.
    _atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(info.to_json()))
    _atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def _read_payload(path: Path) -> dict:
    if not path.is_file():
        raise MissingFileError(f"no pre-trained model file at {str(path)!r}; create one with "
                                "fennec_mlflow.training.pretrain.pretrain_demo_zoo / pretrain_proxy")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, pickle with code, not a torch file, ...
        raise PretrainError(f"{str(path)!r} is not a readable fennec pre-trained model "
                            f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or not {"metadata_json", "state_dict", "format_version"} <= payload.keys():
        raise PretrainError(f"{str(path)!r} is not a fennec pre-trained model file "
                            "(expected keys format_version, metadata_json, state_dict)")
    if payload["format_version"] != PRETRAIN_FORMAT_VERSION:
        raise PretrainError(f"{str(path)!r} has format version {payload['format_version']}, this fennec-mlflow "
                            f"reads version {PRETRAIN_FORMAT_VERSION}; pre-train it again")
    return payload


def read_pretrained_info(path: str | Path) -> PretrainInfo:
    """The metadata of a saved model, without building the network."""
    return PretrainInfo.from_json(_read_payload(Path(path))["metadata_json"])


def load_pretrained(path: str | Path, device: str = "cpu") -> PretrainedModel:
    """Rebuild a model saved by :func:`save_pretrained` (any machine; no network needed)."""
    payload = _read_payload(Path(path))
    info = PretrainInfo.from_json(payload["metadata_json"])
    shell = random_init(info.arch, seed=0)  # weights are overwritten just below
    module = replace_head(shell, info.source_classes)
    try:
        module.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise PretrainError(f"{str(path)!r}: weights do not fit {info.arch} with {info.source_classes} "
                            f"classes ({exc})") from exc
    return PretrainedModel(model=as_zoo_model(module.to(device).eval(), info), info=info)
