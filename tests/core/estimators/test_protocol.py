"""The estimator protocol for every registered estimator: scikit-learn's parameters, validation
when scoring, the library's error types, and the public namespace ``fennec_mlflow.estimators``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
from sklearn.base import clone

import fennec_mlflow.core.estimators as core_estimators
import fennec_mlflow.estimators as public_estimators
from fennec_mlflow.core.estimators import TransferabilityEstimator, available_estimators, get_estimator
from fennec_mlflow.errors import FennecError, InvalidInputError, UnknownNameError

# name -> (valid hyper-parameters other than the defaults, an invalid one)
PARAMS = {
    "etran_energy": ({"percent": 10.0, "tail": "top"}, {"percent": 0}),
    "etran_lda": ({}, None),
    "fda": ({"reduction": "sum", "max_dim": None}, {"reduction": "median"}),
    "gbc": ({"gaussian_type": "diagonal", "n_components": 8}, {"variance_floor": "big"}),
    "hscore": ({"rcond": 1e-10}, {"rcond": "tiny"}),
    "hscore_shrinkage": ({"rcond": 1e-10}, {"rcond": 1.0}),
    "leep": ({"source_outputs": "probabilities"}, {"source_outputs": "softmax"}),
    "logme": ({}, None),
    "nce": ({"source_outputs": "probabilities"}, {"source_outputs": None}),
    "ncti_ncc": ({"pca_solver": "full"}, {"random_state": -1}),
    "ncti_seli": ({"pca_solver": "full"}, {"pca_solver": "arpack"}),
    "ncti_vc": ({"random_state": 3}, {"random_state": 2.5}),
    "nleep": ({"component_ratio": 2, "random_state": 1}, {"variance_kept": 1.0}),
    "parc": ({"n_dims": 8, "pca_solver": "full"}, {"n_dims": 1}),
    "ped": ({"score_with": "logme", "nsigma": 2.0}, {"score_with": "leep"}),
    "sfda": ({"shrinkage": 0.1}, {"shrinkage": 1.5}),
    "transrate": ({"eps": 1e-2}, {"eps": -1}),
}
NAMES = available_estimators()
WITH_PARAMS = [name for name in NAMES if PARAMS.get(name, ({}, None))[1] is not None]


@pytest.fixture(scope="module")
def probe():
    """Features, labels and source-head probabilities every estimator accepts."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    features = rng.normal(size=(4, 16))[labels] + rng.normal(size=(120, 16))
    probabilities = scipy.special.softmax(features @ rng.normal(size=(16, 6)), axis=1)
    return features, labels, probabilities


def score(estimator, probe):
    features, labels, probabilities = probe
    return estimator.score(features, labels, source_logits=probabilities)


def test_every_registered_estimator_has_a_row_here():
    assert sorted(PARAMS) == NAMES


# ------------------------------------------------------------------------------ parameters


@pytest.mark.parametrize("name", NAMES)
def test_get_params_and_set_params_round_trip(name, probe):
    changed, _ = PARAMS[name]
    estimator = get_estimator(name).set_params(**changed)
    assert estimator.get_params().items() >= changed.items()
    assert estimator.get_params(deep=False) == estimator.get_params(deep=True)
    copy = type(estimator)(**estimator.get_params())
    assert copy.get_params() == estimator.get_params()
    assert score(copy, probe) == score(estimator, probe)
    assert score(clone(estimator), probe) == score(estimator, probe)
    assert score(get_estimator(name, **changed), probe) == score(estimator, probe)


@pytest.mark.parametrize("name", NAMES)
def test_init_only_stores_its_arguments(name):
    estimator_class = type(get_estimator(name))
    sentinel = object()
    params = {key: sentinel for key in get_estimator(name).get_params()}
    built = estimator_class(**params)  # no validation, no conversion at construction
    assert all(value is sentinel for value in built.get_params().values())


