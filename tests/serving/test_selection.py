"""Model selection shared by build and the benchmarks: leak-free histories, the search space, nested CV."""
from __future__ import annotations

import dataclasses

import optuna
import pandas as pd
import pytest

from fennec_mlflow.core.recommender import Fennec
from fennec_mlflow.parallel import in_this_process
from fennec_mlflow.serving import selection
from tests.helpers import planted_benchmark


def test_nested_cv_never_lets_a_fold_see_its_target(monkeypatch):
    data = planted_benchmark(n_models=10, n_tasks=5).tuning_data()
    fold = {}
    fits: list[tuple[str, frozenset]] = []
    real_tune_study, real_fit = selection.tune_study, Fennec.fit

    def spy_tune_study(inner, n_trials, **kwargs):
        (missing,) = set(data.P.columns) - set(inner.P.columns)  # exactly the outer target is gone
        assert missing not in inner.targets and missing not in inner.task_meta.index
        fold["target"] = missing
        return real_tune_study(inner, n_trials, **kwargs)

    def spy_fit(self, P, *args, **kwargs):
        fits.append((fold.get("target"), frozenset(P.columns)))
        return real_fit(self, P, *args, **kwargs)

    monkeypatch.setattr(selection, "tune_study", spy_tune_study)
    monkeypatch.setattr(Fennec, "fit", spy_fit)
    with in_this_process():  # the spies see every fit, the inner studies' too
        result = selection.nested_cross_validation(data, inner_trials=2)
    assert [f.target for f in result.folds] == list(data.targets)
    assert {target for target, _ in fits} == set(data.targets)
    for target, columns in fits:
        assert target not in columns  # neither inner tuning fits nor the outer fit ever see the target
    assert -1 <= result.mean_pearson <= 1


def test_nested_cv_folds_on_two_workers_are_the_folds_made_in_turn():
    data = planted_benchmark(n_models=10, n_tasks=5).tuning_data()
    in_turn = selection.nested_cross_validation(data, inner_trials=3, workers=1)
    forked = selection.nested_cross_validation(data, inner_trials=3, workers=2)
    pd.testing.assert_frame_equal(in_turn.table(), forked.table())


def test_nested_cv_outer_score_uses_the_inner_choice_on_the_full_history():
    data = planted_benchmark(n_models=10, n_tasks=4).tuning_data()
    fold = selection.nested_fold(data, "t2", inner_trials=2)
    direct = selection.loto_evaluation(dataclasses.replace(data, targets=("t2",)), fold.best_params)
    assert fold.pearson == pytest.approx(direct.per_target.at["t2", "pearson"])


def test_a_history_of_another_kind_loses_the_targets_column_in_every_fold():
    bench = planted_benchmark(n_models=8, n_tasks=4)
    other = bench.P * 0.01 + 1  # stands for FDA scores of the same tasks
    data = selection.TuningData(bench.P, bench.model_meta, bench.task_meta, ("t0", "t1"),
                                {selection.TRUTH: None, "fda": other})
    assert data.sources == ("truth", "fda")
    assert "t0" not in data.history("t0", "fda").columns and "t1" in data.history("t0", "fda").columns
    inner = data.without("t0")
    assert "t0" not in inner.histories["fda"].columns and "t0" not in inner.P.columns
    holes = other.copy()
    holes.loc["m00", ["t1", "t2", "t3"]] = float("nan")  # m00 is known on t0 only
    assert "m00" not in selection.history_without(holes, "t0").index


def test_search_space_covers_shrinkage_and_history_and_honours_fixed_params():
    bench = planted_benchmark(n_models=8, n_tasks=4)
    data = selection.TuningData(bench.P, bench.model_meta, bench.task_meta, tuple(bench.targets),
                                {selection.TRUTH: None, "fda": bench.P + 1})
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(selection.default_params(data))
    seen = []
    study.optimize(lambda trial: seen.append(selection.suggest(trial, data)) or 0.0, n_trials=12)
    assert seen[0] == {"k": min(4, data.k_max), "alpha": 0.5, "nmf_l2": 0.1, "shrinkage": "auto", "history": "truth",
                       "formulation": "shrunk"}
    assert {p["history"] for p in seen} == {"truth", "fda"} and {p["formulation"] for p in seen} == {"shrunk", "paper"}
    bare = dataclasses.replace(data, task_meta=None)  # nothing to place a new task by: the paper's cannot rank
    assert "formulation" not in selection.default_params(bare)
    assert "auto" in {p["shrinkage"] for p in seen} and any(isinstance(p["shrinkage"], float) for p in seen)
    fixed = {"k": 1, "shrinkage": 0.25}
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(selection.default_params(data, fixed))
    trial_params = []
    study.optimize(lambda trial: trial_params.append(selection.suggest(trial, data, fixed)) or 0.0, n_trials=3)
    assert all(p["k"] == 1 and p["shrinkage"] == 0.25 for p in trial_params)
    assert "k" not in study.best_params and "shrinkage_mode" not in study.best_params
    assert selection.fennec_params(study.best_params, fixed)["shrinkage"] == 0.25


