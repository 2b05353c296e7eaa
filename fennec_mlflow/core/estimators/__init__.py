"""Transferability estimators: one protocol, a registry by name, one module per metric.

    from fennec_mlflow.core.estimators import LogME, get_estimator
    LogME().score(features, labels) == get_estimator("logme").score(features, labels)

Importing this package registers every estimator. Users import from
:mod:`fennec_mlflow.estimators`; each estimator is described in docs/estimators.md.
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
from fennec_mlflow.core.estimators.etran import ETranEnergy, ETranLDA, etran_combine
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
from fennec_mlflow.core.estimators.gbc import GBC
from fennec_mlflow.core.estimators.hscore import HScore, ShrinkageHScore
from fennec_mlflow.core.estimators.leep import LEEP
from fennec_mlflow.core.estimators.logme import LogME
from fennec_mlflow.core.estimators.nce import NCE
from fennec_mlflow.core.estimators.ncti import NCTIComponents, NCTINcc, NCTISeli, NCTIVc, ncti_combine, ncti_components
from fennec_mlflow.core.estimators.nleep import NLEEP
from fennec_mlflow.core.estimators.parc import PARC
from fennec_mlflow.core.estimators.ped import PED
from fennec_mlflow.core.estimators.transrate import TransRate

__all__ = [
    # protocol and registry
    "TransferabilityEstimator",
    "available_estimators",
    "get_estimator",
    "register",
    "check_features",
    "check_labels",
    "check_source_logits",
    # registered estimators
    "ETranEnergy",
    "ETranLDA",
    "FDA",
    "GBC",
    "HScore",
    "LEEP",
    "LogME",
    "NCE",
    "NCTINcc",
    "NCTISeli",
    "NCTIVc",
    "NLEEP",
    "PARC",
    "PED",
    "SFDA",
    "ShrinkageHScore",
    "TransRate",
    # ETran and NCTI rank the candidate models of a task from their registered parts
    "etran_combine",
    "NCTIComponents",
    "ncti_combine",
    "ncti_components",
    # FDA's building blocks
    "FisherProjection",
    "fda_probabilities",
    "fda_projection",
    "fda_score",
    "sfda_score",
    "sfda_shrinkage",
]

# A module added without an import above still registers; the tests then ask for its export.
for _module in _pkgutil.iter_modules(__path__):
    if _module.name != "base":
        _importlib.import_module(f"{__name__}.{_module.name}")
