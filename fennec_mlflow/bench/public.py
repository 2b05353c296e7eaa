"""Public benchmarks: real fine-tuning tables as (P, model meta, task meta, targets).

Each benchmark is built from the tables bundled in ``fennec_mlflow/resources/benchmarks`` (read-only
copies of published results, see the README there) and the task facts table
(:func:`fennec_mlflow.core.evaluation.load_task_facts`), so it needs no store, no download and no image.

- ``parc``: PARC's controlled oracle table (Bolya et al. 2021): 32 models = 4 torchvision
  architectures (resnet50, resnet18, googlenet, alexnet) x 8 source datasets, 7 targets, test
  accuracy in %; the 28 cells where a model's source is the target are absent (NaN, skipped).
- ``parc6``: the same matrix with PARC's own 6 targets: voc2007 stays in every history but is
  never held out (as PARC evaluates).
- ``transfergraph``: TransferGraph's image-classification records (Li et al. 2024): 180 Hugging
  Face models x 13 targets, eval accuracy in [0, 1], the last record of a cell kept (about 4% of
  cells are missing).

**What the recommender may see.** History: the true accuracies of the other tasks. Model meta:

- PARC: the architecture (one-hot, plus its archi2vec embedding: the autograd graph of the
  torchvision model embedded with graph2vec on the 4 graphs and reduced by PCA to
  ``min(ARCHITECTURE_DIMS, 3)`` dimensions, as :mod:`fennec_mlflow.store.knowledge` does for a zoo,
  plus the log parameter count and log learnable-layer count from the graph), the source dataset
  (one-hot) and the source dataset's public facts (log class count, log training-set size,
  domain one-hot: :data:`SOURCE_FACTS` for ImageNet, the task facts table for the others).
- TransferGraph: model type (one-hot; the one model without a ``model_type`` gets it from its
  ``architectures`` class), log parameter count, log feature width (``output_shape``), log input
  size, the source dataset (one-hot for sources shared by at least :data:`MIN_SOURCE_MODELS`
  models, the rest ``other``) and its facts where known (log class count from the model card's
  ``#labels``; log training-set size and domain where the source is a dataset with public facts).

Task meta: log class count, log training-set size, domain one-hot, from the task facts table.
**No images or probe features come with these tables**, so Fennec's cold-start task vector is
regressed from the task meta alone (``task_proxy=None``): the paper's CLIP proxy is not used here.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fennec_mlflow.archi2vec import Graph2Vec, extract_graphs, meta_features
from fennec_mlflow.core.evaluation import load_task_facts
from fennec_mlflow.errors import InvalidInputError
from fennec_mlflow.serving.selection import TRUTH, TuningData, history_without
from fennec_mlflow.store import external

BENCHMARK_NAMES = ("parc", "parc6", "transfergraph")
PARC_ARCHITECTURES = ("resnet50", "resnet18", "googlenet", "alexnet")
ARCHITECTURE_DIMS = 3  # 4 architectures span at most 3 PCA dimensions
MIN_SOURCE_MODELS = 3
PARC_URL = "https://github.com/dbolya/parc/blob/ddfca43/oracles/controlled.csv"
TRANSFERGRAPH_URL = ("https://github.com/TransferGraph/transfergraph/blob/0458aff/"
                     "resources/experiments/image_classification/records.csv")
TRANSFERGRAPH_MODELS_URL = "https://github.com/TransferGraph/transfergraph/blob/0458aff/model_config_dataset.csv"

# Facts of pre-training sources that are not targets of any benchmark (the others come from the
# task facts table). Same columns and meaning as ``fennec_mlflow/resources/task_facts.csv``.
SOURCE_FACTS = pd.DataFrame([
    {"task": "imagenet", "dataset": "ImageNet-1k (ILSVRC 2012)", "class_count": 1000, "train_size": 1281167,
     "domain": "natural",
     "source": "Russakovsky et al. IJCV 2015 ImageNet Large Scale Visual Recognition Challenge; "
               "https://www.image-net.org/challenges/LSVRC/2012/"},
    {"task": "imagenet-21k", "dataset": "ImageNet-21k (fall 2011 release)", "class_count": 21841,
     "train_size": 14197122, "domain": "natural",
     "source": "Deng et al. CVPR 2009 ImageNet: A large-scale hierarchical image database; "
               "Ridnik et al. NeurIPS 2021 ImageNet-21K Pretraining for the Masses (21841 classes, 14.2M images)"},
    {"task": "cats_vs_dogs", "dataset": "Microsoft Asirra cats vs dogs", "class_count": 2, "train_size": 23262,
     "domain": "fine-grained",
     "source": "Elson et al. CCS 2007 Asirra; https://huggingface.co/datasets/microsoft/cats_vs_dogs (23,262 images)"},
    {"task": "beans", "dataset": "iBean leaf images", "class_count": 3, "train_size": 1034, "domain": "plant",
     "source": "Makerere AI Lab 2020; https://huggingface.co/datasets/AI-Lab-Makerere/beans (1,034 train)"},
]).set_index("task")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark, ready for :func:`fennec_mlflow.core.evaluation.leave_one_task_out`.

    P: models x tasks, true fine-tuned accuracies (the ground truth), NaN where unknown.
    model_meta / task_meta: numeric tables indexed like the models / tasks, or None when there are
    no such facts (Fennec then has no meta phase; without task meta and proxies it ranks by
    popularity). targets: the tasks held out in turn (the others are always history). families:
    model -> architecture family (for the family-mean baseline), None when unknown. units: the
    accuracy scale (top-1 regret is in these units). history: what Fennec learns from, when it is
    not the ground truth itself (e.g. the store's FDA matrix); a target's own column is never seen
    (:meth:`history_for`). task_proxy: tasks x proxy features, when the tasks have images.
    target_scores: label-based estimators' scores of the targets themselves, by estimator name.
    """

    name: str
    description: str
    P: pd.DataFrame
    model_meta: pd.DataFrame | None
    task_meta: pd.DataFrame | None
    targets: list[str]
    families: pd.Series | None
    units: str
    sources: list[str] = field(default_factory=list)
    task_vector_source: str = "task_meta (no images: no proxy features)"
    history: pd.DataFrame | None = None
    history_name: str = TRUTH
    history_weights: pd.Series | None = None  # the history's task weights in Fennec's popularity part
    task_proxy: pd.DataFrame | None = None
    notes: tuple[str, ...] = ()
    # label-based scores computed on the targets themselves (e.g. "fda", "logme": models x tasks), each
    # evaluated as a ranker of its own target: what Fennec, without the target's labels, is measured against
    target_scores: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.P.shape

    def history_for(self, target: str) -> pd.DataFrame:
        """What Fennec may learn from for ``target``: the history without ``target``'s column."""
        return history_without(self.P if self.history is None else self.history, target)

    def tuning_data(self) -> TuningData:
        """The benchmark as :class:`~fennec_mlflow.serving.selection.TuningData` (one history source)."""
        return TuningData(self.P, self.model_meta, self.task_meta, tuple(self.targets),
                          {self.history_name: self.history}, self.task_proxy,
                          {} if self.history_weights is None else {self.history_name: self.history_weights})

    def summary(self) -> dict[str, object]:
        """What an evaluation run logs as params about the benchmark."""
        def columns(table: pd.DataFrame | None) -> int:
            return 0 if table is None else table.shape[1]

        return {"benchmark": self.name, "models": self.P.shape[0], "tasks": self.P.shape[1],
                "targets": ",".join(self.targets), "known_cells": int(self.P.notna().sum().sum()),
                "model_meta_columns": columns(self.model_meta), "task_meta_columns": columns(self.task_meta),
                "units": self.units, "task_vector_source": self.task_vector_source, "history": self.history_name,
                "families": "unknown" if self.families is None else int(self.families.nunique())}


