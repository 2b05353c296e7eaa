"""The task encoder (the paper's proxy, eq. 6 input g_j): a vision model embeds a random
sample of a task's images, without labels, and a few statistics of those embeddings
describe the task.

Encoders share one small protocol (:class:`ProxyEncoder`): ``name`` (a stable identity for
cache keys and run params, weights included), ``spec`` (how to rebuild it, for
:func:`load_encoder`), ``dim``, and ``encode(images) -> (n, dim) float32``.

- :class:`ClipEncoder`: an open_clip image tower, ``pretrained`` an open_clip tag, a local
  checkpoint file, or None for seeded random weights (tests, smoke runs).
- :class:`ZooEncoder`: any candidate model's penultimate features, e.g. the fallback proxy
  that :func:`fennec_mlflow.training.pretrain.pretrain_proxy` trains on a broad synthetic mix when no
  CLIP weights are on the machine.

Proxy features (:func:`task_proxy_features`), for embeddings L2-normalised to the unit sphere:

- ``mean`` (dim): where the task sits in embedding space; the domain signal.
- ``std`` (dim): per-dimension spread; separates a narrow task (a few look-alike classes)
  from a varied one in the same region, which the mean alone cannot.
- ``concentration``: the norm of the mean (1 = all images embed alike, ~0 = spread over the
  sphere); with unit vectors it also fixes the total variance (1 - concentration^2).
- ``spectrum.0..7``: the share of variance on the top 8 principal axes, and
  ``effective_rank_fraction`` (exp of the entropy of all the shares, divided by dim): how
  many directions the task varies along, a label-free hint of its class count and difficulty.

Every value lies in [-1, 1] (most in [0, 1]). A random forest is insensitive to scales anyway; the common
range keeps Euclidean distances between tasks (nearest-task baselines, plots) from being
swamped by one part. The length is ``2 * dim + 10`` whatever the sample size.
"""
from __future__ import annotations

import difflib
import hashlib
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from fennec_mlflow import config
from fennec_mlflow.data.checkpoints import load_pretrained
from fennec_mlflow.data.features import extract_features
from fennec_mlflow.data.tasks import Task
from fennec_mlflow.data.zoo import WEIGHT_MODES, WeightsUnavailable, ZooError, ZooModel, load_model
from fennec_mlflow.errors import InvalidInputError, ResourceUnavailableError

DEFAULT_SAMPLE_SIZE = config.PROBE_SIZE
SPECTRUM_COMPONENTS = 8
SUMMARY_NAMES = ("concentration", "effective_rank_fraction")
TASK_META_NAMES = ("class_count", "log_class_count", "image_count", "log_image_count")
RANDOM_WEIGHTS = "random"  # the spec word for seeded random CLIP weights
RANDOM_INIT_SEED = 0


class ProxyError(InvalidInputError):
    """An encoder spec, argument or input is malformed; the message says what to pass."""


class ProxyUnavailable(ResourceUnavailableError):
    """The encoder's weights cannot be found or fetched (usually: offline); the message says
    which file is needed, where it is looked for, and how to pass a local copy."""


@runtime_checkable
class ProxyEncoder(Protocol):
    name: str
    spec: str
    dim: int

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 (n, H, W, 3) -> float32 (n, dim), batched, in inference mode."""


def check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ProxyError(f"images must be uint8 of shape (n, H, W, 3), got {images.dtype} {images.shape}")
    if images.shape[0] == 0:
        raise ProxyError("no images to encode")
    return images


# ----------------------------------------------------------------------------- CLIP


def _resize_for_clip(x: torch.Tensor, size: tuple[int, int], resize_mode: str, fill: float) -> torch.Tensor:
    """Float NCHW in [0, 1] -> (size) the way open_clip's eval transform does, batched.

    ``shortest``: shortest side to size, centre crop; ``longest``: longest side to size, pad
    with ``fill``; ``squash``: straight resize. Bicubic with antialias, like PIL's resize.
    """
    height, width = x.shape[-2:]
    if resize_mode == "squash" or (height, width) == size:
        scaled = (size[0], size[1])
    else:
        pick = min if resize_mode == "longest" else max
        scale = pick(size[0] / height, size[1] / width)
        scaled = (max(1, round(height * scale)), max(1, round(width * scale)))
    if scaled != (height, width):
        x = F.interpolate(x, size=scaled, mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
    if scaled == size:
        return x
    if resize_mode == "longest":
        pad_h, pad_w = size[0] - scaled[0], size[1] - scaled[1]
        return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=fill)
    top, left = (scaled[0] - size[0]) // 2, (scaled[1] - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]


def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith((".bin", ".pt", ".pth", ".safetensors"))


HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's names on the Hub


def _hub_source(cfg: dict) -> tuple[str, tuple[str, ...]] | None:
    """(repo id, candidate file names) of a tag's Hugging Face source, safetensors first."""
    if not cfg.get("hf_hub"):
        return None
    repo_id, filename = os.path.split(cfg["hf_hub"])
    if not filename:
        return repo_id, HF_WEIGHT_FILES
    if filename.endswith((".bin", ".pth")):
        return repo_id, (filename[:-4] + ".safetensors", filename)
    return repo_id, (filename,)


