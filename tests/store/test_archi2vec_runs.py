"""archi2vec runs in a real sqlite store: one run per model, corpus reuse, inductive embedding."""
import numpy as np

from fennec_mlflow.store import tracking
from fennec_mlflow.archi2vec import Graph2VecSettings
from fennec_mlflow.store.archi2vec_runs import embed_architectures, load_architectures

SMALL = Graph2VecSettings()  # graph2vec needs its full size: small vectors collapse on a small corpus


def test_models_are_logged_once_and_new_models_are_inferred(store):
    first = embed_architectures(["resnet10", "resnet12", "resnet18", "alexnet", "vgg11", "vgg13", "nin_cifar10", "no_such_net"],
                                settings=SMALL, mlflow_client=store, progress=False)
    assert sorted(first.embedded) == ["alexnet", "nin_cifar10", "resnet10", "resnet12", "resnet18", "vgg11", "vgg13"]
    assert [f.model for f in first.failures] == ["no_such_net"]
    corpus = store.get_run(first.corpus_run_id)
    assert corpus.data.tags["fennec.kind"] == "archi2vec-corpus" and corpus.data.params["dimensions"] == "128"
    artifacts = {a.path for a in store.list_artifacts(first.corpus_run_id)}
    assert {"graph2vec", "embedding_map.png", "failures.json", "clusters.json"} <= artifacts

    again = embed_architectures(["resnet10", "resnet14"], settings=SMALL, mlflow_client=store, progress=False)
    assert again.embedded == ["resnet14"] and again.reused == ["resnet10"]
    assert again.corpus_run_id == first.corpus_run_id  # inductive: no refit
    runs = tracking.runs_of_kind("archi2vec", mlflow_client=store)
    assert len(runs) == 8
    resnet14 = next(r for r in runs if r.data.tags["fennec.model"] == "resnet14")
    assert resnet14.data.params["inferred"] == "True" and resnet14.data.params["vocabulary_version"]
    assert resnet14.data.metrics["nodes"] > 10 and resnet14.data.metrics["depth"] > 5
    graph = tracking.download_json(store, resnet14.info.run_id, "graph.json")
    assert any(node["type"] == "Convolution" for node in graph["nodes"])

    embeddings, meta = load_architectures(settings=SMALL, mlflow_client=store)
    assert embeddings.shape == (8, 128) and list(embeddings.columns[:2]) == ["a2v_0", "a2v_1"]
    assert meta.loc["alexnet", "family"] == "alexnet" and meta.loc["resnet10", "parameters"] > 1e6
    unit = embeddings.div(np.linalg.norm(embeddings.values, axis=1), axis=0)
    cos = unit @ unit.T
    nearest = cos.loc["resnet14"].drop("resnet14").idxmax()
    assert nearest.startswith("resnet"), cos.loc["resnet14"].sort_values()


def test_other_settings_make_another_corpus(store):
    embed_architectures(["resnet10", "alexnet"], settings=SMALL, mlflow_client=store, progress=False)
    other = Graph2VecSettings(dimensions=8)
    outcome = embed_architectures(["resnet10", "alexnet"], settings=other, mlflow_client=store, progress=False)
    assert sorted(outcome.embedded) == ["alexnet", "resnet10"]
    assert load_architectures(settings=other, mlflow_client=store)[0].shape == (2, 8)
