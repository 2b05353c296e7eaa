"""Image-classification tasks: images + labels + name + facts, from several sources.

A :class:`Task` keeps labels in memory and reads images on demand through an
``ImageSource`` (a callable from indices to a ``uint8`` array of shape (n, H, W, 3)),
so a folder of 100k files costs nothing until a probe set is drawn from it.
"""
from __future__ import annotations

import difflib
import hashlib
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fennec_mlflow import config
from fennec_mlflow.errors import InvalidInputError

ImageSource = Callable[[np.ndarray], np.ndarray]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEFAULT_PROBE_SIZE = config.PROBE_SIZE


class TaskError(InvalidInputError):
    """A task cannot be built or sampled as asked; the message says how to fix it."""


@dataclass(frozen=True)
class Task:
    """A labelled image-classification task.

    ``labels`` are integers in ``[0, num_classes)``; ``class_names[c]`` names class ``c``.
    ``fingerprint`` identifies the exact content (used in cache keys and run idempotency).
    """

    name: str
    labels: np.ndarray
    class_names: tuple[str, ...]
    domain: str
    image_source: ImageSource = field(repr=False, compare=False)
    source: str = "arrays"
    fingerprint: str = ""
    skipped_files: int = 0
    labelled: bool = True  # False: a target given as images only (labels are placeholders)

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.ndim != 1:
            raise TaskError(f"task {self.name!r}: labels must be 1-D, got shape {labels.shape}")
        if labels.size == 0:
            raise TaskError(f"task {self.name!r} has no samples")
        if not np.issubdtype(labels.dtype, np.integer):
            raise TaskError(f"task {self.name!r}: labels must be integers, got {labels.dtype}")
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        if labels.min() < 0 or labels.max() >= len(self.class_names):
            raise TaskError(
                f"task {self.name!r}: labels must lie in [0, {len(self.class_names)}) "
                f"(one per class name), got range [{labels.min()}, {labels.max()}]"
            )
        present = np.unique(labels).size
        if self.labelled and present < 2:
            raise TaskError(
                f"task {self.name!r} has a single class ({self.class_names[int(labels[0])]!r}); "
                "a classification task needs at least 2 classes with samples"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_samples(self) -> int:
        return int(self.labels.size)

    def facts(self) -> dict:
        """Public facts about the task, used as task meta features and run tags."""
        return {
            "class_count": self.num_classes,
            "sample_count": self.num_samples,
            "domain": self.domain,
            "source": self.source,
        }

    def images(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Images at ``indices`` (all when None) as uint8 (n, H, W, 3)."""
        idx = np.arange(self.num_samples) if indices is None else np.asarray(indices, dtype=np.int64)
        return self.image_source(idx)

    def subset(self, indices: np.ndarray, name: str | None = None) -> "Task":
        """The task restricted to ``indices`` (class names kept so labels stay comparable)."""
        indices = np.asarray(indices, dtype=np.int64)
        parent = self.image_source
        return replace(
            self,
            name=name or self.name,
            labels=self.labels[indices],
            image_source=lambda idx: parent(indices[idx]),
            fingerprint=_digest(self.fingerprint, indices.tobytes()),
        )


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- sources


def from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    name: str,
    class_names: Sequence[str] | None = None,
    domain: str = "unknown",
    source: str = "arrays",
) -> Task:
    """A task from in-memory arrays: images (n, H, W, 3) or (n, H, W) uint8 or float in [0, 1]."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise TaskError(
            f"task {name!r}: images must have shape (n, H, W, 3), (n, H, W, 1) or (n, H, W); "
            f"got {images.shape}"
        )
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if images.shape[0] != labels.shape[0]:
        raise TaskError(f"task {name!r}: {images.shape[0]} images but {labels.shape[0]} labels")
    if images.dtype != np.uint8:
        if not np.isfinite(images).all():
            raise TaskError(f"task {name!r}: images contain NaN or inf")
        if images.min() < 0 or images.max() > 1:
            raise TaskError(f"task {name!r}: float images must lie in [0, 1]; convert to uint8 first")
        images = np.round(images * 255).astype(np.uint8)
    images = np.ascontiguousarray(images)
    if class_names is None:
        class_names = [str(c) for c in range(int(labels.max()) + 1)] if labels.size else []
    return Task(
        name=name,
        labels=labels,
        class_names=tuple(str(c) for c in class_names),
        domain=domain,
        image_source=lambda idx: images[idx],
        source=source,
        fingerprint=_digest(images.tobytes(), np.asarray(labels).tobytes()),
    )


def rgb_array(img, image_size: int) -> np.ndarray:
    """An opened PIL image as the uint8 (image_size, image_size, 3) array a task holds: one way for a
    folder's files and for the images a served model receives, so both give the same proxy."""
    from PIL import Image

    img = _eight_bit(img).convert("RGB").resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _load_rgb(path: Path, image_size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return rgb_array(img, image_size)
    except (OSError, SyntaxError, ValueError) as exc:  # damage the cheap check at load did not see
        raise TaskError(f"image {str(path)!r} cannot be decoded ({exc}); re-save or remove it and run again "
                        "(finished cells are kept)") from exc


def _eight_bit(img):
    """A 16-bit or 32-bit image (medical and scientific PNG/TIFF) scaled to 8 bits. PIL's own conversion
    clips at 255, which turns most of a 16-bit image white."""
    from PIL import Image

    if img.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(img, dtype=np.float64) / 257.0).round().astype(np.uint8))
    if img.mode in ("I", "F"):
        values = np.asarray(img, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 255:  # no fixed range to map from: the image's own
            values = (values - low) * (255.0 / (high - low) if high > low else 0.0)
        return Image.fromarray(values.round().clip(0, 255).astype(np.uint8))
    return img


def _truncated_jpeg(path: Path) -> bool:
    """A JPEG cut off in a copy or download. PIL's ``verify`` does not decode JPEG data, so it passes
    them, and a full decode of every file would cost ~2 ms each: only a file without the end-of-image
    marker near its end is decoded (some cameras append data after the marker; those decode fine)."""
    from PIL import Image

    if path.suffix.lower() not in (".jpg", ".jpeg"):
        return False
    with path.open("rb") as handle:
        handle.seek(max(path.stat().st_size - 1024, 0))
        if b"\xff\xd9" in handle.read():
            return False
    try:
        with Image.open(path) as img:
            img.load()
    except OSError:
        return True
    return False


def from_folder(root: str | Path, *, name: str | None = None, image_size: int = 224, domain: str = "unknown",
                unlabelled_ok: bool = False) -> Task:
    """A task from an ImageFolder layout: ``root/<class>/<image>``.

    With ``unlabelled_ok`` (a ranking target, whose labels are never read) a flat folder of images (no
    class sub-folders) or a single class folder (``root/all/<image>``) is accepted as an unlabelled task
    (``Task.labelled`` is False). Hidden files and folders (``.ipynb_checkpoints``, ``.DS_Store``) and a
    macOS zip's ``__MACOSX`` are not part of the task. Every file is checked once; unreadable images are
    skipped with one warning and counted in ``Task.skipped_files``. Images are resized to ``image_size``
    when read, so feature extraction can batch them.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root).expanduser()
    if not root.is_dir():
        raise TaskError(f"image folder {str(root)!r}{resolved_against(root)} does not exist or is not a directory")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not ignored_entry(p.name))
    flat = not class_dirs and any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir()
                                  if p.is_file() and not ignored_entry(p.name))
    if flat and unlabelled_ok:
        class_dirs = [root]  # images only: one placeholder class, Task.labelled is False
    elif not class_dirs:
        raise TaskError(no_class_folders_message(root, flat, unlabelled_ok))
    unlabelled = unlabelled_ok and len(class_dirs) == 1  # flat, or one class: nothing a label would tell
    paths: list[Path] = []
    labels: list[int] = []
    bad: list[str] = []
    for label, class_dir in enumerate(class_dirs):
        for path in sorted(class_dir.glob("*") if flat else class_dir.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if any(ignored_entry(part) for part in path.relative_to(class_dir).parts):
                continue
            try:
                with Image.open(path) as img:
                    img.verify()
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                bad.append(f"{path.relative_to(root)} ({type(exc).__name__})")
                continue
            except Image.DecompressionBombError:  # PIL's guard against huge images: a whole slide, a map
                bad.append(f"{path.relative_to(root)} (over {2 * Image.MAX_IMAGE_PIXELS:,} pixels: downscale it)")
                continue
            if _truncated_jpeg(path):
                bad.append(f"{path.relative_to(root)} (truncated JPEG)")
                continue
            paths.append(path)
            labels.append(label)
    if bad:
        warnings.warn(
            f"skipped {len(bad)} unreadable image(s) in {root}: " + ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""),
            stacklevel=2,
        )
    if not paths:
        where = "in it" if flat else f"under {len(class_dirs)} class folder(s)"
        raise TaskError(
            f"image folder {str(root)!r} contains no readable images (looked for {', '.join(IMAGE_SUFFIXES)} {where})"
            + ("; a flat folder of images works as a ranking target" if unlabelled_ok and not flat else "")
        )
    empty = [d.name for label, d in enumerate(class_dirs) if label not in set(labels)]
    if empty and not flat:  # as torchvision's ImageFolder: a class without images is a mistake, not a class
        raise TaskError(f"class folder(s) {', '.join(map(repr, empty))} of {str(root)!r} hold no readable images; "
                        "add images or remove the folder(s)")
    path_array = np.array([str(p) for p in paths])

    def read(idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), image_size, image_size, 3), dtype=np.uint8)
        for row, i in enumerate(idx):
            out[row] = _load_rgb(Path(path_array[i]), image_size)
        return out

    stats = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths]
    return Task(
        name=name or root.name,
        labels=np.asarray(labels),
        class_names=(UNLABELLED,) if flat else tuple(d.name for d in class_dirs),
        domain=domain,
        image_source=read,
        source=f"folder:{root.resolve()}",
        fingerprint=_digest(image_size, *stats),
        skipped_files=len(bad),
        labelled=not unlabelled,
    )


UNLABELLED = "unlabelled"  # the class of a flat folder's images
IGNORED_FOLDERS = ("__MACOSX",)  # a macOS zip's resource forks (._NAME files)


def ignored_entry(name: str) -> bool:
    """A file or folder that holds none of a task's images: hidden (``.ipynb_checkpoints``, ``.DS_Store``,
    ``._x.jpg``) or a macOS zip's ``__MACOSX``."""
    return name.startswith(".") or name in IGNORED_FOLDERS


