"""Transferability estimators: one protocol, a registry by name, one module per metric.

    from fennec_mlflow.core.estimators import get_estimator, available_estimators
    get_estimator("fda").score(features, labels)

Importing this package registers every estimator: each module of this package is imported
(one file per metric, each decorating its class with ``register``).
"""
import importlib as _importlib
import pkgutil as _pkgutil

from fennec_mlflow.core.estimators.base import (
    TransferabilityEstimator,
    available_estimators,
    check_features,
    check_labels,
    check_source_logits,
    get_estimator,
    register,
)
from fennec_mlflow.core.estimators.fda import (
    FDA,
    SFDA,
    FisherProjection,
    fda_probabilities,
    fda_projection,
    fda_score,
    sfda_score,
    sfda_shrinkage,
)

__all__ = [
    "TransferabilityEstimator",
    "available_estimators",
    "check_features",
    "check_labels",
    "check_source_logits",
    "get_estimator",
    "register",
    "FDA",
    "SFDA",
    "FisherProjection",
    "fda_probabilities",
    "fda_projection",
    "fda_score",
    "sfda_score",
    "sfda_shrinkage",
]


for _module in _pkgutil.iter_modules(__path__):
    if _module.name != "base":
        _importlib.import_module(f"{__name__}.{_module.name}")
