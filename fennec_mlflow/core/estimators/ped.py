"""PED, potential energy decline: a transferability score of the features after a simulated
first phase of fine-tuning.

Each class is a charged ball (centre: the class mean; radius: ``nsigma`` times the class's
standard deviation) and overlapping balls repel each other; the features move with their
classes for a few steps, then an ordinary estimator (SFDA, as the paper) scores them. The
computation, parity with the reference and measured figures: docs/estimators.md.

References
----------
.. [1] Li et al., "Exploring Model Transferability through the Lens of Potential Energy",
   ICCV 2023.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.spatial.distance

from fennec_mlflow.core.estimators.base import (
    TransferabilityEstimator,
    check_features,
    check_labels,
    get_estimator,
    is_integer,
    real_or_nan,
    register,
)
from fennec_mlflow.core.estimators.fda import auto_max_dim, check_max_dim
from fennec_mlflow.core.estimators.gbc import principal_component_scores
from fennec_mlflow.errors import InvalidInputError

__all__ = ["PED", "ped_motion", "ped_score"]

DEFAULT_TIME_STEP = 0.1
DEFAULT_NSIGMA = 0.6
DEFAULT_EXIT_RATIO = 0.5
DEFAULT_CONSTANT = 1.0
DEFAULT_EPS = 1e-3
DEFAULT_MAX_STEPS = 6


def _membership(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_classes = int(codes.max()) + 1
    membership = np.zeros((n_classes, codes.size))
    membership[codes, np.arange(codes.size)] = 1.0
    return membership, np.bincount(codes, minlength=n_classes)


def _class_displacements(scaled: np.ndarray, codes: np.ndarray, membership: np.ndarray, counts: np.ndarray,
                         time_step: float, nsigma: float, constant: float) -> np.ndarray:
    """One step's displacement of every class ``(C, D)``, in rescaled units."""
    means = membership @ scaled / counts[:, None]
    residuals = scaled - means[codes]
    radii = np.sqrt(np.bincount(codes, weights=np.einsum("ij,ij->i", residuals, residuals)) / counts)
    distances = scipy.spatial.distance.squareform(scipy.spatial.distance.pdist(means))
    overlap = np.maximum(abs(nsigma) * (radii[:, None] + radii[None, :]) - distances, 0.0)
    np.fill_diagonal(overlap, 0.0)
    magnitude = np.minimum(0.5 * time_step**2 * constant * overlap, overlap)
    # Pairs with coincident means have no direction to push along: no force.
    weights = np.divide(magnitude, distances, out=np.zeros_like(magnitude), where=distances > 0.0)
    # sum_b w_ab (mu_a - mu_b) as a matrix product; centring the means first avoids cancellation.
    centred = means - means.mean(axis=0)
    return weights.sum(axis=1)[:, None] * centred - weights @ centred


def ped_motion(features: np.ndarray, labels: np.ndarray, *, general_features: np.ndarray | None = None,
               time_step: float = DEFAULT_TIME_STEP, nsigma: float = DEFAULT_NSIGMA,
               exit_ratio: float = DEFAULT_EXIT_RATIO, constant: float = DEFAULT_CONSTANT,
               eps: float = DEFAULT_EPS, max_steps: int = DEFAULT_MAX_STEPS) -> tuple[np.ndarray, int]:
    """Features after PED's potential-energy motion (float64, same shape) and the steps taken.

    Parameters as :func:`ped_score`.
    """
    _check_params(time_step, nsigma, exit_ratio, constant, eps, max_steps)
    checked = check_features(features)
    codes = check_labels(labels, n_samples=checked.shape[0])
    return _motion_from_checked(checked, codes, _rescaling(checked, general_features, eps),
                                time_step, nsigma, exit_ratio, constant, max_steps)


def _rescaling(features: np.ndarray, general_features: np.ndarray | None, eps: float) -> tuple[np.ndarray, np.ndarray]:
    reference = features
    if general_features is not None:
        reference = check_features(general_features)
        if reference.shape[1] != features.shape[1]:
            raise InvalidInputError(
                f"general_features has {reference.shape[1]} columns but features has {features.shape[1]}"
            )
    return reference.mean(axis=0), np.maximum(reference.std(axis=0), eps)


def _motion_from_checked(features: np.ndarray, codes: np.ndarray, rescaling: tuple[np.ndarray, np.ndarray],
                         time_step: float, nsigma: float, exit_ratio: float, constant: float,
                         max_steps: int) -> tuple[np.ndarray, int]:
    mean, scale = rescaling
    membership, counts = _membership(codes)
    scaled = (features - mean) / scale
    first_change = None
    steps = 0
    while steps < max_steps:
        displacement = _class_displacements(scaled, codes, membership, counts, time_step, nsigma, constant)
        change = float(np.abs(displacement).sum())
        if first_change is None:
            first_change = change
        if first_change == 0.0 or change / first_change <= exit_ratio:
            break
        scaled = scaled + displacement[codes]
        steps += 1
    return scaled * scale + mean, steps