def single_class_note(task: Task) -> str | None:
    """What a ranking target read from one class folder should say: its images are taken unlabelled."""
    if task.labelled or task.class_names == (UNLABELLED,):
        return None
    return (f"{task.name!r} has a single class folder ({task.class_names[0]!r}): its images are ranked as "
            "unlabelled images (ranking never reads labels)")


def resolved_against(path: Path) -> str:
    """Words that say where a relative path was looked for (the working directory); none for an absolute one."""
    return "" if path.is_absolute() else f" (resolved against {Path.cwd()})"


def no_class_folders_message(root: Path, flat: bool, unlabelled_ok: bool) -> str:
    if unlabelled_ok:  # a ranking target: either layout works
        return (f"image folder {str(root)!r} holds no images; give a flat folder of images (root/<image files>) or "
                "the ImageFolder layout (root/<class name>/<image files>)")
    return (f"image folder {str(root)!r} has no class sub-folders; expected the ImageFolder layout "
            "root/<class name>/<image files>" + (" (a flat folder of images works as a ranking target)" if flat else ""))


TORCHVISION_DATASETS = {
    # name -> (class, split keyword arguments for the test split or None)
    "CIFAR10": {"train": False},
    "CIFAR100": {"train": False},
    "MNIST": {"train": False},
    "FashionMNIST": {"train": False},
    "SVHN": {"split": "test"},
    "STL10": {"split": "test"},
    "DTD": {"split": "test"},
    "Flowers102": {"split": "test"},
    "OxfordIIITPet": {"split": "test"},
    "EuroSAT": {},
    "Food101": {"split": "test"},
    "GTSRB": {"split": "test"},
    "Caltech101": {},
}


