"""The ``fennec`` command line: one subcommand per MLproject entry point.

Runs go to ``MLFLOW_TRACKING_URI`` when set, else MLflow's default store (sqlite
``mlflow.db`` in the working directory).
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path

import click

from fennec_mlflow import config
from fennec_mlflow.errors import FennecError, InvalidInputError
from fennec_mlflow.progress import redraw_sparsely_into_logs
from fennec_mlflow.store import tracking
from fennec_mlflow.store.tracking import TrackingError

DEFAULT_TASKS_HELP = "comma-separated task specs: synthetic task names, folder:PATH, torchvision:NAME; 'default' = the built-in history"


def _csv(values) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


NOT_GIVEN = ("", "none", "default")  # MLproject's defaults for "not given" (MLflow would log '' as the literal '')


def how_to_see_runs() -> str:
    """Where the user sees the runs: a tracking server's own UI, else `mlflow ui` on the local store."""
    uri = tracking.client().tracking_uri
    if uri.startswith(("http://", "https://", "databricks")):
        return f"open {uri} in a browser (the tracking server's UI)"
    return f"mlflow ui --backend-store-uri {uri}"


def top_models(count: int) -> str:
    return "The top model" if count == 1 else f"Top {count} models"


def _given(value):
    """An optional text option's value, or None when it says "not given"."""
    return None if value is None or str(value).strip().lower() in NOT_GIVEN else value


def _models(value: str) -> list[str]:
    from fennec_mlflow.data.zoo import DEFAULT_ZOO

    names = list(DEFAULT_ZOO) if value == "default" else _split(value)
    if not names:
        raise click.BadParameter(f"no model names in {value!r}", param_hint="--models")
    return names


def _tasks(value: str, image_size: int, seed: int):
    from fennec_mlflow.data.task_specs import load_task
    from fennec_mlflow.store.jobs import DEFAULT_TASKS

    specs = list(DEFAULT_TASKS) if value == "default" else _split(value)
    if not specs:
        raise click.BadParameter(f"no task specs in {value!r}", param_hint="--tasks")
    return [load_task(spec, image_size=image_size, seed=seed) for spec in specs]


def _checked_output(output, suffixes: tuple[str, ...]) -> Path | None:
    """The ``--output`` file, checked before any work or run: a known suffix, in a folder that exists
    and can be written (None when not given)."""
    if _given(output) is None:
        return None
    path = Path(output).expanduser()
    if path.suffix.lower() not in suffixes:
        raise InvalidInputError(f"--output {str(output)!r}: give a file name ending in {' or '.join(suffixes)}")
    folder = path.parent.resolve()
    if not folder.is_dir():
        raise InvalidInputError(f"--output {str(output)!r}: no folder {str(folder)!r}; create it or write to an "
                                "existing folder")
    if path.is_dir() or not os.access(path if path.exists() else folder, os.W_OK):
        raise InvalidInputError(f"--output {str(output)!r}: cannot write there; choose a writable file path")
    return path


def _fail(exc: FennecError) -> None:
    """Errors users can fix are one line, not a traceback (FENNEC_DEBUG=1 shows the traceback).

    Only :class:`FennecError` lands here: any other exception is a bug and keeps its traceback.
    """
    if os.environ.get("FENNEC_DEBUG"):
        raise exc
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _short(value):
    """A tuned float as a reader wants it (0.82, not 0.8199376880380089); anything else as it is."""
    return f"{value:.3g}" if isinstance(value, float) else value


def _one_line_warnings() -> None:
    """This package's warnings as one line (``warning: ...``), like its errors; other libraries'
    keep Python's format, source line included."""
    package = str(Path(__file__).resolve().parent)
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(package) or category.__module__.startswith("fennec_mlflow"):
            click.echo(f"warning: {message}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    # Optuna logs a trial stopped by Ctrl-C as a failed trial with its traceback, before our one-line
    # "interrupted" note; the interrupt is the user's, not a failure to show.
    logging.getLogger("optuna.study._optimize").addFilter(
        lambda record: not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt)))


def _device(ctx, param, value: str) -> str:
    import torch

    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        raise click.BadParameter(f"{value!r} is not a torch device; use cpu, cuda, cuda:0, mps ...") from None
    return value


device_option = click.option("--device", default="cpu", show_default=True, callback=_device,
                             help="torch device for forward passes and training")
batch_size_option = click.option("--batch-size", default=config.BATCH_SIZE, show_default=True,
                                 type=click.IntRange(min=1))


def _require_tracking_server() -> None:
    """An HTTP tracking store that does not answer fails now, in one line, not after minutes of retries."""
    import urllib.error
    import urllib.request

    import mlflow

    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    # MLflow retries a dead server for minutes; keep retries short for the rest of this command too.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=config.TRACKING_CONNECT_TIMEOUT)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        _fail(TrackingError(f"cannot reach the MLflow tracking server at {uri} ({reason}); start it or set "
                            "MLFLOW_TRACKING_URI to a reachable store (unset: sqlite mlflow.db here)"))


TORCH_COMMANDS = {"fda", "finetune", "archi2vec", "build", "rank", "evaluate", "profile"}


def _refused_write(exc: BaseException) -> str | None:
    """What a store or folder that refuses writes said, anywhere in ``exc``'s chain (else None)."""
    import errno

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc).splitlines()[0] if str(exc) else ""
        if "readonly database" in text:
            return "the sqlite file or its folder is read-only"
        if isinstance(exc, OSError) and (exc.errno == errno.EROFS or isinstance(exc, PermissionError)):
            return f"cannot write {exc.filename or 'a file'}: {exc.strerror}"
        exc = exc.__cause__ or exc.__context__
    return None


class _Fennec(click.Group):
    """The ``fennec`` group: a store the user cannot write to is one line, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # click then says "Aborted!"; the user wants to know what was kept
            click.echo("interrupted: every finished cell, run and trial is kept in the store; run the same "
                       "command again to resume (only the work in flight is redone)", err=True)
            raise click.exceptions.Abort() from None
        except Exception as exc:
            why = _refused_write(exc)
            if why is None or os.environ.get("FENNEC_DEBUG"):
                raise
            import mlflow

            _fail(TrackingError(f"the tracking store {mlflow.get_tracking_uri()} refuses writes ({why}); make it "
                                "writable or point MLFLOW_TRACKING_URI at a store you can write to"))


@click.group(cls=_Fennec)
@click.version_option(package_name="fennec-mlflow")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Recommend which pre-trained model to fine-tune, from evidence in an MLflow tracking store."""
    if {"--help", "-h"} & set(sys.argv[1:]):
        return
    _one_line_warnings()
    redraw_sparsely_into_logs()
    _require_tracking_server()
    if ctx.invoked_subcommand in TORCH_COMMANDS:
        from fennec_mlflow.data.threads import use_fair_share_threads

        use_fair_share_threads()  # torch collapses when its threads compete with other processes


experiment_option = click.option("--experiment", default=config.DEFAULT_EXPERIMENT, show_default=True,
                                 help="MLflow experiment holding the knowledge base")


