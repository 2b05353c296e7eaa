"""Warm-start variants on the public tables: is there a better use of 3 known scores?

    python benchmarks/warm_start_variants.py [--benchmarks parc,parc6,transfergraph] [--seeds 5] [--known 3]

Each target is held out in turn; Fennec (defaults) is fitted on the rest, told the true accuracy of
``--known`` random models of the target (the draw of ``fennec evaluate``'s ``fennec-warm-<n>``), and
judged by Pearson x 100 on the other models only, averaged over targets and seeds. Variants:

- ``cold``: no known scores;
- ``fennec``: Fennec's warm start (``rank(known_scores=...)``): history tasks weighted by their scores
  of the known models where the history vouches for it, then the Gaussian posterior where the
  history expects it to help at those known models;
- ``posterior``: the Gaussian posterior alone, always applied (observation noise 1x the residual
  variance), the warm start before the level step and the check; the variants below modify it;
- ``noise-<c>``: the same posterior with observation noise c x the residual variance;
- ``shrink-<s>``: the same posterior with the prior covariance shrunk by s toward its diagonal instead
  of the history's Ledoit-Wolf value (about 0.5 on these tables);
- ``mixture-<tau>``: history tasks weighted by exp(-r/2tau), r the residual of the best non-negative
  fit of the target's known z-scores by the task's (centred); the ranking is the weighted mean of
  the history tasks' z-scores; ``+cold``: averaged with the cold score;
- ``hindsight-task``: not a method but a bound: the single history task whose z-scores correlate best
  with the target on the judged models, picked with the target's truth. What picking one similar task
  could give at best.

Prints one row per benchmark; takes about 1-3 minutes on 2 cores. docs/evaluation.md quotes it.

``--subtables N --seed S`` instead draws N random small sub-tables (``heldout_tables.py``'s draws:
10-42 models, 7-11 targets) and compares cold, the posterior alone and Fennec's warm start on each,
leave-one-target-out with 3 draws of known models per target: what do the level step and the
posterior's check cost or gain?
``--min-tasks`` overrides ``KNOWN_LEVEL_MIN_TASKS`` for that study (how it was chosen).
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
from heldout_tables import draw_tables, parc_all  # a sibling script (on sys.path)
from tqdm import tqdm

from fennec_mlflow.bench.evaluate import FennecFits, draw_known
from fennec_mlflow.bench.public import load_benchmark
from fennec_mlflow.config import FENNEC_DEFAULTS
from fennec_mlflow.core import recommender
from fennec_mlflow.core.evaluation import pearson, zscore_per_task
from fennec_mlflow.core.recommender import posterior_mean
from fennec_mlflow.serving.selection import fennec_scores, fit_fennec

NOISES = (0.1, 0.3, 3.0)
SHRINKS = (0.0, 0.2)
TAUS = (0.5, 1.0, 2.0)
VARIANTS = ("fennec", "posterior", *(f"noise-{noise}" for noise in NOISES), *(f"shrink-{shrink}" for shrink in SHRINKS),
            *(f"mixture-{tau}{suffix}" for tau in TAUS for suffix in ("", "+cold")))


def task_mixture(history_z: np.ndarray, known: np.ndarray, known_z: np.ndarray, tau: float) -> np.ndarray:
    """Weighted mean of the history's z-score columns, each weighted by how well it fits the known scores."""
    columns = np.nan_to_num(history_z)
    target = known_z - known_z.mean()
    residuals = []
    for column in columns.T:
        centred = column[known] - column[known].mean()
        slope = max(0.0, float(target @ centred) / max(float(centred @ centred), 1e-9))
        residuals.append(float(np.sum((target - slope * centred) ** 2)))
    residuals = np.asarray(residuals)
    weights = np.exp(-(residuals - residuals.min()) / (2 * tau))
    return columns @ (weights / weights.sum())


