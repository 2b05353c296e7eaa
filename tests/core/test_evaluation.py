"""Ranking metrics against scipy, the leave-one-task-out protocol, baselines on the public tables."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import fennec_mlflow
from fennec_mlflow.core import evaluation as ev

BENCHMARKS = Path(fennec_mlflow.__file__).parent / "resources" / "benchmarks"
PARC_TARGETS = ["cifar10", "oxford_pets", "cub200", "caltech101", "stanford_dogs", "nabird", "voc2007"]
TRANSFERGRAPH_TARGETS = ["cifar100", "pets", "flowers", "eurosat", "caltech101", "stanfordcars", "kitti", "dtd",
                         "diabetic_retinopathy_detection", "svhn", "smallnorb_label_elevation",
                         "smallnorb_label_azimuth", "food101"]


@pytest.fixture(scope="module")
def parc() -> pd.DataFrame:
    rows = pd.read_csv(BENCHMARKS / "parc_controlled.csv")
    rows["model"] = rows["Architecture"] + "@" + rows["Source Dataset"]
    return rows


@pytest.fixture(scope="module")
def parc_matrix(parc) -> pd.DataFrame:
    return parc.pivot(index="model", columns="Target Dataset", values="Oracle")


@pytest.fixture(scope="module")
def transfergraph_matrix() -> pd.DataFrame:
    records = pd.read_csv(BENCHMARKS / "transfergraph_image_records.csv")
    last = records.drop_duplicates(subset=["model", "finetuned_dataset"], keep="last")
    return last.pivot(index="model", columns="finetuned_dataset", values="eval_accuracy")


def planted_matrix(n_models: int = 12, n_tasks: int = 5, seed: int = 0) -> pd.DataFrame:
    """Accuracies = model quality + task offset + noise, with a few holes."""
    rng = np.random.default_rng(seed)
    quality = rng.normal(size=n_models)
    values = 70 + 5 * quality[:, None] + rng.normal(scale=2.0, size=(n_tasks,))[None, :] \
        + rng.normal(scale=0.5, size=(n_models, n_tasks))
    values[rng.random(values.shape) < 0.1] = np.nan
    return pd.DataFrame(values, index=[f"m{i}" for i in range(n_models)], columns=[f"t{j}" for j in range(n_tasks)])


# --------------------------------------------------------------------------- metrics

@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy_on_random_data(seed):
    rng = np.random.default_rng(seed)
    predicted = rng.normal(size=40)
    true = 0.6 * predicted + rng.normal(size=40)
    true[:5] = np.round(true[:5])  # a few ties do not change the agreement with scipy
    assert ev.pearson(predicted, true) == pytest.approx(stats.pearsonr(predicted, true).statistic, abs=1e-12)
    assert ev.spearman(predicted, true) == pytest.approx(stats.spearmanr(predicted, true).statistic, abs=1e-12)
    # SFDA's call: weightedtau(metric_score, gt) with scipy's defaults.
    assert ev.weighted_kendall_tau(predicted, true) == pytest.approx(stats.weightedtau(predicted, true).statistic,
                                                                     abs=1e-12)


def test_weighted_tau_punishes_swaps_at_the_top_more_than_at_the_bottom():
    true = np.arange(10.0)[::-1]
    top_swapped, bottom_swapped = true.copy(), true.copy()
    top_swapped[[0, 1]] = top_swapped[[1, 0]]
    bottom_swapped[[8, 9]] = bottom_swapped[[9, 8]]
    assert ev.weighted_kendall_tau(top_swapped, true) < ev.weighted_kendall_tau(bottom_swapped, true) < 1.0
    # Plain Kendall tau cannot tell the two apart: the weighting is what this metric adds.
    assert stats.kendalltau(top_swapped, true).statistic == pytest.approx(stats.kendalltau(bottom_swapped, true).statistic)


def test_missing_ground_truth_is_skipped_not_filled():
    rng = np.random.default_rng(1)
    predicted, true = rng.normal(size=20), rng.normal(size=20)
    true_with_holes = true.copy()
    true_with_holes[[2, 7, 11]] = np.nan
    keep = ~np.isnan(true_with_holes)
    for metric in (ev.pearson, ev.spearman, ev.weighted_kendall_tau, ev.top1_regret, ev.topk_hit):
        assert metric(predicted, true_with_holes) == pytest.approx(metric(predicted[keep], true[keep]), abs=1e-12)
    # A prediction is allowed to be missing exactly where the truth is.
    predicted_with_holes = predicted.copy()
    predicted_with_holes[[2, 7]] = np.nan
    assert ev.pearson(predicted_with_holes, true_with_holes) == pytest.approx(ev.pearson(predicted[keep], true[keep]))


def test_a_missing_prediction_for_a_known_truth_is_an_error():
    with pytest.raises(ValueError, match="no prediction"):
        ev.pearson([1.0, np.nan, 3.0], [1.0, 2.0, 4.0])


def test_series_are_aligned_by_model_name():
    true = pd.Series({"a": 1.0, "b": 2.0, "c": 3.0, "d": 5.0})
    predicted = pd.Series({"d": 4.0, "c": 3.0, "b": 2.0, "a": 1.0})
    assert ev.spearman(predicted, true) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no prediction"):
        ev.spearman(predicted.drop("a"), true)


def test_shape_mismatch_and_bad_k_are_rejected():
    with pytest.raises(ValueError, match="values"):
        ev.pearson([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="one-dimensional"):
        ev.pearson(np.ones((2, 2)), np.ones((2, 2)))
    for bad_k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            ev.topk_hit([1.0, 2.0], [1.0, 2.0], k=bad_k)


def test_top1_regret_on_hand_made_examples():
    true = np.array([80.0, 90.0, 85.0, 70.0])
    assert ev.top1_regret([4, 3, 2, 1], true) == pytest.approx(10.0)  # picks 80 when 90 was available
    assert ev.top1_regret([1, 4, 2, 3], true) == pytest.approx(0.0)
    assert ev.top1_regret([5, 1, 5, 0], true) == pytest.approx(90.0 - (80.0 + 85.0) / 2)  # tie: expectation
    assert ev.top1_regret([9, 1, 2, 3], [np.nan, 0.9, 0.85, 0.7]) == pytest.approx(0.9 - 0.7)  # unknown skipped
    assert math.isnan(ev.top1_regret([1.0, 2.0], [np.nan, np.nan]))


def test_topk_hit_on_hand_made_examples():
    true = np.array([50.0, 60, 70, 80, 90, 99, 40])  # model 5 is best
    assert ev.topk_hit([0, 1, 2, 3, 4, 5, 6], true, k=5) == 1.0  # ranked 2nd
    assert ev.topk_hit([6, 5, 4, 3, 2, 0, 1], true, k=5) == 0.0  # ranked last
    assert ev.topk_hit([6, 5, 4, 3, 2, 0, 1], true, k=7) == 1.0  # k covers every model
    assert ev.topk_hit([6, 5, 4, 3, 2, 1, 0], true, k=6) == 1.0  # exactly 6th
    assert ev.topk_hit([6, 5, 4, 3, 2, 1, 0], true, k=5) == 0.0
    # Ties across the cut: 1 slot left for a group of 3 holding the best model -> 1/3.
    assert ev.topk_hit([3, 2, 2, 2, 1], [1, 2, 3, 9, 4], k=2) == pytest.approx(1 / 3)
    # Two of the group of 3 are truly best (a tie in the truth): 2/3.
    assert ev.topk_hit([3, 2, 2, 2, 1], [1, 9, 3, 9, 4], k=2) == pytest.approx(2 / 3)


def test_degenerate_targets_have_defined_results():
    true = np.array([1.0, 2.0, 3.0])
    for metric in (ev.pearson, ev.spearman, ev.weighted_kendall_tau):
        assert metric([5.0, 5.0, 5.0], true) == 0.0  # constant prediction ranks nothing
        assert math.isnan(metric([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]))  # truth cannot judge
        assert math.isnan(metric([1.0, 2.0], [4.0, np.nan]))  # one known model
    assert ev.top1_regret([5.0, 5.0, 5.0], true) == pytest.approx(1.0)  # 3 - mean(1, 2, 3)
    assert ev.topk_hit([5.0, 5.0, 5.0], true, k=1) == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- protocol

def test_target_column_never_reaches_the_predictor():
    table = planted_matrix()
    seen = []

    def watchful(history, target):
        assert target not in history.columns, f"target {target} leaked into the history"
        assert list(history.index) == list(table.index)  # every model stays a candidate
        seen.append((target, set(history.columns)))
        history.iloc[:, :] = 0.0  # mutating the history must not reach the next target
        return pd.Series(np.arange(len(history.index), dtype=float), index=history.index)

    before = table.copy()
    ev.leave_one_task_out(table, watchful)
    assert [t for t, _ in seen] == list(table.columns)
    assert all(columns == set(table.columns) - {t} for t, columns in seen)
    pd.testing.assert_frame_equal(table, before)


def test_a_leaky_predictor_would_be_caught_by_the_check_above():
    """The watchful predictor's assertion fires if the protocol hands it the target."""
    table = planted_matrix()

    def watchful(history, target):
        assert target not in history.columns, "leak"
        return history.mean(axis=1).fillna(0.0)

    def leaky_protocol(history, target):  # what a buggy protocol would pass: the full table
        return watchful(table, target)

    with pytest.raises(AssertionError, match="leak"):
        ev.leave_one_task_out(table, leaky_protocol)


