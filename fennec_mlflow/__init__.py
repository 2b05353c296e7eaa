"""fennec-mlflow: pre-trained model recommendation for downstream fine-tuning, as an MLflow plugin.

The public API, loaded on first use so that ``import fennec_mlflow`` stays cheap and the pure
``fennec_mlflow.core`` layer never pulls in torch or MLflow:

- :class:`Fennec`, the recommender (``fennec_mlflow.core.recommender``);
- :func:`get_estimator` / :func:`available_estimators`, the transferability estimators;
- :func:`load_matrix`, the performance matrix rebuilt from an MLflow store;
- :func:`build` and :func:`rank_task`, fit + register the recommender, rank a target task;
- :func:`log_model` / :func:`save_model` / :func:`load_model`, the pyfunc flavour;
- :class:`FennecError`, the root of every error a user can fix.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Fennec": "fennec_mlflow.core.recommender",
    "get_estimator": "fennec_mlflow.core.estimators",
    "available_estimators": "fennec_mlflow.core.estimators",
    "load_matrix": "fennec_mlflow.store.tracking",
    "build": "fennec_mlflow.serving.build",
    "rank_task": "fennec_mlflow.serving.rank",
    "log_model": "fennec_mlflow.serving.flavor",
    "save_model": "fennec_mlflow.serving.flavor",
    "load_model": "fennec_mlflow.serving.flavor",
    "FennecError": "fennec_mlflow.errors",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fennec_mlflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
