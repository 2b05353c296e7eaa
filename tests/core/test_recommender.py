"""The Fennec recommender on planted problems whose answers are known."""
import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from fennec_mlflow.core import recommender
from fennec_mlflow.core.recommender import (
    POSTERIOR_CHECK_MIN_TASKS,
    POSTERIOR_SLOPE_MIN_KNOWN,
    RANKING_COLUMNS,
    Fennec,
    behaviour_digest,
    leave_one_out_bias,
    leave_one_task_out_meta,
    masked_nmf,
    normalize_tasks,
    posterior_check_gains,
    posterior_mean,
)
from fennec_mlflow.errors import InvalidInputError

HELD_OUT = ["new_a", "new_b", "new_c"]


def planted(seed=0, n_models=40, n_tasks=60, noise=0.01, informative_proxy=True):
    """Models (u, 1-u, v) and tasks (a, 1-a, b): most tasks (a ~ Beta(2, 1)) prefer large u, the
    held-out ones (a = 0.1..0.2) prefer small u, so a model's popularity is the wrong answer there.
    The proxy features are a non-linear function of (a, b) plus a noise column, or pure noise."""
    rng = np.random.default_rng(seed)
    u, v = rng.uniform(0, 1, n_models), rng.uniform(0, 1, n_models)
    a = np.concatenate([rng.beta(2, 1, n_tasks), [0.1, 0.15, 0.2]])
    b = np.concatenate([rng.uniform(0, 1, n_tasks), [0.1, 0.05, 0.15]])
    models = [f"model_{i}" for i in range(n_models)]
    tasks = [f"task_{j}" for j in range(n_tasks)] + HELD_OUT
    scores = np.column_stack([u, 1 - u, v]) @ np.column_stack([a, 1 - a, b]).T
    scores += noise * rng.normal(size=scores.shape)
    P = pd.DataFrame(100 * scores, index=models, columns=tasks)  # accuracy-like, in %
    if informative_proxy:
        proxy = np.column_stack([a ** 2, np.exp(b), rng.normal(size=a.size)])
    else:
        proxy = rng.normal(size=(a.size, 3))
    task_proxy = pd.DataFrame(proxy, index=tasks, columns=["g0", "g1", "g2"])
    task_meta = pd.DataFrame({"class_count": rng.integers(2, 200, a.size),
                              "sample_count": rng.integers(500, 50000, a.size)}, index=tasks)
    model_meta = pd.DataFrame({"parameters": rng.uniform(1, 100, n_models),
                               "family_cnn": rng.integers(0, 2, n_models)}, index=models)
    return P, model_meta, task_meta, task_proxy


def training_part(P, model_meta, task_meta, task_proxy):
    train = [t for t in P.columns if t not in HELD_OUT]
    return P[train], model_meta, task_meta.loc[train], task_proxy.loc[train]


def pearson(ranking, truth):
    scores = ranking.set_index("model")["score"]
    return pearsonr(scores.loc[truth.index], truth)[0]


def popularity(P):
    """A model's mean z-scored score over the historical tasks."""
    return ((P - P.mean()) / P.std(ddof=0)).mean(axis=1)


@pytest.fixture(scope="module")
def problem():
    return planted()


@pytest.fixture(scope="module")
def fitted(problem):
    return Fennec(k=3, alpha=0.0, n_estimators=50).fit(*training_part(*problem))


# ---------------------------------------------------------------- transfer phase
def low_rank_with_holes(seed=0, hole_fraction=0.25):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0, 1, (60, 3)) @ rng.uniform(0, 1, (40, 3)).T
    return truth, rng.random(truth.shape) >= hole_fraction


def test_masked_nmf_recovers_planted_low_rank_matrix_on_held_out_cells():
    truth, observed = low_rank_with_holes()
    model_vectors, task_vectors, _ = masked_nmf(truth, observed, k=3, l2=1e-4, max_iter=3000, tol=1e-9)
    holes = ~observed
    error = np.sqrt(np.mean((model_vectors @ task_vectors.T - truth)[holes] ** 2))
    column_mean = np.nanmean(np.where(observed, truth, np.nan), axis=0)
    baseline = np.sqrt(np.mean((np.broadcast_to(column_mean, truth.shape) - truth)[holes] ** 2))
    assert error < 0.05 * baseline


def test_masked_nmf_objective_never_increases_and_converges():
    truth, observed = low_rank_with_holes(seed=1)
    _, _, history = masked_nmf(truth, observed, k=3, l2=0.1, max_iter=5000, tol=1e-6)
    assert np.all(np.diff(history) <= 1e-10 * history[:-1])
    assert len(history) - 1 < 5000  # stopped on the tolerance, not the cap
    assert (history[-2] - history[-1]) <= 1e-6 * history[-2]
    assert history[-1] < 0.05 * history[0]


def test_unobserved_cells_never_enter_the_fit():
    truth, observed = low_rank_with_holes(seed=2)
    junk_a = np.where(observed, truth, 0.0)
    junk_b = np.where(observed, truth, 1e6)
    fit_a = masked_nmf(junk_a, observed, k=3, l2=0.1, max_iter=200)
    fit_b = masked_nmf(junk_b, observed, k=3, l2=0.1, max_iter=200)
    for part_a, part_b in zip(fit_a, fit_b):
        np.testing.assert_array_equal(part_a, part_b)


def test_fit_with_holes_ignores_them_and_reconstructs_on_p_scale(problem):
    P, model_meta, task_meta, task_proxy = training_part(*problem)
    holed = P.mask(np.random.default_rng(0).random(P.shape) < 0.2)
    model = Fennec(k=3, n_estimators=20).fit(holed, model_meta, task_meta, task_proxy)
    assert model.n_iter_ == len(model.objective_history_) - 1 < model.nmf_max_iter
    reconstruction = model.predict_matrix()
    assert reconstruction.shape == P.shape and list(reconstruction.index) == list(P.index)
    holes = holed.isna().to_numpy()
    error = np.abs(reconstruction.to_numpy() - P.to_numpy())[holes].mean()
    assert error < 0.2 * np.abs(P.to_numpy() - P.to_numpy().mean(axis=0)).mean()
    normalised = model.predict_matrix(normalized=True).to_numpy()
    expected, *_ = normalize_tasks(holed.to_numpy())
    assert np.nanmean(np.abs(normalised - expected)) < 0.1


# ---------------------------------------------------------------- ranking
def test_ranking_from_proxy_beats_popularity_where_popularity_is_wrong(problem, fitted):
    P = problem[0]
    train = P.drop(columns=HELD_OUT)
    for task in HELD_OUT:
        truth = P[task]
        ranking = fitted.rank(problem[2].loc[task], problem[3].loc[task])
        assert pearson(ranking, truth) > 0.8
        assert pearsonr(popularity(train).loc[truth.index], truth)[0] < 0.0
        assert ranking.iloc[0]["model"] in truth.nlargest(5).index


def test_fast_single_task_forest_prediction_equals_scikit_learn(problem, fitted):
    for task in HELD_OUT:
        features = problem[3].loc[task].to_numpy()
        expected = fitted.task_regressor_.predict(features[None, :])[0]
        np.testing.assert_allclose(fitted.task_vector(task_proxy_row=features), expected, rtol=1e-12)
    one = Fennec(k=1, alpha=0.0, n_estimators=5).fit(*training_part(*problem))
    features = problem[3].loc["new_a"].to_numpy()
    np.testing.assert_allclose(one.task_vector(task_proxy_row=features), one.task_regressor_.predict(features[None, :]))
    del one.flat_forest_  # a model pickled before the flat forest existed builds it on first use
    np.testing.assert_allclose(one.task_vector(task_proxy_row=features), one.task_regressor_.predict(features[None, :]))


