"""FDA / SFDA scores: parity with the SFDA reference, behaviour, boundary errors, registry.

Golden values (data/fda_sfda_golden.npz) were captured by running the reference,
TencentARC/SFDA ``metrics.py`` at commit 3b7edf7, on the probes built by ``make_probe`` below:
for each case, ``first = SFDA(); first.fit(X, y).predict_proba(X)``, ``first.transform(X)``,
``first.shrinkage`` and ``SFDA_Score(X.copy(), y)``. Each case also stores a fingerprint of its
inputs so a change in numpy's random streams fails loudly instead of as a parity mismatch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from fennec_mlflow.core.estimators import (
    FDA,
    SFDA,
    TransferabilityEstimator,
    available_estimators,
    fda_probabilities,
    fda_projection,
    fda_score,
    get_estimator,
    register,
    sfda_score,
    sfda_shrinkage,
)
from fennec_mlflow.core.estimators import base

GOLDEN_PATH = Path(__file__).parent / "data" / "fda_sfda_golden.npz"
PARITY_ATOL = 1e-6

# "floor": deep-feature scale, SFDA's shrinkage sits at its 1e-10 floor.
# "unit": unit-variance features, shrinkage ~2e-4 (where our unshrunk S_B differs, docs/estimators.md).
# "wide": more dimensions than samples.
GOLDEN_CASES = {
    "floor": dict(seed=0, n_samples=200, n_features=32, n_classes=5, scale=3.0),
    "unit": dict(seed=0, n_samples=200, n_features=32, n_classes=5, scale=1.0),
    "wide": dict(seed=1, n_samples=60, n_features=100, n_classes=5, scale=1.0),
}


def make_probe(seed, n_samples, n_features, n_classes, scale=1.0, separation=0.3):
    """Gaussian classes with random centres and unequal class sizes; labels 0..C-1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_samples)
    assert np.unique(labels).size == n_classes
    centres = rng.normal(size=(n_classes, n_features)) * separation
    features = (centres[labels] + rng.normal(size=(n_samples, n_features))) * scale
    return features, labels


def fingerprint(features, labels):
    return np.array([features.sum(), (features**2).sum(), features[0, 0], labels.sum()], dtype=np.float64)


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN_PATH) as data:
        return {key: data[key] for key in data.files}


def load_case(golden, case):
    features, labels = make_probe(**GOLDEN_CASES[case])
    np.testing.assert_allclose(
        fingerprint(features, labels),
        golden[f"{case}/fingerprint"],
        rtol=1e-12,
        err_msg="probe inputs changed (numpy random stream?); recapture the goldens",
    )
    return features, labels


def align_signs(ours, reference):
    """Flip our projection columns to the reference's orientation (eigenvectors have no sign)."""
    return ours * np.sign(np.sum(ours * reference, axis=0))


def relative_max_error(ours, reference):
    return np.abs(ours - reference).max() / np.abs(reference).max()


# ------------------------------------------------------------------- parity with reference


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_shrinkage_matches_reference(golden, case):
    features, labels = load_case(golden, case)
    assert fda_projection(features, labels).shrinkage == pytest.approx(golden[f"{case}/shrinkage"], rel=1e-9)


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_probabilities_match_reference(golden, case):
    features, labels = load_case(golden, case)
    np.testing.assert_allclose(
        fda_probabilities(features, labels), golden[f"{case}/probabilities"], rtol=0, atol=PARITY_ATOL
    )


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_scores_match_reference(golden, case):
    features, labels = load_case(golden, case)
    expected_sum = float(golden[f"{case}/fda_score_sum"])
    assert fda_score(features, labels, reduction="sum") == pytest.approx(expected_sum, abs=PARITY_ATOL)
    assert fda_score(features, labels) == pytest.approx(expected_sum / labels.size, abs=PARITY_ATOL)
    assert sfda_score(features, labels) == pytest.approx(float(golden[f"{case}/sfda_score"]), abs=PARITY_ATOL)


def test_scores_are_not_trivial_in_the_well_posed_cases(golden):
    # Guards the parity tests above against comparing saturated (all 0/1) posteriors only.
    for case in ("floor", "unit"):
        assert 0.5 < golden[f"{case}/fda_score_sum"] / 200 < 0.9
        assert 0.3 < golden[f"{case}/sfda_score"] < 0.6


