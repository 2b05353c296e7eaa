"""Penultimate features and source-head logits of a candidate model, with an on-disk cache.

The penultimate feature is the input of the model's classification head (see
:func:`fennec_mlflow.data.zoo.find_head`), flattened; convolutional heads get a global average
pool first. Extraction is batched, in inference mode, on a configurable device.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fennec_mlflow.progress import tqdm

from fennec_mlflow import config
from fennec_mlflow.data.tasks import Probe
from fennec_mlflow.data.zoo import ZooModel, find_head, primary_output

FEATURE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Features:
    features: np.ndarray  # (N, D) float32
    logits: np.ndarray  # (N, K) float32: the source head's outputs
    seconds: float  # wall time of the forward passes (0 when read from the cache)
    cached: bool = False

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def preprocess(images: np.ndarray, model: ZooModel) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW at the model's input size."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != model.input_size or x.shape[-2] != model.input_size:
        x = F.interpolate(x, size=(model.input_size, model.input_size), mode="bilinear",
                          align_corners=False, antialias=True)
    mean = torch.tensor(model.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.std).view(1, 3, 1, 1)
    return (x - mean) / std


def extract_features(
    model: ZooModel,
    images: np.ndarray,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> Features:
    """Penultimate features (N, D) and source logits (N, K) for uint8 NHWC ``images``."""
    module = model.module.to(device).eval()
    head = module.get_submodule(find_head(model))
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda m, inputs, output: captured.append(inputs[0]))
    feats, logits = [], []
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for lo in tqdm(range(0, len(images), batch_size), desc=f"features {model.name}",
                           disable=not progress, leave=False):
                captured.clear()
                out = primary_output(module(preprocess(images[lo:lo + batch_size], model).to(device)))
                feat = captured[-1]
                if feat.ndim == 4:  # convolutional head: pool the spatial map it would have seen
                    feat = feat.mean(dim=(2, 3))
                feats.append(feat.flatten(1).float().cpu())
                logits.append(out.flatten(1).float().cpu())
    finally:
        hook.remove()
    seconds = time.perf_counter() - start
    return Features(torch.cat(feats).numpy(), torch.cat(logits).numpy(), seconds)


def default_cache_dir() -> Path:
    return config.cache_dir("features")


class FeatureCache:
    """Features on disk keyed by (model, weights, task fingerprint, probe seed, probe size).

    Each forward pass of a model over a probe happens once; files are written atomically so a
    killed job never leaves a half-written entry.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()

    @staticmethod
    def key(model: ZooModel, probe: Probe) -> str:
        parts = {
            "v": FEATURE_FORMAT_VERSION,
            "model": model.name,
            "weights": model.weights,
            "task": probe.task.name,
            "task_fingerprint": probe.task.fingerprint,
            "probe_seed": probe.seed,
            "probe_size": probe.size,
        }
        return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def path(self, model: ZooModel, probe: Probe) -> Path:
        return self.root / f"{self.key(model, probe)}.npz"

    def get_or_compute(self, model: ZooModel, probe: Probe, **extract_kwargs) -> Features:
        path = self.path(model, probe)
        if path.exists():
            with np.load(path) as data:
                return Features(data["features"], data["logits"], float(data["seconds"]), cached=True)
        result = extract_features(model, probe.images(), **extract_kwargs)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, features=result.features, logits=result.logits, seconds=result.seconds)
        os.replace(tmp, path)
        return result
