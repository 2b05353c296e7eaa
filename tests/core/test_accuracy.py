"""Predicted accuracy with a conformal interval (fennec_mlflow.core.accuracy)."""
import numpy as np
import pandas as pd
import pytest

from fennec_mlflow.core import evaluation as ev
from fennec_mlflow.core.accuracy import (
    ACCURACY_COLUMNS,
    AccuracyModel,
    accuracy_scale,
    conformal_quantile,
    coverage_summary,
    interval_coverage,
    loto_popularity_z,
)
from fennec_mlflow.errors import InvalidInputError


def planted_accuracies(n_models=30, n_tasks=12, seed=0, percent=True, facts=False):
    """Accuracies = task mean + task std x (model skill + noise); task means from a fact when ``facts``."""
    rng = np.random.default_rng(seed)
    skill = rng.normal(size=n_models)
    fact = rng.normal(size=n_tasks)
    means = 0.75 + (0.08 * fact if facts else rng.normal(scale=0.05, size=n_tasks))
    stds = rng.uniform(0.03, 0.08, size=n_tasks)
    z = skill[:, None] + rng.normal(scale=0.5, size=(n_models, n_tasks))
    values = np.clip(means + stds * z, 0.01, 0.99) * (100 if percent else 1)
    P = pd.DataFrame(values, index=[f"m{i}" for i in range(n_models)], columns=[f"t{j}" for j in range(n_tasks)])
    P = P.mask(rng.random(P.shape) < 0.1)
    return P, pd.DataFrame({"fact": fact}, index=P.columns)


def test_accuracy_scale_detects_fractions_percent_and_relative_scores():
    P, _ = planted_accuracies(percent=False)
    assert accuracy_scale(P)[0] == 1.0
    assert accuracy_scale(P * 100)[0] == 100.0
    assert accuracy_scale(P * 1000)[0] is None  # beyond 100
    assert accuracy_scale(P - 0.8)[0] is None  # negative: e.g. LogME evidence
    mixed = P.copy()
    mixed.iloc[:, :6] *= 100
    scale, why = accuracy_scale(mixed)
    assert scale is None and "mixes scales" in why


def test_relative_history_gives_no_accuracy_and_says_so():
    P, _ = planted_accuracies()
    model = AccuracyModel().fit(P * 10)  # up to ~990: not an accuracy
    assert not model.available and "relative" in model.note
    ranking = pd.DataFrame({"model": ["m0", "m1"], "score": [1.0, 0.0]})
    out = model.annotate(ranking)
    assert out[list(ACCURACY_COLUMNS)].isna().all(axis=None)
    assert "relative" in out.attrs["accuracy_note"]
    with pytest.raises(InvalidInputError, match="relative"):
        model.predict([0.0])


def test_prediction_is_monotone_in_the_score_and_bounded_by_the_scale():
    P, _ = planted_accuracies()
    model = AccuracyModel().fit(P)
    assert model.available and model.scale == 100.0
    out = model.predict(np.array([-30.0, -1.0, 0.0, 1.0, 30.0]))
    assert out["predicted_accuracy"].is_monotonic_increasing
    assert (out["accuracy_low"] <= out["predicted_accuracy"]).all()
    assert (out["predicted_accuracy"] <= out["accuracy_high"]).all()
    assert out.to_numpy().min() >= 0 and out.to_numpy().max() <= 100
    # z = 0 predicts about the history's median task mean
    assert out["predicted_accuracy"].iloc[2] == pytest.approx(np.median(P.mean()), rel=0.02)


def test_conformal_quantile_is_finite_sample_corrected():
    residuals = np.arange(1, 10, dtype=float)  # n = 9
    assert conformal_quantile(residuals, 0.9) == 9.0  # ceil(10 x 0.9) = 9th
    assert conformal_quantile(residuals, 0.1) == 1.0
    assert conformal_quantile(residuals, 0.5) == 5.0


def test_interval_covers_about_the_nominal_share_of_held_out_cells():
    P, _ = planted_accuracies(n_models=40, n_tasks=20, seed=3)
    per_target = interval_coverage(P, list(P.columns), ev.popularity, level=0.8)
    summary = coverage_summary(per_target)
    assert summary["interval_targets"] == 20
    assert 0.7 <= summary["interval_coverage"] <= 0.92
    wider = coverage_summary(interval_coverage(P, list(P.columns), ev.popularity, level=0.95))
    assert wider["interval_width"] > summary["interval_width"]
    assert wider["interval_coverage"] >= summary["interval_coverage"]


def test_task_facts_are_used_when_they_predict_the_task_level():
    P, facts = planted_accuracies(n_tasks=15, seed=1, facts=True)
    with_facts = AccuracyModel().fit(P, task_meta=facts)
    without = AccuracyModel().fit(P)
    assert with_facts.uses_task_facts_ and "regressed on its facts" in with_facts.note
    easy = with_facts.predict([0.0], {"fact": 2.0})["predicted_accuracy"].iloc[0]
    hard = with_facts.predict([0.0], {"fact": -2.0})["predicted_accuracy"].iloc[0]
    assert easy > hard + 10  # percent points
    width = np.diff(with_facts.predict([0.0])[["accuracy_low", "accuracy_high"]].to_numpy())[0, 0]
    assert width < np.diff(without.predict([0.0])[["accuracy_low", "accuracy_high"]].to_numpy())[0, 0]