def test_projection_matches_reference_when_shrinkage_is_at_its_floor(golden):
    features, labels = load_case(golden, "floor")
    reference = golden["floor/projection"]
    ours = fda_projection(features, labels).transform(features)
    assert ours.shape == reference.shape == (200, 4)
    assert relative_max_error(align_signs(ours, reference), reference) < PARITY_ATOL


def test_projection_differs_from_reference_by_at_most_the_shrinkage(golden):
    # Deliberate: the reference also shrinks S_B; we keep the paper's S_B (docs/estimators.md).
    features, labels = load_case(golden, "unit")
    reference = golden["unit/projection"]
    projection = fda_projection(features, labels)
    error = relative_max_error(align_signs(projection.transform(features), reference), reference)
    assert error < projection.shrinkage


def test_projection_matches_reference_within_its_roundoff_when_wide(golden):
    # With D > N, S_W' has condition number ~1/shrinkage (4e10 here): one ulp of roundoff in
    # the scatter matrices moves the projection by ~1e-6 relative, and the reference also
    # forms S_B as a difference of two O(trace) matrices. Measured: 3e-6.
    features, labels = load_case(golden, "wide")
    reference = golden["wide/projection"]
    ours = fda_projection(features, labels).transform(features)
    assert relative_max_error(align_signs(ours, reference), reference) < 1e-4


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_projection_solves_the_generalised_eigenproblem(golden, case):
    features, labels = load_case(golden, case)
    projection = fda_projection(features, labels)
    means, priors, strength = projection.class_means, projection.priors, projection.shrinkage
    residuals = features - means[labels]
    within = residuals.T @ residuals / labels.size
    n_features = within.shape[0]
    regularised = (1 - strength) * within + strength * np.trace(within) / n_features * np.eye(n_features)
    deviations = means - priors @ means
    between = (priors[:, None] * deviations).T @ deviations
    eigenvalues, eigenvectors = scipy.linalg.eigh(between, regularised)
    top = np.argsort(eigenvalues)[::-1][: projection.directions.shape[1]]
    # Roundoff in S_W' (one ulp: a different BLAS, summation order) moves the solution by
    # ~eps * cond(S_W'): 1e-15 in the well-posed cases, ~1e-6 in the wide one (cond ~4e10).
    tolerance = max(1e-10, 100 * np.finfo(float).eps * np.linalg.cond(regularised))
    np.testing.assert_allclose(projection.ratios, eigenvalues[top], rtol=tolerance)
    np.testing.assert_allclose(
        projection.directions.T @ regularised @ projection.directions, np.eye(len(top)), atol=tolerance
    )
    lapack = eigenvectors[:, top]
    assert relative_max_error(align_signs(projection.directions, lapack), lapack) < tolerance


def test_arbitrary_integer_label_ids_give_the_reference_probabilities(golden):
    features, labels = load_case(golden, "floor")
    relabelled = labels * 7 - 3  # sorted order of ids is preserved, so columns are too
    np.testing.assert_allclose(
        fda_probabilities(features, relabelled), golden["floor/probabilities"], rtol=0, atol=PARITY_ATOL
    )
    assert sfda_score(features, relabelled) == pytest.approx(float(golden["floor/sfda_score"]), abs=PARITY_ATOL)


def test_scores_leave_the_input_untouched():
    features, labels = make_probe(**GOLDEN_CASES["unit"])
    before = features.copy()
    sfda_score(features, labels)
    fda_score(features, labels)
    np.testing.assert_array_equal(features, before)


# ------------------------------------------------------------------------------ behaviour


def test_separated_classes_score_higher_than_shuffled_labels():
    features, labels = make_probe(seed=5, n_samples=300, n_features=16, n_classes=4, separation=1.0)
    shuffled = np.random.default_rng(0).permutation(labels)
    for score in (fda_score, sfda_score):
        assert score(features, labels) > score(features, shuffled) + 0.2


def test_more_separation_scores_higher():
    scores = [
        fda_score(*make_probe(seed=2, n_samples=300, n_features=16, n_classes=4, separation=separation))
        for separation in (0.1, 0.3, 1.0)
    ]
    assert scores == sorted(scores) and scores[0] < scores[-1]