@main.command()
@click.option("--models", default="default", show_default=True,
              help="comma-separated model names (pytorchcv, torchvision:NAME, or real:NAME: weights that ship with "
                   "the install, e.g. real:mnist_cnn); 'default' = small CIFAR-size zoo")
@click.option("--tasks", default="default", show_default=True, help=DEFAULT_TASKS_HELP)
@click.option("--estimator", default="fda", show_default=True, help="transferability estimator to compute")
@click.option("--weights", type=click.Choice(["auto", "pretrained", "random"]), default="auto", show_default=True,
              help="auto: pretrained if the weight file is on disk, else random init (never downloads)")
@click.option("--probe-size", default=config.PROBE_SIZE, show_default=True, type=click.IntRange(min=2),
              help="images per task probe set (stratified)")
@click.option("--probe-seed", default=config.PROBE_SEED, show_default=True)
@click.option("--image-size", default=config.IMAGE_SIZE, show_default=True, help="render size of synthetic tasks")
@device_option
@batch_size_option
@experiment_option
def fda(models, tasks, estimator, weights, probe_size, probe_seed, image_size, device, batch_size, experiment):
    """Score every (model, task) cell with FDA (or another estimator); one run per cell, finished cells skipped."""
    from fennec_mlflow.store.jobs import score_cells

    try:
        outcomes = score_cells(_models(models), _tasks(tasks, image_size, probe_seed), estimator=estimator,
                               weights=weights, probe_size=probe_size, probe_seed=probe_seed,
                               experiment=experiment, device=device, batch_size=batch_size)
    except FennecError as exc:
        _fail(exc)
    new = [o for o in outcomes if not o.reused]
    tracking.annotate_project_run("fda", {"cells_new": len(new), "cells_reused": len(outcomes) - len(new)})
    click.echo(f"{len(new)} new {estimator} run(s), {len(outcomes) - len(new)} cell(s) already in the store "
               f"(experiment {experiment!r}, store {tracking.client().tracking_uri})")
    for o in new:
        click.echo(f"  {o.model:32s} {o.task:24s} {o.score:.4f}")


def _floats(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in _split(value))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


@main.command()
@click.option("--models", default="resnet20_cifar10", show_default=True,
              help="comma-separated model names: pytorchcv, torchvision:NAME, or real:NAME (weights that ship "
                   "with the install, e.g. real:mnist_cnn)")
@click.option("--tasks", default="digits-color", show_default=True, help=DEFAULT_TASKS_HELP)
@click.option("--weights", type=click.Choice(["auto", "pretrained", "random"]), default="auto", show_default=True)
@click.option("--lrs", default=_csv(config.FINETUNE_LRS), show_default=True, help="learning-rate grid")
@click.option("--wds", default=_csv(config.FINETUNE_WDS), show_default=True, help="weight-decay grid")
@click.option("--epochs", default=config.FINETUNE_EPOCHS, show_default=True, type=click.IntRange(min=1),
              help="maximum epochs per grid point")
@click.option("--patience", default=config.FINETUNE_PATIENCE, show_default=True, type=click.IntRange(min=1),
              help="early-stopping patience (epochs)")
@click.option("--regime", type=click.Choice(config.FINETUNE_REGIMES), default=config.FINETUNE_REGIME,
              show_default=True, help="full: train every weight; linear-probe: frozen backbone, train the new head only")
@batch_size_option
@click.option("--seed", default=0, show_default=True, help="seed of the 6:2:2 split and of training")
@click.option("--image-size", default=config.IMAGE_SIZE, show_default=True, help="render size of synthetic tasks")
@device_option
@experiment_option
def finetune(models, tasks, weights, lrs, wds, epochs, patience, regime, batch_size, seed, image_size, device,
             experiment):
    """Fine-tune each model on each task (fully, or as a linear probe) over an lr x wd grid; the best grid point's test accuracy."""
    from fennec_mlflow.store.jobs import finetune_cells
    from fennec_mlflow.training.finetune import FinetuneConfig

    try:
        config = FinetuneConfig(learning_rates=_floats(lrs), weight_decays=_floats(wds), max_epochs=epochs,
                                patience=patience, batch_size=batch_size, seed=seed, device=device, regime=regime)
        task_list = _tasks(tasks, image_size, seed)
        before = (tracking.load_matrix("finetune", experiment=experiment, regime=regime).values
                  if tracking.client().get_experiment_by_name(experiment) else None)
        outcomes = finetune_cells(_models(models), task_list, config=config, weights=weights, experiment=experiment)
    except FennecError as exc:
        _fail(exc)
    new = [o for o in outcomes if not o.reused]
    tracking.annotate_project_run("finetune", {"cells_new": len(new), "cells_reused": len(outcomes) - len(new)})
    click.echo(f"{len(new)} new {regime} fine-tune(s), {len(outcomes) - len(new)} already in the store")
    chance = {task.name: 1.0 / task.num_classes for task in task_list}
    # within 5 points of guessing: too few optimiser steps to be ground truth
    at_chance = [o for o in new if o.score <= chance[o.task] + 0.05]
    for o in new:
        click.echo(f"  {o.model:32s} {o.task:24s} test accuracy {o.score:.4f}"
                   + (f"  (chance is {chance[o.task]:.3f})" if o in at_chance else ""))
    if at_chance:
        click.echo("warning: some fine-tunes did no better than chance; more epochs, a smaller --batch-size or "
                   "another learning rate give them enough optimiser steps to be ground truth")
    for warning in _small_test_split_warnings(task_list, seed):
        click.echo(f"warning: {warning}")
    replaced = [o for o in new if before is not None and o.model in before.index and o.task in before.columns
                and not math.isnan(before.at[o.model, o.task])]
    if replaced:
        click.echo(f"note: {len(replaced)} (model, task) pair(s) already had a {regime} fine-tune with another "
                   "configuration; the matrix now reads these newer ones (`fennec matrix --kind finetune`)")


def _small_test_split_warnings(tasks, seed: int) -> list[str]:
    """One line per task whose fine-tune test split is too small for its accuracy to be ground truth."""
    from fennec_mlflow.training.finetune import default_split

    sizes = [(task.name, int(default_split(task, seed=seed).test.size)) for task in tasks]
    return [f"task {name!r} leaves only {size} test image(s) in its 6:2:2 split, so its test accuracy is no "
            f"reliable ground truth; give it at least {5 * config.MIN_RELIABLE_TEST_IMAGES} images"
            for name, size in sizes if size < config.MIN_RELIABLE_TEST_IMAGES]


@main.command()
@click.option("--models", default="pytorchcv-imagenet", show_default=True,
              help="comma-separated names, or 'pytorchcv-imagenet' (all ~500), 'torchvision' (all classification), 'default' (the small zoo)")
