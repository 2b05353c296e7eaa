"""One protocol for transferability estimators, a registry by name, and shared input checks.

A transferability estimator scores how well a pre-trained model's features suit a labelled
target task, without fine-tuning. Every estimator in this package (FDA, SFDA, and later LogME,
LEEP, ...) is a small object with the same surface, in the style of scikit-learn::

    estimator = get_estimator("fda", reduction="mean")
    value = estimator.score(features, labels)                 # -> float, higher = better
    value = get_estimator("leep").score(features, labels, source_logits=logits)

``score`` checks its inputs once, at this boundary, with the same rules and messages for every
estimator, then hands clean arrays to the estimator's ``_score``:

- ``features``: 2-D ``(n_samples, n_features)``, real numbers, every value finite; passed on as
  float64 so estimators can rely on float64 linear algebra whatever the caller's dtype;
- ``labels``: 1-D integer class ids (integral floats are accepted), one per row of features,
  at least two classes and more samples than classes; passed on re-coded to ``0..C-1`` in the
  sorted order of the original ids (``np.unique`` order), so estimators may index with them;
- ``source_logits``: 2-D ``(n_samples, n_source_classes)``, finite, for estimators that read
  the source classifier's outputs (LEEP-like); passed on as float64.

Estimators declare what they need with two class attributes, ``requires_labels`` and
``requires_source_logits``, so callers (the CLI, the MLflow layer) can tell which inputs to
collect before they call ``score``. An estimator that never reads the features (LEEP, NCE:
``reads_features = False``) gets them unchecked apart from their row count.

To add an estimator: subclass :class:`TransferabilityEstimator`, set ``name``, implement
``_score``, decorate the class with :func:`register`, and import its module from
``fennec_mlflow/estimators/__init__.py``.
"""

from __future__ import annotations

import abc
import difflib
import inspect
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "TransferabilityEstimator",
    "register",
    "get_estimator",
    "available_estimators",
    "check_features",
    "check_labels",
    "check_source_logits",
]