def _log(values) -> np.ndarray:
    return np.log(pd.to_numeric(values, errors="coerce").astype(float))


def task_meta_table(tasks: Sequence[str], facts: pd.DataFrame | None = None) -> pd.DataFrame:
    """log class count, log training-set size and domain one-hot of ``tasks``, from the task facts."""
    facts = load_task_facts() if facts is None else facts
    missing = [t for t in tasks if t not in facts.index]
    if missing:
        raise InvalidInputError(f"the task facts table has no row for task(s) {missing}")
    rows = facts.loc[list(tasks)]
    table = pd.DataFrame({"log_class_count": _log(rows["class_count"]), "log_train_size": _log(rows["train_size"])},
                         index=pd.Index(list(tasks), name="task"))
    for domain in sorted(rows["domain"].unique()):
        table[f"domain={domain}"] = (rows["domain"] == domain).astype(float).to_numpy()
    return table


def source_facts() -> pd.DataFrame:
    """Facts of every known pre-training source: the task facts table plus :data:`SOURCE_FACTS`."""
    facts = load_task_facts()[["dataset", "class_count", "train_size", "domain", "source"]]
    return pd.concat([facts, SOURCE_FACTS[~SOURCE_FACTS.index.isin(facts.index)]])


def _one_hot(labels: pd.Series, prefix: str) -> pd.DataFrame:
    return pd.DataFrame({f"{prefix}={value}": (labels == value).astype(float)
                         for value in sorted(labels.unique())}, index=labels.index)