def variants(benchmark: str, seeds: int, n_known: int) -> dict[str, float]:
    bench = load_benchmark(benchmark)
    fits = FennecFits(bench)
    table = bench.P
    scores: dict[str, list[float]] = {}
    for target in tqdm(bench.targets, desc=benchmark):
        history_z = zscore_per_task(bench.history_for(target))
        for seed in range(seeds):
            model = fits.get(target, seed, FENNEC_DEFAULTS["alpha"])
            names = pd.Index(model.model_names_)
            cold = fennec_scores(model, target, fits.data, names).to_numpy()
            known_names = draw_known(table[target], n_known, seed, target)
            known = names.get_indexer(known_names)
            values = table.loc[known_names, target].to_numpy(float)
            truth = table[target].reindex(names).to_numpy(float)
            judged = np.ones(len(names), bool)
            judged[known] = False
            ranked = {"cold": cold}
            if np.ptp(values) == 0:  # equal scores order nothing: every variant ranks cold, as Fennec does
                ranked.update({name: cold for name in VARIANTS})
            else:
                known_z = model._known_z(cold, known, values)
                ranked["fennec"] = fennec_scores(model, target, fits.data, names,
                                                 dict(zip(known_names, values))).to_numpy()
                ranked["posterior"] = posterior_mean(cold, model.residuals_, model.residual_shrinkage_, known,
                                                     known_z)
                for shrink in SHRINKS:
                    ranked[f"shrink-{shrink}"] = posterior_mean(cold, model.residuals_, shrink, known, known_z)
                for noise in NOISES:
                    ranked[f"noise-{noise}"] = posterior_mean(cold, model.residuals_, model.residual_shrinkage_,
                                                              known, known_z, noise=noise)
                columns = history_z.reindex(names).to_numpy(float)
                for tau in TAUS:
                    mixture = task_mixture(columns, known, known_z, tau)
                    ranked[f"mixture-{tau}"] = mixture
                    ranked[f"mixture-{tau}+cold"] = 0.5 * (mixture + cold)
            for name, score in ranked.items():
                scores.setdefault(name, []).append(pearson(score[judged], truth[judged]))
            columns = history_z.reindex(names).to_numpy(float)[judged]
            seen = np.isfinite(truth[judged])
            per_task = [pd.Series(column[seen]).corr(pd.Series(truth[judged][seen])) for column in columns.T]
            scores.setdefault("hindsight-task", []).append(float(np.nanmax(per_task)))
    return {name: 100 * float(np.nanmean(values)) for name, values in scores.items()}


def subtables(count: int, seed: int, n_known: int) -> pd.DataFrame:
    """Cold, posterior alone and Fennec's warm start on random small sub-tables (one row each)."""
    sources = {"transfergraph": load_benchmark("transfergraph"), "parc_all": parc_all()}
    rows = []
    for table in tqdm(draw_tables(sources, count, seed), desc="sub-tables"):
        data = table.tuning_data()
        scores: dict[str, list[float]] = {"cold": [], "posterior": [], "fennec": []}
        for target in table.targets:
            model = fit_fennec(table.history_for(target), dict(FENNEC_DEFAULTS), data, seed=0)
            names = pd.Index(model.model_names_)
            truth = table.P[target].reindex(names).to_numpy(float)
            cold = fennec_scores(model, target, data, names).to_numpy()
            for draw in range(3):
                known_names = draw_known(table.P[target].dropna(), n_known, draw, target)
                values = table.P.loc[known_names, target].to_numpy(float)
                if np.ptp(values) == 0:
                    continue
                known = names.get_indexer(known_names)
                judged = np.isfinite(truth)
                judged[known] = False
                ranked = {"cold": cold,
                          "posterior": posterior_mean(cold, model.residuals_, model.residual_shrinkage_, known,
                                                      model._known_z(cold, known, values)),
                          "fennec": fennec_scores(model, target, data, names,
                                                  dict(zip(known_names, values))).to_numpy()}
                for name, score in ranked.items():
                    scores[name].append(pearson(score[judged], truth[judged]))
        rows.append({"table": table.name, "models": table.P.shape[0], "targets": len(table.targets),
                     **{name: 100 * float(np.nanmean(values)) for name, values in scores.items()}})
    return pd.DataFrame(rows).set_index("table")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmarks", default="parc,parc6,transfergraph")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--known", type=int, default=3)
    parser.add_argument("--subtables", type=int, default=0, help="study random small sub-tables instead")
    parser.add_argument("--seed", type=int, default=3, help="--subtables: the draw")
    parser.add_argument("--min-tasks", type=int, default=None, help="override KNOWN_LEVEL_MIN_TASKS (a study)")
    args = parser.parse_args()
    if args.min_tasks is not None:
        recommender.KNOWN_LEVEL_MIN_TASKS = args.min_tasks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if args.subtables:
            results = subtables(args.subtables, args.seed, args.known)
            gain = results["fennec"] - results["posterior"]
            print(f"Pearson x 100 on the models not told, {args.known} known scores, 3 draws per target; "
                  f"KNOWN_LEVEL_MIN_TASKS = {recommender.KNOWN_LEVEL_MIN_TASKS}")
            print(results.round(1).to_string())
            print(f"mean: {results[['cold', 'posterior', 'fennec']].mean().round(2).to_dict()}; Fennec's warm "
                  f"start vs the posterior alone: behind on {(gain < -0.05).sum()}, ahead on {(gain > 0.05).sum()} "
                  f"of {len(results)} (worst {gain.min():+.2f}, best {gain.max():+.2f})")
            for name in ("posterior", "fennec"):
                over_cold = results[name] - results["cold"]
                print(f"{name} vs cold: behind on {(over_cold < -0.05).sum()}, ahead on {(over_cold > 0.05).sum()} "
                      f"of {len(results)} (worst {over_cold.min():+.2f})")
            return
        rows = {name: variants(name, args.seeds, args.known) for name in args.benchmarks.split(",")}
    table = pd.DataFrame(rows).T
    print(f"Pearson x 100 on the models not told, {args.known} known scores, {args.seeds} seeds")
    print(table.round(1).to_string())


if __name__ == "__main__":
    main()
