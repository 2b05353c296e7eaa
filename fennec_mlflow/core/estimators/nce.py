"""NCE: negative conditional entropy of the target label given the source classifier's prediction.

Each sample's source label is the argmax of its source logits; NCE is ``-H(Y | Z)`` of the
empirical joint distribution of target labels ``Y`` and source labels ``Z``: at most 0, and 0
when the source prediction determines the target label. It reads the source head's outputs
only. Parity with the reference and measured figures: docs/estimators.md.

References
----------
.. [1] Tran et al., "Transferability and Hardness of Supervised Classification Tasks",
   ICCV 2019.
"""

from __future__ import annotations

import math

import numpy as np

from fennec_mlflow.core.estimators.base import register
from fennec_mlflow.core.estimators.leep import SourceHeadEstimator, SourceOutputs, _exponentials, score_source_outputs
from fennec_mlflow.errors import InvalidInputError

__all__ = ["NCE", "nce_score"]


def _nce_from_source_labels(source_labels: np.ndarray, n_source_classes: int, labels: np.ndarray) -> float:
    n_samples = labels.size
    n_classes = int(labels.max()) + 1
    counts = np.bincount(labels * n_source_classes + source_labels, minlength=n_classes * n_source_classes)
    joint = counts.reshape(n_classes, n_source_classes) / n_samples
    source_marginal = np.broadcast_to(joint.sum(axis=0), joint.shape)
    occupied = joint > 0
    # -H(Y|Z) = sum P(y,z) log P(y|z); xlogy-style, only over occupied cells.
    score = float(np.sum(joint[occupied] * np.log(joint[occupied] / source_marginal[occupied])))
    if not math.isfinite(score):
        raise InvalidInputError(f"NCE is not finite ({score})")
    return score + 0.0  # -0.0 -> 0.0 when the source label determines the target


def _nce_from_outputs(outputs: np.ndarray, labels: np.ndarray, source_outputs: SourceOutputs) -> float:
    if source_outputs == "probabilities":
        _exponentials(outputs, source_outputs)  # validation only: the argmax is the same
    return _nce_from_source_labels(np.argmax(outputs, axis=1), outputs.shape[1], labels)


@register
class NCE(SourceHeadEstimator):
    """NCE: minus the conditional entropy of the target label given the source head's argmax.

    Parameters
    ----------
    source_outputs : {"logits", "probabilities"}, default "logits"
        As for LEEP; the argmax is the same either way, probabilities are only checked.
    """

    name = "nce"
    _from_outputs = staticmethod(_nce_from_outputs)


def nce_score(source_logits: np.ndarray, labels: np.ndarray, *, source_outputs: SourceOutputs = "logits") -> float:
    """NCE from the source head's outputs (N, K) and target labels (N,); no features needed."""
    return score_source_outputs(_nce_from_outputs, source_logits, labels, source_outputs)