@pytest.mark.parametrize("name", WITH_PARAMS)
def test_invalid_hyper_parameters_raise_when_scoring(name, probe):
    _, invalid = PARAMS[name]
    estimator = get_estimator(name, **invalid)
    with pytest.raises(InvalidInputError):
        score(estimator, probe)
    with pytest.raises(InvalidInputError):
        score(get_estimator(name).set_params(**invalid), probe)


def test_unknown_hyper_parameter_names_are_refused():
    with pytest.raises(InvalidInputError, match="FDA has no hyper-parameter 'shrinkge'; it takes: shrinkage"):
        get_estimator("fda", shrinkge=0.1)
    with pytest.raises(InvalidInputError, match="LogME has no hyper-parameter 'alpha'; it takes: none"):
        get_estimator("logme").set_params(alpha=1.0)


def test_repr_shows_every_hyper_parameter():
    assert repr(get_estimator("parc", n_dims=8)) == "PARC(n_dims=8, pca_solver='randomized')"
    assert repr(get_estimator("logme")) == "LogME()"


# ------------------------------------------------------------------------------ errors


def test_unknown_estimator_names_raise_unknown_name_error():
    with pytest.raises(UnknownNameError, match=r"unknown transferability estimator 'logmee'\. Did you mean 'logme'"):
        get_estimator("logmee")
    with pytest.raises(KeyError, match="Available: " + ", ".join(NAMES)):  # also a KeyError, listing the choices
        get_estimator("no-such-estimator")
    with pytest.raises(UnknownNameError):
        get_estimator(None)


def test_error_types_keep_the_builtin_ones():
    assert issubclass(InvalidInputError, ValueError) and issubclass(InvalidInputError, FennecError)
    assert issubclass(UnknownNameError, KeyError) and issubclass(UnknownNameError, FennecError)


def _with_nan(array):
    array = array.copy()
    array[3, 1] = np.nan
    return array


# case -> (features, labels, source outputs) -> the same with one thing wrong
BAD_INPUTS = {
    "nan_features": lambda f, y, p: (_with_nan(f), y, p),
    "nan_source_logits": lambda f, y, p: (f, y, _with_nan(p)),
    "one_dimensional_features": lambda f, y, p: (f[:, 0], y, p),
    "labels_of_another_length": lambda f, y, p: (f, y[:-1], p),
    "single_class": lambda f, y, p: (f, np.zeros_like(y), p),
    "one_sample_per_class": lambda f, y, p: (f[:4], np.arange(4), p[:4]),
    "string_labels": lambda f, y, p: (f, y.astype(str), p),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
@pytest.mark.parametrize("name", NAMES)
def test_invalid_inputs_raise_invalid_input_error(name, case, probe):
    features, labels, outputs = BAD_INPUTS[case](*probe)
    estimator = get_estimator(name)
    if case == "nan_features" and not estimator.reads_features:
        assert np.isfinite(estimator.score(features, labels, source_logits=outputs))  # never read
        return
    with pytest.raises(InvalidInputError):
        estimator.score(features, labels, source_logits=outputs)


# -------------------------------------------------------------------------- namespaces


@pytest.mark.parametrize("namespace", [public_estimators, core_estimators], ids=lambda module: module.__name__)
def test_every_registered_estimator_is_exported(namespace):
    for name in NAMES:
        estimator_class = type(get_estimator(name))
        assert estimator_class.__name__ in namespace.__all__, name
        assert getattr(namespace, estimator_class.__name__) is estimator_class
    for exported in ("get_estimator", "available_estimators", "TransferabilityEstimator"):
        assert exported in namespace.__all__
    assert all(hasattr(namespace, exported) for exported in namespace.__all__)
    assert len(set(namespace.__all__)) == len(namespace.__all__)


def test_public_namespace_imports_by_name():
    from fennec_mlflow.estimators import ETranEnergy, LogME, NCTIVc, ShrinkageHScore
    from fennec_mlflow.estimators import get_estimator as public_get

    assert public_get is get_estimator
    assert issubclass(LogME, TransferabilityEstimator)
    assert {LogME.name, ETranEnergy.name, NCTIVc.name, ShrinkageHScore.name} <= set(NAMES)
