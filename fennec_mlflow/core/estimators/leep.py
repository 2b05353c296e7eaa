"""LEEP (Nguyen et al., ICML 2020): log expected empirical prediction of the source classifier.

What is computed
----------------
The source model's classifier gives each probe sample a distribution ``theta_i`` over its K
source classes (``source_logits`` are raw logits; we apply a softmax, see below). With
target labels ``y_i`` in ``0..C-1``:

1. Empirical joint of target and source label: ``P(y, z) = 1/N sum_{i: y_i = y} theta_i[z]``.
2. Conditional ``P(y | z) = P(y, z) / P(z)``, ``P(z) = sum_y P(y, z)``.
3. The "expected empirical predictor" ``p(y | x_i) = sum_z theta_i[z] P(y | z)``.
4. LEEP = ``1/N sum_i log p(y_i | x_i)`` (<= 0, higher is better).

The features are not used (LEEP reads the source head only): ``requires_source_logits`` is
True, and ``score(features, labels, source_logits=...)`` takes the features only for the
common input checks. The softmax's normalisation is folded into the small (C, N) and (N,)
factors instead of dividing the whole N x K array, and one gather replaces the reference's
per-sample loop.

Inputs: raw logits, or probabilities
------------------------------------
``source_logits`` are the source classifier's raw outputs (pre-softmax), as the feature
extractor stores them; ``theta = softmax(source_logits)``. Callers that hold probabilities
already pass ``source_outputs="probabilities"`` (rows must be non-negative and sum to 1
within 1e-3); they are then used as given, like the reference does.

Parity with the reference (thuml/LogME ``LEEP.py``, ``LEEP``; identical to
tllib ``ranking/leep.py``, ``log_expected_empirical_prediction``)
--------------------------------------------------------------------------------------
The reference takes probabilities; the goldens feed it ``scipy.special.softmax`` of our
logits. Measured agreement: bit-identical on the golden probes, 2e-16 on the benchmark
probes (the test asserts 1e-9 relative).

The corrected definition. The LogME README says the LEEP/NCE numbers in its paper came from
"historical code with bugs". The bug is visible in the history of ``LEEP.py``: its first
version (commit f56eab0) divided the joint by its row sums ``P(y)``, i.e. used ``P(z | y)``
where ``P(y | z) = P(y, z) / P(z)`` is meant; commit 1dbc4d1 corrected it, as in the LEEP
paper. (The issue text speaks of a swapped argument order; what the repository shows is
this swapped normalisation.) We implement the corrected ``P(y | z)``: the current file, and
the LEEP paper's definition.

Deliberate difference: a source class that receives no probability mass at all
(``P(z) = 0``: possible only when softmax underflows to exact zeros, or with given
probabilities) makes the reference divide 0 by 0 and return NaN; its ``P(y | z)`` never
matters (``theta_i[z] = 0`` for every i), so we set it to 0.

Robustness: LEEP ignores the features, so D, constant features and float32 features do not
change it; constant logits give the uniform ``theta`` and LEEP = ``1/N sum_i log P(y_i)``
(the log-prior, a finite number). ``p(y_i | x_i) >= max_z theta_i[z]^2 / N > 0``, so the log
is always finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Literal

import numpy as np

from fennec_mlflow.core.estimators.base import TransferabilityEstimator, check_labels, check_source_logits, register

__all__ = ["LEEP", "leep_score", "source_probabilities"]

SourceOutputs = Literal["logits", "probabilities"]
# How far rows of given probabilities may be from summing to one (float32 softmax outputs
# over 1000 classes are off by ~1e-6).
PROBABILITY_SUM_TOLERANCE = 1e-3
# Logits up to this size are exponentiated without softmax's max-shift (exp(300) ~ 1e130,
# far from overflow even summed over millions of classes); row sums below SAFE_SUM (all
# logits of a row very negative) fall back to the shifted form.
SAFE_LOGIT = 300.0
SAFE_SUM = 1e-200


def _check_source_outputs(source_outputs: str) -> None:
    if source_outputs not in ("logits", "probabilities"):
        raise ValueError(f"source_outputs must be 'logits' or 'probabilities'; got {source_outputs!r}")


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
        raise ValueError("source probabilities must be non-negative (pass source_outputs='logits' for raw logits)")
    sums = source_outputs_array.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise ValueError(
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
        raise ValueError(f"LEEP is not finite ({score}); check the source outputs")
    return score


class SourceHeadEstimator(TransferabilityEstimator):
    """An estimator of the source head's outputs alone (LEEP, NCE): labels and source logits in,
    features never read. Subclasses set ``name`` and ``_from_outputs(outputs, codes, source_outputs)``."""

    requires_labels = True
    requires_source_logits = True
    reads_features = False

    def __init__(self, source_outputs: SourceOutputs = "logits"):
        _check_source_outputs(source_outputs)
        self.source_outputs = source_outputs

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
    """LEEP: mean log-likelihood of the target labels under the source head's empirical predictor."""

    name = "leep"
    _from_outputs = staticmethod(_leep_from_outputs)


def leep_score(source_logits: np.ndarray, labels: np.ndarray, *, source_outputs: SourceOutputs = "logits") -> float:
    """LEEP from the source head's outputs (N, K) and target labels (N,); no features needed."""
    return score_source_outputs(_leep_from_outputs, source_logits, labels, source_outputs)
