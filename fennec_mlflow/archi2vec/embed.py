"""graph2vec: Weisfeiler-Lehman subtree documents of graphs, embedded with Doc2Vec (PV-DBOW).

This is karateclub's ``Graph2Vec`` (Narayanan et al. 2017) built directly on gensim, because
karateclub's pinned dependencies cannot be resolved beside a modern numpy.

**Documents.** :func:`wl_document` reproduces karateclub 1.3.3 word for word (its
``Graph2Vec.fit`` = ``_check_graph`` + ``WeisfeilerLehmanHashing``):

- every node starts with the string of its attribute (``type``, the normalised op);
- one WL iteration relabels a node with the MD5 hex digest of
  ``"_".join([own label] + sorted(labels of graph.neighbors(node)))``; on a DiGraph the
  neighbours are the successors, i.e. the ops consuming this op's output;
- karateclub's ``Graph2Vec`` first adds a self-loop to every node (``_ensure_integrity``), so
  each node is among its own neighbours; ``self_loops=True`` (our default) does the same
  without mutating the graph;
- the document lists, node by node in ``graph.nodes()`` order, the node's labels of
  iterations 0..h (iteration 0 dropped with ``erase_base_features``).

MD5 via hashlib, never ``hash()``: documents do not depend on ``PYTHONHASHSEED``.

**Doc2Vec.** PV-DBOW (``dm=0``, ``window=0``) with karateclub's settings, except where noted in
:class:`Graph2Vec`. Determinism: one worker thread, a seed, and our own inference (see
:meth:`Graph2Vec.infer`), because gensim's ``infer_vector`` seeds its start vector with
Python's salted ``hash()`` and draws negative samples from the model's shared random state,
so the same document gets a different vector in each process and on each call.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import networkx as nx
import numpy as np

from fennec_mlflow.archi2vec.graph import VOCABULARY_VERSION
from fennec_mlflow.errors import InvalidInputError, MissingFileError

EMBEDDER_FORMAT_VERSION = 1
"""Version of the on-disk layout written by :meth:`Graph2Vec.save`."""


def wl_document(graph: nx.Graph, wl_iterations: int = 2, *, attribute: str = "type",
                self_loops: bool = True, erase_base_features: bool = False) -> list[str]:
    """The Weisfeiler-Lehman subtree document of ``graph`` (karateclub's construction, see module doc).

    Every node must carry ``attribute``; a missing one is an error naming the node.
    """
    if wl_iterations < 0:
        raise InvalidInputError(f"wl_iterations must be >= 0, got {wl_iterations}")
    labels: dict = {}
    for node, value in graph.nodes(data=attribute):
        if value is None:
            model = graph.graph.get("model", "?")
            raise InvalidInputError(f"graph {model!r}: node {node!r} has no {attribute!r} attribute")
        labels[node] = value
    features = {node: [str(value)] for node, value in labels.items()}
    for _ in range(wl_iterations):
        relabelled = {}
        for node in graph.nodes():
            neighbours = list(graph.neighbors(node))
            if self_loops and not graph.has_edge(node, node):
                neighbours.append(node)
            parts = [str(labels[node])] + sorted(str(labels[n]) for n in neighbours)
            relabelled[node] = hashlib.md5("_".join(parts).encode()).hexdigest()
        labels = relabelled
        for node, label in labels.items():
            features[node].append(label)
    start = 1 if erase_base_features else 0
    return [word for node in graph.nodes() for word in features[node][start:]]


@dataclass(frozen=True)
class Graph2VecSettings:
    """Everything that determines an embedding; logged as run parameters by the tracking layer.

    Defaults are karateclub's (``wl_iterations=2``, ``dimensions=128``, ``learning_rate=0.025``,
    ``seed=42``, ``erase_base_features=False``) except:

    - ``down_sampling=0`` (karateclub: 1e-4): gensim down-samples words more frequent than
      ``down_sampling`` x corpus size, and a zoo is a small corpus, so at 1e-4 nearly every WL
      word is dropped in most passes. On 5 models (resnet10/12, alexnet, vgg11, nin; 32
      dimensions) every pair then has a cosine of about 0.99; without down-sampling,
      resnet10~resnet12 0.999 and resnet10~alexnet 0.14. On the 468 pytorchcv ImageNet graphs, the share of models whose
      cosine nearest neighbour is of the same family rises from 90.6% to 96.0% (inferred
      vectors: 88.8% and 88.6%);
    - ``min_count=1`` (karateclub: 5): a WL subtree seen in only a few models (a family's
      signature block) is exactly what separates families (same-family rate 84.6% with
      ``min_count=1`` against 83.9% with 5, at 10 epochs);
    - ``epochs=50`` (karateclub: 10): a zoo gives Doc2Vec few documents, so few updates per
      epoch (95.1% at 20 epochs, 96.0% at 50); fitting 468 graphs takes about 16 s;
    - ``workers=1`` (karateclub: 4): gensim is only reproducible with one worker thread.

    As karateclub does implicitly: ``min_learning_rate=1e-4`` and ``negative=5`` (gensim's
    defaults during fit), ``infer_min_learning_rate=1e-5`` with ``epochs`` passes for inference
    (karateclub's ``infer``). ``self_loops`` and ``attribute``: see :func:`wl_document`.
    """

    wl_iterations: int = 2
    dimensions: int = 128
    epochs: int = 50
    learning_rate: float = 0.025
    min_learning_rate: float = 0.0001
    infer_min_learning_rate: float = 0.00001
    down_sampling: float = 0.0
    min_count: int = 1
    negative: int = 5
    seed: int = 42
    workers: int = 1
    erase_base_features: bool = False
    self_loops: bool = True
    attribute: str = "type"

    def __post_init__(self):
        for name in ("wl_iterations", "dimensions", "epochs", "min_count", "workers"):
            value = getattr(self, name)
            least = 0 if name == "wl_iterations" else 1
            if not isinstance(value, int) or value < least:
                raise InvalidInputError(f"{name} must be an integer >= {least}, got {value!r}")
        if not 0 < self.learning_rate:
            raise InvalidInputError(f"learning_rate must be > 0, got {self.learning_rate}")


def _named_graphs(graphs: Mapping[str, nx.Graph] | Iterable[nx.Graph]) -> tuple[list[str], list[nx.Graph]]:
    """Names and graphs from a mapping, or from graphs named by their ``model`` attribute."""
    if isinstance(graphs, Mapping):
        names, values = list(graphs.keys()), list(graphs.values())
    else:
        values = list(graphs)
        names = [g.graph.get("model") for g in values]
        if any(name is None for name in names):
            raise InvalidInputError("graphs without a 'model' graph attribute must be passed as a {name: graph} mapping")
    if len(set(names)) != len(names):
        raise InvalidInputError("graph names must be unique")
    for name, graph in zip(names, values):
        if not isinstance(graph, nx.Graph):
            raise TypeError(f"graph {name!r}: expected a networkx graph, got {type(graph).__name__}")
    return [str(n) for n in names], values


def _document_seed(seed: int, words: Sequence[str]) -> int:
    """A 32-bit seed from the embedder's seed and the document, stable across processes."""
    digest = hashlib.sha256(f"{seed}\n{' '.join(words)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class Graph2Vec:
    """Fit graph2vec on a corpus of graphs; embed the corpus and, later, new graphs.

    >>> embedder = Graph2Vec().fit({"resnet18": g1, "alexnet": g2, ...})
    >>> embedder.embeddings()["resnet18"]            # trained vector of a corpus graph
    >>> embedder.infer({"resnet10": g3})["resnet10"]  # a graph added later, no refit
    """

    def __init__(self, settings: Graph2VecSettings | None = None, **overrides):
        base = settings or Graph2VecSettings()
        self.settings = Graph2VecSettings(**{**asdict(base), **overrides})
        self.model_ = None
        self.names_: list[str] = []

    # -- fitting ------------------------------------------------------------------------

    def documents(self, graphs: Mapping[str, nx.Graph] | Iterable[nx.Graph]) -> dict[str, list[str]]:
        """WL documents of ``graphs`` under this embedder's settings, by name."""
        names, values = _named_graphs(graphs)
        s = self.settings
        return {
            name: wl_document(graph, s.wl_iterations, attribute=s.attribute, self_loops=s.self_loops,
                              erase_base_features=s.erase_base_features)
            for name, graph in zip(names, values)
        }

    def fit(self, graphs: Mapping[str, nx.Graph] | Iterable[nx.Graph]) -> "Graph2Vec":
        """Train Doc2Vec on the graphs' WL documents; one vector per graph, tagged by name."""
        from gensim.models.doc2vec import Doc2Vec, TaggedDocument

        documents = self.documents(graphs)
        if not documents:
            raise InvalidInputError("cannot fit graph2vec on an empty corpus")
        s = self.settings
        self.model_ = Doc2Vec(
            [TaggedDocument(words, [name]) for name, words in documents.items()],
            vector_size=s.dimensions,
            window=0,
            min_count=s.min_count,
            dm=0,
            sample=s.down_sampling,
            negative=s.negative,
            workers=s.workers,
            epochs=s.epochs,
            alpha=s.learning_rate,
            min_alpha=s.min_learning_rate,
            seed=s.seed,
        )
        self.names_ = list(documents)
        return self

    def _require_fitted(self):
        if self.model_ is None:
            raise RuntimeError("this Graph2Vec is not fitted yet: call fit(graphs) or Graph2Vec.load(path)")

    # -- vectors --------------------------------------------------------------------------

    @property
    def embedding_(self) -> np.ndarray:
        """Trained vectors of the corpus, one row per name in ``names_``."""
        self._require_fitted()
        return np.vstack([self.model_.dv[name] for name in self.names_])

    def embeddings(self) -> dict[str, np.ndarray]:
        """Trained vectors of the corpus by name."""
        return dict(zip(self.names_, self.embedding_))

    def infer_document(self, words: Sequence[str]) -> np.ndarray:
        """A vector for one WL document, without changing the fitted model.

        gensim's ``infer_vector`` with two sources of randomness pinned: the start vector and the
        negative-sampling stream both come from a seed derived (SHA-256) from this embedder's
        seed and the document, so a document gets the same vector in every call and process.
        Words unseen during ``fit`` are ignored, as in gensim.
        """
        from gensim.models.doc2vec_inner import train_document_dbow

        self._require_fitted()
        s, model = self.settings, self.model_
        seed = _document_seed(s.seed, words)
        rng = np.random.default_rng(seed)
        size = model.dv.vector_size
        vector = ((rng.random(size, dtype=np.float32) - 0.5) / size).reshape(1, size)
        words = [str(w) for w in words]
        alpha, step = s.learning_rate, (s.learning_rate - s.infer_min_learning_rate) / max(s.epochs - 1, 1)
        work = np.zeros(model.layer1_size, dtype=np.float32)
        lock = np.ones(1, dtype=np.float32)
        shared_random = model.random  # the Cython trainer draws from model.random: swap in our own
        model.random = np.random.RandomState(seed)
        try:
            for _ in range(s.epochs):
                train_document_dbow(model, words, [0], alpha, work, learn_words=False, learn_hidden=False,
                                    doctag_vectors=vector, doctags_lockf=lock)
                alpha -= step
        finally:
            model.random = shared_random
        return vector[0].copy()

    def infer(self, graphs: Mapping[str, nx.Graph] | Iterable[nx.Graph]) -> dict[str, np.ndarray]:
        """Vectors for graphs outside (or inside) the corpus, by name; the corpus model is unchanged."""
        self._require_fitted()
        return {name: self.infer_document(words) for name, words in self.documents(graphs).items()}

    # -- persistence --------------------------------------------------------------------------

    def get_params(self, deep: bool = True) -> dict:
        """The settings, flat, by the keyword names ``Graph2Vec(**overrides)`` takes (scikit-learn's protocol).

        ``Graph2Vec(**embedder.get_params())`` has the same settings. ``deep`` changes nothing (no
        setting is an estimator). The op vocabulary the embedding also depends on is ``VOCABULARY_VERSION``.
        """
        return asdict(self.settings)

    def set_params(self, **params) -> "Graph2Vec":
        """Change settings by name (checked as :class:`Graph2VecSettings` checks them); used by the next fit."""
        self.settings = replace(self.settings, **params)
        return self

    def save(self, path: str | Path) -> Path:
        """Write the fitted embedder to the folder ``path``: ``graph2vec.json`` + gensim's ``doc2vec.model``."""
        self._require_fitted()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": EMBEDDER_FORMAT_VERSION, "vocabulary_version": VOCABULARY_VERSION,
                "settings": asdict(self.settings), "names": self.names_}
        (folder / "graph2vec.json").write_text(json.dumps(meta, indent=2))
        self.model_.save(str(folder / "doc2vec.model"))
        return folder

    @classmethod
    def load(cls, path: str | Path) -> "Graph2Vec":
        """Read an embedder written by :meth:`save`; refuses another op vocabulary version."""
        from gensim.models.doc2vec import Doc2Vec

        folder = Path(path)
        meta_file = folder / "graph2vec.json"
        if not meta_file.exists():
            raise MissingFileError(f"{folder} holds no graph2vec.json: not a folder written by Graph2Vec.save")
        meta = json.loads(meta_file.read_text())
        if meta.get("format_version") != EMBEDDER_FORMAT_VERSION:
            raise InvalidInputError(f"{folder}: embedder format {meta.get('format_version')!r}, "
                             f"this version reads {EMBEDDER_FORMAT_VERSION}")
        if meta.get("vocabulary_version") != VOCABULARY_VERSION:
            raise InvalidInputError(f"{folder}: fitted with op vocabulary {meta.get('vocabulary_version')!r}, "
                             f"graphs are now built with {VOCABULARY_VERSION!r}; refit the embedder")
        embedder = cls(Graph2VecSettings(**meta["settings"]))
        embedder.model_ = Doc2Vec.load(str(folder / "doc2vec.model"))
        embedder.names_ = list(meta["names"])
        return embedder


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two vectors (0 when either is zero)."""
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm else 0.0
