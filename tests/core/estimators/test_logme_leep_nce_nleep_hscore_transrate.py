"""LogME, LEEP, NCE, N-LEEP, H-Score (plain and shrinkage), TransRate: parity, registry, behaviour, robustness.

Golden values (data/logme_leep_nce_nleep_hscore_transrate_golden.npz) were captured by running the reference
implementations on the probes built by ``make_probe`` below (references are never part of
this repository):

- ``logme``: thuml/LogME ``LogME.py`` at 56551ca, ``LogME().fit(X, y)`` (= ``_fit_fixed_point``)
  with the one-line fix of thuml/LogME PR #24 (``log|A|`` over all D eigenvalues); also
  stored: ``logme_unpatched`` (the file as is) and ``logme_icml`` (``LogME()._fit_icml``);
- ``leep``: thuml/LogME ``LEEP.py`` ``LEEP(softmax(logits), y)``; ``leep_tllib``: tllib
  ``log_expected_empirical_prediction`` on the same input;
- ``nce``: thuml/LogME ``NCE.py`` ``NCE(argmax(logits), y)``;
- ``hscore``, ``hscore_shrinkage``, ``transrate``: thuml/Transfer-Learning-Library at c4aa59e,
  ``tllib.ranking.hscore.h_score``, ``regularized_h_score``, ``tllib.ranking.transrate.transrate``;
- ``nleep``: ``sklearn PCA(n_components=0.8).fit_transform(X)``, then google-research
  stable_transfer's ``get_nleep_score`` recipe (``GaussianMixture(5 C, random_state=0)``
  posteriors) scored by thuml/LogME ``LEEP``; ``nleep_mean``: TencentARC/SFDA ``metrics.py`` at
  3b7edf7, ``NLEEP(X, y)`` after ``np.random.seed(0)``.

scikit-learn 1.9.1, numpy 2.4.6, scipy 1.17.1. Each case stores a fingerprint of its inputs,
so a change in numpy's random streams fails loudly instead of as a parity mismatch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.special

from fennec_mlflow.core.estimators import available_estimators, get_estimator
from fennec_mlflow.core.estimators.hscore import ledoit_wolf_shrinkage
from fennec_mlflow.core.estimators.leep import leep_score, source_probabilities
from fennec_mlflow.core.estimators.logme import logme_score
from fennec_mlflow.core.estimators.nce import nce_score
from fennec_mlflow.core.estimators.nleep import n_mixture_components, nleep_score, principal_scores
from fennec_mlflow.core.estimators.transrate import coding_rate
from fennec_mlflow.errors import InvalidInputError

GOLDEN_PATH = Path(__file__).parent / "data" / "logme_leep_nce_nleep_hscore_transrate_golden.npz"
PARITY_RTOL = 1e-9
PARITY_ATOL = 1e-10

OURS = ["logme", "leep", "nce", "nleep", "hscore", "hscore_shrinkage", "transrate"]
USES_SOURCE_LOGITS = {"leep", "nce"}

GOLDEN_CASES = {
    "d32": dict(seed=0, n_samples=200, n_features=32, n_classes=5),
    "d64_relu": dict(seed=1, n_samples=200, n_features=64, n_classes=5, nonnegative=True),
    "wide": dict(seed=2, n_samples=60, n_features=256, n_classes=5),  # D > N
}


def make_probe(seed, n_samples, n_features, n_classes, n_source=20, separation=0.5, nonnegative=False):
    """Gaussian classes (random centres, unequal sizes, every class present) and source logits.

    ``nonnegative`` clips the features at 0, like post-ReLU features (non-zero mean, exact
    zeros). The source logits are a noisy random linear head on the features, so they
    carry information about the classes.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_samples)
    labels[:n_classes] = np.arange(n_classes)
    centres = rng.normal(size=(n_classes, n_features)) * separation
    features = centres[labels] + rng.normal(size=(n_samples, n_features))
    if nonnegative:
        features = np.maximum(features, 0.0)
    head = rng.normal(size=(n_features, n_source)) * (3.0 / np.sqrt(n_features))
    source_logits = features @ head + rng.normal(size=(n_samples, n_source))
    return features, labels, source_logits


def fingerprint(features, labels, logits):
    return np.array(
        [features.sum(), (features**2).sum(), features[0, 0], labels.sum(), logits.sum()], dtype=np.float64
    )


def score(name, features, labels, logits, **params):
    return get_estimator(name, **params).score(features, labels, source_logits=logits)


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN_PATH) as data:
        return {key: float(data[key]) if data[key].ndim == 0 else data[key] for key in data.files}


