"""LEEP: log expected empirical prediction of the target labels from the source classifier.

The source classifier's softmax ``theta_i`` over its K classes and the target labels give an
empirical conditional ``P(y | z)``; LEEP is the mean log-likelihood of the target labels under
the predictor ``p(y | x_i) = sum_z theta_i[z] P(y | z)``. It reads the source head's outputs
only, never the features. The computation, parity with the reference (and which of its
definitions we follow) and measured figures: docs/estimators.md.

References
----------
.. [1] Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned
   Representations", ICML 2020.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Literal

import numpy as np

from fennec_mlflow.core.estimators.base import (
    TransferabilityEstimator,
    check_choice,
    check_labels,
    check_source_logits,
    register,
)
from fennec_mlflow.errors import InvalidInputError

__all__ = ["LEEP", "leep_score", "source_probabilities"]

SourceOutputs = Literal["logits", "probabilities"]
# How far given probability rows may be from summing to one (float32 softmax over 1000 classes: ~1e-6).
PROBABILITY_SUM_TOLERANCE = 1e-3
# Logits up to SAFE_LOGIT cannot overflow exp (1e130), so the max-shift is skipped unless a row sum underflows.
SAFE_LOGIT = 300.0
SAFE_SUM = 1e-200


def _check_source_outputs(source_outputs: str) -> None:
    check_choice("source_outputs", source_outputs, ("logits", "probabilities"))


def _exponentials(source_outputs_array: np.ndarray, source_outputs: SourceOutputs) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised source distributions ``e`` (N, K) and their row sums ``s``: ``theta = e / s``.

    Keeping the normalisation aside lets LEEP fold ``1 / s`` into its small (C, N) and (N,)
    factors instead of dividing the whole N x K array.
    """
    if source_outputs == "logits":
        if source_outputs_array.max() <= SAFE_LOGIT:
            # No overflow possible: skip softmax's max-shift, one pass over N x K fewer.
            unnormalised = np.exp(source_outputs_array)
            sums = unnormalised.sum(axis=1)
            if sums.min() >= SAFE_SUM:
                return unnormalised, sums
        shifted = source_outputs_array - source_outputs_array.max(axis=1, keepdims=True)
        np.exp(shifted, out=shifted)
        return shifted, shifted.sum(axis=1)
    if (source_outputs_array < 0).any():
        raise InvalidInputError(
            "source probabilities must be non-negative (pass source_outputs='logits' for raw logits)"
        )
    sums = source_outputs_array.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise InvalidInputError(
            f"source probabilities must sum to 1 per row; row {worst} sums to {sums[worst]:.6g} "
            "(pass source_outputs='logits' for raw logits)"
        )
    return source_outputs_array, np.ones(source_outputs_array.shape[0])


def source_probabilities(source_logits: np.ndarray, source_outputs: SourceOutputs = "logits") -> np.ndarray:
    """The source classifier's class distribution per sample, (N, K) float64.

    ``"logits"``: row-wise softmax of raw logits. ``"probabilities"``: checked and returned.
    """
    _check_source_outputs(source_outputs)
    unnormalised, sums = _exponentials(np.asarray(source_logits, dtype=np.float64), source_outputs)
    return unnormalised / sums[:, None]


def _leep_from_outputs(source_outputs_array: np.ndarray, labels: np.ndarray, source_outputs: SourceOutputs) -> float:
    unnormalised, sums = _exponentials(source_outputs_array, source_outputs)
    n_samples = labels.size
    n_classes = int(labels.max()) + 1
    # P(y, z) = 1/N sum_{i: y_i = y} e_i / s_i: the normalisation rides on the (C, N) membership.
    weighted_membership = np.zeros((n_classes, n_samples))
    weighted_membership[labels, np.arange(n_samples)] = 1.0 / (n_samples * sums)
    joint = weighted_membership @ unnormalised  # (C, K)
    source_marginal = joint.sum(axis=0)  # P(z)
    conditional = np.divide(joint, source_marginal, out=np.zeros_like(joint), where=source_marginal > 0)
    # p(y_i | x_i) = sum_z theta_i[z] P(y_i | z): one row of P(y | z) per sample.
    expected = np.einsum("nk,nk->n", unnormalised, conditional[labels]) / sums
    score = float(np.mean(np.log(expected)))
    if not math.isfinite(score):
        raise InvalidInputError(f"LEEP is not finite ({score}); check the source outputs")
    return score


class SourceHeadEstimator(TransferabilityEstimator):
    """An estimator of the source head's outputs alone (LEEP, NCE); the features are never read.

    Subclasses set ``name`` and ``_from_outputs(outputs, codes, source_outputs)``.

    Parameters
    ----------
    source_outputs : {"logits", "probabilities"}, default "logits"
        What ``source_logits`` hold: raw logits (softmaxed here) or probabilities (rows
        non-negative, summing to 1 within 1e-3, used as given).
    """

    requires_labels = True
    requires_source_logits = True
    reads_features = False

    def __init__(self, source_outputs: SourceOutputs = "logits"):
        self.source_outputs = source_outputs

    def _validate_params(self) -> None:
        _check_source_outputs(self.source_outputs)

    # (source outputs (N, K) float64, label codes (N,), source_outputs) -> score
    _from_outputs: ClassVar[Callable[[np.ndarray, np.ndarray, SourceOutputs], float]]

    def _score(self, features: np.ndarray, labels: np.ndarray | None, *, source_logits: np.ndarray | None) -> float:
        return self._from_outputs(source_logits, labels, self.source_outputs)


def score_source_outputs(from_outputs, source_logits, labels, source_outputs: SourceOutputs) -> float:
    """Check the inputs of a source-head estimator called as a function, then score them."""
    _check_source_outputs(source_outputs)
    logits = check_source_logits(source_logits, n_samples=np.shape(source_logits)[0])
    return from_outputs(logits, check_labels(labels, n_samples=logits.shape[0]), source_outputs)


@register
class LEEP(SourceHeadEstimator):
    """LEEP: mean log-likelihood of the target labels under the source head's empirical predictor.

    Parameters
    ----------
    source_outputs : {"logits", "probabilities"}, default "logits"
        As for :class:`SourceHeadEstimator`.
    """

    name = "leep"
    _from_outputs = staticmethod(_leep_from_outputs)


def leep_score(source_logits: np.ndarray, labels: np.ndarray, *, source_outputs: SourceOutputs = "logits") -> float:
    """LEEP from the source head's outputs (N, K) and target labels (N,); no features needed."""
    return score_source_outputs(_leep_from_outputs, source_logits, labels, source_outputs)