def test_flat_forest_walks_deep_trees_like_scikit_learn():
    from sklearn.ensemble import RandomForestRegressor

    from fennec_mlflow.core.recommender import FlatForest

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 7)), rng.normal(size=(300, 3))
    forest = RandomForestRegressor(n_estimators=25, random_state=0).fit(X, y)
    flat = FlatForest(forest)
    for sample in rng.normal(size=(20, 7)):
        np.testing.assert_allclose(flat.predict_one(sample), forest.predict(sample[None, :])[0], rtol=1e-12)


def test_ranking_table_shape_order_and_candidates(problem, fitted):
    ranking = fitted.rank(task_proxy_row=problem[3].loc["new_a"])
    assert list(ranking.columns) == RANKING_COLUMNS == [
        "model", "score", "bias_score", "transfer_score", "meta_score", "known_score", "rank"]
    assert ranking["rank"].tolist() == list(range(1, len(problem[0]) + 1))
    assert ranking["score"].is_monotonic_decreasing and ranking["known_score"].isna().all()
    subset = ["model_3", "model_7", "model_1"]
    restricted = fitted.rank(task_proxy_row=problem[3].loc["new_a"].to_numpy(), models=subset)
    assert sorted(restricted["model"]) == sorted(subset)
    full_order = [m for m in ranking["model"] if m in subset]
    assert restricted["model"].tolist() == full_order


def test_paper_alpha_zero_ignores_meta_and_alpha_one_ignores_transfer(problem):
    P, model_meta, task_meta, task_proxy = training_part(*problem)
    proxy_a, proxy_b = problem[3].loc["new_a"], problem[3].loc["task_0"]
    meta_a, meta_b = problem[2].loc["new_a"], problem[2].loc["new_a"] * [50, 0.01]

    transfer = Fennec.transfer_only(k=3, n_estimators=20, formulation="paper").fit(P, model_meta, task_meta, task_proxy)
    first, second = transfer.rank(meta_a, proxy_a), transfer.rank(meta_b, proxy_a)
    assert not np.allclose(first.sort_values("model")["meta_score"], second.sort_values("model")["meta_score"])
    pd.testing.assert_frame_equal(first.drop(columns="meta_score"), second.drop(columns="meta_score"))

    meta = Fennec.meta_only(k=3, n_estimators=20, formulation="paper").fit(P, model_meta, task_meta, task_proxy)
    first, second = meta.rank(meta_a, proxy_a), meta.rank(meta_a, proxy_b)
    assert not np.allclose(first.sort_values("model")["transfer_score"],
                           second.sort_values("model")["transfer_score"])
    pd.testing.assert_frame_equal(first.drop(columns="transfer_score"), second.drop(columns="transfer_score"))
    np.testing.assert_allclose(first["score"], first["meta_score"])


def test_paper_merge_mixes_unit_scaled_scores_with_alpha(problem):
    P, model_meta, task_meta, task_proxy = training_part(*problem)
    model = Fennec.paper(k=3, alpha=0.3, n_estimators=20).fit(P, model_meta, task_meta, task_proxy)
    ranking = model.rank(problem[2].loc["new_b"], problem[3].loc["new_b"])
    for column in ("transfer_score", "meta_score"):
        assert abs(ranking[column].mean()) < 1e-9 and abs(ranking[column].std(ddof=0) - 1) < 1e-9
    np.testing.assert_allclose(ranking["score"], 0.7 * ranking["transfer_score"] + 0.3 * ranking["meta_score"])


def test_meta_interactions_let_task_facts_reorder_models():
    """p_ij = x_i * y_j: only a model-fact x task-fact product can rank tasks with y < 0 and y > 0 right."""
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-1, 1, 30), np.concatenate([rng.uniform(-1, 1, 25), [-0.8, 0.8]])
    models, tasks = [f"m{i}" for i in range(30)], [f"t{j}" for j in range(27)]
    P = pd.DataFrame(np.outer(x, y) + 0.01 * rng.normal(size=(30, 27)), index=models, columns=tasks)
    model_meta = pd.DataFrame({"x": x, "size": rng.uniform(size=30)}, index=models)
    task_meta = pd.DataFrame({"y": y, "classes": rng.uniform(size=27)}, index=tasks)
    train = tasks[:-2]
    rankings = {}
    for interactions in (True, False):
        model = Fennec.meta_only(k=2, n_estimators=10, meta_interactions=interactions, task_bandwidth=None)
        model.fit(P[train], model_meta, task_meta.loc[train])
        rankings[interactions] = [model.rank(task_meta.loc[t]) for t in tasks[-2:]]
    assert all(pearson(ranking, P[t]) > 0.95 for ranking, t in zip(rankings[True], tasks[-2:]))
    # Additive only: both tasks get the same order, so the task with y < 0 is ranked backwards.
    assert rankings[False][0]["model"].tolist() == rankings[False][1]["model"].tolist()
    assert pearson(rankings[False][0], P[tasks[-2]]) < -0.9


def test_a_task_every_tree_drew_has_no_out_of_bag_view():
    """scikit-learn predicts 0 out of bag for a task no tree left out; the shrinkage must not read
    that as the task's held-out vector: it is NaN (no view), and the others are the trees' mean."""
    from fennec_mlflow.core.recommender import _fit_transfer
    rng = np.random.default_rng(2)
    values, features = rng.uniform(0.5, 1.0, size=(12, 6)), rng.normal(size=(6, 3))
    part = _fit_transfer(values, np.ones(values.shape, bool), features, k=2, l2=0.0, max_iter=200, tol=1e-6,
                         random_state=0, n_trees=1, out_of_bag=True)
    drawn = np.isin(np.arange(6), part.regressor.estimators_samples_[0])
    assert drawn.any() and (~drawn).any()
    assert np.isnan(part.out_of_bag_vectors[drawn]).all()
    np.testing.assert_allclose(part.out_of_bag_vectors[~drawn], part.regressor.predict(features[~drawn]))


@pytest.mark.parametrize("n_models, n_tasks", [(60, 8), (2, 8)])  # fewer design columns than cells, and more
def test_leave_one_task_out_meta_is_the_ridge_fitted_without_each_task(n_models, n_tasks):
    """The shrinkage's held-out meta interaction: folds by subtraction from the whole's normal
    equations (many cells) or fitted one by one (few) give scikit-learn's Ridge without the task."""
    from sklearn.linear_model import Ridge
    rng = np.random.default_rng(5)
    model_rows, task_rows = rng.normal(size=(n_models, 4)), rng.normal(size=(n_tasks, 3))
    observed = rng.random((n_models, n_tasks)) > 0.2
    values = np.where(observed, rng.normal(size=(n_models, n_tasks)), np.nan)
    held_out = leave_one_task_out_meta(model_rows, task_rows, values, observed, l2=0.5, interactions=True)
    for j in range(n_tasks):
        others = [t for t in range(n_tasks) if t != j]
        rows, cols = np.nonzero(observed[:, others])
        design = np.hstack([model_rows[rows], task_rows[others][cols],
                            np.einsum("ca,cb->cab", model_rows[rows], task_rows[others][cols]).reshape(len(rows), -1)])
        ridge = Ridge(alpha=0.5).fit(design, values[:, others][rows, cols])
        weights = ridge.coef_[7:].reshape(4, 3)
        expected = model_rows @ weights @ (task_rows[j] - task_rows[others].mean(axis=0))
        np.testing.assert_allclose(held_out[j], expected, atol=1e-9)


