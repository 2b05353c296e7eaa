"""archi2vec: a model's architecture as a vector (Fennec's meta phase, paper section 3.2).

autograd graph (:mod:`.graph`) -> graph2vec embedding (:mod:`.embed`) -> meta features and
families (:mod:`.meta`). Nothing here knows about MLflow.

    batch = extract_graphs(pytorchcv_imagenet_models(), processes=2)
    embedder = Graph2Vec().fit(batch.graphs)
    vectors = embedder.embeddings()                    # corpus models
    new = embedder.infer({"resnet10": graph_from_name("resnet10")})   # later models, no refit
"""
from fennec_mlflow.archi2vec.embed import (
    Graph2Vec,
    Graph2VecSettings,
    cosine_similarity,
    wl_document,
)
from fennec_mlflow.archi2vec.graph import (
    VOCABULARY_VERSION,
    BatchExtraction,
    ExtractionFailure,
    GraphExtractionError,
    autograd_graph,
    build_model,
    extract_graph,
    extract_graphs,
    graph_from_json,
    graph_from_name,
    graph_to_json,
    normalise_op_name,
    pytorchcv_imagenet_models,
    split_model_name,
    torchvision_classification_models,
    trace_graph,
)
from fennec_mlflow.archi2vec.meta import (
    MetaFeatures,
    cluster_embeddings,
    graph_depth,
    learnable_layer_count,
    meta_features,
    meta_table,
    model_family,
    nearest_neighbours,
    op_histogram,
    parameter_count,
    same_family_rate,
)

__all__ = [
    "VOCABULARY_VERSION", "BatchExtraction", "ExtractionFailure", "GraphExtractionError", "Graph2Vec",
    "Graph2VecSettings", "MetaFeatures", "autograd_graph", "build_model", "cluster_embeddings",
    "cosine_similarity", "extract_graph", "extract_graphs", "graph_depth", "graph_from_json",
    "graph_from_name", "graph_to_json", "learnable_layer_count", "meta_features", "meta_table",
    "model_family", "nearest_neighbours", "normalise_op_name", "op_histogram", "parameter_count",
    "pytorchcv_imagenet_models", "same_family_rate", "split_model_name",
    "torchvision_classification_models", "trace_graph", "wl_document",
]
