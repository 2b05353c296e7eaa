"""The embedded default: a demo knowledge base built offline, on first use, in the tracking store.

When no registered ``fennec`` model exists, ``rank`` builds one from scratch, on any machine,
offline:

1. a small zoo of pytorchcv CIFAR-size architectures, each briefly pre-trained by the project
   on a different synthetic source domain (so the candidates really differ; ``pretrain.py``);
2. FDA scores of every candidate on the historical synthetic tasks (``fda`` runs);
3. archi2vec embeddings of the architectures (``archi2vec`` runs);
4. the proxy encoder: CLIP when its weights are on disk, else a zoo model pre-trained on a
   broad synthetic mix (said in the output and logged as the ``encoder`` param);
   proxy features of every historical task (``task-proxy`` runs);
5. Fennec fitted on all of it, logged (``fennec-fit``) and registered as ``fennec@champion``.

Each step is idempotent (finished cells are reused), so a killed bootstrap resumes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import click

from fennec_mlflow import config
from fennec_mlflow.data.checkpoints import load_pretrained
from fennec_mlflow.data.proxy import ProxyUnavailable, load_encoder
from fennec_mlflow.data.synthetic import synthetic_task
from fennec_mlflow.data.zoo import DEFAULT_ZOO
from fennec_mlflow.serving.build import build
from fennec_mlflow.store import tracking
from fennec_mlflow.store.archi2vec_runs import embed_architectures
from fennec_mlflow.store.jobs import proxy_cells, score_cells
from fennec_mlflow.training.pretrain import DEMO_ARCHS, pretrain_demo_zoo, pretrain_proxy

# Historical tasks: two per synthetic family, none a pre-training source of the demo zoo
# (pretrain.DEMO_SOURCES). The default target (below) is held out of them.
DEMO_HISTORY = (
    "digits-color", "digits-inverted",
    "shapes-4", "shapes-8",
    "gratings-freq-5", "gratings-texture-6",
    "glyphs-upper-10", "glyphs-mixed-20",
    "blobs-count-3", "blobs-count-5",
)
DEFAULT_TARGET = "shapes-outline-6"
DEMO_PROBE_SIZE = 300
CLIP_SPEC = "clip:ViT-B-32:openai"


def demo_dir() -> Path:
    return config.cache_dir("demo")


@dataclass
class DemoEncoder:
    encoder: object
    spec: str
    file: Path | None
    description: str


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


def bootstrap(experiment: str = tracking.DEFAULT_EXPERIMENT, *, progress: bool = True, say=click.echo):
    """Build the demo knowledge base and register ``fennec@champion``; returns the BuildResult."""

    started = time.perf_counter()
    say("No registered 'fennec' model in this store: building the offline demo knowledge base "
        f"(once; cached in {demo_dir()}).")
    say("1/5 pre-training the demo zoo on synthetic source domains ...")
    paths = pretrain_demo_zoo(demo_dir() / "zoo", progress=progress)
    models = [load_pretrained(p).model for p in paths]
    history = [synthetic_task(name) for name in DEMO_HISTORY]
    say(f"2/5 FDA of {len(models)} models on {len(history)} historical tasks ...")
    score_cells(models, history, probe_size=DEMO_PROBE_SIZE, experiment=experiment, progress=progress)
    say("3/5 archi2vec of the architectures ...")
    embed_architectures(sorted(set(DEMO_ARCHS) | set(DEFAULT_ZOO)), experiment=experiment, progress=progress)
    say("4/5 task proxies ...")
    encoder = demo_encoder(progress=progress)
    say(f"    proxy encoder: {encoder.description}")
    proxy_cells(encoder.encoder, history, experiment=experiment, progress=progress)
    say("5/5 fitting and registering fennec@champion ...")
    result = build(kind="fda", encoder_spec=encoder.spec, encoder_name=encoder.encoder.name,
                   encoder_file=encoder.file, experiment=experiment,
                   models=[m.name for m in models], tasks=list(DEMO_HISTORY),
                   extra_artifacts={"demo_zoo": demo_dir() / "zoo"})
    say(f"Built in {time.perf_counter() - started:.0f} s: {result.knowledge.P.shape[0]} models x "
        f"{result.knowledge.P.shape[1]} tasks, registered {result.model_uri} (version {result.version}).")
    return result