def test_without_proxy_the_task_vector_comes_from_task_meta(problem):
    P, model_meta, task_meta, _ = training_part(*problem)
    model = Fennec.paper(k=3, alpha=0.0, n_estimators=20).fit(P, model_meta, task_meta)
    assert model.task_vector_source_ == "task_meta"
    ranking = model.rank(problem[2].loc["new_a"])
    assert len(ranking) == len(P)
    with pytest.raises(ValueError, match="needs task_meta_row"):
        model.rank(task_proxy_row=problem[3].loc["new_a"])


def test_without_model_meta_there_is_no_meta_phase(problem):
    P, _, task_meta, task_proxy = training_part(*problem)
    with pytest.warns(UserWarning, match="no meta phase"):
        model = Fennec.paper(k=3, n_estimators=20).fit(P, None, task_meta, task_proxy)
    ranking = model.rank(problem[2].loc["new_a"], problem[3].loc["new_a"])
    assert ranking["meta_score"].isna().all()
    np.testing.assert_allclose(ranking["score"], ranking["transfer_score"])
    with pytest.raises(ValueError, match="alpha=1"):
        Fennec.meta_only(k=3, formulation="paper").fit(P, None, task_meta, task_proxy)


def test_a_task_with_no_fact_known_is_ranked_by_popularity_and_said_so(problem):
    """A request with no class count, size or domain: nothing says which history tasks it resembles."""
    P, model_meta, task_meta, _ = training_part(*problem)
    model = Fennec(k=3, n_estimators=20, shrinkage=0.9).fit(P, model_meta, task_meta)
    unknown = pd.Series(np.nan, index=task_meta.columns)
    ranking = model.rank(unknown)
    assert ranking.attrs["basis"] == "popularity (no task information)"
    np.testing.assert_allclose(ranking.set_index("model")["score"].loc[model.model_names_], model.bias_)
    assert "similar tasks" in model.rank(problem[2].loc["new_a"]).attrs["basis"]


def test_model_facts_alike_for_every_model_are_no_meta_phase(problem):
    """An imported table's models known by name alone get a constant fact column from the store: a
    meta weight on it would be named in the basis while moving nothing."""
    P, _, task_meta, task_proxy = training_part(*problem)
    alike = pd.DataFrame({"arch_0": 0.0, "log_parameters": 3.0}, index=P.index)
    with pytest.warns(UserWarning, match="the same for every model: no meta phase"):
        model = Fennec(k=3, n_estimators=20, shrinkage=0.9).fit(P, alike, task_meta, task_proxy)
    assert not model.has_meta_ and model.meta_weight_ == 0.0
    ranking = model.rank(problem[2].loc["new_a"], problem[3].loc["new_a"])
    assert "meta" not in ranking.attrs["basis"]
    with pytest.raises(ValueError, match="differs between models"):
        Fennec.meta_only(k=3, formulation="paper").fit(P, alike, task_meta, task_proxy)


# ---------------------------------------------------------------- warm start
def test_paper_warm_start_improves_on_cold_start_when_the_proxy_says_little():
    P, model_meta, task_meta, task_proxy = planted(seed=4, informative_proxy=False)
    model = Fennec.paper(k=3, alpha=0.0, n_estimators=20, warm_start_prior=3.0)
    model.fit(*training_part(P, model_meta, task_meta, task_proxy))
    rng = np.random.default_rng(0)
    cold, warm, cautious = [], [], []
    for task in HELD_OUT:
        known_models = rng.choice(P.index, size=4, replace=False)
        known = {m: float(P.loc[m, task]) for m in known_models}
        rest = P[task].drop(known_models)
        cold.append(pearson(model.rank(task_proxy_row=task_proxy.loc[task]), rest))
        ranking = model.rank(task_proxy_row=task_proxy.loc[task], known_scores=known)
        warm.append(pearson(ranking, rest))
        assert ranking.set_index("model").loc[list(known), "known_score"].tolist() == list(known.values())
        model.warm_start_prior = 100.0  # the cold estimate outweighs four entries: little changes
        cautious.append(pearson(model.rank(task_proxy_row=task_proxy.loc[task], known_scores=known), rest))
        model.warm_start_prior = 3.0
    assert np.mean(warm) > np.mean(cold) + 0.3 and min(warm) > 0.6, (cold, warm)
    assert np.mean(cold) < np.mean(cautious) < np.mean(warm) - 0.3, (cold, cautious, warm)


def test_fold_in_recovers_held_out_column_from_three_entries(problem, fitted):
    P = problem[0]
    for task in HELD_OUT:
        known_models = ["model_0", "model_1", "model_2"]
        predicted = fitted.fold_in({m: P.loc[m, task] for m in known_models})
        rest = P[task].drop(known_models)
        error = np.sqrt(np.mean((predicted.loc[rest.index] - rest) ** 2))
        column_mean_error = rest.std(ddof=0)  # even the true column mean is worse
        assert error < 0.5 * column_mean_error


def test_warm_start_with_too_little_information_ranks_cold(problem, fitted):
    proxy = problem[3].loc["new_a"]
    cold = fitted.rank(task_proxy_row=proxy)
    with pytest.warns(UserWarning, match="at least two different values"):
        one = fitted.rank(task_proxy_row=proxy, known_scores={"model_0": 80.0})
    pd.testing.assert_frame_equal(cold.drop(columns="known_score"), one.drop(columns="known_score"))


# ---------------------------------------------------------------- state
def test_same_random_state_same_fit_and_pickle_round_trip(problem):
    parts = training_part(*problem)
    first = Fennec(k=3, n_estimators=20, random_state=7).fit(*parts)
    second = Fennec(k=3, n_estimators=20, random_state=7).fit(*parts)
    other = clone(first).set_params(random_state=8).fit(*parts)
    assert other.get_params()["k"] == 3 and not hasattr(clone(first), "model_vectors_")
    np.testing.assert_array_equal(first.model_vectors_, second.model_vectors_)
    assert not np.array_equal(first.model_vectors_, other.model_vectors_)
    row = (problem[2].loc["new_c"], problem[3].loc["new_c"])
    known = {"model_5": 70.0, "model_9": 40.0, "model_11": 55.0}
    expected = first.rank(*row, known_scores=known)
    pd.testing.assert_frame_equal(second.rank(*row, known_scores=known), expected)
    restored = pickle.loads(pickle.dumps(first))
    pd.testing.assert_frame_equal(restored.rank(*row, known_scores=known), expected)