@click.option("--processes", default=2, show_default=True, type=click.IntRange(min=1), help="worker processes for graph extraction")
@click.option("--dimensions", default=128, show_default=True)
@click.option("--wl-iterations", default=2, show_default=True)
@click.option("--seed", default=42, show_default=True)
@experiment_option
def archi2vec(models, processes, dimensions, wl_iterations, seed, experiment):
    """Embed model architectures from their autograd graphs (graph2vec); one run per model."""
    from fennec_mlflow.archi2vec import Graph2VecSettings, pytorchcv_imagenet_models, torchvision_classification_models
    from fennec_mlflow.store.archi2vec_runs import embed_architectures

    named = {"pytorchcv-imagenet": pytorchcv_imagenet_models,
             "torchvision": lambda: [f"torchvision:{n}" for n in torchvision_classification_models()]}
    names = named[models]() if models in named else _models(models)
    try:
        settings = Graph2VecSettings(dimensions=dimensions, wl_iterations=wl_iterations, seed=seed)
        outcome = embed_architectures(names, settings=settings, processes=processes, experiment=experiment)
    except FennecError as exc:
        _fail(exc)
    tracking.annotate_project_run("archi2vec", {"models_new": len(outcome.embedded), "models_reused": len(outcome.reused),
                                                "failures": len(outcome.failures)})
    click.echo(f"{len(outcome.embedded)} model(s) embedded, {len(outcome.reused)} already in the store, "
               f"{len(outcome.failures)} failed (corpus run {outcome.corpus_run_id})")
    for failure in outcome.failures:
        click.echo(f"  failed: {failure.model} input {failure.input_shape}: {failure.error[:200]}")


def _shrinkage(value: str | None):
    if value in (None, ""):
        return None
    if value == "auto":
        return "auto"
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise InvalidInputError(f"--shrinkage must be 'auto' or a number in [0, 1], got {value!r}")
    return number


@main.command()
@click.option("--kind", default=tracking.BEST_EVIDENCE, show_default=True,
              type=click.Choice(tracking.MATRIX_KINDS),
              help="which performance matrix to learn from; 'best': each task's fine-tunes where the store has "
                   "them, else its FDA scores")
@click.option("--estimator", default=None, help="with --kind estimator: which estimator's scores (e.g. logme)")
@click.option("--source", default=None, help="with --kind external: which imported table (its --source name)")
@click.option("--encoder", "encoder_spec", default="demo", show_default=True,
              help="proxy encoder: clip:MODEL:TAG_OR_PATH, zoo:NAME, file:PATH, 'demo' (the embedded default's: "
                   "the real zoo's SVHN CNN when installed, else CLIP if on disk, else the synthetic-mix proxy) or "
                   "'none' (no images: a new task is placed by its facts)")
@click.option("--k", default=None, type=int, help="transfer-space dimension (default: tuned, else min(4, min(M, N) - 1))")
@click.option("--alpha", default=None, type=float, help="weight of the meta score (default: tuned, else 0.5)")
@click.option("--shrinkage", default=None, help="'auto' or a number in [0, 1] (default: tuned, else auto)")
@click.option("--formulation", default=None, type=click.Choice(["shrunk", "paper"]),
              help="Fennec's (shrunk: popularity plus the interaction the history vouches for; the default) or "
                   "the paper's, where `fennec evaluate` shows it (fennec-paper) ahead on your store; validated the "
                   "same way")
@click.option("--tune/--no-tune", default=True, show_default=True,
              help="tune on the store's ground truth when it covers at least 4 tasks (always measured when it does)")
@click.option("--truth-source", default=None,
              help="an imported table (its --source name) as ground truth, instead of the finetune runs "
                   "(default with --kind external and no finetune runs: the --source table itself)")
@click.option("--regime", type=click.Choice(config.FINETUNE_REGIMES), default=config.FINETUNE_REGIME,
              show_default=True, help="which fine-tune regime's runs are the ground truth (and the history with "
                                      "--kind finetune): the regime the recommender predicts")
@click.option("--n-trials", default=config.TUNE_N_TRIALS, show_default=True, help="Optuna trials when tuning")
@click.option("--tasks", default=None,
              help="task specs whose proxies to compute besides the store's own tasks (found by the folder their "
                   "runs logged, else by name)")
@click.option("--registered-model", default=config.REGISTERED_MODEL, show_default=True,
              help="the registered model's name; one per experiment keeps their champions apart "
                   "(rank it with --model-uri models:/NAME@champion)")
@experiment_option
def build(kind, estimator, source, encoder_spec, k, alpha, shrinkage, formulation, tune, truth_source, regime,
          n_trials, tasks, registered_model, experiment):
    """Rebuild the knowledge base, fit Fennec, validate it on the store's ground truth, register it.

    The new version becomes fennec@champion unless the champion's validated figure is higher
    (then fennec@challenger)."""
    from fennec_mlflow.data.proxy import load_encoder
    from fennec_mlflow.data.tasks import TaskError
    from fennec_mlflow.serving import demo
    from fennec_mlflow.serving.build import build as build_model
    from fennec_mlflow.store.jobs import proxy_cells

    if kind == "external" and _given(source) is None:
        _say_merged_sources(experiment)
    try:
        if kind == "external" and _is_default("encoder_spec"):
            encoder_spec = _encoder_for_imported(source, experiment, encoder_spec)
        chosen = None
        if encoder_spec == "demo":
            chosen = demo.default_encoder()  # the embedded default's encoder (real, else synthetic)
        elif encoder_spec != "none":
            encoder = load_encoder(encoder_spec)
            file = Path(encoder_spec[5:]) if encoder_spec.startswith("file:") else None
            chosen = demo.DemoEncoder(encoder, encoder_spec, file, encoder_spec)
        if chosen is not None:
            km = tracking.load_matrix(kind, estimator=estimator, source=_given(source), experiment=experiment,
                                      regime=regime if kind in tracking.REGIME_KINDS else None)
            given = [load_task_spec(s) for s in _split(tasks)] if tasks else []
            named = {task.name for task in given}
            try:
                stored = [load_task_spec(spec) for task, spec in store_task_specs(km).items() if task not in named]
            except TaskError as exc:
                raise TaskError(f"{exc}. Building needs each history task's images for its proxy; without them, "
                                "--encoder none places new tasks by their facts") from exc
            proxy_cells(chosen.encoder, given + stored, experiment=experiment)
        result = build_model(kind=kind, estimator=estimator, source=_given(source),
                             encoder_spec=chosen and chosen.spec, encoder_name=chosen and chosen.encoder.name,
                             encoder_file=chosen and chosen.file, k=k, alpha=alpha, shrinkage=_shrinkage(shrinkage),
                             formulation=formulation, tune=tune, truth_source=_given(truth_source),
                             n_trials=n_trials, experiment=experiment, regime=regime, progress=True,
                             registered_model=registered_model)
    except FennecError as exc:
        _fail(exc)
    quality = result.quality
    paper = "the paper formulation, " if result.fennec.formulation == "paper" else ""
    click.echo(f"fitted on {result.knowledge.P.shape[0]} models x {result.knowledge.P.shape[1]} tasks of "
               f"{quality.history or kind} ({paper}k={result.fennec.k}, alpha={_short(result.fennec.alpha)}, "
               f"shrinkage={_short(result.fennec.shrinkage)}); registered {result.model_uri} version {result.version} "
               f"({result.alias_reason}); run {result.run_id}")
    if result.regime:
        from fennec_mlflow.serving.answers import REGIME_WORDS

        click.echo(f"it predicts {REGIME_WORDS.get(result.regime, result.regime)}")
    if quality.measured:
        v = quality.validation
        click.echo(f"validated on the store's {quality.truth} ground truth, {len(v.targets)} targets, {v.method}, "
                   f"{v.seconds:.0f} s: mean Pearson x100 {100 * v.validated_mean_pearson:.1f}; popularity on the "
                   f"same targets {100 * v.popularity_mean_pearson:.1f}")
        if below_popularity_warning(v):
            click.echo(below_popularity_warning(v))
    else:
        click.echo(f"ranking quality unmeasured: {quality.reason}")