def test_targets_subset_keeps_the_other_tasks_as_history():
    table = planted_matrix()
    histories = {}

    def recorder(history, target):
        histories[target] = list(history.columns)
        return ev.popularity(history, target)

    result = ev.leave_one_task_out(table, recorder, targets=["t0", "t2"])
    assert list(result.per_target.index) == ["t0", "t2"]
    assert histories == {"t0": ["t1", "t2", "t3", "t4"], "t2": ["t0", "t1", "t3", "t4"]}
    assert result.summary["n_targets"] == 2


def test_result_tables_and_metric_names():
    table = planted_matrix()
    result = ev.leave_one_task_out(table, ev.popularity)
    assert list(result.per_target.columns[:5]) == ["pearson", "spearman", "weighted_tau", "top1_regret", "top5_hit"]
    assert result.per_target["n_models"].tolist() == table.notna().sum().tolist()
    for name in ("mean_pearson", "mean_spearman", "mean_weighted_tau", "mean_top1_regret", "mean_top5_hit",
                 "std_pearson", "std_top1_regret", "n_targets"):
        assert name in result.summary
    assert result.summary["mean_pearson"] == pytest.approx(result.per_target["pearson"].mean())
    assert result.summary["std_pearson"] == pytest.approx(result.per_target["pearson"].std(ddof=0))
    # The long predictions hold exactly the scored cells, with their true values.
    assert len(result.predictions) == int(table.notna().sum().sum())
    cell = result.predictions.iloc[0]
    assert cell["true"] == table.loc[cell["model"], cell["target"]]
    metrics = result.as_metrics()
    assert metrics["pearson.t3"] == pytest.approx(result.per_target.loc["t3", "pearson"])
    assert metrics["mean_top5_hit"] == result.summary["mean_top5_hit"]
    assert "top3_hit" in ev.leave_one_task_out(table, ev.popularity, k=3).per_target.columns