def load_case(golden, case):
    features, labels, logits = make_probe(**GOLDEN_CASES[case])
    np.testing.assert_allclose(
        fingerprint(features, labels, logits), golden[f"{case}/fingerprint"], rtol=1e-12,
        err_msg="probe inputs changed (numpy random stream?); recapture the goldens",
    )
    return features, labels, logits


# ------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
@pytest.mark.parametrize("name", OURS)
def test_parity_with_reference(golden, case, name):
    features, labels, logits = load_case(golden, case)
    assert score(name, features, labels, logits) == pytest.approx(
        golden[f"{case}/{name}"], rel=PARITY_RTOL, abs=PARITY_ATOL
    )


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_nleep_mean_reduction_matches_sfda(golden, case):
    features, labels, logits = load_case(golden, case)
    value = score("nleep", features, labels, logits, reduction="mean")
    assert value == pytest.approx(golden[f"{case}/nleep_mean"], rel=PARITY_RTOL, abs=PARITY_ATOL)
    # Same number of principal components as sklearn's PCA(n_components=0.8).
    assert principal_scores(features, 0.8).shape[1] == golden[f"{case}/nleep_pca_dims"]


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_both_leep_references_agree(golden, case):
    assert golden[f"{case}/leep"] == pytest.approx(golden[f"{case}/leep_tllib"], rel=1e-14)


def test_logme_equals_unpatched_reference_when_features_have_full_column_rank(golden):
    for case in ("d32", "d64_relu"):  # N > D
        features, labels, logits = load_case(golden, case)
        assert logme_score(features, labels) == pytest.approx(golden[f"{case}/logme_unpatched"], rel=PARITY_RTOL)


def test_logme_corrects_the_reference_bug_for_more_dimensions_than_samples(golden):
    """thuml/LogME issue #23: the unpatched fixed point drops D - N terms of log|A| when D > N."""
    features, labels, logits = load_case(golden, "wide")
    ours = logme_score(features, labels)
    assert golden["wide/logme_unpatched"] > ours + 10.0  # 13.4 against -0.054: a large bias
    # The ICML evidence (all D eigenvalues, a looser stopping rule) lands next to ours.
    assert ours == pytest.approx(golden["wide/logme_icml"], abs=2e-3)
    for case in ("d32", "d64_relu"):
        features, labels, _ = load_case(golden, case)
        assert logme_score(features, labels) == pytest.approx(golden[f"{case}/logme_icml"], abs=1e-4)


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_declared_inputs():
    assert set(OURS) <= set(available_estimators())
    for name in OURS:
        estimator = get_estimator(name)
        assert estimator.name == name
        assert estimator.requires_labels
        assert estimator.requires_source_logits == (name in USES_SOURCE_LOGITS)
    assert get_estimator("HScore_Shrinkage").name == "hscore_shrinkage"  # case-insensitive lookup


def test_hyper_parameters_are_reported_and_validated_when_scoring():
    assert get_estimator("nleep").get_params() == dict(
        component_ratio=5, variance_kept=0.8, random_state=0, reduction="mean_log"
    )
    assert get_estimator("transrate").get_params() == {"eps": 1e-4}
    assert get_estimator("hscore").get_params() == {"rcond": 1e-15}
    assert get_estimator("leep").get_params() == {"source_outputs": "logits"}
    assert get_estimator("logme").get_params() == {}
    features, labels, logits = make_probe(0, 50, 8, 3)
    for name, params in [
        ("nleep", {"reduction": "sum"}),
        ("nleep", {"variance_kept": 1.0}),
        ("nleep", {"component_ratio": 0}),
        ("transrate", {"eps": 0.0}),
        ("hscore", {"rcond": -1.0}),
        ("leep", {"source_outputs": "softmax"}),
        ("nce", {"source_outputs": "softmax"}),
    ]:
        estimator = get_estimator(name, **params)  # only stored
        assert estimator.get_params().items() >= params.items()
        with pytest.raises(InvalidInputError):
            estimator.score(features, labels, source_logits=logits)


@pytest.mark.parametrize("name", sorted(USES_SOURCE_LOGITS))
def test_source_logit_estimators_need_logits(name):
    features, labels, _ = make_probe(0, 50, 8, 3)
    with pytest.raises(ValueError, match="needs source_logits"):
        get_estimator(name).score(features, labels)