def _is_default(parameter: str) -> bool:
    """Whether the current command's ``parameter`` was left at its default (not given by the user)."""
    return click.get_current_context().get_parameter_source(parameter) == click.core.ParameterSource.DEFAULT


def _encoder_for_imported(source, experiment: str, encoder_spec: str) -> str:
    """The encoder to build an imported table with when none was asked for: 'none' (place tasks by their
    facts) when its tasks have no images here, as a published table's do, else ``encoder_spec``."""
    km = tracking.load_matrix("external", source=_given(source), experiment=experiment)
    imageless = [task for task, spec in store_task_specs(km).items() if not spec.startswith("folder:")]
    if not imageless:
        return encoder_spec
    click.echo(f"note: {len(imageless)} of the table's {km.values.shape[1]} tasks have no images here (e.g. "
               f"{imageless[0]!r}): new tasks are placed by their facts, as with --encoder none")
    return "none"


def below_popularity_warning(validation) -> str | None:
    """A warning when a build's validated figure is below popularity's on the same targets, else None."""
    mine, popular = validation.validated_mean_pearson, validation.popularity_mean_pearson
    if not round(100 * mine, 1) < round(100 * popular, 1):  # level as shown: e.g. the popularity it fell back to
        return None
    return (f"warning: this version ranks its own validation targets worse than popularity ({100 * mine:.1f} vs "
            f"{100 * popular:.1f}); recommending the most popular models would serve better here")


def merged_sources_lines(experiment: str) -> list[str]:
    """What reading every imported table of ``experiment`` as one matrix does (no --source given): one note
    naming the merged sources when there are several, one warning per pair of sources whose cells differ."""
    sources = tracking.imported_sources(experiment)
    if len(sources) < 2:
        return []
    lines = [f"note: no --source given: the imported sources {', '.join(sources)} are merged into one matrix"]
    for c in tracking.source_conflicts(sources, experiment):
        model, task, first, second = c.example
        lines.append(f"warning: {c.cells} cell(s) differ between sources {c.first} and {c.second}; the newer "
                     f"import's value is used (e.g. {model} on {task}: {c.first} {first:g}, {c.second} {second:g}); "
                     "pass --source to use one table")
    return lines


def _say_merged_sources(experiment: str) -> None:
    for line in merged_sources_lines(experiment):
        click.echo(line, err=True)


def store_task_specs(km: tracking.KnowledgeMatrix) -> dict[str, str]:
    """task -> how to load it: the folder its runs logged (``folder:PATH``), else its name."""
    sources = km.task_facts["source"].to_dict() if "source" in km.task_facts else {}
    return {task: str(sources[task]) if str(sources.get(task, "")).startswith("folder:") else task
            for task in km.values.columns}


def _fact(row, column):
    """A task fact of ``row``, or None when it is missing."""
    import pandas as pd

    value = row.get(column)
    return None if value is None or pd.isna(value) else value


def _dataset_facts(dataset, class_count, train_size, domain, experiment):
    """The target ``--dataset NAME``: a task of the store's imported tables (its task_* facts), else a
    public dataset (fennec_mlflow/resources/task_facts.csv); facts given on the command line win."""
    from fennec_mlflow.core.evaluation import find_task_facts
    from fennec_mlflow.serving.rank import TaskFacts, stored_task_facts

    row = stored_task_facts(dataset, experiment)
    name = dataset if row is None else str(row.name)
    row = find_task_facts(dataset) if row is None else row
    if row is None:
        raise InvalidInputError(f"no imported task of experiment {experiment!r} nor public dataset answers to "
                                f"{dataset!r} (fennec_mlflow/resources/task_facts.csv); give the task's "
                                "--class-count, --train-size and --domain")
    classes, samples = class_count or _fact(row, "class_count"), train_size or _fact(row, "train_size")
    if samples is None:
        raise InvalidInputError(f"the store does not know the training-set size of {name!r}; give --train-size")
    return TaskFacts(name=name, num_classes=None if classes is None else int(classes), num_samples=int(samples),
                     domain=domain or str(_fact(row, "domain") or "unknown"))


def _facts_target(target, dataset, class_count, train_size, domain, experiment=config.DEFAULT_EXPERIMENT):
    """A target known by its facts only (no images): a task of the store's imported tables or a public
    dataset (:func:`_dataset_facts`), or the facts given."""
    from fennec_mlflow.serving.rank import TaskFacts

    if target:
        raise InvalidInputError("give --target (the task's images) or its facts (--dataset, --train-size, "
                                "--domain), not both")
    if dataset:
        return _dataset_facts(dataset, class_count, train_size, domain, experiment)
    if train_size is None:
        raise InvalidInputError("a task known by its facts needs at least --train-size (and --class-count, "
                                "--domain when known), or --dataset NAME")
    return TaskFacts(name="new-task", num_classes=class_count, num_samples=train_size, domain=domain or "unknown")


def load_task_spec(spec: str, image_size: int = config.IMAGE_SIZE, seed: int = 0, unlabelled_ok: bool = False):
    from fennec_mlflow.data.task_specs import load_task

    return load_task(spec, image_size=image_size, seed=seed, unlabelled_ok=unlabelled_ok)


@main.command()
@click.option("--target", default=None, help="an image folder (ImageFolder layout or flat), folder:PATH, or a "
              "built-in task name (real:NAME or a synthetic task); default: real:digits-inverted, held out of the "
              "embedded default's history (a synthetic task on an install without the real packages)")
@click.option("--model-uri", default="models:/fennec@champion", show_default=True)
@click.option("--top-k", default=10, show_default=True, type=click.IntRange(min=0), help="how many models to show (0 = all)")
@click.option("--class-count", default=None, type=click.IntRange(min=2),
              help="number of classes, if you know it (labels are never needed)")
@click.option("--dataset", default=None,
              help="no images: a public dataset by name (e.g. food101, 'Oxford-IIIT Pets'), placed by its facts "
                   "(for a recommender built with --encoder none)")
@click.option("--train-size", default=None, type=click.IntRange(min=1),
              help="no images: the task's training-set size (with --class-count and --domain), placed by its facts")