def test_constant_predictions_are_scored_zero_and_counted():
    table = planted_matrix()
    result = ev.leave_one_task_out(table, lambda history, target: pd.Series(1.0, index=history.index))
    assert (result.per_target["pearson"] == 0.0).all()
    assert result.summary["n_constant_predictions"] == table.shape[1]
    assert result.summary["mean_pearson"] == 0.0


def test_missing_predictions_raise_or_are_skipped_and_counted():
    table = planted_matrix()
    table.loc["m0"] = 70.0  # m0 known everywhere

    def partial(history, target):
        return ev.popularity(history, target).drop("m0")

    with pytest.raises(ValueError, match="no prediction"):
        ev.leave_one_task_out(table, partial)
    result = ev.leave_one_task_out(table, partial, missing_predictions="skip")
    assert result.summary["n_unscored"] == table.shape[1]
    assert "m0" not in set(result.predictions["model"])


def test_boundary_errors_are_clear():
    table = planted_matrix()
    with pytest.raises(ValueError, match="not tasks"):
        ev.leave_one_task_out(table, ev.popularity, targets=["nope"])
    with pytest.raises(ValueError, match="list of task names"):
        ev.leave_one_task_out(table, ev.popularity, targets="t0")
    with pytest.raises(ValueError, match="2 tasks"):
        ev.leave_one_task_out(table[["t0"]], ev.popularity)
    with pytest.raises(ValueError, match="pandas Series"):
        ev.leave_one_task_out(table, lambda h, t: np.zeros(len(h)))
    with pytest.raises(ValueError, match="not in the matrix"):
        ev.leave_one_task_out(table, lambda h, t: pd.Series(0.0, index=list(h.index) + ["stranger"]))
    with pytest.raises(ValueError, match="missing_predictions"):
        ev.leave_one_task_out(table, ev.popularity, missing_predictions="fill")
    with pytest.raises(ValueError, match="twice"):
        ev.leave_one_task_out(pd.concat([table, table.iloc[:1]]), ev.popularity)


