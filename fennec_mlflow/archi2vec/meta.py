"""Model meta features (size, layers, graph shape, op histogram) and families found in embeddings.

Counts that need the module (parameters, learnable layers) are taken at extraction time and
stored as graph attributes, so everything here works from a graph alone, e.g. one read back
from node-link JSON.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping

import networkx as nx
import numpy as np
from torch import nn

from fennec_mlflow.errors import InvalidInputError


def parameter_count(model: nn.Module) -> int:
    """Number of scalar parameters (shared tensors once); works on ``meta`` modules."""
    return sum(p.numel() for p in model.parameters())


def learnable_layer_count(model: nn.Module) -> int:
    """Modules holding parameters of their own (Conv, Linear, norms, PReLU, ...), containers excluded."""
    return sum(1 for module in model.modules() if next(module.parameters(recurse=False), None) is not None)


def graph_depth(graph: nx.DiGraph) -> int:
    """Ops on the longest path through the DAG (0 for an empty graph)."""
    return nx.dag_longest_path_length(graph) + 1 if graph.number_of_nodes() else 0


def op_histogram(graph: nx.DiGraph, attribute: str = "type") -> dict[str, int]:
    """Count of nodes per op type, types sorted by name."""
    return dict(sorted(Counter(t for _, t in graph.nodes(data=attribute)).items()))


@dataclass(frozen=True)
class MetaFeatures:
    """Meta features of one model's graph (the paper's size/layer features plus graph shape)."""

    parameters: int | None
    layers: int | None
    nodes: int
    edges: int
    depth: int
    op_histogram: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, int]:
        """The scalar features, named as the tracking layer logs them."""
        scalars = {"parameters": self.parameters, "layers": self.layers, "nodes": self.nodes,
                   "edges": self.edges, "depth": self.depth}
        return {k: v for k, v in scalars.items() if v is not None}


def meta_features(graph: nx.DiGraph) -> MetaFeatures:
    """Meta features of an extracted graph; ``parameters``/``layers`` are None if it lacks them."""
    return MetaFeatures(
        parameters=graph.graph.get("parameters"),
        layers=graph.graph.get("layers"),
        nodes=graph.number_of_nodes(),
        edges=graph.number_of_edges(),
        depth=graph_depth(graph),
        op_histogram=op_histogram(graph),
    )


def meta_table(graphs: Mapping[str, nx.DiGraph]):
    """A pandas DataFrame, one row per model: scalar features, then ``op.<Type>`` counts (0 if absent)."""
    import pandas as pd

    rows = {}
    for name, graph in graphs.items():
        features = meta_features(graph)
        rows[name] = {**features.metrics(), **{f"op.{t}": n for t, n in features.op_histogram.items()}}
    table = pd.DataFrame.from_dict(rows, orient="index")
    op_columns = sorted(c for c in table.columns if c.startswith("op."))
    table[op_columns] = table[op_columns].fillna(0).astype(int)
    return table[[c for c in table.columns if not c.startswith("op.")] + op_columns]


# ----------------------------------------------------------------------------- families


def model_family(name: str) -> str:
    """The family of a model name: its leading letters, hub prefix dropped.

    ``resnet18`` -> ``resnet``, ``seresnext50_32x4d`` -> ``seresnext``, ``efficientnet_b0`` ->
    ``efficientnet``, ``mobilenetv2_w1`` -> ``mobilenetv``, ``torchvision:vit_b_16`` -> ``vit``.
    """
    bare = name.split(":", 1)[-1].lower()
    match = re.match(r"[a-z]+", bare)
    return match.group(0) if match else bare


def _unit_rows(embeddings: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    names = list(embeddings)
    matrix = np.vstack([np.asarray(embeddings[n], dtype=np.float64) for n in names])
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return names, matrix / np.where(norms == 0, 1, norms)


def nearest_neighbours(embeddings: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Each model's nearest other model by cosine similarity."""
    names, unit = _unit_rows(embeddings)
    if len(names) < 2:
        raise InvalidInputError("nearest neighbours need at least two embeddings")
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return {name: names[int(j)] for name, j in zip(names, similarity.argmax(axis=1))}


def same_family_rate(embeddings: Mapping[str, np.ndarray], family: Callable[[str], str] = model_family,
                     min_family_size: int = 2) -> float:
    """Share of models whose cosine nearest neighbour is of the same family.

    Models of a family with fewer than ``min_family_size`` members in ``embeddings`` are left
    out: a family of one cannot have a same-family neighbour.
    """
    sizes = Counter(family(n) for n in embeddings)
    neighbours = nearest_neighbours(embeddings)
    counted = [n for n in neighbours if sizes[family(n)] >= min_family_size]
    if not counted:
        raise InvalidInputError(f"no family has {min_family_size} or more members")
    return sum(family(n) == family(neighbours[n]) for n in counted) / len(counted)


def cluster_embeddings(embeddings: Mapping[str, np.ndarray], n_clusters: int | None = None, *,
                       max_clusters: int = 40, seed: int = 0) -> dict[str, int]:
    """KMeans clusters of the (L2-normalised, i.e. cosine) embeddings: families without labels.

    ``n_clusters=None`` picks k by the best silhouette score, for k from 2 up to ``max_clusters``
    and at most half the models (a family needs two members to be one).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    names, unit = _unit_rows(embeddings)
    if len(names) < 3:
        raise InvalidInputError(f"clustering needs at least 3 embeddings, got {len(names)}")

    def fit(k: int) -> np.ndarray:
        return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(unit)

    if n_clusters is not None:
        if not 1 <= n_clusters <= len(names):
            raise InvalidInputError(f"n_clusters must be in 1..{len(names)}, got {n_clusters}")
        labels = fit(n_clusters)
    else:
        best = None
        for k in range(2, min(max_clusters, len(names) // 2) + 1):
            candidate = fit(k)
            if len(set(candidate)) < 2:
                continue
            score = silhouette_score(unit, candidate, metric="euclidean")
            if best is None or score > best[0]:
                best = (score, candidate)
        labels = best[1] if best is not None else np.zeros(len(names), dtype=int)
    return {name: int(label) for name, label in zip(names, labels)}