@click.option("--domain", default=None, help="no images: the task's domain, e.g. natural, fine-grained, medical")
@click.option("--include", default="", help="only models whose name matches this regular expression")
@click.option("--exclude", default="", help="drop models whose name matches this regular expression")
@click.option("--max-parameters", default=0.0, type=click.FloatRange(min=0), help="drop models with more parameters (0 = no limit)")
@click.option("--known-scores", default="", help='warm start: JSON {"model": score} of models already scored on the target')
@click.option("--known-from-store", is_flag=True,
              help="warm start from the target's fine-tunes already in the store (`fennec finetune` on it); "
                   "--known-scores take precedence")
@click.option("--max-latency-ms", default=0.0, type=click.FloatRange(min=0),
              help="drop models slower than this per image, as measured by `fennec profile` (0 = no limit)")
@click.option("--max-memory-mb", default=0.0, type=click.FloatRange(min=0),
              help="drop models whose measured peak memory is above this (0 = no limit)")
@click.option("--licence", default="", help="comma-separated licences to accept, matched at the start of the "
              "model's licence, e.g. MIT,Apache,BSD (models of unknown licence are dropped)")
@click.option("--regime", type=click.Choice(["any", *config.FINETUNE_REGIMES]), default="any", show_default=True,
              help="the fine-tune regime the ranking must predict (as `fennec build --regime` chose); any: the model's own")
@click.option("--output", default=None,
              help="also write the ranking shown to this file: CSV (.csv), or JSON records (.json)")
@experiment_option
def rank(target, model_uri, top_k, class_count, dataset, train_size, domain, include, exclude, max_parameters,
         known_scores, known_from_store, max_latency_ms, max_memory_mb, licence, regime, output, experiment):
    """Recommend which model to fine-tune for a target task (bootstraps the offline demo when nothing is registered)."""
    import pandas as pd

    from fennec_mlflow.data.tasks import single_class_note
    from fennec_mlflow.serving import demo
    from fennec_mlflow.serving import flavor as pyfunc
    from fennec_mlflow.serving.rank import SCORE_LEGEND, TaskFacts, built_without_encoder, rank_task

    try:
        output = _checked_output(output, (".csv", ".json"))
        target = _given(target)  # MLproject: default
        if _given(dataset) or train_size or _given(domain):
            task = _facts_target(target, _given(dataset), class_count, train_size, _given(domain), experiment)
        else:
            if not target and built_without_encoder(model_uri):  # the demo's image task means nothing to it
                given = " (--class-count alone does not: add --train-size)" if class_count else ""
                raise InvalidInputError(f"the recommender {model_uri} places a task by its facts (built with "
                                        "--encoder none): give --dataset NAME or the task's facts (--train-size, "
                                        f"with --class-count and --domain when known){given}")
            task = load_task_spec(target or demo.DEFAULT_TARGET, unlabelled_ok=True)  # bad targets fail first
        if model_uri == "models:/fennec@champion" and not pyfunc.champion_exists():
            if isinstance(task, TaskFacts):  # the embedded default reads images
                others = pyfunc.other_champions()
                if others:
                    raise InvalidInputError(f"no recommender is registered as {model_uri}; pass one of yours with "
                                            f"--model-uri: {', '.join(others)}")
                raise InvalidInputError("no recommender is registered: build one from your table first, e.g. "
                                        "`fennec build --kind external --source NAME --encoder none`")
            demo.bootstrap(experiment)
        labels_known = task.labelled and class_count is None  # class sub-folders give the class count
        if class_count is not None and task.labelled and not isinstance(task, TaskFacts) \
                and task.num_classes != class_count:
            click.echo(f"warning: --class-count {class_count} overrides the {task.num_classes} classes of "
                       f"{task.name!r}'s labels", err=True)
        start = time.perf_counter()
        ranking = rank_task(task, model_uri=model_uri, top_k=top_k, labels_known=labels_known,
                            class_count_hint=class_count, experiment=experiment,
                            regime=None if regime == "any" else regime, known_from_store=known_from_store,
                            params={"include": include, "exclude": exclude, "max_parameters": max_parameters,
                                    "known_scores": known_scores, "max_latency_ms": max_latency_ms,
                                    "max_memory_mb": max_memory_mb,
                                    "licence": "" if _given(licence) in (None, "any") else licence})
        seconds = time.perf_counter() - start
    except FennecError as exc:
        _fail(exc)
    run_id = ranking.attrs.get("run_id")
    tracking.annotate_project_run("rank", {"rank_seconds": seconds}, result_run_id=run_id)
    if isinstance(task, TaskFacts):
        click.echo(f"{top_models(len(ranking))} to fine-tune for {task.name!r} (by its facts: "
                   f"{task.num_classes or 'unknown'} classes, {task.num_samples} training images, domain "
                   f"{task.domain}; ranked in {seconds:.2f} s):")
    else:
        why = f"the demo's default target: {demo.DEFAULT_TARGET_REASON}" if not target else "the target you gave"
        click.echo(f"{top_models(len(ranking))} to fine-tune for {task.name!r} ({why}; {task.num_samples} images, "
                   f"labels {'used for the class count only' if labels_known else 'not used'}; ranked in "
                   f"{seconds:.2f} s):")
    # models registered before the known_score column (their code travels with them) answer without it
    told = ranking["known_score"].notna() if "known_score" in ranking else pd.Series(False, index=ranking.index)
    shown = ranking if told.any() else ranking.drop(columns="known_score", errors="ignore")
    # constraints' columns of models never profiled (an imported table's) would only show NaN
    shown = shown.drop(columns=[c for c in ("latency_ms", "peak_memory_mb", "licence")
                                if c in shown and shown[c].replace("", None).isna().all()])
    with pd.option_context("display.width", 200, "display.precision", 3):
        click.echo(shown.to_string(index=False))
    untried = ranking[~told]
    if told.any():  # a model the user already scored is no recommendation: the best untried one is
        best = ranking[told].sort_values("known_score").iloc[-1]
        advice = (f"Of the models not yet scored, fine-tune {untried['model'].iloc[0]!r} next" if len(untried)
                  else "Every model shown is already scored")
        click.echo(f"{advice} (your best so far: {best['model']!r}, known score {best['known_score']:.3g}). "
                   f"Ranking basis: {ranking.attrs.get('basis')}.")
    elif len(ranking):
        click.echo(f"Fine-tune {ranking['model'].iloc[0]!r} first. Ranking basis: {ranking.attrs.get('basis')}.")
    if len(untried):
        first = untried.iloc[0]
        if "predicted_accuracy" in ranking and pd.notna(first["predicted_accuracy"]):
            from fennec_mlflow.serving.answers import REGIME_WORDS

            what = REGIME_WORDS.get(ranking.attrs.get("regime"), "accuracy")  # an imported table: its own kind
            click.echo(f"Predicted {what} of {first['model']!r}: {first['predicted_accuracy']:.3g} "
                       f"(interval {first['accuracy_low']:.3g} to {first['accuracy_high']:.3g}).")
    for model, tasks in ranking.attrs.get("thin_history", {}).items():
        click.echo(f"note: {model!r} is scored on {tasks} history task{'s' if tasks != 1 else ''} only: its place "
                   "rests on that alone")
    if known_from_store:
        found = ranking.attrs.get("known_from_store", 0)
        click.echo(f"note: {found} fine-tune(s) of {task.name!r} found in experiment {experiment!r}"
                   + (" and used as known scores" if found else "; ranked without known scores"))
    unlabelled_note = None if isinstance(task, TaskFacts) else single_class_note(task)
    if unlabelled_note:
        click.echo(f"note: {unlabelled_note}")
    history_task, namesake = ranking.attrs.get("in_history"), ranking.attrs.get("history_namesake")
    if namesake:
        click.echo(f"note: this recommender's history task {task.name!r} is other images of that name "
                   f"({namesake.removeprefix('folder:')}), not this folder; its results are not this target's")
    if history_task:
        which = ("one of this recommender's history tasks" if history_task == task.name
                 else f"the dataset of this recommender's history task {history_task!r}")
        kind, _, source = (ranking.attrs.get("history_matrix") or "best").partition(":")
        shown = f"fennec matrix --kind {kind}" + (f" --source {source}" if kind == "external" and source else "")
        click.echo(f"note: {task.name!r} is {which}: its measured results are in the store (`{shown}`) and were "
                   f"learned from; the ranking above is what Fennec predicts for it, not those results.")
    changed = ranking.attrs.get("history_changed")
    if changed:
        click.echo(f"warning: {changed[0]} cell(s) of the {changed[1]} matrix this recommender learned from have "
                   "changed or been deleted in the store since it was built (a table imported again, runs deleted); "
                   "run the `fennec build` that made it again (its fennec-fit run's params) to rank on the store "
                   "as it is now", err=True)
    click.echo(SCORE_LEGEND.format(known=" when cold; the known scores move the others and place each told model at "
                                          "its measured value" if told.any() else ""))
    if output is not None:
        if output.suffix.lower() == ".json":
            ranking.to_json(output, orient="records", indent=1)
        else:
            ranking.to_csv(output, index=False)
        click.echo(f"ranking written to {output}")
    click.echo(f"Logged as run {run_id} ('rank-{task.name}') in experiment {experiment!r}; to see it: "
               f"{how_to_see_runs()}")


