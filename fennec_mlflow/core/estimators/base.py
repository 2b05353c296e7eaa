"""The estimator protocol, the registry by name, and the input checks every estimator shares.

A transferability estimator scores how well a pre-trained model's features suit a labelled
target task, without fine-tuning: ``get_estimator("logme").score(features, labels)``, higher
is better. How to add one, and what ``score`` guarantees to ``_score``: docs/estimators.md.
"""

from __future__ import annotations

import abc
import difflib
import inspect
import math
import numbers
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from fennec_mlflow.errors import InvalidInputError, UnknownNameError

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
    """Base class of every transferability estimator, with scikit-learn's parameter protocol.

    Subclasses set ``name`` (the registry key) and the ``requires_*`` flags, take their
    hyper-parameters as keyword arguments of ``__init__`` and only store them, under the same
    names; :meth:`_validate_params` checks them when :meth:`score` runs, and :meth:`_score`
    computes the value.

    Attributes
    ----------
    name : str
        Registry key, lower case.
    requires_labels, requires_source_logits : bool
        Which inputs :meth:`score` needs, so callers know what to collect.
    reads_features : bool
        False for estimators of the source head alone (LEEP, NCE): their features are only
        checked for their row count.
    """

    name: ClassVar[str] = ""
    requires_labels: ClassVar[bool] = True
    requires_source_logits: ClassVar[bool] = False
    reads_features: ClassVar[bool] = True

    def score(
        self,
        features: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        source_logits: np.ndarray | None = None,
    ) -> float:
        """Transferability of ``features`` to the task given by ``labels``.

        Parameters
        ----------
        features : array of shape (n_samples, n_features)
            The model's features of the probe set; real and finite.
        labels : array of shape (n_samples,), optional
            Integer class ids; at least two classes and more samples than classes.
        source_logits : array of shape (n_samples, n_source_classes), optional
            The source classifier's outputs, for estimators that read them.

        Returns
        -------
        float
            The score; higher is better.

        Raises
        ------
        InvalidInputError
            A hyper-parameter or an input is not acceptable.
        """
        self._validate_params()
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
            raise InvalidInputError(f"estimator {self.name!r} needs labels: pass labels of shape ({n_samples},)")
        checked_logits = None
        if source_logits is not None:
            checked_logits = check_source_logits(source_logits, n_samples=n_samples)
        elif self.requires_source_logits:
            raise InvalidInputError(
                f"estimator {self.name!r} needs source_logits: the source classifier's outputs, "
                f"shape ({n_samples}, n_source_classes)"
            )
        return float(self._score(checked_features, checked_labels, source_logits=checked_logits))

    def _validate_params(self) -> None:
        """Raise :class:`InvalidInputError` for an unusable hyper-parameter (none by default)."""

    @abc.abstractmethod
    def _score(
        self,
        features: np.ndarray,
        labels: np.ndarray | None,
        *,
        source_logits: np.ndarray | None,
    ) -> float:
        """Score checked inputs: float64 features, labels coded ``0..C-1``, float64 logits."""

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [
            parameter.name
            for parameter in signature.parameters.values()
            if parameter.name != "self"
            and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]

    @classmethod
    def _check_param_names(cls, names: Iterable[str]) -> None:
        valid = cls._param_names()
        unknown = sorted(set(names) - set(valid))
        if unknown:
            raise InvalidInputError(
                f"{cls.__name__} has no hyper-parameter {', '.join(map(repr, unknown))}; "
                f"it takes: {', '.join(valid) or 'none'}"
            )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters by the names ``__init__`` takes, as scikit-learn's ``get_params``.

        ``deep`` is accepted for scikit-learn compatibility; no hyper-parameter here is itself
        an estimator, so it changes nothing.
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> TransferabilityEstimator:
        """Set hyper-parameters by name (checked when scoring) and return the estimator."""
        self._check_param_names(params)
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{type(self).__name__}({params})"


# ------------------------------------------------------------------------- parameter checks