def test_aggregate_over_seeds():
    table = planted_matrix()
    runs = [ev.leave_one_task_out(table, ev.random_baseline(seed)) for seed in range(4)]
    combined = ev.aggregate(runs)
    assert combined.summary["n_repeats"] == 4
    expected = np.mean([r.summary["mean_pearson"] for r in runs])
    assert combined.summary["mean_pearson"] == pytest.approx(expected)
    assert combined.summary["seed_std_pearson"] == pytest.approx(np.std([r.summary["mean_pearson"] for r in runs]))
    assert combined.summary["seed_std_pearson"] > 0
    assert sorted(combined.predictions["repeat"].unique()) == [0, 1, 2, 3]
    same = ev.aggregate([runs[0], runs[0]])
    assert same.summary["seed_std_pearson"] == 0.0
    assert same.summary["mean_pearson"] == pytest.approx(runs[0].summary["mean_pearson"])
    with pytest.raises(ValueError, match="same evaluation"):
        ev.aggregate([runs[0], ev.leave_one_task_out(table, ev.popularity, targets=["t0"])])
    with pytest.raises(ValueError, match="at least one"):
        ev.aggregate([])


# --------------------------------------------------------------------------- baselines

def test_popularity_is_the_mean_z_score_per_task():
    history = pd.DataFrame({"a": [1.0, 2.0, 3.0, np.nan], "b": [10.0, 30.0, 20.0, np.nan],
                            "c": [5.0, 5.0, 5.0, 5.0]}, index=["x", "y", "z", "new"])
    z_a = (np.array([1.0, 2.0, 3.0]) - 2.0) / np.std([1.0, 2.0, 3.0])
    z_b = (np.array([10.0, 30.0, 20.0]) - 20.0) / np.std([10.0, 30.0, 20.0])
    scores = ev.popularity(history, "target")
    np.testing.assert_allclose(scores[["x", "y", "z"]], (z_a + z_b) / 2)
    assert scores["new"] == 0.0  # no informative history (task c is constant): an average model


def test_random_baseline_is_seeded_and_order_independent():
    history = planted_matrix().drop(columns=["t0"])
    first = ev.random_baseline(3)(history, "t0")
    assert first.equals(ev.random_baseline(3)(history, "t0"))
    assert not first.equals(ev.random_baseline(4)(history, "t0"))
    assert not first.equals(ev.random_baseline(3)(history, "t1"))


def test_family_mean_and_oracle_on_a_planted_matrix():
    # Quality is a family property: family A beats B everywhere.
    families = {f"m{i}": ("A" if i < 6 else "B") for i in range(12)}
    rng = np.random.default_rng(0)
    values = np.where(np.arange(12)[:, None] < 6, 80.0, 60.0) + rng.normal(scale=1.0, size=(12, 4))
    table = pd.DataFrame(values, index=list(families), columns=["t0", "t1", "t2", "t3"])
    scores = ev.family_mean(families)(table.drop(columns=["t0"]), "t0")
    assert scores.nunique() == 2 and (scores[:6] > scores[6:].max()).all()
    assert ev.leave_one_task_out(table, ev.family_mean(families)).summary["mean_top1_regret"] < 5
    with pytest.raises(ValueError, match="no family label"):
        ev.family_mean({"m0": "A"})(table, "t0")
    oracle = ev.leave_one_task_out(table, ev.oracle(table))
    assert oracle.summary["mean_pearson"] == pytest.approx(1.0)
    assert oracle.summary["mean_top1_regret"] == 0.0 and oracle.summary["mean_top5_hit"] == 1.0