# --------------------------------------------------------------------------- PARC

@functools.lru_cache(maxsize=1)
def parc_architecture_features() -> pd.DataFrame:
    """archi2vec of PARC's 4 torchvision architectures: PCA of the graph2vec embedding + graph sizes.

    The autograd graphs are extracted on the ``meta`` device (no weights, no download) and
    graph2vec is fitted on the 4 graphs with the default settings (seeded, one worker: the same
    vectors on every run); takes a few seconds. Columns ``a2v_0..``, ``log_parameters``, ``log_layers``.
    """
    from sklearn.decomposition import PCA


    names = {f"torchvision:{arch}": arch for arch in PARC_ARCHITECTURES}
    batch = extract_graphs(list(names), progress=False)
    if batch.failures:
        raise RuntimeError(f"archi2vec could not extract {[f.model for f in batch.failures]}: "
                           f"{[f.error for f in batch.failures]}")
    vectors = Graph2Vec().fit(batch.graphs).embeddings()
    matrix = np.stack([vectors[name] for name in names]).astype(float)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True).clip(1e-12)
    dims = min(ARCHITECTURE_DIMS, len(names) - 1)
    projected = PCA(dims, random_state=0).fit_transform(matrix)
    table = pd.DataFrame(projected, index=list(names.values()), columns=[f"a2v_{i}" for i in range(dims)])
    for name, arch in names.items():
        features = meta_features(batch.graphs[name])
        table.loc[arch, "log_parameters"] = np.log(features.parameters)
        table.loc[arch, "log_layers"] = np.log(features.layers)
    return table


def parc_matrix() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(P, long table) of PARC's controlled oracles; models are ``<architecture>@<source>``."""
    long = external.read_table(external.bundled_table("parc_controlled"), layout="parc")
    P = long.pivot(index="model", columns="task", values="score")
    P.index.name, P.columns.name = "model", "task"
    return P, long


def parc_model_meta(models: pd.Index, long: pd.DataFrame) -> pd.DataFrame:
    """PARC model meta: architecture (one-hot + archi2vec), source one-hot, source facts."""
    info = long.drop_duplicates("model").set_index("model").loc[models]
    arch, source = info["model_architecture"], info["model_source_dataset"]
    architecture = parc_architecture_features().loc[arch.to_numpy()].set_index(models)
    facts = source_facts()
    unknown = sorted(set(source) - set(facts.index))
    if unknown:
        raise InvalidInputError(f"no public facts for PARC source dataset(s) {unknown}")
    source_rows = facts.loc[source.to_numpy()].set_index(models)
    return pd.concat([
        _one_hot(arch, "arch"), architecture, _one_hot(source, "source"),
        pd.DataFrame({"source_log_class_count": _log(source_rows["class_count"]),
                      "source_log_train_size": _log(source_rows["train_size"])}, index=models),
        _one_hot(source_rows["domain"], "source_domain"),
    ], axis=1)


def _parc(name: str, targets: list[str] | None) -> Benchmark:
    P, long = parc_matrix()
    families = long.drop_duplicates("model").set_index("model")["model_architecture"].loc[P.index]
    chosen = list(P.columns) if targets is None else targets
    return Benchmark(
        name=name,
        description=("PARC controlled: 32 models (4 architectures x 8 sources) x 7 targets, test accuracy (%)"
                     + ("" if targets is None else "; PARC's 6 targets, voc2007 kept as history only")),
        P=P, model_meta=parc_model_meta(P.index, long), task_meta=task_meta_table(list(P.columns)),
        targets=chosen, families=families.rename("family"), units="accuracy (%)",
        sources=[PARC_URL])