def test_mean_is_sum_over_samples_and_lies_in_unit_interval():
    features, labels = make_probe(seed=3, n_samples=150, n_features=10, n_classes=3)
    mean = fda_score(features, labels)
    assert 0.0 < mean <= 1.0
    assert fda_score(features, labels, reduction="sum") == pytest.approx(mean * 150, rel=1e-12)
    probabilities = fda_probabilities(features, labels)
    assert probabilities.shape == (150, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)


def test_invariant_to_sample_order_and_class_ids():
    features, labels = make_probe(seed=4, n_samples=200, n_features=12, n_classes=4)
    order = np.random.default_rng(1).permutation(200)
    renamed = np.array([30, 10, 20, 0])[labels]  # a permutation of the class ids
    expected = fda_score(features, labels)
    assert fda_score(features[order], labels[order]) == pytest.approx(expected, abs=1e-12)
    assert fda_score(features, renamed) == pytest.approx(expected, abs=1e-12)
    assert sfda_score(features, renamed) == pytest.approx(sfda_score(features, labels), abs=1e-12)


def test_invariant_to_translation():
    # A large common offset, like non-negative ReLU features; S_W and S_B do not see it.
    features, labels = make_probe(seed=6, n_samples=200, n_features=12, n_classes=4)
    offset = np.random.default_rng(2).uniform(50, 100, size=12)
    assert fda_score(features + offset, labels) == pytest.approx(fda_score(features, labels), abs=1e-9)
    assert sfda_score(features + offset, labels) == pytest.approx(sfda_score(features, labels), abs=1e-9)


def test_invariant_to_rotation_and_scale_at_fixed_shrinkage():
    # Shrinking towards trace(S_W)/D * I commutes with rotations and scalings; SFDA's adaptive
    # strength does not (it reads the scale of S_W), hence the fixed value here.
    features, labels = make_probe(seed=7, n_samples=200, n_features=12, n_classes=4)
    rotation, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(12, 12)))
    expected = fda_score(features, labels, shrinkage=0.1)
    assert fda_score(features @ rotation, labels, shrinkage=0.1) == pytest.approx(expected, abs=1e-10)
    assert fda_score(features * 40.0, labels, shrinkage=0.1) == pytest.approx(expected, abs=1e-10)


def test_projection_has_c_minus_1_directions_or_d_if_fewer():
    features, labels = make_probe(seed=8, n_samples=120, n_features=20, n_classes=6)
    assert fda_projection(features, labels).directions.shape == (20, 5)
    assert fda_projection(features, labels, n_components=2).directions.shape == (20, 2)
    narrow, narrow_labels = make_probe(seed=8, n_samples=240, n_features=3, n_classes=6)
    assert fda_projection(narrow, narrow_labels).directions.shape == (3, 3)


def test_more_dimensions_than_samples_saturates_unless_shrinkage_is_strong():
    # Documented caveat: with N - C <= D every labelling is separable in-sample.
    features, labels = make_probe(seed=3, n_samples=60, n_features=100, n_classes=5, separation=0.5)
    shuffled = np.random.default_rng(0).permutation(labels)
    assert fda_score(features, shuffled) == pytest.approx(1.0, abs=1e-6)
    assert fda_score(features, labels, shrinkage=0.9) > fda_score(features, shuffled, shrinkage=0.9) + 0.02


def test_float32_input_matches_float64():
    features, labels = make_probe(seed=9, n_samples=200, n_features=16, n_classes=4, scale=3.0)
    features32 = features.astype(np.float32)
    assert fda_score(features32, labels) == pytest.approx(fda_score(features32.astype(np.float64), labels), abs=1e-12)
    assert fda_score(features32, labels) == pytest.approx(fda_score(features, labels), abs=1e-4)
    assert isinstance(fda_score(features32, labels.astype(np.int32)), float)


def test_power_iteration_falls_back_when_its_start_vector_is_blind():
    # Rows that sum to one (e.g. softmax outputs) make S_W 1 = 0 up to roundoff, where the
    # reference's estimate is amplified noise (0.742 here instead of the exact 0.730).
    features, labels = make_probe(seed=10, n_samples=200, n_features=6, n_classes=3, separation=1.0)
    rows_sum_to_one = np.exp(features) / np.exp(features).sum(axis=1, keepdims=True)
    projection = fda_projection(rows_sum_to_one, labels)
    residuals = rows_sum_to_one - projection.class_means[labels]
    within = residuals.T @ residuals / 200
    assert np.allclose(within @ np.ones(6), 0.0)
    assert projection.shrinkage == pytest.approx(np.exp(-5 * np.linalg.eigvalsh(within).max()), rel=1e-12)
    assert 0.3 < fda_score(rows_sum_to_one, labels) <= 1.0