def _profiled_models(value: str) -> tuple[list[str], str]:
    """profile's models and where they come from: 'default' = the registered recommender's candidates
    (what `fennec rank --max-latency-ms` filters), else the small zoo; or the names given."""
    from fennec_mlflow.serving import flavor as pyfunc

    if value != "default" or not pyfunc.champion_exists():
        return _models(value), "given" if value != "default" else "the small CIFAR-size zoo (no recommender registered)"
    uri = f"models:/{pyfunc.REGISTERED_NAME}@{pyfunc.CHAMPION}"
    return [str(name) for name in pyfunc.load_model(uri).bundle.model_meta.index], f"the candidates of {uri}"


@main.command()
@click.option("--models", default="default", show_default=True,
              help="comma-separated model names (pytorchcv, torchvision:NAME, real:NAME); 'default' = the candidates "
                   "of the registered recommender (fennec@champion), else the small CIFAR-size zoo")
@click.option("--input-size", default=0, show_default=True, type=click.IntRange(min=0),
              help="image side in pixels (0 = each model's own input size)")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--weights", type=click.Choice(["auto", "pretrained", "random"]), default="auto", show_default=True,
              help="weights do not change the cost; auto never downloads")
@click.option("--repeats", default=10, show_default=True, type=click.IntRange(min=1), help="timed forward passes")
@click.option("--force", is_flag=True, help="measure again even when the store has a profile")
@device_option
@experiment_option
def profile(models, input_size, batch_size, weights, repeats, force, device, experiment):
    """Measure each model's inference latency and peak memory on this machine, once (logged as `profile` runs).

    `fennec build` bundles the newest profiles (and the zoo's licences) into the recommender, so
    `fennec rank --max-latency-ms/--max-memory-mb/--licence` filter on them."""
    import pandas as pd

    from fennec_mlflow.serving.profiles import profile_models

    try:
        names, origin = _profiled_models(models)
        if origin != "given":
            click.echo(f"profiling {len(names)} model(s): {origin}")
        table = profile_models(names, input_size=input_size or None, batch_size=batch_size, device=device,
                               weights=weights, experiment=experiment, force=force, repeats=repeats)
    except FennecError as exc:
        _fail(exc)
    with pd.option_context("display.width", 200, "display.precision", 2):
        click.echo(table.drop(columns=["run_id"]).to_string(index=False))
    click.echo(f"{int((~table['reused']).sum())} measured, {int(table['reused'].sum())} reused from experiment "
               f"{experiment!r}; rebuild (`fennec build`) to serve them.")


STORE_OPTIONS = (
    click.option("--source", default=None, help="benchmark store: the imported table that is the ground truth "
                 "(its `fennec import --source` name)"),
    click.option("--truth-kind", default=None, help="benchmark store: external (an imported table; the default with "
                 "--source) or finetune (the store's fine-tunes)"),
    click.option("--history-kind", default=None, help="benchmark store: what Fennec learns from: external, fda, "
                 "estimator, finetune or best (default: best with fine-tune ground truth, else the ground truth); "
                 "a target's own column is never seen"),
    click.option("--history-source", default=None, help="benchmark store, history kind external: which imported table"),
    click.option("--history-estimator", default=None, help="benchmark store, history kind estimator: which estimator"),
    click.option("--regime", default=None,
                 help="benchmark store: which fine-tunes are the ground truth (default: full, or linear-probe "
                      "where the store holds only those)"),
    click.option("--store-experiment", default=config.DEFAULT_EXPERIMENT, show_default=True,
                 help="benchmark store: the experiment holding the store's runs"),
    click.option("--encoder", "store_encoder", default="auto", show_default=True,
                 help="benchmark store: whose task proxies place a target (auto: the encoder `fennec build` "
                      "computed them with, the one covering the most tasks; none: the task facts only)"),
)


def store_options(command):
    """The options of ``--benchmark store`` (evaluate and tune)."""
    for option in reversed(STORE_OPTIONS):
        command = option(command)
    return command


def _benchmark(name: str, source, truth_kind, history_kind, history_source, history_estimator, store_experiment,
               store_encoder="auto", regime=None):
    """A public benchmark's name, or the store's Benchmark; empty, 'none' or 'default' mean "not given"."""
    given = {"--source": _given(source), "--truth-kind": _given(truth_kind), "--history-kind": _given(history_kind),
             "--history-source": _given(history_source), "--history-estimator": _given(history_estimator),
             "--encoder": None if store_encoder in ("auto", *NOT_GIVEN) else store_encoder,
             "--regime": _given(regime)}
    if name != "store":
        if any(given.values()):
            raise InvalidInputError(f"{', '.join(k for k, v in given.items() if v)} apply to --benchmark store only")
        return name
    from fennec_mlflow.bench.store import store_benchmark

    return store_benchmark(source=given["--source"], truth_kind=given["--truth-kind"],
                           history_kind=given["--history-kind"], history_source=given["--history-source"],
                           history_estimator=given["--history-estimator"],
                           experiment=store_experiment or config.DEFAULT_EXPERIMENT,
                           encoder=None if store_encoder in NOT_GIVEN else store_encoder, regime=given["--regime"])


