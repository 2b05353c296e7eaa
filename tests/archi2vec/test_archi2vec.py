"""archi2vec: autograd graphs, graph2vec embeddings (with karateclub parity), meta features."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types

import networkx as nx
import numpy as np
import pytest
import torch
from torch import nn

from fennec_mlflow.archi2vec import (
    VOCABULARY_VERSION,
    Graph2Vec,
    build_model,
    GraphExtractionError,
    cluster_embeddings,
    cosine_similarity,
    extract_graph,
    extract_graphs,
    graph_from_json,
    graph_from_name,
    graph_to_json,
    meta_features,
    meta_table,
    model_family,
    nearest_neighbours,
    normalise_op_name,
    pytorchcv_imagenet_models,
    same_family_rate,
    torchvision_classification_models,
    wl_document,
)

RESNETS = ("resnet10", "resnet12", "resnet14", "resnet16", "resnet18", "resnet26", "resnet34")
# A few dozen small pytorchcv ImageNet models of distinct families, resnets among them.
CORPUS = RESNETS + (
    "preresnet10", "preresnet18", "seresnet10", "seresnet18", "alexnet", "alexnetb", "zfnet", "vgg11",
    "vgg13", "bn_vgg11", "densenet121", "densenet161", "mobilenet_w1", "mobilenet_wd2", "mobilenetv2_w1",
    "mobilenetv2_wd2", "mobilenetv3_small_w1", "squeezenet_v1_0", "squeezenet_v1_1", "shufflenetv2_w1",
    "shufflenetv2_wd2", "efficientnet_b0", "efficientnet_b1", "ghostnet", "darknet_tiny", "sqnxt23_w1",
    "igcv3_w1",
)


@pytest.fixture(scope="module")
def corpus() -> dict[str, nx.DiGraph]:
    batch = extract_graphs(CORPUS, progress=False)
    assert not batch.failures, batch.failures
    return batch.graphs


@pytest.fixture(scope="module")
def embedder(corpus) -> Graph2Vec:
    return Graph2Vec().fit(corpus)


# ----------------------------------------------------------------------------- tiny modules


class ResidualNet(nn.Module):
    """stem conv -> relu -> [conv, bn, relu, conv, bn] + skip -> relu -> pool -> linear."""

    def __init__(self, skip: bool = True):
        super().__init__()
        self.skip = skip
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = self.body(x)
        y = torch.relu(y + x if self.skip else y)
        return self.head(y.mean(dim=(2, 3)))


class ChannelsLastFlatten(nn.Module):
    """One network, three spellings of "flatten channels-last"; autograd records three op lists."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        x = self.conv(x)
        if self.how == "reshape":  # Transpose, Clone, UnsafeView
            x = x.transpose(1, 3).reshape(x.size(0), -1)
        elif self.how == "contiguous-view":  # Transpose, Clone, View
            x = x.transpose(1, 3).contiguous().view(x.size(0), -1)
        else:  # Permute, Clone, UnsafeView
            x = x.permute(0, 3, 2, 1).flatten(1)
        return self.fc(x)


class Raises(nn.Module):
    def forward(self, x):
        raise RuntimeError("deliberately broken forward")