def real_or_nan(value: Any) -> float:
    """``value`` as a float, NaN when it is not a real number, so that any range check fails."""
    return float(value) if isinstance(value, numbers.Real) else math.nan


def is_integer(value: Any, *, least: int) -> bool:
    """Whether ``value`` is an integer (Python or NumPy) no smaller than ``least``."""
    return isinstance(value, (int, np.integer)) and value >= least


def check_choice(label: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise :class:`InvalidInputError` unless ``value`` is one of ``choices``."""
    if not (isinstance(value, str) and value in choices):
        options = " or ".join(repr(choice) for choice in choices)
        raise InvalidInputError(f"{label} must be {options}; got {value!r}")


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
    # The same class again (a reloaded module) is harmless; another class would make results depend on import order.
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
    """A new estimator registered under ``name`` (case-insensitive), built with ``params``.

    Raises
    ------
    UnknownNameError
        Nothing is registered under ``name``; the message lists the choices.
    InvalidInputError
        The estimator takes no hyper-parameter of one of the names in ``params``.
    """
    key = _normalise_name(name) if isinstance(name, str) else repr(name)
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(
            f"unknown transferability estimator {name!r}.{hint} "
            f"Available: {', '.join(available_estimators()) or '(none registered)'}."
        )
    estimator_class = _REGISTRY[key]
    estimator_class._check_param_names(params)
    return estimator_class(**params)


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
        raise InvalidInputError(f"{what} must be a 2-D array of shape {shape_hint}; got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise InvalidInputError(f"{what} must hold real numbers; got dtype {array.dtype}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidInputError(f"{what} must be non-empty; got shape {array.shape}")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        raise InvalidInputError(_describe_non_finite(array, what))
    return array


def _row_count(features: Any) -> int:
    shape = np.shape(features)
    if len(shape) != 2 or shape[0] == 0:
        raise InvalidInputError(f"features must be a 2-D array of shape (n_samples, n_features); got shape {shape}")
    return int(shape[0])


def check_features(features: Any) -> np.ndarray:
    """Features as a finite float64 ``(n_samples, n_features)`` array, or an ``InvalidInputError``."""
    return _as_real_matrix(features, "features", "(n_samples, n_features)")


def check_source_logits(source_logits: Any, *, n_samples: int) -> np.ndarray:
    """Source-classifier outputs as a finite float64 ``(n_samples, K)`` array, or an ``InvalidInputError``."""
    logits = _as_real_matrix(source_logits, "source_logits", f"({n_samples}, n_source_classes)")
    if logits.shape[0] != n_samples:
        raise InvalidInputError(f"features has {n_samples} rows but source_logits has {logits.shape[0]}")
    return logits


def check_labels(labels: Any, *, n_samples: int) -> np.ndarray:
    """Labels re-coded to int64 ``0..C-1`` (sorted order of the ids), or an ``InvalidInputError``.

    Requires one integer class id per sample, at least two classes, and more samples than
    classes: with one sample per class there is no within-class variation to measure.
    """
    array = np.asarray(labels)
    if array.ndim != 1:
        raise InvalidInputError(f"labels must be a 1-D array of shape ({n_samples},); got shape {array.shape}")
    if array.shape[0] != n_samples:
        raise InvalidInputError(f"features has {n_samples} rows but labels has {array.shape[0]} entries")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise InvalidInputError("labels must be integer class ids; got non-integral or non-finite floats")
    elif array.dtype.kind not in "biu":
        raise InvalidInputError(
            f"labels must be integer class ids; got dtype {array.dtype} "
            "(encode them first, e.g. np.unique(labels, return_inverse=True)[1])"
        )
    classes, codes = np.unique(array, return_inverse=True)
    if classes.size < 2:
        raise InvalidInputError(
            f"labels contain a single class ({classes[0]!r}); transferability needs at least 2 classes"
        )
    if n_samples <= classes.size:
        raise InvalidInputError(
            f"need more samples than classes; got {n_samples} samples for {classes.size} classes "
            "(with one sample per class there is no within-class variation)"
        )
    return codes.astype(np.int64, copy=False)