PAPER_MARGIN = 0.02  # Pearson, fraction: a gap beyond the spread of seeds on a small table
LEVEL_MARGIN = 0.0005  # Pearson, fraction: a difference that the line's three decimals show as 0.000


def _against_popularity(table) -> str | None:
    """One line: the default Fennec (what ``build`` registers) against popularity, the obvious pick,
    from an evaluation's table (None when it lacks either row)."""
    pearson, regret = (("mean_pearson", "mean_top1_regret") if "mean_pearson" in table.columns
                       else ("pearson", "top1_regret"))
    if not {"fennec", "popularity"} <= set(table.index) or not math.isfinite(table.at["fennec", pearson]):
        return None
    ours, theirs = table.at["fennec", pearson], table.at["popularity", pearson]
    line = (f"Default Fennec (what `fennec build` starts its tuning from) against popularity (each model's mean standing on "
            f"the other tasks): mean Pearson {ours:.3f} vs {theirs:.3f} ({ours - theirs:+.3f}), top-1 regret "
            f"{table.at['fennec', regret]:.3g} vs {table.at['popularity', regret]:.3g}.")
    if abs(ours - theirs) < LEVEL_MARGIN:
        line += " The two are level here: their difference is below the figures shown."
    elif ours < theirs:
        line += (" Here it is below popularity: `fennec build` tunes and validates on this ground truth, and serves "
                 "popularity itself where what it tuned still validates below it.")
    if "fennec-paper" in table.index and table.at["fennec-paper", pearson] >= max(ours, theirs) + PAPER_MARGIN:
        line += (f" The paper's formulation (fennec-paper, {table.at['fennec-paper', pearson]:.3f}) is ahead on this "
                 "history: `fennec build` tunes the formulation too (or `--formulation paper` fixes it), validated "
                 "the same way.")
    return line


def _interval_line(outcome) -> str | None:
    """One line: how often the default Fennec's predicted-accuracy interval held the held-out targets'
    accuracies (None when the history is not on an accuracy scale)."""
    metrics = {} if outcome is None else outcome.extra_metrics
    if "fennec_interval_coverage" not in metrics:
        return None
    covered, level = metrics["fennec_interval_coverage"], metrics["interval_level"]
    return (f"Predicted accuracy: its {100 * level:.0f}% interval held {100 * covered:.1f}% of the held-out "
            f"targets' accuracies (mean width {metrics['fennec_interval_width']:.3g}, mean absolute error "
            f"{metrics['fennec_accuracy_abs_error']:.3g}, in the table's units); a target's cells fall in or out "
            "together, so with few targets this moves in steps.")


@main.command()
@click.option("--benchmark", default="parc", show_default=True,
              help="parc, parc6 or transfergraph (public tables); store (the store's own ground truth: see --source); "
                   "real (real pre-trained models and real images, end to end with real fine-tunes, about 55 min "
                   "on 2 cores) or real-smoke (its 1-minute reduced configuration); synthetic (the same on synthetic "
                   "images and a zoo the project pre-trains, about 30 min) or synthetic-smoke")
@click.option("--estimators", default=None, help="comma-separated estimators under test (default: all)")
@click.option("--experiment", default=None, help="default: fennec-eval-<benchmark>")
@click.option("--workdir", default=None, help="real and synthetic benchmarks: where pre-trained models and features are kept "
              "(default: $FENNEC_CACHE_DIR/bench/<benchmark>)")
@store_options
def evaluate(benchmark, estimators, experiment, workdir, **store):
    """Leave-one-task-out evaluation of Fennec, its ablations and baselines; one run per estimator."""
    import pandas as pd

    from fennec_mlflow.bench.evaluate import run_evaluation
    from fennec_mlflow.bench.public import BENCHMARK_NAMES
    from fennec_mlflow.bench.real import REAL_BENCHMARKS, run_real_benchmark
    from fennec_mlflow.bench.synthetic import SYNTHETIC_BENCHMARKS, run_benchmark

    estimators = None if _given(estimators) in (None, "all") else estimators  # MLproject: all
    names = (*BENCHMARK_NAMES, "store", *REAL_BENCHMARKS, *SYNTHETIC_BENCHMARKS)
    if benchmark not in names:
        _fail(InvalidInputError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(names)}"))
    notes, calibration = [], None
    try:
        if benchmark in SYNTHETIC_BENCHMARKS or benchmark in REAL_BENCHMARKS:
            chosen = None if estimators is None else [e.strip() for e in estimators.split(",") if e.strip()]
            build = run_real_benchmark if benchmark in REAL_BENCHMARKS else run_benchmark
            run = build(benchmark, workdir=workdir or None, experiment=experiment or None,
                        estimators=chosen, say=click.echo)
            table, where, leaderboard = run.table(), run.experiment, run.leaderboard_run_id
            for column in ("pearson", "spearman", "weighted_tau", "top1_regret"):  # as the runs log them
                table[column] = table[column] / 100
            summary = {**{f"{name}.mean_pearson": row["pearson"] for name, row in table.iterrows()},
                       **{f"{stage}_seconds": s for stage, s in run.stage_seconds.items()}}
        else:
            runs = run_evaluation(_benchmark(benchmark, **store), experiment=experiment or None, estimators=estimators)
            table, where, notes = runs.leaderboard().drop(columns="run_id"), runs.experiment, runs.notes
            calibration = _interval_line(runs.outcomes.get("fennec"))
            benchmark, leaderboard = runs.benchmark, runs.leaderboard_run_id
            summary = {f"{name}.mean_pearson": row["mean_pearson"] for name, row in table.iterrows()}
    except FennecError as exc:
        _fail(exc)
    from fennec_mlflow.bench.evaluate import UNITS

    tracking.annotate_project_run("evaluate", summary, result_run_id=leaderboard)
    click.echo(f"benchmark {benchmark}: {len(table)} evaluation run(s) in experiment {where!r}")
    for note in notes:
        click.echo(f"note: {note}")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        click.echo(table.to_string())
    click.echo(UNITS)
    verdict = _against_popularity(table)
    if verdict:
        click.echo(verdict)
    if calibration:
        click.echo(calibration)
    if leaderboard:
        click.echo(f"Leaderboard: run {leaderboard} ('leaderboard-{benchmark}', the estimator runs are its children) "
                   f"in experiment {where!r}; to see it: {how_to_see_runs()}")
    else:
        click.echo(f"To see the runs: {how_to_see_runs()} (experiment {where!r})")


@main.command()
@click.option("--benchmark", default="parc", show_default=True,
              help="parc, parc6 or transfergraph, or store (the store's own ground truth: see --source)")
@click.option("--n-trials", default=config.TUNE_N_TRIALS, show_default=True, help="Optuna trials of this call")
@click.option("--storage", default=None, help="Optuna storage: a journal file path or an RDB URL (never the MLflow "
              "sqlite file); needed for parallel workers and resuming")