def _hub_cache(cache_dir: str | None) -> str:
    try:
        from huggingface_hub import constants

        return cache_dir or constants.HF_HUB_CACHE
    except ImportError:
        return cache_dir or os.path.expanduser("~/.cache/huggingface/hub")


def cached_clip_weights(model_name: str, tag: str, cache_dir: str | None = None) -> Path | None:
    """The local file of an open_clip tag's weights if already downloaded, else None.

    Looks where open_clip would put it (the Hugging Face cache, then open_clip's URL cache,
    or ``cache_dir`` for both); never touches the network.
    """
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    if cfg.get("file") and os.path.isfile(cfg["file"]):
        return Path(cfg["file"])
    hub = _hub_source(cfg)
    if hub is not None:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        for filename in hub[1] if try_to_load_from_cache else ():
            found = try_to_load_from_cache(hub[0], filename, cache_dir=cache_dir)
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    if cfg.get("url"):
        candidate = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        if candidate.is_file():
            return candidate
    return None


def _clip_weights_help(model_name: str, tag: str, cache_dir: str | None) -> str:
    """Which file a tag needs, where open_clip caches it, and how to pass a local copy."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    lines = [f"open_clip weights for model {model_name!r}, pretrained tag {tag!r} are not on this machine "
             "and cannot be downloaded (offline)."]
    hub = _hub_source(cfg)
    if hub is not None:
        lines.append(f"Needed: {' or '.join(hub[1])} from the Hugging Face repo {hub[0]!r}, cached under "
                     f"{_hub_cache(cache_dir)} (set by HF_HOME or HF_HUB_CACHE; default ~/.cache/huggingface/hub).")
    if cfg.get("url"):
        url_cache = cache_dir or os.path.expanduser("~/.cache/clip")
        lines.append(f"Or: {cfg['url']} (open_clip caches URL downloads in {url_cache}).")
    lines.append("Copy the file to this machine and pass its path: "
                 f"ClipEncoder({model_name!r}, pretrained='/path/to/open_clip_pytorch_model.bin') or the "
                 f"encoder spec 'clip:{model_name}:/path/to/open_clip_pytorch_model.bin'; "
                 "or use a zoo proxy (spec 'file:PATH' from fennec_mlflow.training.pretrain.pretrain_proxy).")
    return " ".join(lines)


def _offline_from_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class _ClipWeights:
    """What open_clip gets: a tag (download allowed) or a file, and the tag's settings."""

    weights_id: str  # the part of the encoder name that identifies the weights
    pretrained: str | None  # tag or file path for open_clip; None: seeded random init
    quick_gelu: bool = False
    preprocess: dict | None = None  # the tag's mean/std/resize settings, when loading its file directly


def _resolve_clip_weights(model_name: str, pretrained: str | None, cache_dir: str | None,
                          offline: bool) -> _ClipWeights:
    import open_clip

    if not pretrained or pretrained == RANDOM_WEIGHTS:
        return _ClipWeights(f"random-init-seed{RANDOM_INIT_SEED}", None)
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained in tags:
        cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        # Tags trained with QuickGELU (OpenAI's) need it in the model, else the features are off.
        quick = bool(cfg.get("quick_gelu", False))
        local = cached_clip_weights(model_name, pretrained, cache_dir)
        if local is not None:  # no network round trip (which can stall for a minute when offline)
            preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
            return _ClipWeights(pretrained, str(local), quick, preprocess)
        if offline:
            raise ProxyUnavailable(_clip_weights_help(model_name, pretrained, cache_dir))
        return _ClipWeights(pretrained, pretrained, quick)
    path = Path(pretrained).expanduser()
    if path.is_file():
        return _ClipWeights(f"{path.name}#{_file_digest(path)}", str(path))
    if _looks_like_path(pretrained):
        raise ProxyUnavailable(f"CLIP checkpoint file {str(path)!r} does not exist; pass the path of an "
                               f"open_clip checkpoint for {model_name} (e.g. open_clip_pytorch_model.bin)")
    raise ProxyError(f"unknown pretrained tag {pretrained!r} for open_clip model {model_name!r}; known tags: "
                     f"{', '.join(tags) or 'none'}; or pass a checkpoint file path, or 'random'")


