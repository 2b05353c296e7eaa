"""Write docs/evaluation.md from the evaluation and tune runs in the MLflow store.

    python benchmarks/make_evaluation_report.py [--benchmarks parc,parc6,transfergraph]
        [--output docs/evaluation.md] [--img-dir docs/img]

Reads, per benchmark, the newest finished ``fennec.kind=evaluation`` run of each estimator in
experiment ``fennec-eval-<benchmark>`` and the newest finished ``fennec.kind=tune`` run in
``fennec-tune-<benchmark>`` (MLFLOW_TRACKING_URI, else ./mlflow.db). Nothing is recomputed:
every number in the report is a metric of a run, and every figure is a run's artifact or drawn
from run metrics. Figures go to ``docs/img/evaluation-*.png``.
"""
from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path

import numpy as np

from fennec_mlflow.bench import evaluate as evaluation_runs
from fennec_mlflow.store import tracking
from fennec_mlflow.bench import tuning
from fennec_mlflow.bench.public import load_benchmark
from fennec_mlflow.core.evaluation import metric_name_part
from make_end_to_end_report import copy_artifact, markers  # this script's folder is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = ("parc", "parc6", "transfergraph")
README_POPULARITY = {"parc": 70.3, "parc6": 67.6, "transfergraph": 75.5}
SCATTERS = ("fennec", "fennec-warm-3", "popularity")
LABELS = {
    "fennec": "Fennec (cold start, defaults)",
    "fennec-no-transfer": "Fennec without transfer phase (alpha=1)",
    "fennec-no-meta": "Fennec without meta phase (alpha=0)",
    "fennec-additive-meta": "Fennec, additive meta regression (no interactions)",
    "fennec-paper": "Fennec, the paper's formulation (eq. 10 merge)",
    "fennec-warm-1": "Fennec warm start, 1 known entry",
    "fennec-warm-3": "Fennec warm start, 3 known entries",
    "fennec-warm-5": "Fennec warm start, 5 known entries",
    "popularity": "popularity",
    "family-mean": "architecture-family mean",
    "archi2vec-family-mean": "archi2vec nearest-family mean (own + nearest architecture)",
    "model-size": "model size (parameter count, larger first; no data)",
    "source-accuracy": "source accuracy (e.g. ImageNet top-1; no data)",
    "random": "random",
}


def newest_runs(client, experiment: str, kind: str) -> list:
    return tracking.runs_of_kind(kind, experiment=experiment, mlflow_client=client)


def evaluation_runs_by_estimator(client, benchmark: str) -> dict:
    chosen = {}
    for run in newest_runs(client, evaluation_runs.experiment_name(benchmark), "evaluation"):  # newest first
        chosen.setdefault(run.data.params.get("estimator"), run)
    return {name: chosen[name] for name in evaluation_runs.ESTIMATORS if name in chosen}


def _fmt(value, scale: float = 100.0, digits: int = 1) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{scale * value:.{digits}f}"


def mean_table(runs: dict, units: str) -> str:
    regret_scale = 1.0 if "%" in units else 100.0
    lines = ["| estimator | mean Pearson | ± seeds | Spearman | weighted τ | top-1 regret (points) | top-5 hit | "
             "same models: cold Fennec / popularity |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, run in runs.items():
        m = run.data.metrics
        paired = ""
        if "paired_cold_mean_pearson" in m:
            paired = f"{_fmt(m['paired_cold_mean_pearson'])} / {_fmt(m['paired_popularity_mean_pearson'])}"
        lines.append(f"| {LABELS.get(name, name)} | **{_fmt(m.get('mean_pearson'))}** | {_fmt(m.get('seed_std_pearson'))} | "
                     f"{_fmt(m.get('mean_spearman'))} | {_fmt(m.get('mean_weighted_tau'))} | "
                     f"{_fmt(m.get('mean_top1_regret'), regret_scale, 2)} | {_fmt(m.get('mean_top5_hit'), 1.0, 2)} | {paired} |")
    return "\n".join(lines)


def per_target_table(runs: dict, targets: list[str], metric: str, scale: float, digits: int) -> str:
    lines = ["| estimator | " + " | ".join(targets) + " | mean |", "|---|" + "---:|" * (len(targets) + 1)]
    for name, run in runs.items():
        m = run.data.metrics
        cells = [_fmt(m.get(f"{metric}.{metric_name_part(t)}"), scale, digits) for t in targets]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(m.get(f'mean_{metric}'), scale, digits)} |")
    return "\n".join(lines)