def test_sfda_shrinkage_rule():
    # lambda_max is estimated as ||S^7 1|| / ||S^6 1||, slightly below the true 0.2 here.
    estimate = np.sqrt(0.2**14 + 0.1**14) / np.sqrt(0.2**12 + 0.1**12)
    assert estimate < 0.2
    assert sfda_shrinkage(np.diag([0.2, 0.1])) == pytest.approx(np.exp(-5 * estimate), rel=1e-12)
    assert sfda_shrinkage(np.diag([30.0, 1.0])) == 1e-10


# ------------------------------------------------------------------------ boundary errors


@pytest.fixture
def probe():
    return make_probe(seed=11, n_samples=40, n_features=5, n_classes=3)


@pytest.mark.parametrize("bad_value, word", [(np.nan, "NaN"), (np.inf, "inf")])
def test_non_finite_features_are_rejected_with_counts(probe, bad_value, word):
    features, labels = probe
    features = features.copy()
    features[[3, 3, 7], [0, 2, 2]] = bad_value
    with pytest.raises(ValueError, match=rf"3 {word}.*2 of 40 rows and 2 of 5 columns.*first bad rows: 3, 7"):
        fda_score(features, labels)


def test_single_class_is_rejected(probe):
    features, _ = probe
    with pytest.raises(ValueError, match="single class.*at least 2 classes"):
        fda_score(features, np.full(40, 3))


def test_as_many_classes_as_samples_is_rejected():
    features = np.random.default_rng(0).normal(size=(3, 4))
    with pytest.raises(ValueError, match="more samples than classes; got 3 samples for 3 classes"):
        fda_score(features, np.array([0, 1, 2]))


def test_mismatched_lengths_are_rejected(probe):
    features, labels = probe
    with pytest.raises(ValueError, match="features has 40 rows but labels has 39 entries"):
        fda_score(features, labels[:-1])


@pytest.mark.parametrize(
    "features, labels, message",
    [
        (np.zeros(10), np.zeros(10, int), "features must be a 2-D array"),
        (np.zeros((0, 3)), np.zeros(0, int), "features must be non-empty"),
        (np.array([["a", "b"]] * 4), np.array([0, 1, 0, 1]), "features must hold real numbers"),
        (np.ones((4, 2)), np.array([[0], [1], [0], [1]]), "labels must be a 1-D array"),
        (np.ones((4, 2)), np.array([0.0, 1.5, 0.0, 1.0]), "integer class ids"),
        (np.ones((4, 2)), np.array(["cat", "dog", "cat", "dog"]), "labels must be integer class ids; got dtype <U3"),
    ],
)
def test_malformed_inputs_are_rejected(features, labels, message):
    with pytest.raises(ValueError, match=message):
        fda_score(features, labels)


def test_integral_float_labels_are_accepted(probe):
    features, labels = probe
    assert fda_score(features, labels.astype(float)) == fda_score(features, labels)


def test_features_without_within_class_variation_are_rejected():
    features = np.repeat(np.eye(3), 4, axis=0)
    labels = np.repeat(np.arange(3), 4)
    with pytest.raises(ValueError, match="do not vary within any class"):
        fda_score(features, labels)


def test_singular_scatter_without_shrinkage_is_rejected():
    features, labels = make_probe(seed=12, n_samples=20, n_features=30, n_classes=2)
    with pytest.raises(ValueError, match="singular.*shrinkage"):
        fda_score(features, labels, shrinkage=0.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda f, y: fda_score(f, y, shrinkage=1.5), r"shrinkage must be None .* or in \[0, 1\]; got 1.5"),
        (lambda f, y: fda_score(f, y, reduction="median"), "reduction must be 'mean' or 'sum'; got 'median'"),
        (lambda f, y: fda_projection(f, y, n_components=3), r"n_components must be in .* = \[1, 2\]; got 3"),
        (lambda f, y: FDA(shrinkage=-0.1).score(f, y), r"shrinkage must be None .*; got -0.1"),
        (lambda f, y: SFDA(shrinkage=2).score(f, y), r"shrinkage must be None .*; got 2"),
    ],
)
def test_invalid_parameters_are_rejected(probe, call, message):
    with pytest.raises(ValueError, match=message):
        call(*probe)


