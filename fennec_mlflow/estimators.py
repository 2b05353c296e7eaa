"""The transferability estimators, public namespace: ``from fennec_mlflow.estimators import LogME``.

Every registered estimator class, the registry (:func:`get_estimator`,
:func:`available_estimators`) and the combinations of ETran's and NCTI's parts. The
implementations live in :mod:`fennec_mlflow.core.estimators`; docs/estimators.md describes
each estimator.
"""
from fennec_mlflow.core.estimators import (
    FDA,
    GBC,
    LEEP,
    NCE,
    NLEEP,
    PARC,
    PED,
    SFDA,
    ETranEnergy,
    ETranLDA,
    HScore,
    LogME,
    NCTIComponents,
    NCTINcc,
    NCTISeli,
    NCTIVc,
    ShrinkageHScore,
    TransferabilityEstimator,
    TransRate,
    available_estimators,
    etran_combine,
    get_estimator,
    ncti_combine,
    ncti_components,
)

__all__ = [
    "TransferabilityEstimator", "available_estimators", "get_estimator",
    "ETranEnergy", "ETranLDA", "FDA", "GBC", "HScore", "LEEP", "LogME", "NCE", "NCTINcc", "NCTISeli",
    "NCTIVc", "NLEEP", "PARC", "PED", "SFDA", "ShrinkageHScore", "TransRate",
    "etran_combine", "NCTIComponents", "ncti_combine", "ncti_components",
]