def test_archi2vec_family_mean_pools_an_architecture_with_its_nearest_neighbour():
    # Two models per architecture; A and B have nearby graphs, C is far from both.
    vectors = pd.DataFrame({"a2v_0": [0.0, 0.0, 0.1, 0.1, 5.0, 5.0], "a2v_1": 0.0},
                           index=["a@x", "a@y", "b@x", "b@y", "c@x", "c@y"])
    history = pd.DataFrame({"t1": [90, 80, 70, 60, 50, 40], "t2": [91, 81, 71, 61, 51, 41]}, index=vectors.index,
                           dtype=float)
    popularity = ev.popularity(history, "t0")
    scores = ev.neighbour_family_mean(vectors, architectures=2)(history, "t0")
    assert scores["a@x"] == scores["a@y"] == pytest.approx(popularity[:4].mean())  # A with B
    assert scores["c@x"] == pytest.approx(popularity[["c@x", "c@y", "b@x", "b@y"]].mean())  # C with its nearest, B
    alone = ev.neighbour_family_mean(vectors, architectures=1)(history, "t0")
    assert alone["b@x"] == pytest.approx(popularity[["b@x", "b@y"]].mean())  # the name-free family mean
    with pytest.raises(ValueError, match="no archi2vec vector"):
        ev.neighbour_family_mean(vectors.iloc[:2])(history, "t0")
    assert ev.architecture_vectors(pd.DataFrame({"log_parameters": [1.0]})) is None
    assert list(ev.architecture_vectors(pd.DataFrame({"arch_0": [1.0], "x": 2.0})).columns) == ["arch_0"]


# --------------------------------------------------------------------------- public tables

def test_parc_controlled_table_has_the_documented_shape(parc_matrix):
    assert parc_matrix.shape == (32, 7)
    assert int(parc_matrix.isna().sum().sum()) == 28
    assert sorted(parc_matrix.columns) == sorted(PARC_TARGETS)


def test_popularity_reproduces_the_documented_parc_facts(parc_matrix):
    seven = ev.leave_one_task_out(parc_matrix, ev.popularity)
    assert 100 * seven.summary["mean_pearson"] == pytest.approx(70.3, abs=0.1)
    # PARC's own 6 targets: voc2007 is not a target but stays in the history.
    six = ev.leave_one_task_out(parc_matrix, ev.popularity, targets=[t for t in PARC_TARGETS if t != "voc2007"])
    assert 100 * six.summary["mean_pearson"] == pytest.approx(67.6, abs=0.1)
    assert six.per_target["n_models"].tolist() == [28] * 6  # the 4 source == target cells are skipped


def test_popularity_reproduces_the_documented_transfergraph_fact(transfergraph_matrix):
    assert transfergraph_matrix.shape == (180, 13)
    assert sorted(transfergraph_matrix.columns) == sorted(TRANSFERGRAPH_TARGETS)
    result = ev.leave_one_task_out(transfergraph_matrix, ev.popularity)
    assert 100 * result.summary["mean_pearson"] == pytest.approx(75.5, abs=0.1)
    assert result.summary["n_targets"] == 13


def test_published_logme_scores_reproduce_the_documented_fact(transfergraph_matrix):
    scores = pd.read_csv(BENCHMARKS / "transfergraph_image_transferability_scores.csv")
    logme = scores[scores["metric"] == "TransferabilityMethod.LOG_ME"]
    logme = logme.pivot_table(index="model", columns="target_dataset", values="score", aggfunc="first")

    def published_logme(history, target):
        return logme[target].reindex(history.index)

    result = ev.leave_one_task_out(transfergraph_matrix, published_logme, targets=list(logme.columns),
                                   missing_predictions="skip")
    assert result.summary["n_targets"] == 8
    assert 100 * result.summary["mean_pearson"] == pytest.approx(43.5, abs=0.1)
    assert result.summary["n_unscored"] > 0  # LogME covers only part of the zoo