@click.option("--study-name", default=None)
@click.option("--workers", default=1, show_default=True, help="local worker processes sharing the storage")
@click.option("--nested-cv/--no-nested-cv", default=True, show_default=True,
              help="also report the honest nested cross-validated figure")
@click.option("--experiment", default=None, help="default: fennec-tune-<benchmark>; give 'fennec' for build to use the result")
@store_options
def tune(benchmark, n_trials, storage, study_name, workers, nested_cv, experiment, **store):
    """Tune alpha, k, the NMF regularisation and the shrinkage with Optuna; each trial a nested run."""
    from fennec_mlflow.bench.tuning import run_tuning

    try:
        # empty strings come from MLproject defaults: they mean "not given"
        outcome = run_tuning(_benchmark(benchmark, **store), n_trials=n_trials, storage=_given(storage),
                             study_name=_given(study_name), nested_cv=nested_cv, experiment=_given(experiment),
                             workers=workers)
    except FennecError as exc:
        _fail(exc)
    tracking.annotate_project_run("tune", {"best_mean_pearson": outcome.best_value})
    click.echo(f"study {outcome.study_name!r}: {outcome.n_trials} trial(s); chosen: mean Pearson x 100 "
               f"{100 * outcome.best_value:.1f} (logged as best_mean_pearson, the fraction {outcome.best_value:.3f}) "
               f"with {outcome.best_params} (parent run {outcome.parent_run_id})")
    if outcome.highest_value is not None and outcome.highest_value > outcome.best_value:
        click.echo(f"Optuna's best trial scored {100 * outcome.highest_value:.1f}; the chosen one is the best whose "
                   "gain over the defaults is beyond doubt on these targets (the defaults where none is), the rule "
                   "`fennec build` applies")
    if outcome.nested is not None:
        click.echo(f"nested cross-validated mean Pearson x 100 (the honest figure): {100 * outcome.nested_mean_pearson:.1f}")
    click.echo(f"popularity on the same targets: {100 * outcome.popularity_value:.1f}")


@main.command()
@click.option("--kind", default="fda", show_default=True, type=click.Choice(tracking.MATRIX_KINDS))
@click.option("--estimator", default=None, help="only runs with this estimator param")
@click.option("--source", default=None, help="only imported runs from this source (e.g. parc_controlled)")
@click.option("--regime", default=None, help="with --kind finetune or best: which fine-tunes (full or linear-probe; "
              "default: full, or linear-probe where the store holds only those)")
@click.option("--output", default=None, type=click.Path(dir_okay=False), help="also write the matrix as CSV")
@experiment_option
def matrix(kind, estimator, source, regime, output, experiment):
    """Rebuild the models x tasks performance matrix from the store and print it."""
    import pandas as pd

    try:
        output = _checked_output(output, (".csv",))
        regime = _given(regime)
        if regime is None and kind in tracking.REGIME_KINDS:
            regime = tracking.regime_held(kind, experiment)
        km = tracking.load_matrix(kind, experiment=experiment, estimator=estimator, source=source, regime=regime)
        if km.values.empty and _given(source) is not None:  # a source name mistyped is no empty matrix
            raise tracking.TrackingError(tracking.missing_runs_message(kind, experiment, source=source))
    except FennecError as exc:
        _fail(exc)
    if kind == "external" and _given(source) is None:
        _say_merged_sources(experiment)
    filled = int(km.values.notna().sum().sum())
    shown = f"{kind} ({regime})" if regime not in (None, tracking.DEFAULT_REGIME) else kind
    click.echo(f"{shown} matrix: {km.shape[0]} models x {km.shape[1]} tasks, {filled} cells known")
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.precision", 4):
        click.echo(km.values.to_string() if filled else "(empty)")
    if output is not None:
        km.values.to_csv(output)
        click.echo(f"written to {output}")


@main.command(name="import")
@click.argument("table", type=click.Path(exists=True, dir_okay=False))
@click.option("--source", default=None, help="name of the table's source (default: file name)")
@click.option("--layout", default="auto", type=click.Choice(["auto", "parc", "transfergraph", "long", "wide", "transposed"]),
              show_default=True, help="long: model,task,score; wide: model, then a column per task; transposed: "
                                      "task, then a column per model (auto tells them apart by the header)")
@click.option("--model-facts", default=None, type=click.Path(exists=True, dir_okay=False),
              help="TransferGraph's model_config_dataset.csv, for model facts")
@click.option("--repeats", default="last", type=click.Choice(["last", "mean", "max"]), show_default=True,
              help="a (model, task) cell given on several lines: keep the last line, or import the mean "
                   "(seeds) or the max (a hyperparameter grid)")
@click.option("--scores", default="auto", type=click.Choice(["auto", "accuracy", "error"]), show_default=True,
              help="error: the cells are error rates (lower is better), stored as accuracy = 100 - error (1 - error "
                   "for fractions); auto: error rates when a long table's score column is named like one "
                   "('Top-1 error'), else accuracy")
@click.option("--replace", is_flag=True, help="the source becomes this table: its cells imported before that the "
                                              "table no longer holds (a dropped row or column) are deleted")
@click.option("--allow-mixed-scale", is_flag=True,
              help="import cells on another scale than the rest of the table (above 100, or a fraction among "
                   "percents, or a percent among fractions), which are refused otherwise: for scores that are not "
                   "accuracies")
@click.option("--model-column", default=None, help="the header of the model column, where its name does not say it")
@click.option("--task-column", default=None, help="the header of the task column, where its name does not say it")
@click.option("--score-column", default=None,
              help="the header of the score column, where several could be (an MLflow runs export's metrics: "
                   "--score-column metrics.test_acc)")
@experiment_option
def import_(table, source, layout, model_facts, repeats, scores, replace, allow_mixed_scale, model_column,
            task_column, score_column, experiment):
    """Import an external model x task table as `external` runs (idempotent; skipped rows are reported).

    TABLE: CSV (comma, tab or semicolon), a markdown or LaTeX table, a spreadsheet (.xlsx, .xls,
    .ods: its first sheet), JSON ({task: {model: score}}, records) or Parquet/Feather; or your own
    fine-tune runs exported from MLflow (`mlflow experiments csv -x ID -o runs.csv`: params.model,
    params.dataset and a metric)."""
    from fennec_mlflow.store.external import import_table

    columns = {role: name for role, name in
               (("model", model_column), ("task", task_column), ("score", score_column)) if name}
    try:
        created, skipped = import_table(table, source=source, layout=layout, model_facts_csv=model_facts,
                                        repeats=repeats, scores=scores, replace=replace,
                                        allow_mixed_scale=allow_mixed_scale, columns=columns, experiment=experiment,
                                        report=lambda line: click.echo(f"warning: {line}", err=True),
                                        note=lambda line: click.echo(f"note: {line}", err=True),
                                        summary=click.echo)
    except FennecError as exc:
        _fail(exc)
    click.echo(f"{created} run(s) created, {skipped} cell(s) already imported")


if __name__ == "__main__":
    main()