# --------------------------------------------------------------------------- TransferGraph

def _model_type(row: pd.Series) -> str:
    if isinstance(row["model_type"], str) and row["model_type"]:
        return row["model_type"]
    architecture = str(row.get("architectures", "")).strip("[]'\" ").lower()
    for kind in ("data2vec", "convnext", "swin", "beit", "deit", "resnet", "van", "vit"):
        if architecture.startswith(kind):
            return "data2vec-vision" if kind == "data2vec" else kind
    return "unknown"


def transfergraph_model_meta(models: pd.Index) -> pd.DataFrame:
    """TransferGraph model meta from ``transfergraph_image_models.csv`` (see the module docstring)."""
    config = pd.read_csv(external.transfergraph_model_facts()).drop_duplicates("model").set_index("model")
    missing = models.difference(config.index)
    if len(missing):
        raise InvalidInputError(f"transfergraph_image_models.csv has no row for {len(missing)} model(s): {list(missing)[:5]}")
    config = config.loc[models]
    model_type = config.apply(_model_type, axis=1)
    parameters = _log(config["number_of_parameters"])
    source = config["dataset"].fillna("unknown").astype(str)
    common = source.map(source.value_counts()) >= MIN_SOURCE_MODELS
    facts = source_facts()
    known = source.isin(facts.index)
    source_rows = facts.reindex(source.to_numpy()).set_index(models)
    table = pd.concat([
        _one_hot(model_type, "type"),
        pd.DataFrame({"log_parameters": parameters, "log_feature_width": _log(config["output_shape"]),
                      "log_input_size": _log(config["input_shape"]),
                      "source_log_class_count": _log(config["#labels"])}, index=models),
        _one_hot(source.where(common, "other"), "source"),
        pd.DataFrame({"source_known": known.astype(float),
                      "source_log_train_size": _log(source_rows["train_size"])}, index=models),
        _one_hot(source_rows["domain"].fillna("unknown"), "source_domain"),
    ], axis=1)
    # Unknown numbers (a missing parameter count, a source without public facts) take the mean of
    # the known ones; ``source_known`` says which rows were filled.
    return table.fillna(table.mean()).astype(float)


def transfergraph_matrix() -> pd.DataFrame:
    with warnings.catch_warnings():  # the published records keep pandas' row index: known, not the user's to fix
        warnings.filterwarnings("ignore", message=".*a row index saved with the table", category=external.SkippedRowsWarning)
        long = external.read_table(external.bundled_table("transfergraph"), layout="transfergraph")
    P = long.pivot(index="model", columns="task", values="score")
    P.index.name, P.columns.name = "model", "task"
    return P


def _transfergraph() -> Benchmark:
    P = transfergraph_matrix()
    config = pd.read_csv(external.transfergraph_model_facts()).drop_duplicates("model").set_index("model").loc[P.index]
    return Benchmark(
        name="transfergraph",
        description="TransferGraph image classification: 180 Hugging Face models x 13 targets, eval accuracy in [0, 1]",
        P=P, model_meta=transfergraph_model_meta(P.index), task_meta=task_meta_table(list(P.columns)),
        targets=list(P.columns), families=config.apply(_model_type, axis=1).rename("family"),
        units="accuracy (fraction)",
        sources=[TRANSFERGRAPH_URL, TRANSFERGRAPH_MODELS_URL])


# --------------------------------------------------------------------------- registry

@functools.lru_cache(maxsize=None)
def _load(name: str) -> Benchmark:
    if name == "parc":
        return _parc("parc", None)
    if name == "parc6":
        P, _ = parc_matrix()
        return _parc("parc6", [t for t in P.columns if t != "voc2007"])
    return _transfergraph()


def load_benchmark(name: str) -> Benchmark:
    """The benchmark ``name`` (one of :data:`BENCHMARK_NAMES`); built once per process.

    The returned tables are shared between calls: treat them as read-only (copy before editing).
    """
    if name not in BENCHMARK_NAMES:
        raise InvalidInputError(f"unknown benchmark {name!r}; choose one of {list(BENCHMARK_NAMES)}")
    return _load(name)