def test_oracle_and_random_sanity_on_parc(parc, parc_matrix):
    assert ev.leave_one_task_out(parc_matrix, ev.oracle(parc_matrix)).summary["mean_pearson"] == pytest.approx(1.0)
    runs = [ev.leave_one_task_out(parc_matrix, ev.random_baseline(seed)) for seed in range(10)]
    assert abs(ev.aggregate(runs).summary["mean_pearson"]) < 0.1
    architecture = parc.drop_duplicates("model").set_index("model")["Architecture"]
    family = ev.leave_one_task_out(parc_matrix, ev.family_mean(architecture))
    assert 0.3 < family.summary["mean_pearson"] < 0.9  # architecture explains much, not all


# --------------------------------------------------------------------------- task facts

def test_task_facts_cover_both_benchmarks_with_sources():
    facts = ev.load_task_facts()
    assert set(PARC_TARGETS) | set(TRANSFERGRAPH_TARGETS) <= set(facts.index)
    assert (facts["class_count"] >= 2).all() and (facts["train_size"] >= 100).all()
    assert facts["source"].str.len().gt(10).all()
    for benchmark, targets in (("parc", PARC_TARGETS), ("transfergraph", TRANSFERGRAPH_TARGETS)):
        listed = facts.index[facts["benchmarks"].str.split(";").apply(lambda b: benchmark in b)]
        assert sorted(listed) == sorted(targets)
    published = {"cifar100": (100, 50000), "pets": (37, 3680), "flowers": (102, 1020), "eurosat": (10, 27000),
                 "dtd": (47, 1880), "svhn": (10, 73257), "smallnorb_label_elevation": (9, 24300),
                 "smallnorb_label_azimuth": (18, 24300), "food101": (101, 75750), "stanfordcars": (196, 8144),
                 "diabetic_retinopathy_detection": (5, 35126), "cub200": (200, 5994),
                 "stanford_dogs": (120, 12000), "nabird": (555, 23929), "voc2007": (20, 5011)}
    for task, (classes, train) in published.items():
        assert (facts.loc[task, "class_count"], facts.loc[task, "train_size"]) == (classes, train), task
    assert "UNCERTAIN" in facts.loc["kitti", "note"]


def test_task_facts_loader_rejects_a_broken_table(tmp_path):
    broken = tmp_path / "facts.csv"
    broken.write_text("task,class_count\ncifar10,10\n")
    with pytest.raises(ValueError, match="lacks column"):
        ev.load_task_facts(broken)
    with pytest.raises(ValueError, match="does not exist"):
        ev.load_task_facts(tmp_path / "absent.csv")