# ---------------------------------------------------------------- bad input
def test_bad_inputs_get_clear_errors(problem):
    P, model_meta, task_meta, task_proxy = training_part(*problem)
    small = Fennec(k=3, n_estimators=5)
    with pytest.raises(ValueError, match="pandas DataFrame"):
        small.fit(P.to_numpy(), model_meta, task_meta, task_proxy)
    with pytest.raises(ValueError, match=r"model_meta lacks rows .*model_0"):
        small.fit(P, model_meta.drop(index="model_0"), task_meta, task_proxy)
    with pytest.raises(ValueError, match=r"task_proxy lacks rows .*task_1"):
        small.fit(P, model_meta, task_meta, task_proxy.drop(index="task_1"))
    holed = P.copy()
    holed.loc["model_4"] = np.nan
    with pytest.raises(ValueError, match=r"all-NaN rows.*model_4"):
        small.fit(holed, model_meta, task_meta, task_proxy)
    holed = P.copy()
    holed["task_2"] = np.nan
    with pytest.raises(ValueError, match=r"all-NaN columns.*task_2"):
        small.fit(holed, model_meta, task_meta, task_proxy)
    with pytest.raises(ValueError, match=r"k=5 must be below min\(models, tasks\) = min\(40, 5\)"):
        Fennec(k=5).fit(P.iloc[:, :5], model_meta, task_meta, task_proxy)
    with pytest.warns(ConvergenceWarning, match="nmf_max_iter=3"):
        Fennec(k=3, nmf_max_iter=3, n_estimators=5).fit(P, model_meta, task_meta, task_proxy)
    with pytest.raises(ValueError, match="alpha must lie in"):
        Fennec(alpha=1.5).fit(P, model_meta, task_meta, task_proxy)
    with pytest.raises(ValueError, match="non-numeric"):
        small.fit(P, model_meta.assign(family="cnn"), task_meta, task_proxy)
    with pytest.raises(ValueError, match="NaN or infinite"):
        small.fit(P, model_meta.assign(depth=np.nan), task_meta, task_proxy)
    with pytest.raises(ValueError, match=r"task_meta has infinite values in column\(s\) \['class_count'\]"):
        small.fit(P, model_meta, task_meta.assign(class_count=np.inf), task_proxy)  # NaN: a fact not known
    with pytest.raises(ValueError, match="not fitted"):
        small.rank(task_meta.iloc[0], task_proxy.iloc[0])

    model = small.fit(P, model_meta, task_meta, task_proxy)
    meta_row, proxy_row = problem[2].loc["new_a"], problem[3].loc["new_a"]
    with pytest.raises(ValueError, match=r"not fitted on: \['nope'\]"):
        model.rank(meta_row, proxy_row, models=["model_1", "nope"])
    with pytest.raises(ValueError, match=r"not fitted on: \['ghost'\]"):
        model.rank(meta_row, proxy_row, known_scores={"ghost": 1.0, "model_1": 2.0})
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['sample_count'\]"):
        model.rank(meta_row.drop("sample_count"), proxy_row)
    with pytest.raises(ValueError, match=r"has 2 values; the model was fitted with 3"):
        model.rank(meta_row, proxy_row.to_numpy()[:2])
    with pytest.raises(ValueError, match="g1"):
        model.rank(meta_row, proxy_row.replace(proxy_row["g1"], np.nan))


# ---------------------------------------------------------------- shrunk formulation (the default)
def test_without_task_information_the_ranking_is_popularity(problem):
    P = training_part(*problem)[0]
    model = Fennec().fit(P)
    ranking = model.rank()
    expected = popularity(P).sort_values(ascending=False)
    assert ranking["model"].tolist() == expected.index.tolist()
    np.testing.assert_allclose(ranking["score"], expected.to_numpy())
    assert ranking.attrs["basis"] == "popularity (no task information)"


def test_shrunk_score_is_bias_plus_weighted_interactions(problem):
    P, model_meta, task_meta, task_proxy = training_part(*problem)
    model = Fennec(k=3, n_estimators=50, task_bandwidth=None).fit(P, model_meta, task_meta, task_proxy)
    assert 0 <= model.transfer_weight_ <= 1 and 0 <= model.meta_weight_ <= 1
    ranking = model.rank(problem[2].loc["new_a"], problem[3].loc["new_a"])
    np.testing.assert_allclose(ranking["score"], ranking["bias_score"] + ranking["transfer_score"] + ranking["meta_score"])
    np.testing.assert_allclose(ranking.set_index("model")["bias_score"], popularity(P).loc[ranking["model"]])
    assert ranking.attrs["basis"].startswith("popularity + ")
    # The default bias is popularity among tasks with similar facts: the same sum, another bias.
    similar = Fennec(k=3, n_estimators=50).fit(P, model_meta, task_meta, task_proxy)
    ranking = similar.rank(problem[2].loc["new_a"], problem[3].loc["new_a"])
    np.testing.assert_allclose(ranking["score"], ranking["bias_score"] + ranking["transfer_score"] + ranking["meta_score"])
    assert ranking.attrs["basis"].startswith("popularity among similar tasks")


def test_basis_says_when_a_weighted_part_moves_no_shown_score(problem):
    """A weight too small to show in the score columns is named with that fact, not as a contradiction."""
    P, model_meta, task_meta, task_proxy = training_part(*problem)
    new_task = problem[2].loc["new_a"], problem[3].loc["new_a"]
    tiny = Fennec(k=3, n_estimators=50, shrinkage=1e-6).fit(P, model_meta, task_meta, task_proxy).rank(*new_task)
    assert np.abs(tiny[["transfer_score", "meta_score"]].to_numpy()).max() < 0.0005
    assert tiny.attrs["basis"].count("(under 0.0005 for every model shown)") == 2
    full = Fennec(k=3, n_estimators=50, shrinkage=1.0).fit(P, model_meta, task_meta, task_proxy).rank(*new_task)
    assert "under 0.0005" not in full.attrs["basis"] and " x transfer" in full.attrs["basis"]


def test_an_informative_proxy_earns_a_large_weight_and_beats_popularity(problem):
    """The planted history is well sampled (60 tasks): the out-of-bag slope over popularity is large and
    certain. Over popularity among tasks with a similar proxy, which already follows the proxy, it is smaller."""
    P, model_meta, task_meta, task_proxy = problem
    over_popularity = Fennec(k=3, alpha=0.0, n_estimators=50, task_bandwidth=None).fit(*training_part(*problem))
    assert over_popularity.transfer_weight_ > 0.8
    model = Fennec(k=3, alpha=0.0, n_estimators=50).fit(*training_part(*problem))
    assert 0.3 < model.transfer_weight_ < over_popularity.transfer_weight_
    for task in HELD_OUT:
        ranking = model.rank(task_proxy_row=task_proxy.loc[task])
        assert pearson(ranking, P[task]) > np.corrcoef(popularity(P.drop(columns=HELD_OUT)), P[task])[0, 1] + 0.5