def from_torchvision(dataset: str, *, root: str | Path = "~/.cache/fennec-mlflow/datasets", download: bool = True, max_samples: int | None = None, seed: int = 0) -> Task:
    """A task from a torchvision dataset by class name (e.g. ``CIFAR10``), its test split where it has one.

    Downloads into ``root`` when online. Offline, fails with a message that says where to place
    the files. ``max_samples`` keeps a stratified random subset.
    """
    import torchvision.datasets as tvd

    if dataset not in TORCHVISION_DATASETS:
        close = difflib.get_close_matches(dataset, list(TORCHVISION_DATASETS), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise TaskError(f"unknown torchvision dataset {dataset!r}.{hint} Supported: {', '.join(TORCHVISION_DATASETS)}")
    root = Path(root).expanduser()
    try:
        ds = getattr(tvd, dataset)(root=str(root), download=download, **TORCHVISION_DATASETS[dataset])
    except Exception as exc:  # torchvision raises URLError, RuntimeError, ... depending on the dataset
        raise TaskError(
            f"could not load torchvision dataset {dataset} from {root} ({type(exc).__name__}: {exc}). "
            f"If this machine is offline, download it elsewhere with "
            f"torchvision.datasets.{dataset}(root=..., download=True) and copy the folder to {root}."
        ) from exc
    targets = next((getattr(ds, a) for a in ("targets", "labels", "_labels", "_samples_labels") if getattr(ds, a, None) is not None), None)
    targets = np.asarray(targets if targets is not None else [ds[i][1] for i in range(len(ds))])
    keep = np.arange(len(ds))
    if max_samples is not None and max_samples < len(ds):
        keep = stratified_sample(targets, max_samples, seed)
    images = np.stack([np.asarray(ds[int(i)][0].convert("RGB"), dtype=np.uint8) for i in keep])
    class_names = getattr(ds, "classes", None) or [str(c) for c in range(int(targets.max()) + 1)]
    task = from_arrays(images, targets[keep], name=dataset.lower(), class_names=class_names,
                       domain="natural", source=f"torchvision:{dataset}")
    return task


# ----------------------------------------------------------------------------- sampling


def stratified_sample(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a stratified random sample of ``size`` items.

    Each class gets a share proportional to its frequency (largest-remainder rounding) and
    at least one item. ``size >= len(labels)`` returns every index.
    """
    labels = np.asarray(labels)
    n = labels.size
    classes, counts = np.unique(labels, return_counts=True)
    if size >= n:
        return np.arange(n)
    if size < classes.size:
        raise TaskError(
            f"a probe of {size} samples cannot cover {classes.size} classes; "
            f"use a probe size of at least {classes.size}"
        )
    rng = np.random.default_rng(seed)
    ideal = counts / n * size
    quota = np.maximum(np.floor(ideal).astype(np.int64), 1)
    # largest-remainder rounding; classes lifted to one item are paid for by the largest ones
    for c in np.argsort(-(ideal - np.floor(ideal)), kind="stable"):
        if quota.sum() >= size:
            break
        if quota[c] < counts[c]:
            quota[c] += 1
    while quota.sum() > size:
        quota[np.argmax(quota)] -= 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class Probe:
    """A seeded, stratified sample of a task: what an estimator scores."""

    task: Task
    indices: np.ndarray
    seed: int
    size: int

    @property
    def labels(self) -> np.ndarray:
        return self.task.labels[self.indices]

    def images(self) -> np.ndarray:
        return self.task.images(self.indices)


def sample_probe(task: Task, size: int = DEFAULT_PROBE_SIZE, seed: int = 0) -> Probe:
    """The probe set of ``task``: ``size`` images stratified by class, reproducible by ``seed``."""
    if task.num_samples < task.num_classes:
        raise TaskError(
            f"task {task.name!r} has {task.num_samples} samples for {task.num_classes} classes; "
            "every class needs at least one sample"
        )
    indices = stratified_sample(task.labels, size, seed)
    return Probe(task=task, indices=indices, seed=seed, size=size)


def split_indices(labels: np.ndarray, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train/validation/test split (the paper's 6:2:2 when a task has no split)."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) <= 0:
        raise TaskError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train = int(round(fractions[0] * idx.size))
        n_val = int(round(fractions[1] * idx.size))
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train:n_train + n_val])
        parts[2].append(idx[n_train + n_val:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]