def bar_chart(runs: dict, benchmark: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs)
    means = [100 * runs[n].data.metrics["mean_pearson"] for n in names]
    spread = [100 * runs[n].data.metrics.get("std_pearson", 0.0) for n in names]
    colours = ["#4C72B0" if n.startswith("fennec") else "#8C8C8C" for n in names]
    figure, axes = plt.subplots(figsize=(8, 0.42 * len(names) + 1.2))
    axes.barh(names[::-1], means[::-1], xerr=spread[::-1], color=colours[::-1], capsize=2, alpha=0.9)
    if "popularity" in runs:
        axes.axvline(100 * runs["popularity"].data.metrics["mean_pearson"], color="#DD8452", linestyle="--",
                     linewidth=1, label="popularity")
        axes.legend(fontsize=8, loc="lower right")
    axes.set_xlabel("mean leave-one-task-out Pearson x 100 (error bar: std over targets)")
    axes.set_title(f"{benchmark}: every estimator, cold start from task meta (no images)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def tune_section(client, benchmark: str, img_dir: Path, rel: str) -> list[str]:
    runs = newest_runs(client, tuning.experiment_name(benchmark), "tune")
    if not runs:
        return [f"No finished tune run in experiment `{tuning.experiment_name(benchmark)}` yet "
                f"(`mlflow run . -e tune --env-manager local -P benchmark={benchmark}`)."]
    run = runs[0]
    m, p = run.data.metrics, run.data.params
    out = [f"Optuna study `{p.get('study_name')}` ({p.get('sampler')}, {int(m.get('n_trials', 0))} trials, "
           f"{p.get('inner_trials')} per nested-CV fold; k in {p.get('k_range')}, alpha in [0, 1], "
           f"nmf_l2 in {p.get('nmf_l2_range')}), parent run `{run.info.run_id}`:", "",
           "| Fennec, cold start | mean Pearson |", "|---|---:|",
           f"| defaults (k=4, alpha=0.5, nmf_l2=0.1), seed {p.get('fennec_seed')} | {_fmt(m.get('default_mean_pearson'))} |",
           f"| best trial, chosen on all targets (**optimistic**) | {_fmt(m.get('best_mean_pearson'))} |",
           f"| **nested CV** (tuned on each target's history only: the honest figure) | "
           f"**{_fmt(m.get('nested_cv_mean_pearson'))}** |",
           f"| popularity, for reference | {_fmt(m.get('popularity_mean_pearson'))} |", "",
           f"Best params over all targets (what `build` reads when tuned into its experiment): "
           f"`k={p.get('best_k')}`, `alpha={float(p.get('best_alpha', 'nan')):.3f}`, "
           f"`nmf_l2={float(p.get('best_nmf_l2', 'nan')):.4f}`."]
    nested = {k.split(".", 1)[1]: v for k, v in m.items() if k.startswith("nested_cv_pearson.")}
    if nested:
        out += ["", "Nested CV, outer Pearson per target x 100: " +
                ", ".join(f"{t} {_fmt(v)}" for t, v in sorted(nested.items())) + "."]
    image = img_dir / f"evaluation-{benchmark}-tuning.png"
    if copy_artifact(client, run.info.run_id, "optimization_history.png", image):
        out += ["", f"![Optuna history on {benchmark}]({rel}/{image.name})"]
    return out


def benchmark_section(client, benchmark: str, img_dir: Path, rel: str) -> list[str]:
    bench = load_benchmark(benchmark)
    runs = evaluation_runs_by_estimator(client, benchmark)
    out = [f"## `{benchmark}`: {bench.description}", ""]
    if not runs:
        return out + [f"No evaluation runs in `{evaluation_runs.experiment_name(benchmark)}` yet.", ""]
    first = next(iter(runs.values()))
    targets = first.data.params["targets"].split(",")
    pop = runs.get("popularity")
    out += [f"Experiment `{evaluation_runs.experiment_name(benchmark)}`; {first.data.params['models']} models, "
            f"{first.data.params['tasks']} tasks, targets: {', '.join(targets)}; seeds "
            f"{first.data.params.get('seeds')}; model meta: {first.data.params['model_meta_columns']} columns, "
            f"task meta: {first.data.params['task_meta_columns']} columns. Correlations x 100; top-1 regret in "
            f"accuracy points.", ""]
    if pop is not None:
        out += [f"Popularity reference: measured {_fmt(pop.data.metrics['mean_pearson'], digits=2)}, "
                f"documented {README_POPULARITY.get(benchmark, '–')} (shared/benchmarks/README.md).", ""]
    if benchmark in PAPER:
        out += [PAPER[benchmark], ""]
    out += ["### Mean over targets", "", mean_table(runs, bench.units), ""]
    missing = {name: evaluation_runs.unavailable(bench, name) for name in evaluation_runs.ESTIMATORS if name not in runs}
    out += [f"Not evaluated on {benchmark}: " + "; ".join(f"{name} ({reason})" if reason else name
                                                         for name, reason in missing.items()) + ".", ""] if missing else []
    chart = img_dir / f"evaluation-{benchmark}-mean.png"
    bar_chart(runs, benchmark, chart)
    out += [f"![mean Pearson per estimator on {benchmark}]({rel}/{chart.name})", ""]
    out += ["### Pearson per target", "", per_target_table(runs, targets, "pearson", 100, 1), ""]
    regret_scale = 1.0 if "%" in bench.units else 100.0
    out += ["### Top-1 regret per target (accuracy points)", "",
            per_target_table(runs, targets, "top1_regret", regret_scale, 2), ""]
    out += ["### Predicted vs true", ""]
    for name in SCATTERS:
        if name in runs:
            image = img_dir / f"evaluation-{benchmark}-{name}.png"
            if copy_artifact(client, runs[name].info.run_id, "scatter.png", image):
                out += [f"![{name} on {benchmark}]({rel}/{image.name})", ""]
    out += ["### Tuning", ""] + tune_section(client, benchmark, img_dir, rel) + [""]
    return out


def goals_section(client, chosen: list[str]) -> list[str]:
    lines = ["## Goals of issue 5 (the earlier quality goals), checked", "",
             "| benchmark | cold Fennec - popularity | nested-CV tuned - popularity | warm start (3) | "
             "cold Fennec top-1 regret (points) |", "|---|---:|---:|---:|---:|"]
    for benchmark in chosen:
        runs = evaluation_runs_by_estimator(client, benchmark)
        if "fennec" not in runs or "popularity" not in runs:
            continue
        bench = load_benchmark(benchmark)
        pop = runs["popularity"].data.metrics["mean_pearson"]
        cold = runs["fennec"].data.metrics
        tune = newest_runs(client, tuning.experiment_name(benchmark), "tune")
        nested = tune[0].data.metrics.get("nested_cv_mean_pearson") if tune else None
        warm = runs.get("fennec-warm-3")
        regret_scale = 1.0 if "%" in bench.units else 100.0
        lines.append(f"| {benchmark} | {100 * (cold['mean_pearson'] - pop):+.1f} (goal +5) | "
                     f"{'–' if nested is None else f'{100 * (nested - pop):+.1f}'} | "
                     f"{_fmt(warm.data.metrics['mean_pearson']) if warm else '–'} (goal 85) | "
                     f"{_fmt(cold['mean_top1_regret'], regret_scale, 2)} (goal < 1) |")
    return lines


def recommender_goals_section(client, chosen: list[str]) -> list[str]:
    """Issue 13's goals on the public tables, from the evaluation and tuning runs."""
    lines = ["## Goals of issue 13 (a recommender that earns its place), checked", "",
             "| benchmark | cold Fennec - popularity (goal >= 0) | nested-CV tuned - popularity (goal >= 0) | "
             "warm start (3) - cold, same models (goal >= +5) | top-1 regret, cold Fennec / popularity (goal <=) | "
             "top-1 regret, warm start (3) / popularity on the same models (goal <=) |",
             "|---|---:|---:|---:|---:|---:|"]
    for benchmark in chosen:
        runs = evaluation_runs_by_estimator(client, benchmark)
        if "fennec" not in runs or "popularity" not in runs:
            continue
        points = 1.0 if "%" in load_benchmark(benchmark).units else 100.0
        pop, cold = runs["popularity"].data.metrics, runs["fennec"].data.metrics
        tune = newest_runs(client, tuning.experiment_name(benchmark), "tune")
        nested = tune[0].data.metrics.get("nested_cv_mean_pearson") if tune else None
        warm = runs.get("fennec-warm-3")
        warm_gain = (None if warm is None or "paired_cold_mean_pearson" not in warm.data.metrics else
                     warm.data.metrics["mean_pearson"] - warm.data.metrics["paired_cold_mean_pearson"])
        regret, pop_regret = cold["mean_top1_regret"], pop["mean_top1_regret"]
        nested_gap = "–" if nested is None else f"{100 * (nested - pop['mean_pearson']):+.1f}"
        warm_text = "–" if warm_gain is None else f"{100 * warm_gain:+.1f}"
        warm_regret = "–"
        if warm is not None and "paired_popularity_mean_top1_regret" in warm.data.metrics:
            ours, theirs = warm.data.metrics["mean_top1_regret"], warm.data.metrics["paired_popularity_mean_top1_regret"]
            warm_regret = (f"{_fmt(ours, points, 2)} / {_fmt(theirs, points, 2)} "
                           f"({'met' if ours <= theirs + 1e-12 else 'missed'})")
        lines.append(
            f"| {benchmark} | {100 * (cold['mean_pearson'] - pop['mean_pearson']):+.1f} | {nested_gap} | "
            f"{warm_text} | {_fmt(regret, points, 2)} / {_fmt(pop_regret, points, 2)} "
            f"({'met' if regret <= pop_regret + 1e-12 else 'missed'}) | {warm_regret} |")
    lines += ["", "The goal's top-1 clause stands beside the warm start, so both readings are shown: cold "
              "Fennec's top pick against popularity's (all targets), and the warm start's against popularity's on "
              "the models it was not told (the runs' paired figures).", "", WARM_START_TRIED, "",
              "The end-to-end benchmarks with images (`real`, `synthetic`, below) check the same goals from "
              "their runs, with the stricter one where a proxy exists (Fennec at least popularity + 3), and "
              "the synthetic goal (the default without labels at least the best label-based estimator, for "
              "20x less feature time): see the issue-13 lines of their first list."]
    return lines


# What was tried for the warm-start goal; the figures come from benchmarks/warm_start_variants.py.
WARM_START_TRIED = (
    "The warm-start goal (+5 with 3 known scores) is missed on every public table. Fennec's warm start has two "
    "steps: the bias is first re-weighted toward the history tasks whose raw scores of the known models lie "
    "close to the known scores (a kernel on their difference; the level says which tasks are alike, which three "
    "centred scores cannot), where a leave-one-task-out check on the history at the same known models vouches "
    "for it beyond doubt and the history has at least 10 tasks; then the Gaussian posterior, where the history "
    "expects it to help at the same known models (each history task plays the new task, the covariance from the "
    "other tasks' residuals recomputed without it, each told the known models it measured, at least 3 of "
    "them; the mean gain in Pearson on its other models must be positive, over at least 3 such tasks: with "
    "fewer the known scores are not propagated, which on an 11-model table with 2 history tasks kept 5 known "
    "scores from costing 22 points). The posterior leaves the task's offset free and, from 4 known scores on, its "
    "slope on the cold prediction too (a cold prediction is a shrunk average, flatter than a real task; read "
    "as a residual, that flatness moved the other models wherever the covariance linked them to the known "
    "ones). Judged as above on the models not told (re-measured 2026-12-02, after the transfer weight's shrink: `python "
    "benchmarks/warm_start_variants.py`: 5 seeds; parc / parc6 / transfergraph): 72.0 / 68.8 / 77.7 against "
    "cold 71.8 / 68.6 / 76.2 and the posterior alone, always applied, 72.5 / 69.4 / 76.7 (PARC's 6 history "
    "tasks are too few for the level check, so there the posterior acts alone, and its check turns it off for "
    "some draws that it would have helped); with 5 known scores (`--known 5`) 74.2 / 71.1 / 77.7 against cold "
    "73.3 / 70.2 / 76.2 (with the slope propagated, as before 2026-12-01: 74.1 / 71.1 / 78.2); with 10 "
    "(`--known 10`) 75.0 / 71.8 / 78.5 against cold 73.1 / 69.6 / 76.3 (slope propagated: 74.2 / 71.2 / 78.0). "
    "On 20 random small sub-tables (`--subtables 20 --seed 3`; 10-42 models, 6-10 history tasks) Fennec's "
    "warm start gains +1.9 over cold with 3 known scores and +3.7 with 5 (`--known 5`; slope propagated, "
    "before 2026-12-01: +3.1); it trails cold on 2 and 1 of the 20 tables (worst -1.5 and -1.2; slope propagated, 3 tables at 5 "
    "known, worst -5.0). On five published tables not in the repository and SFDA's supervised table imported "
    "through `fennec import` (5 known scores, 5 seeds, `fennec evaluate --benchmark store --source sfda` for "
    "the latter) the free slope turned two losses into gains: the imported SFDA table 91.4 against cold 91.1 "
    "(slope propagated: 90.1), a supervised-head table 84.3 against 83.5 (82.2); with 3 known scores, where "
    "offset and slope would leave one of three directions, leaving the slope free cut the sub-tables' gain from "
    "+1.9 to +1.2, so there it is propagated as before. Why the check: "
    "where the history's models share little beyond popularity (a zoo of ImageNet models; the end-to-end "
    "benchmarks' few models), 5 known scores made the ranking of the other models worse than cold; the check "
    "halves that loss there (see the end-to-end rows below) at the cost above. Why 10 tasks for the level step: "
    "allowed from 3 history tasks (`--min-tasks 3`) it fell behind the posterior alone on 10 and 6 of 20 small "
    "tables (seeds 3 and 4; worst -0.9, mean -0.2 and -0.05): with few tasks the check is fooled by history "
    "tasks that have a near twin when the target has none. Also tried: the posterior's observation noise 0.1x, "
    "0.3x or 3x the residual variance (moves it by at most 0.3) or chosen per query by a history check (within "
    "0.2); its prior covariance shrunk by 0 or 0.2 instead of the history's Ledoit-Wolf value (about 0.5; at "
    "most 0.2); the posterior's check requiring a gain beyond one or two standard errors instead of a positive "
    "mean (nearly never on: the PARC gains vanish); a task mixture (history tasks weighted by how well their "
    "centred z-scores on the known models fit the target's: 0.6 to 1.8 points below cold alone, and below the "
    "posterior when averaged with cold); a partial step toward the posterior where the check passes (prior + "
    "step x (posterior - prior); 2026-11-30): a step of 0.5 gave 72.0 / 68.9 / 77.6 with 3 known scores and "
    "74.0 / 71.1 / 78.0 with 5 (the full step: 72.0 / 68.8 / 77.7 and 74.3 / 71.4 / 78.1), and on the end-to-end "
    "benchmarks with 5 known scores real 64.0, synthetic 69.0 against the full step's 62.8 / 68.6 (cold 64.7 / "
    "69.5; measured with the task facts' similar-task bias: with the proxy's, since, the full step gives 66.3 / "
    "68.7 against cold 68.6 / 69.6 on the same models); the step set to the lower confidence bound of the slope of the check's task truths on their "
    "posterior updates (as the interaction weights are) gave 71.5 / 68.4 / 77.7 and 73.6 / 70.5 / 78.1 (below cold "
    "on PARC), end to end 64.1 / 69.4 (measured before the free slope; not re-measured since). Neither wins "
    "everywhere, so the full step stays. Tried 2026-12-01 for the slope: a Gaussian prior on it (mean 1, "
    "variance the spread of the history tasks' own slopes on their out-of-fold predictions) instead of a flat one "
    "gave the sub-tables +2.0 / +4.0 with 3 / 5 known scores, but a worst table of -4.5 / -3.9; rescaling the "
    "prior by the slope the known scores imply lost up to 16 points with 3 known scores; a step toward the "
    "posterior chosen by the check (0.25 to 1) chose the full step where it hurt. The headroom: the single history task most like the target, picked in "
    "hindsight with the target's own truth, would rank at 85.5 / 84.7 / 81.0; 3 (or 10) scores of 32 to 180 "
    "models do not tell which task that is, except through their level where the history is large enough to "
    "check it.")


def calibration_section(client, chosen: list[str]) -> list[str]:
    """Issue 16: coverage of Fennec's predicted-accuracy interval, from the ``fennec`` evaluation runs."""
    lines = ["## Predicted accuracy: calibration of the interval", "",
             "`rank` (CLI, pyfunc, REST) gives each candidate a predicted fine-tune accuracy and an interval "
             "(`fennec_mlflow/core/accuracy.py`): the new task's level is predicted from the history's tasks "
             "(median, or a ridge on the task facts when that predicted held-out tasks better), Fennec's z-score "
             "places the model within it (logit scale), and the interval is split conformal: the residual "
             "quantiles of every history task predicted from the others. Here each target is held out in turn "
             "(the accuracy model never sees it) and its known cells are checked against their intervals; "
             "coverage is pooled over cells and averaged over seeds. Most of the error is the task's level, "
             "so a target's cells tend to fall in or out together: with 6 to 13 targets the figure moves in "
             "steps of several points.", "",
             "| benchmark | nominal | coverage | within 5 points | mean width (points) | mean abs. error (points) | "
             "coverage per target |", "|---|---:|---:|---|---:|---:|---|"]
    rows = 0
    for benchmark in chosen:
        run = evaluation_runs_by_estimator(client, benchmark).get("fennec")
        if run is None or "fennec_interval_coverage" not in run.data.metrics:
            continue
        m = run.data.metrics
        points = 1.0 if "%" in load_benchmark(benchmark).units else 100.0
        nominal, coverage = m.get("interval_level", 0.8), m["fennec_interval_coverage"]
        per_target = ", ".join(f"{k.split('.', 1)[1]} {_fmt(v, digits=0)}" for k, v in sorted(m.items())
                               if k.startswith("interval_coverage."))
        lines.append(f"| {benchmark} | {_fmt(nominal, digits=0)} % | {_fmt(coverage)} % | "
                     f"{'yes' if abs(coverage - nominal) <= 0.05 else 'no'} | {_fmt(m['fennec_interval_width'], points)} | "
                     f"{_fmt(m['fennec_accuracy_abs_error'], points)} | {per_target} |")
        rows += 1
    if not rows:
        return lines[:2] + ["No `fennec` evaluation run with interval metrics yet (re-run the evaluations)."]
    return lines


PAPER = {"parc6": "The Fennec paper reports mean Pearson 68.12 for Fennec on the PARC benchmark (SFDA 67.76, "
                  "LogME 55.09), with FDA scores of probe images as history and a CLIP proxy of the target's "
                  "images: another setting than this image-free one, given for orientation only."}


def findings_section(client, chosen: list[str]) -> list[str]:
    """A few sentences computed from the runs (so they cannot go stale)."""
    lines = ["## Findings", ""]
    for benchmark in chosen:
        runs = evaluation_runs_by_estimator(client, benchmark)
        if not runs:
            continue
        mean = {name: 100 * run.data.metrics["mean_pearson"] for name, run in runs.items()}
        best = max(mean, key=mean.get)
        sentence = [f"- **{benchmark}**: best mean Pearson {mean[best]:.1f} ({best})"]
        if "fennec" in mean and "popularity" in mean:
            sentence.append(f"cold Fennec {mean['fennec']:.1f} vs popularity {mean['popularity']:.1f} "
                            f"({mean['fennec'] - mean['popularity']:+.1f})")
        if "fennec-no-meta" in mean and "fennec-no-transfer" in mean:
            sentence.append(f"transfer phase alone {mean['fennec-no-meta']:.1f}, meta phase alone "
                            f"{mean['fennec-no-transfer']:.1f}")
        if "fennec-additive-meta" in mean:
            sentence.append(f"without interaction terms {mean['fennec-additive-meta']:.1f}")
        warm = runs.get("fennec-warm-3")
        if warm is not None and "paired_cold_mean_pearson" in warm.data.metrics:
            m = warm.data.metrics
            sentence.append(f"3 known entries {100 * m['mean_pearson']:.1f} vs cold "
                            f"{100 * m['paired_cold_mean_pearson']:.1f} on the same models")
        tune = newest_runs(client, tuning.experiment_name(benchmark), "tune")
        if tune and "nested_cv_mean_pearson" in tune[0].data.metrics:
            m = tune[0].data.metrics
            sentence.append(f"tuned: {100 * m['best_mean_pearson']:.1f} when chosen and measured on the same targets, "
                            f"{100 * m['nested_cv_mean_pearson']:.1f} under nested CV")
        lines.append("; ".join(sentence) + ".")
    lines += ["", "Read the nested-CV figure, not the tuned-on-all-targets one, as what tuning buys on a new task: "
              "with 6 to 12 history tasks the choice of k, alpha and nmf_l2 is itself noisy."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    parser.add_argument("--output", default=str(REPO / "docs" / "evaluation.md"))
    parser.add_argument("--img-dir", default=None, help="default: img/ next to the output")
    args = parser.parse_args()
    chosen = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    output = Path(args.output)
    img_dir = Path(args.img_dir) if args.img_dir else output.parent / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    rel = Path(os.path.relpath(img_dir.resolve(), output.parent.resolve())).as_posix()
    client = tracking.client()

    lines = [
        "# Evaluation on public fine-tuning tables",
        "",
        "The end-to-end benchmarks with images and real fine-tunes, where Fennec uses its proxy and is compared "
        "with every label-based estimator including feature-extraction time, are the last two sections: "
        "[real models and real images](#real-models-real-images-real-fine-tunes-real) and "
        "[synthetic images](#end-to-end-with-real-fine-tunes-synthetic). Both were re-measured on "
        "2026-12-02, after the transfer weight's James-Stein shrink of that day. Real: Fennec 77.4 -> 77.5, "
        "its transfer weight, 0.07 to 0.42 before, now zero on 11 of 12 targets, its top-1 regret 5.1 -> 8.5 "
        "points (popularity's 8.7). Synthetic was rebuilt from scratch on a new machine (its zoo pre-trained "
        "again), and its ground truth moved with it (popularity 68.0 -> 64.2, LogME 58.3 -> 47.4, FDA 53.4 -> "
        "32.4; Fennec 70.8 -> 67.2): compare rows within one run.",
        "",
        f"Generated by `python benchmarks/make_evaluation_report.py` from the runs in the MLflow store "
        f"({datetime.date.today().isoformat()}); every number below is a metric of an MLflow run "
        "(`fennec.kind=evaluation` / `tune`), every figure a run's artifact or drawn from run metrics.",
        "",
        "> **These public tables carry no images.** Their probe sets are not published, so Fennec's cold-start "
        "task vector is regressed from **task meta alone** (log class count, log training-set size, domain "
        "one-hot, from `fennec_mlflow/resources/task_facts.csv`); the paper's CLIP proxy is not used anywhere "
        "in this report. What the recommender sees: the other tasks' true accuracies, model meta (below) "
        "and those task facts.",
        "",
        "## How these numbers were made",
        "",
        "```bash",
        "python projects/public_benchmarks/run_all.py      # evaluate + tune all three, then this report",
        "# or one step at a time, through the MLproject entry points:",
        "mlflow run . -e evaluate --env-manager local -P benchmark=parc     # also parc6, transfergraph",
        "mlflow run . -e tune --env-manager local -P benchmark=parc -P n_trials=20",
        "python benchmarks/make_evaluation_report.py",
        "```",
        "",
        "Protocol (`fennec_mlflow/core/evaluation.py`, `fennec_mlflow/bench/evaluate.py`): leave-one-task-out. "
        "Each target in turn is held out; the predictor sees the matrix without the target's column. "
        "Per target: Pearson (the paper's metric), Spearman, weighted Kendall τ (as SFDA), top-1 regret "
        "(best true accuracy minus that of the top-ranked model), top-5 hit (1 by construction where 5 or fewer models are judged); missing cells are skipped. "
        "Fennec variants are averaged over 5 seeds (NMF start and forest; ± seeds = std of the per-seed means). "
        "Warm starts are given the true accuracy of n random models of the target (per seed) and are "
        "**judged on the other models only**; the last column of the mean tables scores cold Fennec and "
        "popularity on exactly those remaining models, the fair comparison. With 1 known entry nothing can "
        "be ordered (two distinct values are needed), so warm-1 ranks like cold start.",
        "",
        "Fennec's default is the **shrunk formulation** (`fennec_mlflow/core/recommender.py`): popularity "
        "among similar tasks (each model's mean z-score over the history tasks, each task weighted by "
        "exp(−d²/2) + 0.2 of its task-fact distance d to the target, so a target unlike the whole history "
        "gets plain popularity; a fact not known is left out of d, and a task with no fact known to both "
        "weighs the mean of the others' kernels; the popularity row is the unweighted mean) plus the transfer and meta "
        "interactions, each weighted by what the history "
        "can vouch for: on every history task treated as new, the slope of what popularity without that task "
        "misses on the out-of-bag forest interaction, taken as it is (the history's empirical-Bayes shrinkage, "
        "clipped to [0, 1]), kept only if it raises the mean per-task Pearson on the history by half a "
        "standard error and then shrunk by 1 − 1/t², t that gain over its standard error (positive-part "
        "James-Stein: a gain the history barely vouches for keeps a fraction of its slope), "
        "and on the leave-one-task-out ridge interaction, taken at its lower confidence bound "
        "(one-sided ~98%, Student's t over tasks) and kept only if it raises the per-task Pearson at that "
        "confidence; its warm start is a Gaussian "
        "posterior over the history's out-of-fold residuals. `fennec-paper` is the paper's eq. 10 merge with its fold-in warm start.",
        "",
        "Model meta: PARC: architecture one-hot, archi2vec of the torchvision architecture (graph2vec on the 4 "
        "autograd graphs, PCA to 3 dims), log parameters and layers, source dataset one-hot and the source's "
        "facts (class count, size, domain; ImageNet's in `fennec_mlflow/bench/public.py` with its citation). "
        "TransferGraph: model type one-hot, log parameters, log feature width, log input size, source "
        "dataset (one-hot for sources shared by 3+ models) with its label count and, where public, "
        "size and domain.",
        "",
    ]
    lines += findings_section(client, chosen) + [""] + goals_section(client, chosen) + [""]
    lines += recommender_goals_section(client, chosen) + [""]
    lines += calibration_section(client, chosen) + [""]
    for benchmark in chosen:
        lines += benchmark_section(client, benchmark, img_dir, rel)
    output.parent.mkdir(parents=True, exist_ok=True)
    previous = output.read_text() if output.exists() else ""
    # Keep the sections other scripts write: heldout_tables.py, and make_end_to_end_report.py's two.
    for begin, end in map(markers, ("heldout-tables", "real-benchmark", "synthetic-benchmark")):
        if begin in previous and end in previous:
            lines += ["", previous[previous.index(begin):previous.index(end) + len(end)]]
    output.write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