def _create_clip(model_name: str, weights: _ClipWeights, cache_dir: str | None):
    import open_clip

    if weights.pretrained is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            return open_clip.create_model(model_name, pretrained=None, device="cpu")
    try:
        return open_clip.create_model(model_name, pretrained=weights.pretrained, device="cpu",
                                      force_quick_gelu=weights.quick_gelu, force_preprocess_cfg=weights.preprocess,
                                      cache_dir=cache_dir)
    except Exception as exc:  # open_clip wraps download failures (hub, URL, offline) in RuntimeError
        if os.path.isfile(weights.pretrained):
            raise ProxyUnavailable(f"could not load the CLIP checkpoint {weights.pretrained!r} into "
                                   f"{model_name!r} ({type(exc).__name__}: {exc})") from exc
        raise ProxyUnavailable(_clip_weights_help(model_name, weights.pretrained, cache_dir)
                               + f" (cause: {type(exc).__name__}: {exc})") from exc


class ClipEncoder:
    """The image tower of an open_clip model.

    ``pretrained``: an open_clip tag (``"openai"``, ``"laion2b_s34b_b79k"``, ...), a local
    checkpoint path, or None / "" / "random" for random weights drawn from a fixed seed (so
    the same name always means the same weights). Only the image tower is kept in memory.

    A tag whose file is already in the local cache loads without any network call. Otherwise
    open_clip downloads it, unless ``offline`` (default: the HF_HUB_OFFLINE variable), where
    :class:`ProxyUnavailable` says which file to fetch and where to put it.
    """

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = "openai", *, device: str = "cpu",
                 batch_size: int = 64, cache_dir: str | None = None, offline: bool | None = None):
        import open_clip

        if model_name not in open_clip.list_models():
            close = difflib.get_close_matches(model_name, open_clip.list_models(), n=4, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ProxyError(f"unknown open_clip model {model_name!r}.{hint} See open_clip.list_models().")
        self.model_name = model_name
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        offline = _offline_from_env() if offline is None else offline
        weights = _resolve_clip_weights(model_name, pretrained, cache_dir, offline)
        model = _create_clip(model_name, weights, cache_dir)
        cfg = open_clip.get_model_preprocess_cfg(model)
        self.visual = model.visual.to(self.device).eval()
        del model  # drop the text tower: the proxy only embeds images
        size = cfg["size"]
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1)
        self.resize_mode = cfg.get("resize_mode", "shortest")
        self.fill = float(cfg.get("fill_color", 0)) / 255.0
        # Not every tower type (timm, HF) has output_dim; one tiny forward always knows.
        output_dim = getattr(self.visual, "output_dim", None)
        self.dim = int(output_dim or self.encode(np.zeros((1, *self.image_size, 3), dtype=np.uint8)).shape[1])
        self.name = f"clip:{model_name}:{weights.weights_id}"
        self.spec = f"clip:{model_name}:{pretrained if pretrained else RANDOM_WEIGHTS}"

    def _preprocess(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        x = _resize_for_clip(x, self.image_size, self.resize_mode, self.fill)
        return (x - self.mean) / self.std

    def encode(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images)
        out = []
        with torch.inference_mode():
            for lo in range(0, len(images), self.batch_size):
                out.append(self.visual(self._preprocess(images[lo:lo + self.batch_size])).float().cpu())
        return torch.cat(out).numpy()


# ----------------------------------------------------------------------------- zoo models


class ZooEncoder:
    """A candidate model's penultimate features (see :mod:`fennec_mlflow.data.features`) as the proxy."""

    def __init__(self, zoo_model: ZooModel, *, device: str = "cpu", batch_size: int = 64, spec: str | None = None):
        if not isinstance(zoo_model, ZooModel):
            raise ProxyError(f"ZooEncoder needs a ZooModel, got {type(zoo_model).__name__}")
        self.model = zoo_model
        self.device = device
        self.batch_size = int(batch_size)
        self.name = f"zoo:{zoo_model.name}:{zoo_model.weights}"
        self.spec = spec or f"zoo:{zoo_model.name}"
        probe = np.zeros((2, zoo_model.input_size, zoo_model.input_size, 3), dtype=np.uint8)
        self.dim = int(self.encode(probe).shape[1])

    def encode(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images)
        return extract_features(self.model, images, batch_size=self.batch_size, device=self.device).features


# ----------------------------------------------------------------------------- specs


SPEC_HELP = ("encoder specs: 'clip:MODEL[:TAG|:PATH|:random]' (e.g. clip:ViT-B-32:openai), "
             "'zoo:NAME[:auto|pretrained|random]' (e.g. zoo:resnet20_cifar10), "
             "'file:PATH' (a model saved by fennec_mlflow.training.pretrain, e.g. the pretrain_proxy output)")


def load_encoder(spec: str, device: str = "cpu", *, offline: bool | None = None) -> ProxyEncoder:
    """An encoder from a string spec (see :data:`SPEC_HELP`). ``offline`` as in :class:`ClipEncoder`."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ProxyError(f"unknown encoder spec {spec!r}; {SPEC_HELP}")
    kind, rest = spec.split(":", 1)
    if kind == "clip":
        model_name, _, pretrained = rest.partition(":")
        if not model_name:
            raise ProxyError(f"encoder spec {spec!r} names no CLIP model; {SPEC_HELP}")
        return ClipEncoder(model_name, pretrained or "openai", device=device, offline=offline)
    if kind == "zoo":
        return ZooEncoder(_zoo_model(rest), device=device, spec=spec)
    if kind == "file":
        return _file_encoder(rest, device)
    raise ProxyError(f"unknown encoder kind {kind!r} in spec {spec!r}; {SPEC_HELP}")


def _zoo_model(rest: str) -> ZooModel:
    # Zoo names may hold a colon themselves (torchvision:resnet18), so the weights mode is
    # recognised only as a known trailing word. A proxy with random weights would silently
    # describe nothing, so the default is "pretrained", which fails loudly when absent.
    name, weights = rest, "pretrained"
    head, _, tail = rest.rpartition(":")
    if head and tail in WEIGHT_MODES:
        name, weights = head, tail
    if not name:
        raise ProxyError(f"encoder spec 'zoo:{rest}' names no model; {SPEC_HELP}")
    try:
        if weights != "random":
            return load_model(name, weights=weights)
        with torch.random.fork_rng(devices=[]):  # seeded, so the name means one set of weights
            torch.manual_seed(RANDOM_INIT_SEED)
            model = load_model(name, weights="random")
        return replace(model, weights=f"random-init-seed{RANDOM_INIT_SEED}")
    except ZooError as exc:
        raise ProxyError(f"zoo proxy {name!r}: {exc}") from exc
    except WeightsUnavailable as exc:
        raise ProxyUnavailable(f"zoo proxy {name!r}: {exc}") from exc


def _file_encoder(path_text: str, device: str) -> ZooEncoder:
    path = Path(path_text).expanduser()
    if not path_text or not path.is_file():
        raise ProxyUnavailable(f"proxy model file {path_text!r} does not exist; make one with "
                               "fennec_mlflow.training.pretrain.pretrain_proxy(out_dir) and pass 'file:<that path>'")
    return ZooEncoder(load_pretrained(path, device=device).model, device=device, spec=f"file:{path}")


# ----------------------------------------------------------------------------- task features


def sample_indices(num_images: int, sample_size: int = DEFAULT_SAMPLE_SIZE, seed: int = 0) -> np.ndarray:
    """Sorted indices of a uniform random sample without replacement (all when the task is smaller).

    Uniform, not stratified: the proxy must work on a target whose labels are unknown.
    """
    if isinstance(sample_size, bool) or not isinstance(sample_size, (int, np.integer)) or sample_size < 1:
        raise ProxyError(f"sample_size must be a positive integer, got {sample_size!r}")
    if num_images <= sample_size:
        return np.arange(num_images)
    return np.sort(np.random.default_rng(seed).choice(num_images, size=sample_size, replace=False))


def proxy_feature_names(dim: int) -> list[str]:
    """Column names of :func:`embedding_statistics` for embeddings of width ``dim``."""
    return ([f"mean.{i}" for i in range(dim)] + [f"std.{i}" for i in range(dim)] + list(SUMMARY_NAMES)
            + [f"spectrum.{i}" for i in range(SPECTRUM_COMPONENTS)])


def embedding_statistics(embeddings: np.ndarray) -> np.ndarray:
    """The proxy feature vector (float64, length ``2 * dim + 10``) of raw embeddings (n, dim).

    See the module docstring for what each part captures.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or not np.isfinite(x).all():
        raise ProxyError(f"embeddings must be a finite (n, dim) array with n >= 1, got shape {x.shape}")
    # A zero embedding (e.g. all-dead ReLU features) stays zero instead of becoming NaN.
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    # One BLAS thread: right after a torch forward pass, OpenMP workers still spin on the cores
    # and a multi-threaded OpenBLAS SVD then takes seconds instead of tens of milliseconds.
    with threadpool_limits(limits=1, user_api="blas"):
        variances = np.linalg.svd(x - mean, compute_uv=False) ** 2
    total = variances.sum()
    shares = variances / total if total > 1e-12 else np.zeros_like(variances)
    spectrum = np.zeros(SPECTRUM_COMPONENTS)
    spectrum[:min(SPECTRUM_COMPONENTS, shares.size)] = shares[:SPECTRUM_COMPONENTS]
    positive = shares[shares > 0]
    effective_rank = math.exp(-(positive * np.log(positive)).sum()) if positive.size else 1.0
    # As a fraction of the width: in [0, 1] like every other part, so no part swamps distances.
    return np.concatenate([mean, std, [np.linalg.norm(mean), effective_rank / x.shape[1]], spectrum])


def image_proxy_features(encoder: ProxyEncoder, images: np.ndarray, *, sample_size: int = DEFAULT_SAMPLE_SIZE,
                         seed: int = 0) -> np.ndarray:
    """Proxy features of an unlabelled image array (n, H, W, 3) uint8: what a server receives."""
    images = check_images(images)
    indices = sample_indices(len(images), sample_size, seed)
    return embedding_statistics(encoder.encode(images[indices]))


def task_proxy_features(encoder: ProxyEncoder, task: Task, *, sample_size: int = DEFAULT_SAMPLE_SIZE,
                        seed: int = 0) -> np.ndarray:
    """Proxy features g_j of ``task``: statistics of a seeded uniform sample's embeddings.

    Labels are never read. Deterministic in (encoder, task images, sample_size, seed).
    """
    indices = sample_indices(task.num_samples, sample_size, seed)
    return embedding_statistics(encoder.encode(task.images(indices)))


# ----------------------------------------------------------------------------- task meta


@dataclass(frozen=True)
class TaskMeta:
    """Task meta features (paper: class count and data volume). ``class_count`` is NaN when
    unknown (unlabelled target without a hint); the caller imputes it for regression."""

    class_count: float
    image_count: int

    def vector(self) -> np.ndarray:
        """float64 values in :data:`TASK_META_NAMES` order (log1p: natural log of 1 + count)."""
        return np.array([self.class_count, math.log1p(self.class_count), self.image_count,
                         math.log1p(self.image_count)], dtype=np.float64)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(TASK_META_NAMES, self.vector().tolist()))


