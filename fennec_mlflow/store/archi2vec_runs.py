"""archi2vec in the tracking store: one run per model, one run per fitted corpus.

- ``fennec.kind=archi2vec-corpus``: the fitted graph2vec (Doc2Vec) model as an artifact, the
  extraction failures, KMeans families and a 2-D map of every embedding coloured by family.
- ``fennec.kind=archi2vec`` (tag ``fennec.model``): params (model, vocabulary version,
  dimensions, WL iterations, settings hash, corpus run), metrics (parameters, layers, nodes,
  edges, depth), artifacts ``graph.json`` (node-link) and ``embedding.json``.

Re-running skips models already embedded with the same settings; models new to a fitted corpus
are embedded inductively (``infer_vector``) without refitting.
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from fennec_mlflow.archi2vec import (
    VOCABULARY_VERSION,
    ExtractionFailure,
    Graph2Vec,
    Graph2VecSettings,
    cluster_embeddings,
    extract_graphs,
    graph_to_json,
    meta_features,
    model_family,
)
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.store import tracking


def settings_hash(settings: Graph2VecSettings) -> str:
    return tracking.cell_key("archi2vec", vocabulary=VOCABULARY_VERSION, **asdict(settings))[:16]


@dataclass
class Archi2VecOutcome:
    corpus_run_id: str
    embedded: list[str] = field(default_factory=list)  # newly logged this call
    reused: list[str] = field(default_factory=list)
    failures: list[ExtractionFailure] = field(default_factory=list)


def embedding_map(embeddings: dict[str, np.ndarray], seed: int = 0):
    """A 2-D map of the embeddings (t-SNE, PCA below 8 models), coloured by model family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    names = list(embeddings)
    vectors = np.stack([embeddings[n] for n in names])
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
    if len(names) >= 8:
        points = TSNE(n_components=2, perplexity=min(30.0, (len(names) - 1) / 3), metric="cosine",
                      init="pca", random_state=seed).fit_transform(vectors)
        method = "t-SNE"
    else:
        points = PCA(n_components=2, random_state=seed).fit_transform(vectors)
        method = "PCA"
    families = [model_family(n) for n in names]
    figure, axes = plt.subplots(figsize=(9, 7))
    unique = sorted(set(families))
    colours = plt.get_cmap("tab20", max(len(unique), 1))
    for i, family in enumerate(unique):
        mask = np.array([f == family for f in families])
        axes.scatter(points[mask, 0], points[mask, 1], s=18, color=colours(i), label=family)
    if len(names) <= 40:
        for (x, y), name in zip(points, names):
            axes.annotate(name.split(":")[-1], (x, y), fontsize=7, alpha=0.8)
    if len(unique) <= 20:
        axes.legend(fontsize=7, ncol=2, loc="best")
    axes.set_title(f"archi2vec embeddings of {len(names)} models ({method}), coloured by family")
    axes.set_xticks([])
    axes.set_yticks([])
    figure.tight_layout()
    return figure


def _model_cell(model: str, settings_digest: str) -> str:
    return tracking.cell_key("archi2vec-model", model=model, settings=settings_digest)


def _model_record(name: str, graph, vector: np.ndarray, settings: Graph2VecSettings, digest: str,
                  corpus_run_id: str, inferred: bool, cluster: int | None) -> tracking.RunRecord:
    features = meta_features(graph)
    params = {"model": name, "vocabulary_version": VOCABULARY_VERSION, "dimensions": settings.dimensions,
              "wl_iterations": settings.wl_iterations, "settings_hash": digest, "corpus_run_id": corpus_run_id,
              "inferred": inferred, "family": model_family(name)}
    if cluster is not None:
        params["cluster"] = cluster
    return tracking.RunRecord(
        kind="archi2vec", model=name, cell=_model_cell(name, digest),
        params=params, metrics=features.metrics(),
        artifacts={"graph.json": graph_to_json(graph), "embedding.json": [float(v) for v in vector],
                   "op_histogram.json": features.op_histogram},
    )