# ------------------------------------------------------------------ protocol and registry


def test_registry_lists_and_builds_fda_and_sfda(probe):
    features, labels = probe
    assert {"fda", "sfda"} <= set(available_estimators())
    assert available_estimators() == sorted(available_estimators())
    estimator = get_estimator(" FDA ", reduction="sum")
    assert isinstance(estimator, FDA)
    assert estimator.requires_labels and not estimator.requires_source_logits
    assert estimator.get_params() == {"shrinkage": None, "reduction": "sum", "max_dim": "auto"}
    assert repr(estimator) == "FDA(shrinkage=None, reduction='sum', max_dim='auto')"
    assert estimator.score(features, labels) == fda_score(features, labels, reduction="sum", max_dim="auto")
    assert get_estimator("sfda").score(features, labels) == sfda_score(features, labels, max_dim="auto")


def test_registered_fda_does_not_saturate_when_d_approaches_n():
    """N=200 probe of 400-D features: raw in-sample FDA is 1.0 even for shuffled labels."""
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(5), 40)
    centres = rng.normal(size=(5, 400)) * 0.15
    features = centres[labels] + rng.normal(size=(200, 400))
    shuffled = rng.permutation(labels)
    assert fda_score(features, shuffled) > 0.99  # the documented saturation of the raw score
    capped = get_estimator("fda")
    assert capped.score(features, shuffled) < 0.5
    assert capped.score(features, labels) > capped.score(features, shuffled) + 0.2
    with pytest.raises(ValueError, match="max_dim must be"):
        FDA(max_dim=0).score(features, labels)


def test_unknown_estimator_suggests_close_names():
    expected = r"unknown transferability estimator 'sfdaa'\. Did you mean 'sfda'.*Available: .*fda"
    with pytest.raises(KeyError, match=expected):
        get_estimator("sfdaa")
    with pytest.raises(KeyError, match="Available"):
        get_estimator("zzzzzz")


def test_estimator_requires_labels(probe):
    features, _ = probe
    with pytest.raises(ValueError, match="estimator 'fda' needs labels"):
        FDA().score(features)


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))


def test_protocol_serves_label_free_and_logit_estimators(scratch_registry, probe):
    features, labels = probe

    @register
    class MeanNorm(TransferabilityEstimator):
        name = "mean-norm"
        requires_labels = False

        def _score(self, features, labels, *, source_logits):
            assert labels is None and features.dtype == np.float64
            return np.linalg.norm(features, axis=1).mean()

    @register
    class LogitMass(TransferabilityEstimator):
        name = "logit-mass"
        requires_source_logits = True

        def _score(self, features, labels, *, source_logits):
            assert set(labels) == {0, 1, 2}  # re-coded ids
            return source_logits[np.arange(labels.size), labels].mean()

    assert get_estimator("mean-norm").score(features.astype(np.float32)) == pytest.approx(
        np.linalg.norm(features, axis=1).mean(), rel=1e-6
    )
    logits = np.random.default_rng(0).normal(size=(40, 7))
    shifted_ids = labels + 100
    assert get_estimator("logit-mass").score(features, shifted_ids, source_logits=logits) == pytest.approx(
        logits[np.arange(40), labels].mean()
    )
    with pytest.raises(ValueError, match="needs source_logits"):
        get_estimator("logit-mass").score(features, labels)
    with pytest.raises(ValueError, match="features has 40 rows but source_logits has 39"):
        get_estimator("logit-mass").score(features, labels, source_logits=logits[:-1])
    logits[5, 1] = np.nan
    with pytest.raises(ValueError, match="source_logits contain non-finite values"):
        get_estimator("logit-mass").score(features, labels, source_logits=logits)


def test_register_refuses_name_clashes_and_non_estimators(scratch_registry):
    class Impostor(TransferabilityEstimator):
        name = "fda"

        def _score(self, features, labels, *, source_logits):
            return 0.0

    class Nameless(Impostor):
        name = ""

    with pytest.raises(ValueError, match="'fda' is already registered by fennec_mlflow.core.estimators.fda.FDA"):
        register(Impostor)
    with pytest.raises(ValueError, match="non-empty class attribute `name`"):
        register(Nameless)
    with pytest.raises(TypeError, match="TransferabilityEstimator subclass"):
        register(dict)
    assert register(FDA) is FDA  # re-registering the same class is harmless