def meta_features(image_count: int, class_count: int | None = None) -> TaskMeta:
    """Task meta from counts alone (images sent to a server, with an optional class hint)."""
    if isinstance(image_count, bool) or not isinstance(image_count, (int, np.integer)) or image_count < 1:
        raise ProxyError(f"image_count must be a positive integer, got {image_count!r}")
    if class_count is not None and (isinstance(class_count, bool) or not isinstance(class_count, (int, np.integer))
                                    or class_count < 2):
        raise ProxyError(f"class_count must be an integer >= 2 or None (unknown), got {class_count!r}")
    return TaskMeta(class_count=float(class_count) if class_count is not None else math.nan,
                    image_count=int(image_count))


def task_meta_features(task: Task, class_count_hint: int | None = None, *, labels_known: bool = True) -> TaskMeta:
    """Class count and image count of ``task``.

    With ``labels_known`` the task's own class count is used (a conflicting hint is an error).
    For a target whose labels are placeholders, pass ``labels_known=False``: the class count
    is then the user's ``class_count_hint``, or NaN ("unknown").
    """
    if labels_known:
        if class_count_hint is not None and class_count_hint != task.num_classes:
            raise ProxyError(f"class_count_hint={class_count_hint} contradicts task {task.name!r}, which has "
                             f"{task.num_classes} classes; drop the hint or pass labels_known=False")
        return meta_features(task.num_samples, task.num_classes)
    return meta_features(task.num_samples, class_count_hint)