def embed_architectures(
    model_names: Sequence[str],
    *,
    settings: Graph2VecSettings | None = None,
    processes: int = 1,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    mlflow_client: MlflowClient | None = None,
    progress: bool = True,
) -> Archi2VecOutcome:
    """Embed ``model_names``' architectures and log them (see the module docstring)."""
    settings = settings or Graph2VecSettings()
    digest = settings_hash(settings)
    mlflow_client = mlflow_client or tracking.client()
    exp_id = tracking.experiment_id(mlflow_client, experiment)
    done = {run.data.tags[tracking.MODEL_TAG] for run in tracking.runs_of_kind(
        "archi2vec", experiment=experiment, mlflow_client=mlflow_client,
        extra_filter=f"params.settings_hash = '{digest}'")}
    corpus_runs = tracking.runs_of_kind("archi2vec-corpus", experiment=experiment, mlflow_client=mlflow_client,
                                        extra_filter=f"params.settings_hash = '{digest}'")
    todo = [name for name in dict.fromkeys(model_names) if name not in done]
    reused = [name for name in dict.fromkeys(model_names) if name in done]
    if not todo:
        corpus_id = corpus_runs[0].info.run_id if corpus_runs else ""
        return Archi2VecOutcome(corpus_id, reused=reused)
    batch = extract_graphs(todo, processes=processes, progress=progress)
    if corpus_runs:  # inductive: embed new models with the fitted corpus model
        corpus_id = corpus_runs[0].info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow_client.download_artifacts(corpus_id, "graph2vec", tmp)
            embedder = Graph2Vec.load(local)
        vectors = embedder.infer(batch.graphs)
        inferred, clusters = True, {}
    else:
        if len(batch.graphs) < 2:
            raise InvalidInputError(f"graph2vec needs at least 2 models to fit a corpus; extracted "
                             f"{len(batch.graphs)} ({len(batch.failures)} failed)")
        embedder = Graph2Vec(settings).fit(batch.graphs)
        vectors = embedder.embeddings()
        inferred = False
        clusters = cluster_embeddings(vectors) if len(vectors) >= 3 else {}
        with tempfile.TemporaryDirectory() as tmp:
            folder = embedder.save(Path(tmp) / "graph2vec")
            failures = [asdict(f) for f in batch.failures]
            corpus_id = tracking.write_run(mlflow_client, exp_id, tracking.RunRecord(
                kind="archi2vec-corpus", name=f"archi2vec-corpus-{len(vectors)}-models",
                params={**{k: v for k, v in asdict(settings).items()}, "vocabulary_version": VOCABULARY_VERSION,
                        "settings_hash": digest, "models": len(vectors), "failures": len(batch.failures)},
                metrics={"models": len(vectors), "failures": len(batch.failures),
                         "extraction_seconds": sum(batch.seconds.values())},
                artifacts={"graph2vec": folder, "failures.json": failures, "clusters.json": clusters,
                           "embedding_map.png": embedding_map(vectors)},
            ))
    outcome = Archi2VecOutcome(corpus_id, reused=reused, failures=list(batch.failures))
    from fennec_mlflow.progress import tqdm

    stale = tracking.unfinished_cells(mlflow_client, experiment, "archi2vec")
    for name in tqdm(list(vectors), desc="archi2vec runs", disable=not progress, unit="model"):
        tracking.discard_runs(mlflow_client, stale.pop(_model_cell(name, digest), ()))
        tracking.write_run(mlflow_client, exp_id, _model_record(
            name, batch.graphs[name], vectors[name], settings, digest, corpus_id, inferred, clusters.get(name)))
        outcome.embedded.append(name)
    return outcome


def load_architectures(
    *,
    settings: Graph2VecSettings | None = None,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    mlflow_client: MlflowClient | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(embeddings: models x dims, meta: models x [parameters, layers, nodes, edges, depth, family]) from the store."""
    digest = settings_hash(settings or Graph2VecSettings())
    mlflow_client = mlflow_client or tracking.client()
    runs = tracking.runs_of_kind("archi2vec", experiment=experiment, mlflow_client=mlflow_client,
                                 extra_filter=f"params.settings_hash = '{digest}'")
    latest = {}
    for run in runs:  # newest first
        latest.setdefault(run.data.tags[tracking.MODEL_TAG], run)
    vectors, meta = {}, {}
    for name, run in sorted(latest.items()):
        vectors[name] = tracking.download_json(mlflow_client, run.info.run_id, "embedding.json")
        meta[name] = {**run.data.metrics, "family": run.data.params.get("family")}
    embeddings = pd.DataFrame.from_dict(vectors, orient="index")
    embeddings.columns = [f"a2v_{i}" for i in range(embeddings.shape[1])]
    return embeddings, pd.DataFrame.from_dict(meta, orient="index")