def test_leep_applies_the_softmax_itself():
    features, labels, logits = make_probe(3, 120, 16, 4)
    from_logits = score("leep", features, labels, logits)
    # Softmax is shift invariant per row: a logit offset must not change LEEP.
    shifted = logits + np.random.default_rng(0).normal(size=(120, 1)) * 50.0
    assert score("leep", features, labels, shifted) == pytest.approx(from_logits, rel=1e-12)
    # Large logits take the max-shifted softmax path, small ones the direct exp: same LEEP.
    assert score("leep", features, labels, logits + 1000.0) == pytest.approx(from_logits, rel=1e-12)
    probabilities = scipy.special.softmax(logits, axis=1)
    assert score("leep", features, labels, probabilities, source_outputs="probabilities") == pytest.approx(
        from_logits, rel=1e-12
    )
    # Probabilities passed as if they were logits are softmaxed again: a different number.
    assert abs(score("leep", features, labels, probabilities) - from_logits) > 1e-3
    assert leep_score(logits, labels) == pytest.approx(from_logits, rel=1e-12)
    assert nce_score(logits, labels) == score("nce", features, labels, logits)


def test_given_probabilities_are_checked():
    features, labels, logits = make_probe(3, 60, 8, 3)
    for name in ("leep", "nce"):
        with pytest.raises(ValueError, match="sum to 1"):
            score(name, features, labels, np.abs(logits), source_outputs="probabilities")
        with pytest.raises(ValueError, match="non-negative"):
            score(name, features, labels, logits, source_outputs="probabilities")
    np.testing.assert_allclose(source_probabilities(logits).sum(axis=1), 1.0)


def test_leep_survives_source_classes_without_mass():
    """Softmax underflow leaves source classes with exactly zero mass (the reference: 0/0 = NaN)."""
    features, labels, _ = make_probe(4, 80, 8, 3)
    logits = np.zeros((80, 6))
    logits[:, 0] = 2000.0 * (labels == 0)  # classes 3..5 never get any probability
    logits[:, 1] = 2000.0 * (labels == 1)
    logits[:, 2] = 2000.0 * (labels == 2)
    assert score("leep", features, labels, logits) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("name", OURS)
def test_separable_features_score_higher_than_shuffled_labels(name):
    features, labels, logits = make_probe(11, 300, 32, 5, separation=1.5)
    shuffled = np.random.default_rng(1).permutation(labels)
    assert score(name, features, labels, logits) > score(name, features, shuffled, logits) + 0.05


@pytest.mark.parametrize("name", OURS)
def test_labels_may_be_any_integer_ids(name):
    features, labels, logits = make_probe(12, 120, 16, 4)
    assert score(name, features, labels * 7 + 100, logits) == pytest.approx(score(name, features, labels, logits))


def test_nleep_is_reproducible_and_depends_on_its_seed():
    features, labels, _ = make_probe(13, 150, 24, 5)
    first = nleep_score(features, labels)
    assert nleep_score(features, labels) == first
    assert any(nleep_score(features, labels, random_state=seed) != first for seed in (1, 2, 3))


def test_nleep_component_count_is_capped_at_half_the_probe():
    assert n_mixture_components(200, 5, 5) == 25  # the references' 5 C
    assert n_mixture_components(500, 100, 5) == 250  # the references would need 500 >= N samples
    assert n_mixture_components(6, 5, 5) == 3


def test_nleep_pca_matches_the_variance_rule():
    features, _, _ = make_probe(14, 90, 40, 3)
    for data in (features, features[:30]):  # N > D and N < D
        reduced = principal_scores(data, 0.8)
        centred = data - data.mean(axis=0)
        eig = np.sort(np.linalg.eigvalsh(centred.T @ centred))[::-1]
        ratio = np.cumsum(eig) / eig.sum()
        assert reduced.shape[1] == int(np.searchsorted(ratio, 0.8, side="right")) + 1
        np.testing.assert_allclose(np.sum(reduced**2, axis=0), eig[: reduced.shape[1]], rtol=1e-8)


def test_ledoit_wolf_shrinkage_matches_scikit_learn():
    from sklearn.covariance import LedoitWolf

    for n_samples, n_features in [(200, 32), (40, 120)]:
        features = make_probe(15, n_samples, n_features, 3)[0]
        assert ledoit_wolf_shrinkage(features) == pytest.approx(LedoitWolf().fit(features).shrinkage_, rel=1e-10)


def test_coding_rate_uses_the_smaller_gram_matrix_exactly():
    features = make_probe(16, 30, 50, 3)[0]
    for rows in (features, features[:, :10]):  # n <= D and n > D
        n, d = rows.shape
        expected = 0.5 * np.linalg.slogdet(np.eye(d) + rows.T @ rows / (n * 1e-4))[1]
        assert coding_rate(rows) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("name", OURS)
def test_many_more_dimensions_than_samples(name):
    features, labels, logits = make_probe(5, 100, 2048, 5)
    assert np.isfinite(score(name, features, labels, logits))