def _check_params(time_step: float, nsigma: float, exit_ratio: float, constant: float, eps: float,
                  max_steps: int) -> None:
    for label, value in (("time_step", time_step), ("nsigma", nsigma), ("exit_ratio", exit_ratio),
                         ("constant", constant), ("eps", eps)):
        if not (np.isfinite(real_or_nan(value)) and value >= 0):
            raise InvalidInputError(f"{label} must be a finite non-negative number; got {value!r}")
    if eps == 0:
        raise InvalidInputError("eps must be positive: it bounds the rescaling's standard deviations away from 0")
    if not is_integer(max_steps, least=1):
        raise InvalidInputError(f"max_steps must be a positive integer; got {max_steps!r}")


def _final_estimator(score_with: str) -> TransferabilityEstimator:
    estimator = get_estimator(score_with)
    if estimator.requires_source_logits or not estimator.requires_labels:
        raise InvalidInputError(
            f"PED scores its moved features with a labelled, feature-only estimator; {score_with!r} "
            f"{'needs source_logits' if estimator.requires_source_logits else 'does not use labels'}"
        )
    if "max_dim" in estimator.get_params():
        # PED does the reduction itself (below), once, with the fast exact PCA.
        estimator = get_estimator(score_with, **{**estimator.get_params(), "max_dim": None})
    return estimator


def _score_moved(moved: np.ndarray, codes: np.ndarray, score_with: str, max_dim: int | str | None) -> float:
    if max_dim is not None:
        limit = auto_max_dim(moved.shape[0], int(codes.max()) + 1) if max_dim == "auto" else int(max_dim)
        if moved.shape[1] > limit:
            moved = principal_component_scores(moved, limit)
    return _final_estimator(score_with).score(moved, codes)


def ped_score(features: np.ndarray, labels: np.ndarray, *, general_features: np.ndarray | None = None,
              score_with: str = "sfda", max_dim: int | str | None = None, time_step: float = DEFAULT_TIME_STEP,
              nsigma: float = DEFAULT_NSIGMA, exit_ratio: float = DEFAULT_EXIT_RATIO,
              constant: float = DEFAULT_CONSTANT, eps: float = DEFAULT_EPS,
              max_steps: int = DEFAULT_MAX_STEPS) -> float:
    """PED score: ``score_with`` of the features after the potential-energy motion.

    Parameters
    ----------
    features : array of shape (n_samples, n_features)
    labels : array of shape (n_samples,)
    general_features : array of shape (n_general, n_features), optional
        The model's features of a general data set (the paper: ImageNet val), whose mean and
        standard deviation rescale the motion; None uses the probe's own.
    score_with, time_step, nsigma, exit_ratio, constant, eps, max_steps
        As for :class:`PED`.
    max_dim : int, "auto" or None, default None
        As for :class:`PED`; None (the default here) scores the raw moved features, as the
        reference does.

    Returns
    -------
    float
    """
    check_max_dim(max_dim)
    moved, _ = ped_motion(features, labels, general_features=general_features, time_step=time_step,
                          nsigma=nsigma, exit_ratio=exit_ratio, constant=constant, eps=eps, max_steps=max_steps)
    return _score_moved(moved, check_labels(labels, n_samples=moved.shape[0]), score_with, max_dim)


@register
class PED(TransferabilityEstimator):
    """PED: ``score_with`` (SFDA by default) of the features after the potential-energy motion.

    The motion is rescaled with the probe's own mean and standard deviation (the paper uses
    a general data set's: :func:`ped_score`).

    Parameters
    ----------
    score_with : str, default "sfda"
        Name of the registered estimator that scores the moved features; it must need labels
        and no source logits.
    max_dim : int, "auto" or None, default "auto"
        Principal components of the moved features kept before scoring, as for the registered
        FDA; None scores the raw moved features.
    time_step : float, default 0.1
    nsigma : float, default 0.6
        Ball radius, in class standard deviations.
    exit_ratio : float, default 0.5
        The motion stops once a step moves less than this share of the first step.
    constant : float, default 1.0
        Force constant.
    eps : float, default 1e-3
        Lower bound of the rescaling's standard deviations.
    max_steps : int, default 6
    """

    name = "ped"
    requires_labels = True
    requires_source_logits = False

    def __init__(self, score_with: str = "sfda", max_dim: int | str | None = "auto",
                 time_step: float = DEFAULT_TIME_STEP, nsigma: float = DEFAULT_NSIGMA,
                 exit_ratio: float = DEFAULT_EXIT_RATIO, constant: float = DEFAULT_CONSTANT,
                 eps: float = DEFAULT_EPS, max_steps: int = DEFAULT_MAX_STEPS):
        self.score_with = score_with
        self.max_dim = max_dim
        self.time_step = time_step
        self.nsigma = nsigma
        self.exit_ratio = exit_ratio
        self.constant = constant
        self.eps = eps
        self.max_steps = max_steps

    def _validate_params(self) -> None:
        _check_params(self.time_step, self.nsigma, self.exit_ratio, self.constant, self.eps, self.max_steps)
        if not isinstance(self.score_with, str) or self.score_with.strip().lower() == self.name:
            raise InvalidInputError(f"score_with must name another registered estimator; got {self.score_with!r}")
        check_max_dim(self.max_dim)
        _final_estimator(self.score_with)  # unknown names and unusable estimators fail here

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: Any) -> float:
        moved, _ = _motion_from_checked(features, labels, _rescaling(features, None, self.eps), self.time_step,
                                        self.nsigma, self.exit_ratio, self.constant, self.max_steps)
        return _score_moved(moved, labels, self.score_with, self.max_dim)