class NoGrad(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        with torch.no_grad():
            return self.fc(x.mean(dim=(2, 3)))


class DictOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        pooled = x.mean(dim=(2, 3))
        return {"aux": torch.sigmoid(pooled), "logits": self.fc(pooled)}


class TupleOutput(DictOutput):
    def forward(self, x):
        out = super().forward(x)
        return out["logits"], out["aux"]


def types_of(graph: nx.DiGraph) -> list[str]:
    return [t for _, t in graph.nodes(data="type")]


# ----------------------------------------------------------------------------- vocabulary


@pytest.mark.parametrize("raw, expected", [
    ("ConvolutionBackward0", "Convolution"),
    ("CudnnConvolutionBackward0", "Convolution"),
    ("MkldnnConvolutionBackward0", "Convolution"),
    ("ThnnConv2DBackward", "Convolution"),
    ("SlowConvDilated2DBackward0", "Convolution"),
    ("ThnnConvDepthwise2DBackward", "Convolution"),
    ("SlowConvTranspose2DBackward0", "ConvolutionTranspose"),
    ("NativeBatchNormBackward0", "BatchNorm"),
    ("CudnnBatchNormBackward0", "BatchNorm"),
    ("NativeLayerNormBackward0", "LayerNorm"),
    ("ViewBackward0", "View"),
    ("ReshapeAliasBackward0", "View"),
    ("UnsafeViewBackward0", "View"),
    ("AsStridedBackward0", "View"),
    ("TBackward0", "Transpose"),
    ("PermuteBackward0", "Transpose"),
    ("MeanBackward1", "Mean"),
    ("AddBackward1", "Add"),
    ("ReluBackward1", "Relu"),
    ("ThresholdBackward0", "Relu"),
    ("MaxPool2DWithIndicesBackward0", "MaxPool2D"),
    ("AdaptiveAvgPool2DBackward0", "AdaptiveAvgPool2D"),
    ("SplitWithSizesBackward0", "Split"),
    ("NativeDropoutBackward0", "Dropout"),
    ("FusedDropoutBackward0", "Dropout"),
    ("CopyBackwards", "Clone"),
    ("SafeSoftmaxBackward0", "Softmax"),
    ("ScaledDotProductFlashAttentionForCpuBackward0", "ScaledDotProductAttention"),
    ("ScaledDotProductEfficientAttentionBackward0", "ScaledDotProductAttention"),
    ("SoftplusBackward0", "Softplus"),  # open vocabulary: unknown ops keep their own name
    ("SlowdownBackward2", "Slowdown"),  # a prefix counts only before a new word
])
def test_vocabulary_normalises_versions_and_backends(raw, expected):
    assert normalise_op_name(raw) == expected


def test_reshape_spellings_give_one_graph():
    graphs = [extract_graph(ChannelsLastFlatten(how), name=how, input_shape=(1, 3, 8, 8))
              for how in ("reshape", "contiguous-view", "permute-flatten")]
    raw = [sorted(op for _, op in g.nodes(data="op")) for g in graphs]
    assert raw[0] != raw[1] and raw[0] != raw[2]  # autograd spells them differently ...
    assert types_of(graphs[0]) == types_of(graphs[1]) == types_of(graphs[2])  # ... the vocabulary does not
    assert {"Transpose", "Clone", "View"} <= set(types_of(graphs[0]))
    assert all(g.graph["vocabulary_version"] == VOCABULARY_VERSION for g in graphs)


# ----------------------------------------------------------------------------- graphs


def test_skip_connection_is_an_edge_into_the_add():
    graph = extract_graph(ResidualNet(skip=True), name="residual", input_shape=(1, 3, 16, 16))
    assert nx.is_directed_acyclic_graph(graph)
    (add,) = [n for n, t in graph.nodes(data="type") if t == "Add"]
    stem_relu = next(n for n, t in graph.nodes(data="type") if t == "Relu")  # topological order: first ReLU
    # The stem's ReLU feeds both the block's first convolution and, directly, the Add.
    assert graph.has_edge(stem_relu, add)
    assert {graph.nodes[s]["type"] for s in graph.successors(stem_relu)} == {"Convolution", "Add"}
    assert sorted(graph.nodes[p]["type"] for p in graph.predecessors(add)) == ["BatchNorm", "Relu"]
    plain = extract_graph(ResidualNet(skip=False), name="plain", input_shape=(1, 3, 16, 16))
    assert "Add" not in types_of(plain)


def test_parameters_fold_into_their_op_and_leaves_are_dropped():
    graph = extract_graph(ResidualNet(), name="residual", input_shape=(1, 3, 16, 16))
    assert "AccumulateGrad" not in {op for _, op in graph.nodes(data="op")}
    by_type = {}
    for _, data in graph.nodes(data=True):
        by_type.setdefault(data["type"], set()).add(data["params"])
    assert by_type["Convolution"] == {2} and by_type["BatchNorm"] == {2}  # weight + bias each
    assert by_type["Relu"] == {0}
    # Linear = Addmm(bias, x, T(weight)): bias on the Addmm, weight on the transpose.
    assert by_type["Addmm"] == {1} and by_type["Transpose"] == {1}
    total = sum(p for _, p in graph.nodes(data="params"))
    assert total == len(list(ResidualNet().parameters()))


def test_same_model_twice_gives_identical_graph():
    first, second = graph_from_name("resnet18"), graph_from_name("resnet18")
    assert nx.utils.graphs_equal(first, second)
    assert list(first.nodes(data=True)) == list(second.nodes(data=True))
    assert first.graph["device"] == "meta" and first.graph["output_shape"] == [1, 1000]
    assert first.graph["parameters"] == 11_689_512  # resnet18's published size: meta counts are real


def test_meta_and_cpu_give_the_same_graph():
    on_meta = graph_from_name("resnet10")
    on_cpu = extract_graph(build_model("resnet10", "cpu"), name="resnet10", input_shape=(1, 3, 224, 224))
    assert on_meta.graph["device"] == "meta" and on_cpu.graph["device"] == "cpu"
    assert list(on_meta.nodes(data=True)) == list(on_cpu.nodes(data=True))
    assert list(on_meta.edges()) == list(on_cpu.edges())


def test_frozen_model_gives_the_trainable_graph():
    frozen = ResidualNet()
    frozen.requires_grad_(False)
    graph = extract_graph(frozen, name="frozen", input_shape=(1, 3, 16, 16))
    reference = extract_graph(ResidualNet(), name="frozen", input_shape=(1, 3, 16, 16))
    assert nx.utils.graphs_equal(graph, reference)
    assert not any(p.requires_grad for p in frozen.parameters())  # restored afterwards


@pytest.mark.parametrize("module", [DictOutput(), TupleOutput()])
def test_structured_output_uses_the_logits(module):
    graph = extract_graph(module, name="structured", input_shape=(1, 3, 4, 4))
    assert graph.graph["output_shape"] == [1, 2]
    assert "Sigmoid" not in types_of(graph)  # the auxiliary output is not followed


def test_bad_inputs_have_clear_messages():
    with pytest.raises(GraphExtractionError, match=r"'not-a-module'.*expected a torch.nn.Module, got str"):
        extract_graph("resnet18", name="not-a-module")
    with pytest.raises(GraphExtractionError, match=r"'broken' with input \(1, 3, 8, 8\).*deliberately broken"):
        extract_graph(Raises(), name="broken", input_shape=(1, 3, 8, 8))
    with pytest.raises(GraphExtractionError, match=r"'nograd'.*no grad_fn"):
        extract_graph(NoGrad(), name="nograd", input_shape=(1, 3, 8, 8))


def test_batch_reports_failures_and_keeps_going():
    batch = extract_graphs(["resnet10", ("broken", Raises()), "no_such_model", ("residual", ResidualNet())],
                           progress=False)
    assert list(batch.graphs) == ["resnet10", "residual"]
    failures = {f.model: f for f in batch.failures}
    assert set(failures) == {"broken", "no_such_model"}
    assert failures["broken"].input_shape == (1, 3, 32, 32)  # smallest size first on CPU ...
    assert "deliberately broken" in failures["broken"].error and "331" in failures["broken"].error  # ... all tried
    assert "unknown model" in failures["no_such_model"].error
    assert set(batch.seconds) == {"resnet10", "broken", "no_such_model", "residual"}


def test_parallel_batch_equals_sequential(corpus):
    names = ["resnet10", "squeezenet_v1_1", "no_such_model"]
    batch = extract_graphs(names, processes=2, progress=False)
    assert list(batch.graphs) == ["resnet10", "squeezenet_v1_1"]
    assert [f.model for f in batch.failures] == ["no_such_model"]
    for name, graph in batch.graphs.items():
        assert nx.utils.graphs_equal(graph, corpus[name])


def test_graph_json_round_trip():
    graph = extract_graph(ResidualNet(), name="residual", input_shape=(1, 3, 16, 16))
    data = json.loads(json.dumps(graph_to_json(graph)))
    back = graph_from_json(data)
    assert nx.utils.graphs_equal(graph, back)
    assert wl_document(back) == wl_document(graph)


def test_catalogues_cover_imagenet_classification_only():
    pytorchcv = pytorchcv_imagenet_models()
    assert len(pytorchcv) >= 450
    assert {"resnet18", "alexnet", "efficientnet_b0", "tresnet_m", "isqrtcovresnet18"} <= set(pytorchcv)
    assert not any(("cifar" in n or n.endswith(("_cub", "_voc", "_coco", "_svhn")) or n.startswith("quartznet"))
                   for n in pytorchcv)
    assert {"resnet18", "vit_b_16", "regnet_x_400mf"} <= set(torchvision_classification_models())


def test_torchvision_models_whose_constructor_needs_real_tensors():
    # RegNet computes its widths with torch ops: parameters go to meta, the arithmetic stays on CPU.
    graph = graph_from_name("torchvision:regnet_x_400mf")
    assert graph.graph["device"] == "meta" and graph.graph["output_shape"] == [1, 1000]


# ----------------------------------------------------------------------------- embedding


def test_resnet18_is_closer_to_resnet10_than_to_any_other_family(corpus):
    others = [n for n in CORPUS if model_family(n) not in ("resnet", "preresnet", "seresnet")]
    for seed in (0, 1, 2):
        vectors = Graph2Vec(seed=seed).fit(corpus).embeddings()
        near = cosine_similarity(vectors["resnet18"], vectors["resnet10"])
        assert near > cosine_similarity(vectors["resnet18"], vectors["alexnet"])
        # Not just AlexNet: every model of another family is further away.
        assert near > max(cosine_similarity(vectors["resnet18"], vectors[n]) for n in others)


def test_same_seed_same_embedding(corpus, embedder):
    again = Graph2Vec().fit(corpus)
    assert np.array_equal(again.embedding_, embedder.embedding_)
    new = {"resnet16-copy": corpus["resnet16"]}
    assert np.array_equal(again.infer(new)["resnet16-copy"], embedder.infer(new)["resnet16-copy"])
    assert not np.array_equal(Graph2Vec(seed=7).fit(corpus).embedding_, embedder.embedding_)


def test_inference_embeds_new_models_without_refitting(corpus, embedder):
    before = embedder.embedding_.copy()
    new = {name: graph_from_name(name) for name in ("resnet50", "vgg16")}
    inferred = embedder.infer(new)
    assert np.array_equal(embedder.embedding_, before)
    trained = embedder.embeddings()
    assert nearest_neighbours({**trained, "resnet50": inferred["resnet50"]})["resnet50"] in RESNETS
    assert model_family(nearest_neighbours({**trained, "vgg16": inferred["vgg16"]})["vgg16"]) in ("vgg", "bn")
    # Each call starts from the same seed: no drift between calls.
    assert np.array_equal(embedder.infer(new)["vgg16"], inferred["vgg16"])


@pytest.mark.slow
def test_embedding_does_not_depend_on_pythonhashseed(tmp_path):
    script = textwrap.dedent("""
        import networkx as nx, numpy as np, sys
        from fennec_mlflow.archi2vec import Graph2Vec
        graphs = {}
        for i, ops in enumerate([["Convolution", "BatchNorm", "Relu"] * 4, ["Convolution", "Relu", "Add"] * 3,
                                 ["Addmm", "Relu", "Addmm"], ["Convolution", "Relu", "MaxPool2D"] * 5]):
            g = nx.DiGraph()
            g.add_nodes_from((j, {"type": t}) for j, t in enumerate(ops))
            g.add_edges_from((j, j + 1) for j in range(len(ops) - 1))
            g.add_edges_from((j, j + 3) for j in range(0, len(ops) - 3, 3))
            graphs[f"g{i}"] = g
        embedder = Graph2Vec(dimensions=16, epochs=20).fit(graphs)
        new = embedder.infer({"new": graphs["g1"]})["new"]
        np.save(sys.argv[1], np.vstack([embedder.embedding_, new]))
    """)
    results = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"vectors{hash_seed}.npy"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", script, str(out)], check=True, env=env, timeout=120)
        results.append(np.load(out))
    assert np.array_equal(results[0], results[1])


def test_save_and_load(tmp_path, corpus, embedder):
    folder = embedder.save(tmp_path / "g2v")
    loaded = Graph2Vec.load(folder)
    assert loaded.settings == embedder.settings and loaded.names_ == embedder.names_
    assert np.array_equal(loaded.embedding_, embedder.embedding_)
    new = {"x": corpus["vgg11"]}
    assert np.array_equal(loaded.infer(new)["x"], embedder.infer(new)["x"])
    assert loaded.get_params() == embedder.get_params()
    meta = json.loads((folder / "graph2vec.json").read_text())
    assert meta["vocabulary_version"] == VOCABULARY_VERSION
    meta["vocabulary_version"] = "0"
    (folder / "graph2vec.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="refit"):
        Graph2Vec.load(folder)
    with pytest.raises(FileNotFoundError, match="graph2vec.json"):
        Graph2Vec.load(tmp_path / "nothing-here")


def test_unfitted_embedder_says_so():
    with pytest.raises(RuntimeError, match="not fitted"):
        Graph2Vec().infer({})


# ----------------------------------------------------------------------------- karateclub parity


def _load_karateclub():
    """karateclub's Graph2Vec and WeisfeilerLehmanHashing, or skip if karateclub is not installed.

    karateclub's package ``__init__`` imports every estimator and their dependencies; if one
    of those breaks on a newer numpy/scipy/pandas, load just the three source files we need.
    """
    spec = importlib.util.find_spec("karateclub")
    if spec is None:
        pytest.skip("karateclub is not installed (pip install --no-deps karateclub==1.3.3 python-louvain pygsp)")
    try:
        from karateclub import Graph2Vec as KarateGraph2Vec
        from karateclub.utils.treefeatures import WeisfeilerLehmanHashing
        return KarateGraph2Vec, WeisfeilerLehmanHashing
    except ImportError:
        pass
    root = spec.submodule_search_locations[0]
    saved = {k: v for k, v in sys.modules.items() if k == "karateclub" or k.startswith("karateclub.")}
    for key in saved:
        del sys.modules[key]
    try:
        for package in ("karateclub", "karateclub.utils", "karateclub.graph_embedding"):
            stub = types.ModuleType(package)
            stub.__path__ = [root + package[len("karateclub"):].replace(".", "/")]
            sys.modules[package] = stub
        modules = {}
        for name, path in (("karateclub.estimator", "estimator.py"),
                           ("karateclub.utils.treefeatures", "utils/treefeatures.py"),
                           ("karateclub.graph_embedding.graph2vec", "graph_embedding/graph2vec.py")):
            module_spec = importlib.util.spec_from_file_location(name, f"{root}/{path}")
            modules[name] = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = modules[name]
            module_spec.loader.exec_module(modules[name])
        return (modules["karateclub.graph_embedding.graph2vec"].Graph2Vec,
                modules["karateclub.utils.treefeatures"].WeisfeilerLehmanHashing)
    finally:
        for key in [k for k in sys.modules if k == "karateclub" or k.startswith("karateclub.")]:
            del sys.modules[key]
        sys.modules.update(saved)


def _karateclub_graph(graph: nx.DiGraph) -> nx.DiGraph:
    """karateclub reads the node attribute ``feature``."""
    copy = nx.DiGraph()
    copy.add_nodes_from((n, {"feature": t}) for n, t in graph.nodes(data="type"))
    copy.add_edges_from(graph.edges())
    return copy


@pytest.mark.parametrize("iterations, erase", [(2, False), (3, True), (1, False)])
def test_wl_documents_equal_karateclubs(corpus, iterations, erase):
    KarateGraph2Vec, WeisfeilerLehmanHashing = _load_karateclub()
    for name in ("resnet18", "alexnet", "densenet121", "mobilenetv2_w1", "squeezenet_v1_1"):
        graph = corpus[name]
        # Graph2Vec.fit = _check_graph (adds self-loops) + WeisfeilerLehmanHashing
        checked = KarateGraph2Vec()._check_graph(_karateclub_graph(graph))
        theirs = WeisfeilerLehmanHashing(checked, iterations, True, erase).get_graph_features()
        assert wl_document(graph, iterations, erase_base_features=erase) == theirs
        # and the bare hashing, without Graph2Vec's self-loops
        bare = WeisfeilerLehmanHashing(_karateclub_graph(graph), iterations, True, erase).get_graph_features()
        assert wl_document(graph, iterations, self_loops=False, erase_base_features=erase) == bare


@pytest.mark.filterwarnings("ignore:Call to deprecated `docvecs`:DeprecationWarning")  # karateclub on gensim 4
def test_embedding_matches_karateclub_graph2vec(corpus, embedder):
    KarateGraph2Vec, _ = _load_karateclub()
    s = embedder.settings
    karate = KarateGraph2Vec(wl_iterations=s.wl_iterations, attributed=True, dimensions=s.dimensions,
                             workers=1, down_sampling=s.down_sampling, epochs=s.epochs,
                             learning_rate=s.learning_rate, min_count=s.min_count, seed=s.seed)
    karate.fit([_karateclub_graph(corpus[name]) for name in embedder.names_])
    theirs = dict(zip(embedder.names_, karate.get_embedding()))
    ours = embedder.embeddings()
    # Same documents, same Doc2Vec settings, one worker: the very same vectors.
    np.testing.assert_allclose(np.vstack(list(theirs.values())), embedder.embedding_, rtol=0, atol=1e-6)
    # Family structure, checked independently on each side: resnets' nearest neighbours are resnets.
    for vectors in (ours, theirs):
        neighbours = nearest_neighbours(vectors)
        assert all(model_family(neighbours[name]) in ("resnet", "preresnet", "seresnet") for name in RESNETS)


# ----------------------------------------------------------------------------- meta features


def test_meta_features(corpus):
    graph = corpus["resnet18"]
    features = meta_features(graph)
    assert features.parameters == 11_689_512
    assert features.layers == 20 + 20 + 1  # convolutions, batch norms, the classifier
    assert features.nodes == graph.number_of_nodes() and features.edges == graph.number_of_edges()
    assert sum(features.op_histogram.values()) == features.nodes
    assert features.op_histogram["Convolution"] == 20 and features.op_histogram["Add"] == 8
    assert 20 < features.depth < features.nodes  # longer than the 18 weighted layers, shorter than all ops
    assert meta_features(corpus["resnet34"]).depth > features.depth
    table = meta_table(corpus)
    assert list(table.index) == list(corpus)
    assert list(table.columns[:5]) == ["parameters", "layers", "nodes", "edges", "depth"]
    assert table.loc["vgg11", "op.Add"] == 0 and table.loc["resnet18", "op.Add"] == 8


def test_clusters_and_family_neighbours(embedder):
    vectors = embedder.embeddings()
    clusters = cluster_embeddings(vectors)
    assert len({clusters[n] for n in RESNETS}) == 1  # one family, one cluster, found without labels
    assert clusters["alexnet"] != clusters["resnet18"] and clusters["densenet121"] != clusters["resnet18"]
    assert same_family_rate(vectors) >= 0.8
    fixed = cluster_embeddings(vectors, n_clusters=3)
    assert set(fixed.values()) == {0, 1, 2}