def test_hscore_saturates_and_shrinkage_does_not_when_dimensions_exceed_samples():
    features, labels, logits = make_probe(5, 100, 2048, 5)
    shuffled = np.random.default_rng(0).permutation(labels)
    # Documented: with D >= N - 1 every labelling is "perfectly" explained, H = C - 1.
    assert score("hscore", features, labels, logits) == pytest.approx(4.0, rel=1e-9)
    assert score("hscore", features, shuffled, logits) == pytest.approx(4.0, rel=1e-9)
    shrunk = score("hscore_shrinkage", features, labels, logits)
    assert shrunk > score("hscore_shrinkage", features, shuffled, logits) + 0.1
    # LogME (with the D > N correction) still separates real from shuffled labels.
    assert score("logme", features, labels, logits) > score("logme", features, shuffled, logits)


def test_hscore_ignores_the_null_direction_that_centring_creates():
    """D > N: the centred Gram matrix has the all-ones null vector, whose eigenvalue is roundoff
    of either sign; kept (rcond=0) it must add nothing, or H would read C instead of C - 1."""
    for seed in range(8):
        features, labels, _ = make_probe(seed, 40, 100, 4)
        assert get_estimator("hscore", rcond=0.0).score(features, labels) == pytest.approx(3.0, rel=1e-9)


@pytest.mark.parametrize("name", OURS)
def test_hundred_sample_probe_with_ten_classes(name):
    features, labels, logits = make_probe(6, 100, 64, 10)
    assert np.isfinite(score(name, features, labels, logits))


@pytest.mark.parametrize("name", OURS)
def test_one_or_two_samples_per_class(name):
    features, labels, logits = make_probe(7, 6, 16, 5)  # N = C + 1: four classes of one sample
    assert np.bincount(labels).min() == 1
    assert np.isfinite(score(name, features, labels, logits))
    features, _, logits = make_probe(8, 10, 16, 5)
    two_each = np.repeat(np.arange(5), 2)
    assert np.isfinite(score(name, features, two_each, logits))
    with pytest.raises(ValueError, match="more samples than classes"):  # one each: base.py refuses
        score(name, features[:5], np.arange(5), logits[:5])


CONSTANT_FEATURES = {  # name -> expected score, or an exception type
    "logme": "finite",  # a rank-one design: an intercept-only model
    "leep": "finite",  # features unused
    "nce": "finite",
    "nleep": ValueError,  # nothing for PCA to keep
    "hscore": 0.0,
    "hscore_shrinkage": 0.0,
    "transrate": 0.0,
}


@pytest.mark.parametrize("name", OURS)
def test_constant_features(name):
    _, labels, logits = make_probe(9, 50, 16, 5)
    constant = np.full((50, 16), 3.0)
    expected = CONSTANT_FEATURES[name]
    if expected is ValueError:
        with pytest.raises(ValueError, match="constant"):
            score(name, constant, labels, logits)
    elif expected == "finite":
        assert np.isfinite(score(name, constant, labels, logits))
    else:
        assert score(name, constant, labels, logits) == expected


def test_all_zero_features_are_refused_by_logme():
    _, labels, _ = make_probe(9, 50, 16, 5)
    with pytest.raises(ValueError, match="all zero"):
        logme_score(np.zeros((50, 16)), labels)


def test_constant_source_logits_give_the_label_prior():
    features, labels, _ = make_probe(10, 80, 8, 4)
    prior = np.bincount(labels) / labels.size
    constant = np.ones((80, 10))
    assert score("leep", features, labels, constant) == pytest.approx(np.mean(np.log(prior[labels])), rel=1e-12)
    assert score("nce", features, labels, constant) == pytest.approx(np.sum(prior * np.log(prior)), rel=1e-12)


@pytest.mark.parametrize("name", OURS)
def test_float32_inputs_score_like_float64(name):
    features, labels, logits = make_probe(10, 200, 64, 5)
    exact = score(name, features, labels, logits)
    single = score(name, features.astype(np.float32), labels, logits.astype(np.float32))
    assert isinstance(single, float)
    assert single == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("name", [n for n in OURS if n not in ("leep", "nce")])
def test_non_finite_features_are_refused(name):
    features, labels, logits = make_probe(10, 40, 8, 3)
    features[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        score(name, features, labels, logits)


@pytest.mark.parametrize("name", ["leep", "nce"])
def test_estimators_of_the_source_head_alone_never_scan_the_features(name):
    """LEEP and NCE read only the source logits: the features' values cannot change the score
    (and are not scanned), but their row count must still match."""
    features, labels, logits = make_probe(10, 40, 8, 3)
    expected = score(name, features, labels, logits)
    garbage = np.full_like(features, np.nan)
    assert score(name, garbage, labels, logits) == expected
    with pytest.raises(ValueError, match="rows"):
        score(name, features[:-1], labels[:-1], logits)
    with pytest.raises(ValueError, match="2-D"):
        score(name, features[:, 0], labels, logits)