def test_a_published_tables_few_tasks_give_the_transfer_its_slope_when_the_facts_predict_it():
    """11 tasks, as a published table has, whose class count moves every model's score (a fine-grained
    task favours other models than a coarse one): the slope over popularity is 0.3 to 0.9 on 10 history
    tasks but too uncertain for a lower bound. The default weighs the transfer by the slope, shrunk by how
    surely the history gains from it, and over 8 such tables ranks the held-out tasks above popularity."""
    weights, fennec, popular = [], [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        fact, level, sensitivity = rng.normal(size=11), rng.normal(size=12), rng.normal(size=12)
        P = pd.DataFrame(80 + 5 * (level[:, None] + sensitivity[:, None] * np.tanh(fact)[None, :]
                                   + 0.6 * rng.normal(size=(12, 11))),
                         index=[f"m{i}" for i in range(12)], columns=[f"t{j}" for j in range(11)])
        facts = pd.DataFrame({"log_class_count": fact, "unrelated": rng.normal(size=11)}, index=P.columns)
        history = P.drop(columns="t0")
        model = Fennec().fit(history, task_meta=facts.drop(index="t0"))
        weights.append(model.transfer_weight_)
        fennec.append(pearson(model.rank(facts.loc["t0"]), P["t0"]))
        popular.append(np.corrcoef(popularity(history), P["t0"])[0, 1])
    assert sum(weight > 0 for weight in weights) >= 5 and max(weights) > 0.5
    assert np.mean(fennec) > np.mean(popular) + 0.02


def test_a_history_too_small_to_vouch_for_an_interaction_gives_it_no_weight(problem):
    """The planted proxy predicts every task's pattern, yet 7 history tasks are too few for the check:
    on small tables, weights that passed it from 3 tasks on lost up to 27 Pearson points. 8 earn it."""
    P, model_meta, task_meta, task_proxy = training_part(*problem)
    weights = {}
    for n_tasks in (7, 8):
        tasks = P.columns[35:35 + n_tasks]  # 7 tasks on which a check from 3 tasks on gives the transfer 0.69
        model = Fennec(k=2, alpha=0.5, n_estimators=50).fit(P[tasks], model_meta, task_meta.loc[tasks],
                                                            task_proxy.loc[tasks])
        weights[n_tasks] = (model.transfer_weight_, model.meta_weight_)
    assert weights[7] == (0.0, 0.0) and max(weights[8]) > 0.0, weights


def test_an_uninformative_proxy_earns_a_small_weight():
    P, model_meta, task_meta, task_proxy = planted(seed=2, informative_proxy=False)
    model = Fennec(k=3, alpha=0.0, n_estimators=50).fit(*training_part(P, model_meta, task_meta, task_proxy))
    informative = Fennec(k=3, alpha=0.0, n_estimators=50).fit(*training_part(*planted(seed=2)))
    assert model.transfer_weight_ < informative.transfer_weight_ - 0.3


def test_noise_task_facts_on_a_small_history_give_exactly_popularity():
    """7 tasks whose facts say nothing: the interactions cannot prove themselves, the answer is popularity."""
    P, model_meta, task_meta, task_proxy = planted(seed=3, informative_proxy=False)
    tasks = P.columns[:7]
    noise = pd.DataFrame(np.random.default_rng(0).normal(size=(len(tasks), 3)), index=tasks, columns=["a", "b", "c"])
    model = Fennec(k=2, n_estimators=50, task_bandwidth=None).fit(P[tasks], model_meta, noise)
    assert model.transfer_weight_ == 0.0 and model.meta_weight_ == 0.0
    ranking = model.rank(noise.iloc[0])
    assert ranking["model"].tolist() == popularity(P[tasks]).sort_values(ascending=False).index.tolist()
    assert "no task-specific interaction: 7 history tasks are too few to vouch for one" in ranking.attrs["basis"]
    # By default the noise facts reweigh the history tasks, within the kernel's floor: near popularity.
    similar = Fennec(k=2, n_estimators=50).fit(P[tasks], model_meta, noise)
    assert similar.transfer_weight_ == 0.0 and similar.meta_weight_ == 0.0
    scores = similar.rank(noise.iloc[0]).set_index("model")["score"]
    assert spearmanr(scores.loc[P.index], popularity(P[tasks]).loc[P.index])[0] > 0.9


def test_posterior_warm_start_helps_and_more_known_scores_help_more():
    P, model_meta, task_meta, task_proxy = planted(seed=4, informative_proxy=False)
    model = Fennec(k=3, alpha=0.0, n_estimators=50).fit(*training_part(P, model_meta, task_meta, task_proxy))
    rng = np.random.default_rng(0)
    by_known = {0: [], 3: [], 8: []}
    for task in HELD_OUT:
        for _ in range(5):
            order = rng.permutation(P.index)
            rest = P[task].drop(order[:8])  # the same unseen models for every n
            for n in by_known:
                known = {m: float(P.loc[m, task]) for m in order[:n]} or None
                by_known[n].append(pearson(model.rank(task_proxy_row=task_proxy.loc[task], known_scores=known), rest))
    means = {n: np.mean(v) for n, v in by_known.items()}
    assert means[3] > means[0] + 0.2 and means[8] >= means[3], means
    ranking = model.rank(task_proxy_row=task_proxy.loc["new_a"], known_scores={"model_0": 10.0, "model_1": 20.0})
    assert "warm start from 2 known scores" in ranking.attrs["basis"]


def test_warm_start_posterior_is_unit_free_and_unmatched_levels_are_ignored(problem):
    """Known scores in another unit than the history's (fractions told to a history in %) match no
    history task's level, so they move the ranking only through the posterior, which reads their
    relative spread: any offset and scale give the same ranking."""
    P, model_meta, task_meta, task_proxy = planted(seed=4, informative_proxy=False)
    model = Fennec(k=3, alpha=0.0, n_estimators=20).fit(*training_part(P, model_meta, task_meta, task_proxy))
    known = {m: float(P.loc[m, "new_b"]) for m in ["model_0", "model_5", "model_9", "model_12"]}
    rankings = [model.rank(task_proxy_row=task_proxy.loc["new_b"],
                           known_scores={m: v / 100 + offset for m, v in known.items()})
                for offset in (0.0, 3.0)]
    assert rankings[0]["model"].tolist()[:10] == rankings[1]["model"].tolist()[:10]
    assert all("known models match" not in ranking.attrs["basis"] for ranking in rankings)


def level_clusters(n_easy: int, n_hard: int, seed: int = 0):
    """Two kinds of task, each with its own accuracy level and model order: easy ones (~90 %) rank
    the models by u, hard ones (~50 %) by an unrelated w. Easy tasks are the majority, so
    popularity ranks by u; the held-out task ``hard_new`` is a hard one."""
    rng = np.random.default_rng(seed)
    n_models = 30
    u, w = rng.uniform(0, 1, n_models), rng.uniform(0, 1, n_models)
    easy = 85 + 10 * u[:, None] + 0.5 * rng.normal(size=(n_models, n_easy))
    hard = 45 + 10 * w[:, None] + 0.5 * rng.normal(size=(n_models, n_hard + 1))
    columns = [f"easy_{j}" for j in range(n_easy)] + [f"hard_{j}" for j in range(n_hard)] + ["hard_new"]
    P = pd.DataFrame(np.hstack([easy, hard]), index=[f"m{i}" for i in range(n_models)], columns=columns)
    return P, pd.Series(w, index=P.index)


def test_warm_start_follows_the_history_tasks_whose_known_scores_match():
    """Three known scores at the hard tasks' level make the ranking follow the hard tasks (w),
    though popularity follows the easy majority (u) and no task information is given."""
    P, w = level_clusters(n_easy=14, n_hard=8)
    model = Fennec().fit(P.drop(columns="hard_new"))
    known_models = ["m0", "m1", "m2"]
    warm = model.rank(known_scores={m: float(P.at[m, "hard_new"]) for m in known_models}).set_index("model")
    cold = model.rank().set_index("model")
    rest = w.index.drop(known_models)
    assert "known models match" in warm.attrs["basis"]
    assert spearmanr(warm.loc[rest, "score"], w[rest])[0] > 0.9
    assert spearmanr(cold.loc[rest, "score"], w[rest])[0] < 0.5


def test_warm_start_level_step_needs_enough_history_tasks():
    """With fewer history tasks than KNOWN_LEVEL_MIN_TASKS the history cannot vouch for the step:
    the warm start is the posterior alone."""
    P, _ = level_clusters(n_easy=5, n_hard=3)
    model = Fennec().fit(P.drop(columns="hard_new"))
    ranking = model.rank(known_scores={m: float(P.at[m, "hard_new"]) for m in ["m0", "m1", "m2"]})
    assert "known models match" not in ranking.attrs["basis"] and "3 known scores" in ranking.attrs["basis"]


def test_the_posterior_does_not_propagate_how_steeply_the_target_follows_its_prior():
    """Known scores that are the prior's pattern at any offset and slope (a target that follows the
    cold ranking more steeply than the history's average task) leave every model at its prior from
    POSTERIOR_SLOPE_MIN_KNOWN known models on; only what neither explains moves the others. Fewer
    known scores keep the offset-only update (the slope would leave them one direction or none)."""
    rng = np.random.default_rng(5)
    residuals = rng.normal(size=(9, 8)) + np.outer(rng.normal(size=9), rng.normal(size=8))
    prior = rng.normal(size=8)
    known = np.array([1, 4, 6, 7])[:POSTERIOR_SLOPE_MIN_KNOWN]
    steeper = 3.0 + 2.5 * prior[known]
    np.testing.assert_allclose(posterior_mean(prior, residuals, 0.3, known, steeper), prior, atol=1e-12)
    nudge = np.zeros(known.size)
    nudge[1] = 1.0
    moved = posterior_mean(prior, residuals, 0.3, known, steeper + nudge)
    assert np.abs(np.delete(moved - prior, known)).max() > 1e-3
    fewer = known[:POSTERIOR_SLOPE_MIN_KNOWN - 1]
    assert np.abs(posterior_mean(prior, residuals, 0.3, fewer, 2.5 * prior[fewer]) - prior).max() > 1e-3


def test_the_posterior_check_recomputes_each_players_neighbours_without_it():
    """posterior_check_gains' downdate equals recomputing the other tasks' out-of-fold residuals
    from the history without the player (no task information: the residuals are z - popularity);
    a player that did not measure a known model is told the others."""
    rng = np.random.default_rng(3)
    standardised = rng.normal(size=(12, 7)) + rng.normal(size=(12, 1))
    standardised[2, 4] = standardised[7, 1] = standardised[3, 2] = np.nan
    weights = rng.uniform(0.2, 1.0, size=(7, 7))
    residuals = np.nan_to_num(standardised.T - leave_one_out_bias(standardised, weights))
    known = np.array([0, 3, 5])
    players = np.array([0, 2, 4, 6])
    gains = posterior_check_gains(standardised, residuals, weights, 0.4, known, players)
    judged = np.setdiff1d(np.arange(12), known)
    for gain, j in zip(gains, players):
        others = np.delete(np.arange(7), j)
        without = standardised[:, others]
        other_residuals = np.nan_to_num(without.T - leave_one_out_bias(without, weights[np.ix_(others, others)]))
        truth = standardised[:, j]
        prior = np.nan_to_num(truth - residuals[j])
        told = known[np.isfinite(truth[known])]
        posterior = posterior_mean(prior, other_residuals, 0.4, told, truth[told])
        scored = judged[np.isfinite(truth[judged])]
        expected = pearsonr(posterior[scored], truth[scored])[0] - pearsonr(prior[scored], truth[scored])[0]
        assert gain == pytest.approx(expected, abs=1e-10)


def test_known_scores_are_propagated_only_where_the_history_check_expects_a_gain():
    """Tasks that share only popularity: on this table the history check (each history task plays
    the new task at the same known models) finds that propagating the 5 known scores would lower the
    other models' Pearson, so they stay cold and the basis says by how much; on a table whose tasks
    share a second factor the check finds a gain and the posterior runs."""
    rng = np.random.default_rng(0)
    quality = rng.normal(size=11)
    P = pd.DataFrame(80 + 4 * quality[:, None] + rng.normal(size=(11, 11)),
                     index=[f"m{i}" for i in range(11)], columns=[f"t{j}" for j in range(11)])
    model = Fennec().fit(P.drop(columns="t10"))
    known_models = ["m0", "m3", "m5", "m7", "m9"]
    gain = model._posterior_expected_gain(P.index.get_indexer(known_models))
    assert gain < 0
    warm = model.rank(known_scores={m: float(P.at[m, "t10"]) for m in known_models}).set_index("model")
    cold = model.rank().set_index("model")
    assert (f"5 known scores not propagated to the other models (on the history it lowered their per-task "
            f"Pearson by {-100 * gain:.1f} points)") in warm.attrs["basis"]
    rest = P.index.drop(known_models)
    np.testing.assert_allclose(warm.loc[rest, "score"], cold.loc[rest, "score"])
    # The known models themselves rank as they measured, each at its measurement's z-score of a typical
    # history task around the mean place cold gave them.
    told = P.loc[known_models, "t10"]
    assert warm.loc[known_models, "score"].sort_values().index.tolist() == told.sort_values().index.tolist()
    np.testing.assert_allclose(warm.loc[known_models, "score"],
                               cold.loc[known_models, "score"].mean()
                               + (told - told.mean()) / np.median(P.drop(columns="t10").std(ddof=0)))

    factor = rng.normal(size=11)
    shared = P + 6 * np.outer(factor, rng.choice([-1.0, 1.0], size=11))  # half the tasks up, half down
    model = Fennec().fit(shared.drop(columns="t10"))
    assert model._posterior_expected_gain(P.index.get_indexer(known_models)) > 0.05
    warm = model.rank(known_scores={m: float(shared.at[m, "t10"]) for m in known_models}).set_index("model")
    cold = model.rank().set_index("model")
    assert "warm start from 5 known scores" in warm.attrs["basis"]
    told = shared.loc[known_models, "t10"]
    assert warm.loc[known_models, "score"].sort_values().index.tolist() == told.sort_values().index.tolist()
    assert pearsonr(warm.loc[rest, "score"], shared.loc[rest, "t10"])[0] > pearsonr(
        cold.loc[rest, "score"], shared.loc[rest, "t10"])[0] + 0.2


def test_a_sparse_history_checks_the_posterior_on_the_known_models_each_task_measured():
    """No history task measured all 5 known models (each misses one): each plays the new task told
    the 4 it has, so the check still runs and the known scores are propagated where it finds a gain."""
    rng = np.random.default_rng(0)
    quality, factor = rng.normal(size=11), rng.normal(size=11)
    shared = pd.DataFrame(80 + 4 * quality[:, None] + 6 * np.outer(factor, rng.choice([-1.0, 1.0], size=11))
                          + rng.normal(size=(11, 11)), index=[f"m{i}" for i in range(11)],
                          columns=[f"t{j}" for j in range(11)])
    known_models = ["m0", "m3", "m5", "m7", "m9"]
    sparse = shared.drop(columns="t10").copy()
    for j, task in enumerate(sparse.columns):
        sparse.loc[known_models[j % 5], task] = np.nan
    model = Fennec().fit(sparse)
    assert model._posterior_expected_gain(shared.index.get_indexer(known_models)) > 0.05
    warm = model.rank(known_scores={m: float(shared.at[m, "t10"]) for m in known_models}).set_index("model")
    assert "warm start from 5 known scores" in warm.attrs["basis"]


def two_task_clusters(seed=4):
    """p_ij = x_i * sign(y_j): tasks with y < 0 rank the models backwards; a noise fact rides along."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, 25)
    y = np.concatenate([rng.uniform(0.3, 1, 14), rng.uniform(-1, -0.3, 6), [-0.7, 0.7]])
    models, tasks = [f"m{i}" for i in range(25)], [f"t{j}" for j in range(22)]
    P = pd.DataFrame(np.outer(x, np.sign(y)) + 0.05 * rng.normal(size=(25, 22)), index=models, columns=tasks)
    task_meta = pd.DataFrame({"y": y, "noise": rng.normal(size=22)}, index=tasks)
    return P, task_meta, tasks[:-2], tasks[-2:]


def test_similar_task_popularity_follows_the_tasks_with_close_facts():
    """Popularity follows the majority (y > 0); among similar tasks, the minority's own order."""
    P, task_meta, train, (minority, majority) = two_task_clusters()
    fitted = Fennec(n_estimators=20).fit(P[train], task_meta=task_meta.loc[train])
    plain = Fennec(n_estimators=20, task_bandwidth=None).fit(P[train], task_meta=task_meta.loc[train])
    def bias(model, task):
        return model.rank(task_meta.loc[task]).set_index("model")["bias_score"].loc[P.index]

    assert pearsonr(bias(fitted, minority), P[minority])[0] > 0.8
    assert pearsonr(bias(plain, minority), P[minority])[0] < -0.5
    assert pearsonr(bias(fitted, majority), P[majority])[0] > 0.9
    ranking = fitted.rank(task_meta.loc[minority])
    assert ranking.attrs["basis"].startswith("popularity among similar tasks")
    # Without the task's facts there is nothing to be similar to: plain popularity, said so.
    cold = fitted.rank()
    np.testing.assert_allclose(cold.set_index("model")["bias_score"], plain.rank().set_index("model")["bias_score"])
    assert cold.attrs["basis"] == "popularity (no task information)"


def test_a_task_unlike_the_whole_history_gets_plain_popularity():
    P, task_meta, train, (minority, _) = two_task_clusters()
    fitted = Fennec(n_estimators=20).fit(P[train], task_meta=task_meta.loc[train])
    far = task_meta.loc[minority] + 50.0
    ranking = fitted.rank(far)
    bias = ranking.set_index("model")["bias_score"]
    popularity = P[train].sub(P[train].mean()).div(P[train].std(ddof=0)).mean(axis=1)
    assert pearsonr(bias.loc[popularity.index], popularity)[0] > 0.999
    assert "(none is alike: the nearest history task is" in ranking.attrs["basis"]  # and the answer says so
    assert "none is alike" not in fitted.rank(task_meta.loc[minority]).attrs["basis"]


def test_unknown_task_facts_are_not_taken_for_alike():
    """A user's own tasks often have no facts. Filled with an average, they all sat at one point and
    ranked each other as twins; unknown, they weigh what a task of unknown likeness weighs."""
    P, task_meta, train, (minority, majority) = two_task_clusters()
    unknown = train[:4]  # tasks whose facts the user could not give
    facts = task_meta.loc[train].astype(float)
    facts.loc[unknown] = np.nan
    fitted = Fennec(n_estimators=20).fit(P[train], task_meta=facts)

    # A target with no known fact is like no task in particular: plain popularity.
    no_facts = pd.Series(np.nan, index=task_meta.columns)
    np.testing.assert_allclose(fitted.bias(no_facts), fitted.bias_)
    # Nor are two tasks without facts alike: as new tasks on the history, every other task weighs the same.
    out_of_fold = fitted._out_of_fold_weights(fitted.similarity_spaces_[0])
    for i in range(4):
        np.testing.assert_allclose(np.delete(out_of_fold[i], i), out_of_fold[i, (i + 1) % 4])
    # A target with facts: each task of unknown facts weighs the mean weight of the tasks it can be
    # compared with (neither the floor nor a twin's).
    weights = fitted._bias_task_weights(task_meta.loc[minority])
    known = [train.index(t) for t in train if t not in unknown]
    np.testing.assert_allclose(weights[:4], weights[known].mean())
    # A target with some facts unknown is compared on those it has: the majority's order.
    partly = task_meta.loc[majority].copy()
    partly["noise"] = np.nan
    bias = fitted.rank(partly).set_index("model")["bias_score"].loc[P.index]
    assert pearsonr(bias, P[majority])[0] > 0.9


def test_leave_one_out_bias_never_reads_the_task_it_predicts():
    rng = np.random.default_rng(0)
    standardised = rng.normal(size=(6, 5))
    weights = rng.uniform(0.2, 1.2, size=(5, 5))
    before = leave_one_out_bias(standardised, weights)
    changed = standardised.copy()
    changed[:, 2] += 100.0
    after = leave_one_out_bias(changed, weights)
    np.testing.assert_allclose(before[2], after[2])  # task 2's own prediction ignores its column
    assert not np.allclose(before[0], after[0])  # the others read it
    plain = leave_one_out_bias(standardised)
    np.testing.assert_allclose(plain[1], np.delete(standardised, 1, axis=1).mean(axis=1))


@pytest.mark.parametrize("bandwidth", [None, 1.0])
def test_task_weights_let_trusted_history_tasks_lead_the_popularity(bandwidth):
    """Majority tasks (y > 0) outnumber the minority; weighted down, the minority's order leads."""
    P, task_meta, train, _ = two_task_clusters()
    minority = [t for t in train if task_meta.loc[t, "y"] < 0]
    weights = pd.Series(0.01, index=train)
    weights[minority] = 1.0
    weighted = Fennec(n_estimators=20, task_bandwidth=bandwidth).fit(P[train], task_meta=task_meta.loc[train],
                                                                     task_weights=weights)
    equal = Fennec(n_estimators=20, task_bandwidth=bandwidth).fit(P[train], task_meta=task_meta.loc[train],
                                                                  task_weights=pd.Series(3.0, index=train))
    plain = Fennec(n_estimators=20, task_bandwidth=bandwidth).fit(P[train], task_meta=task_meta.loc[train])
    x = P[minority].mean(axis=1)  # the minority's own order
    assert pearsonr(weighted.rank().set_index("model")["bias_score"].loc[P.index], x)[0] > 0.9
    assert pearsonr(plain.rank().set_index("model")["bias_score"].loc[P.index], x)[0] < -0.5
    pd.testing.assert_frame_equal(equal.rank(), plain.rank())  # only relative weights matter


def test_task_weights_must_cover_every_history_task_and_be_positive():
    P, task_meta, train, _ = two_task_clusters()
    with pytest.raises(InvalidInputError, match="no weight for task"):
        Fennec().fit(P[train], task_weights=pd.Series(1.0, index=train[1:]))
    with pytest.raises(InvalidInputError, match="positive and finite"):
        Fennec().fit(P[train], task_weights=pd.Series(0.0, index=train))


def test_task_bandwidth_must_be_positive():
    P, task_meta, train, _ = two_task_clusters()
    with pytest.raises(InvalidInputError, match="task_bandwidth"):
        Fennec(task_bandwidth=0).fit(P[train], task_meta=task_meta.loc[train])


def test_with_task_proxies_similar_tasks_are_those_whose_proxy_is_close():
    """The proxy (statistics of the task's images) tells the clusters apart and the facts do not: with
    proxies the bias follows the minority's own order, with the facts alone it follows the majority."""
    P, task_meta, train, (minority, _) = two_task_clusters()
    rng = np.random.default_rng(0)
    proxy = pd.DataFrame(np.c_[np.sign(task_meta["y"]), task_meta["y"] + 0.1 * rng.normal(size=len(task_meta))],
                         index=task_meta.index, columns=["proxy_0", "proxy_1"])
    facts = task_meta[["noise"]]
    by_proxy = Fennec(n_estimators=20).fit(P[train], task_meta=facts.loc[train], task_proxy=proxy.loc[train])
    by_facts = Fennec(n_estimators=20).fit(P[train], task_meta=facts.loc[train])
    def bias(model, **rows):
        return pd.Series(model.bias(**rows), index=model.model_names_).loc[P.index]

    assert pearsonr(bias(by_proxy, task_meta_row=facts.loc[minority], task_proxy_row=proxy.loc[minority]),
                    P[minority])[0] > 0.8
    assert pearsonr(bias(by_facts, task_meta_row=facts.loc[minority]), P[minority])[0] < -0.5
    assert by_proxy.rank(facts.loc[minority], proxy.loc[minority]).attrs["basis"].startswith(
        "popularity among similar tasks (alike by their images' proxy)")
    # Given only its facts (`rank --dataset` on a model built with an encoder), the task is compared by its facts.
    np.testing.assert_allclose(bias(by_proxy, task_meta_row=facts.loc[minority]),
                               bias(by_facts, task_meta_row=facts.loc[minority]))
    assert by_proxy.rank(facts.loc[minority]).attrs["basis"] == "popularity among similar tasks"
    proxy_only = Fennec(n_estimators=20).fit(P[train], task_proxy=proxy.loc[train])
    np.testing.assert_array_equal(bias(proxy_only), proxy_only.bias_)  # nothing to compare by: plain popularity


def test_a_model_pickled_before_the_proxys_similarity_still_ranks_by_the_facts_similarity():
    P, task_meta, train, (minority, _) = two_task_clusters()
    fitted = Fennec(n_estimators=20).fit(P[train], task_meta=task_meta.loc[train])
    state = fitted.__getstate__()
    space = state.pop("similarity_spaces_")[0]
    state.update(task_fact_rows_=space.rows, task_fact_mean_=space.mean, task_fact_std_=space.std,
                 similar_tasks_=True)  # what an older version pickled
    old = Fennec.__new__(Fennec)
    old.__setstate__(state)
    pd.testing.assert_frame_equal(old.rank(task_meta.loc[minority]), fitted.rank(task_meta.loc[minority]))


def test_a_model_pickled_with_one_similarity_space_still_ranks_by_it():
    """Pickled before the facts' fallback, a proxy-built model kept the proxy's space only."""
    P, task_meta, train, (minority, _) = two_task_clusters()
    proxy = task_meta[["y"]].rename(columns={"y": "proxy_0"})
    fitted = Fennec(n_estimators=20).fit(P[train], task_meta=task_meta.loc[train], task_proxy=proxy.loc[train])
    state = fitted.__getstate__()
    space = state.pop("similarity_spaces_")[0]
    state.update(similar_source_=space.source, similar_mean_=space.mean, similar_std_=space.std,
                 similar_rows_=space.rows, similar_unit_=space.unit, similar_tasks_=True)  # what it pickled
    old = Fennec.__new__(Fennec)
    old.__setstate__(state)
    pd.testing.assert_frame_equal(old.rank(task_meta.loc[minority], proxy.loc[minority]),
                                  fitted.rank(task_meta.loc[minority], proxy.loc[minority]))
    np.testing.assert_array_equal(old.bias(task_meta.loc[minority]), fitted.bias_)  # no facts' space then


def test_a_model_pickled_before_similar_task_popularity_still_loads_and_ranks_by_plain_popularity():
    P, task_meta, train, (minority, _) = two_task_clusters()
    plain = Fennec(n_estimators=20, task_bandwidth=None).fit(P[train], task_meta=task_meta.loc[train])
    state = plain.__getstate__()
    del state["task_bandwidth"], state["similarity_spaces_"]  # what an older version pickled
    old = Fennec.__new__(Fennec)
    old.__setstate__(state)
    assert old.get_params()["task_bandwidth"] is None
    pd.testing.assert_frame_equal(old.rank(task_meta.loc[minority]), plain.rank(task_meta.loc[minority]))


def test_known_scores_are_not_propagated_when_too_few_history_tasks_can_check_it():
    """Two history tasks cannot vouch for the posterior (its covariance would come from one task):
    the known scores are not propagated, the other models keep their cold order, and the basis
    says why."""
    rng = np.random.default_rng(1)
    P = pd.DataFrame(80 + 4 * rng.normal(size=(11, 1)) + rng.normal(size=(11, 3)),
                     index=[f"m{i}" for i in range(11)], columns=["t0", "t1", "new"])
    model = Fennec().fit(P.drop(columns="new"))
    known_models = ["m0", "m3", "m5", "m7", "m9"]
    assert model._posterior_expected_gain(P.index.get_indexer(known_models)) is None
    warm = model.rank(known_scores={m: float(P.at[m, "new"]) for m in known_models}).set_index("model")
    cold = model.rank().set_index("model")
    assert (f"5 known scores not propagated to the other models (fewer than {POSTERIOR_CHECK_MIN_TASKS} "
            "history tasks measured at least 3 of them") in warm.attrs["basis"]
    rest = P.index.drop(known_models)
    np.testing.assert_allclose(warm.loc[rest, "score"], cold.loc[rest, "score"])


def test_the_basis_says_when_too_few_other_models_are_left_to_check_the_warm_start():
    """A zoo of 5 told 3 scores leaves 2 models to judge the posterior on: the basis says that, not
    that the history tasks lacked the known models (they measured them all)."""
    rng = np.random.default_rng(2)
    P = pd.DataFrame(80 + 4 * rng.normal(size=(5, 1)) + rng.normal(size=(5, 12)),
                     index=[f"m{i}" for i in range(5)], columns=[f"t{j}" for j in range(12)])
    model = Fennec().fit(P.drop(columns="t11"))
    warm = model.rank(known_scores={m: float(P.at[m, "t11"]) for m in ["m0", "m1", "m2"]})
    assert ("3 known scores not propagated to the other models (only 2 other models to judge it on, "
            "too few to check on the history that it helps)") in warm.attrs["basis"]


def test_one_known_value_ranks_cold_and_the_basis_says_so():
    """A REST caller sees no Python warning: the basis itself says the known scores were not used."""
    rng = np.random.default_rng(2)
    P = pd.DataFrame(80 + 4 * rng.normal(size=(6, 1)) + rng.normal(size=(6, 8)),
                     index=[f"m{i}" for i in range(6)], columns=[f"t{j}" for j in range(8)])
    model = Fennec().fit(P)
    with pytest.warns(UserWarning, match="at least two different values"):
        warm = model.rank(known_scores={"m0": 81.0})
    assert "ranked cold: known scores need at least two different values" in warm.attrs["basis"]
    pd.testing.assert_series_equal(warm["score"], model.rank()["score"])


def test_a_model_pickled_before_the_history_was_kept_warm_starts_with_the_posterior_alone():
    P, _ = level_clusters(n_easy=14, n_hard=8)
    fitted = Fennec().fit(P.drop(columns="hard_new"))
    state = fitted.__getstate__()
    del state["standardised_"]  # plain-popularity fits kept no history before the level step
    old = Fennec.__new__(Fennec)
    old.__setstate__(state)
    known = {m: float(P.at[m, "hard_new"]) for m in ["m0", "m1", "m2"]}
    ranking = old.rank(known_scores=known)
    assert "known models match" not in ranking.attrs["basis"]
    assert "warm start from 3 known scores" in ranking.attrs["basis"]  # nor the posterior's check: it reads the history


def test_a_model_pickled_before_task_weights_ranks_as_it_did():
    P, task_meta, train, (minority, _) = two_task_clusters()
    fitted = Fennec(n_estimators=20).fit(P[train], task_meta=task_meta.loc[train])
    state = fitted.__getstate__()
    del state["evidence_weights_"]  # what the previous version pickled (similar-task popularity, no weights)
    old = Fennec.__new__(Fennec)
    old.__setstate__(state)
    pd.testing.assert_frame_equal(old.rank(task_meta.loc[minority]), fitted.rank(task_meta.loc[minority]))


def test_the_behaviour_digest_changes_when_a_ranking_does(monkeypatch):
    # Cached end-to-end evaluation rows are keyed by it: a change that moves a score must move it.
    behaviour_digest.cache_clear()
    try:
        before = behaviour_digest()
        behaviour_digest.cache_clear()
        assert behaviour_digest() == before  # deterministic
        untouched = Fennec.rank

        def nudged(self, *args, **kwargs):
            ranking = untouched(self, *args, **kwargs)
            ranking.loc[ranking.index[-1], "score"] += 1e-4
            return ranking

        monkeypatch.setattr(Fennec, "rank", nudged)
        behaviour_digest.cache_clear()
        assert behaviour_digest() != before
        monkeypatch.setattr(Fennec, "rank", untouched)
        # a change of the warm start with more than 3 known scores only (as the slope's threshold was)
        monkeypatch.setattr(recommender, "POSTERIOR_SLOPE_MIN_KNOWN", 6)
        behaviour_digest.cache_clear()
        assert behaviour_digest() != before
        monkeypatch.undo()
        # a change of what unknown task facts weigh only
        kernel = recommender.similar_task_weights
        monkeypatch.setattr(recommender, "similar_task_weights",
                            lambda distances, bandwidth: kernel(np.where(np.isinf(distances), 1e9, distances), bandwidth))
        behaviour_digest.cache_clear()
        assert behaviour_digest() != before
    finally:
        behaviour_digest.cache_clear()
