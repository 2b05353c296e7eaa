"""Draw the archi2vec map of every pytorchcv ImageNet model for the docs.

    python benchmarks/archi2vec_map.py --out docs/img/archi2vec_map.png
"""
import argparse

from fennec_mlflow.archi2vec import Graph2Vec, extract_graphs, pytorchcv_imagenet_models, same_family_rate
from fennec_mlflow.store.archi2vec_runs import embedding_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/img/archi2vec_map.png")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    batch = extract_graphs(pytorchcv_imagenet_models(), processes=args.processes)
    embeddings = Graph2Vec().fit(batch.graphs).embeddings()
    embedding_map(embeddings).savefig(args.out, dpi=110)
    print(f"{len(embeddings)} models, {len(batch.failures)} failures, "
          f"same-family nearest neighbour {same_family_rate(embeddings):.1%}; map written to {args.out}")


if __name__ == "__main__":
    main()