class TransferabilityEstimator(abc.ABC):
    """Base class of every transferability estimator.

    Subclasses set ``name`` (the registry key), the two ``requires_*`` flags, take their
    hyper-parameters as keyword arguments of ``__init__`` stored under the same attribute
    names (so :meth:`get_params` can report them, e.g. as MLflow params), and implement
    :meth:`_score`.
    """

    name: ClassVar[str] = ""
    requires_labels: ClassVar[bool] = True
    requires_source_logits: ClassVar[bool] = False
    # False for estimators that only read the source head's outputs (LEEP, NCE): their features
    # are not scanned, only their row count checked, since nothing of them is used.
    reads_features: ClassVar[bool] = True

    def score(
        self,
        features: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        source_logits: np.ndarray | None = None,
    ) -> float:
        """Transferability of ``features`` to the task given by ``labels``; higher is better."""
        if self.reads_features:
            checked_features = check_features(features)
            n_samples = checked_features.shape[0]
        else:
            checked_features = features
            n_samples = _row_count(features)
        checked_labels = None
        if labels is not None:
            checked_labels = check_labels(labels, n_samples=n_samples)
        elif self.requires_labels:
            raise ValueError(f"estimator {self.name!r} needs labels: pass labels of shape ({n_samples},)")
        checked_logits = None
        if source_logits is not None:
            checked_logits = check_source_logits(source_logits, n_samples=n_samples)
        elif self.requires_source_logits:
            raise ValueError(
                f"estimator {self.name!r} needs source_logits: the source classifier's outputs, "
                f"shape ({n_samples}, n_source_classes)"
            )
        return float(self._score(checked_features, checked_labels, source_logits=checked_logits))

    @abc.abstractmethod
    def _score(
        self,
        features: np.ndarray,
        labels: np.ndarray | None,
        *,
        source_logits: np.ndarray | None,
    ) -> float:
        """Score already-checked inputs (see the module docstring for what is guaranteed)."""

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters, by the names ``__init__`` takes (sklearn's convention)."""
        signature = inspect.signature(type(self).__init__)
        names = [
            parameter.name
            for parameter in signature.parameters.values()
            if parameter.name != "self" and parameter.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{type(self).__name__}({params})"


# ----------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[TransferabilityEstimator]] = {}


def _normalise_name(name: str) -> str:
    return name.strip().lower()


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(estimator_class: type[TransferabilityEstimator]) -> type[TransferabilityEstimator]:
    """Class decorator: make ``estimator_class`` available to :func:`get_estimator` by its ``name``."""
    if not (isinstance(estimator_class, type) and issubclass(estimator_class, TransferabilityEstimator)):
        raise TypeError(f"register expects a TransferabilityEstimator subclass, got {estimator_class!r}")
    key = _normalise_name(estimator_class.name or "")
    if not key:
        raise ValueError(f"{estimator_class.__name__} must set a non-empty class attribute `name`")
    registered = _REGISTRY.get(key)
    # Re-registering the same class (module reloaded) is harmless; two classes under one
    # name would make results depend on import order, so that is refused.
    if registered is not None and _qualified_name(registered) != _qualified_name(estimator_class):
        raise ValueError(
            f"estimator name {key!r} is already registered by {_qualified_name(registered)}"
        )
    _REGISTRY[key] = estimator_class
    return estimator_class


def available_estimators() -> list[str]:
    """Names accepted by :func:`get_estimator`, sorted."""
    return sorted(_REGISTRY)


def get_estimator(name: str, **params: Any) -> TransferabilityEstimator:
    """A new estimator instance registered under ``name`` (case-insensitive), built with ``params``."""
    key = _normalise_name(name)
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(
            f"unknown transferability estimator {name!r}.{hint} "
            f"Available: {', '.join(available_estimators()) or '(none registered)'}."
        )
    return _REGISTRY[key](**params)


# ---------------------------------------------------------------------------- input checks


def _describe_non_finite(matrix: np.ndarray, what: str) -> str:
    bad = ~np.isfinite(matrix)
    bad_rows = np.flatnonzero(bad.any(axis=1))
    bad_cols = np.flatnonzero(bad.any(axis=0))
    n_nan = int(np.isnan(matrix).sum())
    n_inf = int(bad.sum()) - n_nan
    first_rows = ", ".join(str(r) for r in bad_rows[:5]) + (", ..." if bad_rows.size > 5 else "")
    return (
        f"{what} contain non-finite values ({n_nan} NaN, {n_inf} inf) in {bad_rows.size} of "
        f"{matrix.shape[0]} rows and {bad_cols.size} of {matrix.shape[1]} columns "
        f"(first bad rows: {first_rows}); drop or impute those rows before scoring"
    )


def _as_real_matrix(values: Any, what: str, shape_hint: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array of shape {shape_hint}; got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what} must hold real numbers; got dtype {array.dtype}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{what} must be non-empty; got shape {array.shape}")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(_describe_non_finite(array, what))
    return array


def _row_count(features: Any) -> int:
    shape = np.shape(features)
    if len(shape) != 2 or shape[0] == 0:
        raise ValueError(f"features must be a 2-D array of shape (n_samples, n_features); got shape {shape}")
    return int(shape[0])


def check_features(features: Any) -> np.ndarray:
    """Features as a finite float64 ``(n_samples, n_features)`` array, or a clear ``ValueError``."""
    return _as_real_matrix(features, "features", "(n_samples, n_features)")


def check_source_logits(source_logits: Any, *, n_samples: int) -> np.ndarray:
    """Source-classifier outputs as a finite float64 ``(n_samples, K)`` array, or a ``ValueError``."""
    logits = _as_real_matrix(source_logits, "source_logits", f"({n_samples}, n_source_classes)")
    if logits.shape[0] != n_samples:
        raise ValueError(f"features has {n_samples} rows but source_logits has {logits.shape[0]}")
    return logits


def check_labels(labels: Any, *, n_samples: int) -> np.ndarray:
    """Labels re-coded to int64 ``0..C-1`` (sorted order of the ids), or a clear ``ValueError``.

    Requires one integer class id per sample, at least two classes, and more samples than
    classes: with one sample per class there is no within-class variation to measure.
    """
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of shape ({n_samples},); got shape {array.shape}")
    if array.shape[0] != n_samples:
        raise ValueError(f"features has {n_samples} rows but labels has {array.shape[0]} entries")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise ValueError("labels must be integer class ids; got non-integral or non-finite floats")
    elif array.dtype.kind not in "biu":
        raise ValueError(
            f"labels must be integer class ids; got dtype {array.dtype} "
            "(encode them first, e.g. np.unique(labels, return_inverse=True)[1])"
        )
    classes, codes = np.unique(array, return_inverse=True)
    if classes.size < 2:
        raise ValueError(
            f"labels contain a single class ({classes[0]!r}); transferability needs at least 2 classes"
        )
    if n_samples <= classes.size:
        raise ValueError(
            f"need more samples than classes; got {n_samples} samples for {classes.size} classes "
            "(with one sample per class there is no within-class variation)"
        )
    return codes.astype(np.int64, copy=False)