def test_validate_measures_fixed_params_by_plain_leave_one_task_out_and_tuning_by_nested_cv():
    data = planted_benchmark(n_models=8, n_tasks=4).tuning_data()
    auto = {"shrinkage": "auto"}  # fixed: below popularity, this table's default would serve popularity instead
    fixed = selection.validate(data, tune=False, params={"k": 2, **auto})
    direct = selection.loto_evaluation(data, {"k": 2, "alpha": 0.5, "nmf_l2": 0.1, "shrinkage": "auto"})
    assert fixed.params == {"k": 2, "alpha": 0.5, "nmf_l2": 0.1, "shrinkage": "auto", "formulation": "shrunk"}
    assert fixed.validated_mean_pearson == pytest.approx(direct.summary["mean_pearson"])
    tuned = selection.validate(data, tune=True, n_trials=1, inner_trials=1, params=auto)
    assert tuned.method.startswith("nested cross-validation") and len(tuned.folds) == 4 and len(tuned.trials) == 1
    assert tuned.method.endswith("the defaults kept: no trial beat them beyond doubt")  # one trial: the defaults
    # one trial is Fennec's default (k capped to what an inner fold allows: 1): the nested figure is then its
    # plain leave-one-task-out
    once = selection.validate(data, tune=False, params={"k": 1, **auto})
    assert tuned.validated_mean_pearson == pytest.approx(once.validated_mean_pearson)
    assert tuned.popularity_mean_pearson == fixed.popularity_mean_pearson
    assert isinstance(tuned.trials, pd.DataFrame) and -1 <= tuned.validated_mean_pearson <= 1


def _study_with(trials: list[tuple[dict, dict[str, float]]]) -> optuna.Study:
    """A study of finished trials: (params, per-target Pearson); the first one is the default."""
    study = optuna.create_study(direction="maximize")
    distributions = {"k": optuna.distributions.IntDistribution(1, 9)}
    for params, per_target in trials:
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=distributions, value=sum(per_target.values()) / len(per_target),
            user_attrs={selection.PER_TARGET_ATTR: per_target}))
    return study


def test_a_trial_replaces_the_default_only_when_its_gain_is_beyond_doubt():
    targets = [f"t{i}" for i in range(8)]
    default = {t: 0.5 for t in targets}
    lucky = {t: 0.5 + (0.3 if i == 0 else -0.01) for i, t in enumerate(targets)}  # higher mean, one target
    steady = {t: 0.52 + 0.002 * i for i, t in enumerate(targets)}  # a little better everywhere
    study = _study_with([({"k": 4}, default), ({"k": 2}, lucky)])
    assert study.best_trial.params == {"k": 2}  # Optuna's plain best is the lucky one
    assert selection.chosen_trial(study, {"k": 4}).params == {"k": 4}
    study = _study_with([({"k": 4}, default), ({"k": 2}, lucky), ({"k": 7}, steady)])
    assert selection.chosen_trial(study, {"k": 4}).params == {"k": 7}
    # without per-target figures there is nothing to test: Optuna's best
    plain = optuna.create_study(direction="maximize")
    plain.add_trial(optuna.trial.create_trial(params={"k": 4}, value=0.1,
                                              distributions={"k": optuna.distributions.IntDistribution(1, 9)}))
    assert selection.chosen_trial(plain, {"k": 4}).params == {"k": 4}


def _twins_misled_by_their_facts(n_models: int = 12, n_pairs: int = 4, seed: int = 0):
    """Tasks in pairs with the same facts and opposite task-specific orders: each task's most similar
    task by its facts is the worst guide to it, and popularity (the shared part) is the best."""
    import numpy as np

    from fennec_mlflow.bench.public import Benchmark

    rng = np.random.default_rng(seed)
    models = [f"m{i:02d}" for i in range(n_models)]
    popular, twist = rng.normal(size=n_models), rng.normal(size=n_models)
    columns, facts = {}, {}
    for pair in range(n_pairs):
        for sign, name in ((1, f"p{pair}a"), (-1, f"p{pair}b")):
            columns[name] = 70 + 4 * popular + 5 * sign * twist + rng.normal(0, 0.3, n_models)
            facts[name] = {"log_class_count": np.log(10.0 * 4 ** pair), "log_sample_count": np.log(1000.0 * 3 ** pair)}
    P = pd.DataFrame(columns, index=pd.Index(models, name="model"))
    task_meta = pd.DataFrame.from_dict(facts, orient="index")
    return Benchmark(name="twins", description="twins", P=P, model_meta=None, task_meta=task_meta,
                     targets=list(P.columns), families=None, units="accuracy (%)")


def test_a_configuration_its_store_ranks_below_popularity_serves_popularity():
    data = _twins_misled_by_their_facts().tuning_data()
    default = selection.loto_evaluation(data, {"k": 2, "alpha": 0.5, "nmf_l2": 0.1, "shrinkage": "auto"})
    popularity = selection.popularity_evaluation(data).summary["mean_pearson"]
    assert default.summary["mean_pearson"] < popularity - 0.02  # the facts mislead the default here
    served = selection.validate(data, tune=False, params={"k": 2})
    assert served.params["task_bandwidth"] is None and served.params["shrinkage"] == 0.0
    assert served.validated_mean_pearson == pytest.approx(popularity, abs=1e-9)
    assert "so it serves popularity among the history" in served.method
    # fixed by the user, the shrinkage is theirs: validated and served as asked
    asked = selection.validate(data, tune=False, params={"k": 2, "shrinkage": "auto"})
    assert "task_bandwidth" not in asked.params and asked.validated_mean_pearson < popularity