def test_loto_popularity_never_sees_the_cell_it_predicts():
    P, _ = planted_accuracies(n_models=5, n_tasks=4)
    z = loto_popularity_z(P)
    changed = P.copy()
    changed.iloc[0, 0] = 1.0  # the cell's own value must not move its prediction
    assert loto_popularity_z(changed).iloc[0, 0] == pytest.approx(z.iloc[0, 0])


def test_thin_history_and_bad_level_are_refused_clearly():
    P, _ = planted_accuracies(n_tasks=2)
    model = AccuracyModel().fit(P)
    assert not model.available and "at least 3 history tasks" in model.note
    with pytest.raises(InvalidInputError, match="level"):
        AccuracyModel(level=80).fit(P)


def test_fitted_model_pickles():
    import pickle

    P, _ = planted_accuracies()
    model = AccuracyModel().fit(P)
    again = pickle.loads(pickle.dumps(model))
    pd.testing.assert_frame_equal(again.predict([0.5]), model.predict([0.5]))


def test_known_scores_anchor_the_task_level_of_a_task_unlike_the_median():
    """A task far harder than the history's median: cold, every model is predicted near the median
    level; told 3 of its accuracies, the others are predicted near their own level, and more known
    scores anchor it more. Fractions told to a percent history do not anchor it, and the note says so."""
    P, facts = planted_accuracies(n_tasks=16, seed=2, facts=True)
    hard = facts["fact"].idxmin()
    model = AccuracyModel().fit(P.drop(columns=hard))  # no facts: the cold level is the median
    truth = P[hard].dropna()
    z = (truth - truth.mean()) / truth.std(ddof=0)  # a perfect ranking: only the level is in question
    rest = truth.index[5:]

    def error(n_known):
        known = (z.iloc[:n_known].to_numpy(), truth.iloc[:n_known].to_numpy()) if n_known else None
        predicted = model.predict(z, known=known)["predicted_accuracy"]
        return float((predicted[rest] - truth[rest]).abs().mean())

    assert truth.mean() < np.median(P.mean()) - 8
    assert error(3) < 0.5 * error(0) and error(5) <= error(3) + 0.5

    ranking = pd.DataFrame({"model": truth.index, "score": z.to_numpy(),
                            "known_score": [*truth.iloc[:3], *[np.nan] * (len(truth) - 3)]})
    anchored = model.annotate(ranking)
    assert "level anchored to its 3 known score(s)" in anchored.attrs["accuracy_note"]
    np.testing.assert_allclose(anchored["predicted_accuracy"][3:],
                               model.predict(z, known=(z.iloc[:3].to_numpy(), truth.iloc[:3].to_numpy()))
                               ["predicted_accuracy"][3:])
    for column in ("predicted_accuracy", "accuracy_low", "accuracy_high"):  # measured: shown as measured
        np.testing.assert_allclose(anchored[column][:3], truth.iloc[:3])
    fractions = ranking.assign(known_score=ranking["known_score"] / 100)
    unanchored = model.annotate(fractions)
    assert "look like fractions" in unanchored.attrs["accuracy_note"]
    np.testing.assert_allclose(unanchored["predicted_accuracy"][3:], model.predict(z)["predicted_accuracy"][3:])
    assert unanchored["predicted_accuracy"][:3].isna().all()  # told off the history's scale: not shown as measured


def test_known_scores_narrow_the_interval_to_the_level_they_leave_uncertain():
    """Known scores pin down the task's level, most of an interval's width: more of them, a narrower
    interval (and never a wider one than cold); held out, it still holds about its nominal share."""
    P, _ = planted_accuracies(n_tasks=16, seed=2)
    target = P.columns[0]
    model = AccuracyModel().fit(P.drop(columns=target))
    z = np.linspace(-1.5, 1.5, 9)
    cold = model.predict(z)
    widths = []
    for n in (1, 3, 5):  # told exactly what was predicted: the level stays, only its uncertainty shrinks
        told = model.predict(z, known=(z[:n], cold["predicted_accuracy"].to_numpy()[:n]))
        np.testing.assert_allclose(told["predicted_accuracy"], cold["predicted_accuracy"])
        widths.append(float((told["accuracy_high"] - told["accuracy_low"]).mean()))
    cold_width = float((cold["accuracy_high"] - cold["accuracy_low"]).mean())
    assert cold_width > widths[0] > widths[1] > widths[2]

    inside = []
    for target in P.columns:  # each task held out, told 3 of its accuracies, judged on the others
        history = P.drop(columns=target)
        model = AccuracyModel().fit(history)
        truth = P[target].dropna()
        predicted_z = loto_popularity_z(P).loc[truth.index, target].fillna(0.0).to_numpy()
        predicted = model.predict(predicted_z[3:], known=(predicted_z[:3], truth.to_numpy()[:3]))
        inside.extend((truth.to_numpy()[3:] >= predicted["accuracy_low"]) & (truth.to_numpy()[3:] <= predicted["accuracy_high"]))
    assert 0.65 <= np.mean(inside) <= 0.95