def test_common_dataset_names_resolve_to_their_task_facts():
    facts = ev.load_task_facts()
    expected = {
        "aircraft": "aircraft", "FGVC-Aircraft": "aircraft", "fgvc_aircraft": "aircraft", "cars": "stanfordcars",
        "Stanford_Cars": "stanfordcars", "food": "food101", "Food-101": "food101", "sun397": "sun397", "SUN": "sun397",
        "DTD": "dtd", "flowers": "flowers", "oxford_flowers102": "flowers", "flowers102": "flowers", "pets": "pets",
        "oxford_pets": "oxford_pets", "Oxford-IIIT Pet": "oxford_pets", "CIFAR-10": "cifar10", "cifar100": "cifar100",
        "Caltech-101": "caltech101", "voc2007": "voc2007", "cub": "cub200", "CUB_200_2011": "cub200",
        # the abbreviations of DINOv2's and similar papers' tables
        "C10": "cifar10", "C100": "cifar100", "Aircr": "aircraft", "Cal101": "caltech101",
        "iNat-19": "inaturalist2019", "iNat2017": "inaturalist2017", "iNat-18": "inaturalist2018", "IN-1k": "imagenet",
        # VPT's VTAB-1k tables
        "SmallNORB-azi": "smallnorb_label_azimuth", "SmallNORB-ele": "smallnorb_label_elevation",
        "nabirds": "nabird", "stanford_dogs": "stanford_dogs", "dogs": "stanford_dogs", "svhn": "svhn",
        "mnist": "mnist", "EuroSAT": "eurosat", "resisc45": "resisc45", "ImageNet-1k": "imagenet",
        "Oxford-IIIT Pets": "oxford_pets", "Oxford 102 Flowers": "flowers", "Cars196": "stanfordcars",
        "Birdsnap": "birdsnap", "STL-10": "stl10", "Fashion-MNIST": "fashion_mnist", "USPS": "usps",
        "GTSRB": "gtsrb", "FER2013": "fer2013", "PCam": "patch_camelyon", "PatchCamelyon": "patch_camelyon",
        "Country211": "country211", "Places365": "places365", "Camelyon": "patch_camelyon",
        "Retinopathy": "diabetic_retinopathy_detection", "KITTI-Dist": "kitti", "Caltech-256": "caltech256",
        "iNat2018": "inaturalist2018", "DMLab": "dmlab", "ISIC 2018": "isic2018", "HAM10000": "isic2018",
        "CropDisease": "crop_disease", "Plant Village": "crop_disease", "UCF-101": "ucf101",
        # VTAB's structured tasks as PEFT papers' tables head them, and as TFDS names them
        "Clevr-Count": "clevr_count", "Clevr-Dist": "clevr_distance", "dSpr-Loc": "dsprites_location",
        "dSpr-Ori": "dsprites_orientation", "sNORB-Azim": "smallnorb_label_azimuth",
        "sNORB-Elev": "smallnorb_label_elevation", "clevr/count_all": "clevr_count",
        "dsprites/label_orientation": "dsprites_orientation", "KITTI/distance": "kitti",
        # a table's header may carry the unit or metric after the name
        "Aircraft (%)": "aircraft", "CIFAR-10 [Acc.]": "cifar10", "DTD top-1": "dtd", "Food-101 %": "food101",
        "Flowers-102 (top-1 acc., %)": "flowers",
        # iBOT's and DINO's transfer tables
        "Cif10": "cifar10", "Cif100": "cifar100", "Flwrs": "flowers", "iNa18": "inaturalist2018",
        "iNa19": "inaturalist2019",
    }
    for name, task in expected.items():
        row = ev.find_task_facts(name, facts)
        assert row is not None and row.name == task, name
    for unknown in ("cifar", "my-task", "", "voc", "caltech", "iNaturalist", "ISIC", "(%)", "caltech (%)"):  # which year, which Caltech:
        # not guessed
        assert ev.find_task_facts(unknown, facts) is None
    published = {"aircraft": (100, 6667), "sun397": (397, 19850), "mnist": (10, 60000), "resisc45": (45, 31500),
                 "imagenet": (1000, 1281167), "birdsnap": (500, 47386), "stl10": (10, 5000),
                 "patch_camelyon": (2, 262144), "gtsrb": (43, 39209), "inaturalist2018": (8142, 437513),
                 "isic2018": (7, 10015), "ucf101": (101, 9537), "dmlab": (6, 65550), "clevr_count": (8, 70000),
                 "clevr_distance": (6, 70000), "dsprites_location": (16, 737280)}
    for task, (classes, train) in published.items():
        assert (facts.loc[task, "class_count"], facts.loc[task, "train_size"]) == (classes, train), task
    assert ev.task_name_key(" Food-101 ") == ev.task_name_key("food_101") == "food101"


def test_task_facts_loader_refuses_a_name_two_rows_answer_to(tmp_path):
    columns = list(ev.TASK_FACT_COLUMNS)
    row = {c: "x" for c in columns} | {"class_count": 10, "train_size": 100}
    plain = tmp_path / "plain.csv"
    pd.DataFrame([row | {"task": "a"}, row | {"task": "b"}]).to_csv(plain, index=False)
    assert ev.load_task_facts(plain)["aliases"].tolist() == ["", ""]  # the aliases column is optional
    clash = tmp_path / "clash.csv"
    pd.DataFrame([row | {"task": "a", "aliases": "first;shared"},
                  row | {"task": "b", "aliases": "Shared"}]).to_csv(clash, index=False)
    with pytest.raises(ValueError, match="the name 'Shared' is given to both task 'a' and task 'b'"):
        ev.load_task_facts(clash)
