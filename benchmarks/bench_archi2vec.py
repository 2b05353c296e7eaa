"""Benchmark archi2vec graph extraction over whole zoos, and the embedding fitted on them.

    python benchmarks/bench_archi2vec.py                       # all pytorchcv ImageNet models, 2 processes
    python benchmarks/bench_archi2vec.py --source all --embed  # + torchvision, + graph2vec quality
    python benchmarks/bench_archi2vec.py --limit 40 --processes 1

Prints a Markdown report (totals, failures, per-model time against model size, slowest models,
and with --embed: fit time, nearest-neighbour family agreement, clusters). ``--csv`` writes one
row per model. Times are wall clock and CPU; on a shared machine, CPU time is the stable figure.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZE_BUCKETS = ((0, 5e6, "< 5M"), (5e6, 20e6, "5M-20M"), (20e6, 50e6, "20M-50M"),
                (50e6, 100e6, "50M-100M"), (100e6, float("inf"), ">= 100M"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("pytorchcv", "torchvision", "all"), default="pytorchcv")
    parser.add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--limit", type=int, default=None, help="only the first N models (smoke runs)")
    parser.add_argument("--embed", action="store_true", help="also fit graph2vec and report its quality")
    parser.add_argument("--csv", type=Path, default=None, help="write per-model results here")
    parser.add_argument("--graphs-out", type=Path, default=None,
                        help="write all graphs here as JSON {name: node-link data}")
    return parser.parse_args(argv)


def model_names(source: str) -> list[str]:
    from fennec_mlflow.archi2vec import pytorchcv_imagenet_models, torchvision_classification_models

    names = []
    if source in ("pytorchcv", "all"):
        names += [f"pytorchcv:{n}" if source == "all" else n for n in pytorchcv_imagenet_models()]
    if source in ("torchvision", "all"):
        names += [f"torchvision:{n}" for n in torchvision_classification_models()]
    return names


def size_table(batch) -> list[str]:
    rows = ["| parameters | models | median s (CPU) | max s (CPU) | median nodes |", "|---|---:|---:|---:|---:|"]
    for low, high, label in SIZE_BUCKETS:
        members = [n for n, g in batch.graphs.items() if low <= g.graph["parameters"] < high]
        if not members:
            continue
        cpu = [batch.cpu_seconds[n] for n in members]
        nodes = [batch.graphs[n].number_of_nodes() for n in members]
        rows.append(f"| {label} | {len(members)} | {statistics.median(cpu):.2f} | {max(cpu):.2f} | "
                    f"{statistics.median(nodes):.0f} |")
    return rows


def node_table(batch) -> list[str]:
    """CPU time tracks the op count (Python work per autograd node), not the parameter count."""
    buckets = ((0, 200), (200, 500), (500, 1000), (1000, 2000), (2000, 10**9))
    rows = ["| graph nodes | models | median s (CPU) | max s (CPU) |", "|---|---:|---:|---:|"]
    for low, high in buckets:
        members = [n for n, g in batch.graphs.items() if low <= g.number_of_nodes() < high]
        if members:
            cpu = [batch.cpu_seconds[n] for n in members]
            label = f"{low}-{high}" if high < 10**9 else f">= {low}"
            rows.append(f"| {label} | {len(members)} | {statistics.median(cpu):.2f} | {max(cpu):.2f} |")
    return rows


def inductive_same_family_rate(trained: dict, inferred: dict) -> float:
    """Each model's inferred vector against the other models' trained vectors: the case of a
    model added after the fit, compared with the corpus. Families of one left out."""
    import numpy as np

    from fennec_mlflow.archi2vec import model_family

    names = list(trained)
    sizes = Counter(model_family(n) for n in names)
    matrix = np.vstack([trained[n] for n in names])
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    hits = counted = 0
    for i, name in enumerate(names):
        if sizes[model_family(name)] < 2:
            continue
        similarity = matrix @ (inferred[name] / np.linalg.norm(inferred[name]))
        similarity[i] = -np.inf
        hits += model_family(names[int(similarity.argmax())]) == model_family(name)
        counted += 1
    return hits / counted


def embedding_report(batch) -> list[str]:
    from sklearn.metrics import adjusted_rand_score

    from fennec_mlflow.archi2vec import (Graph2Vec, cluster_embeddings, cosine_similarity, model_family,
                                         same_family_rate)

    start = time.perf_counter()
    embedder = Graph2Vec().fit(batch.graphs)
    fit_seconds = time.perf_counter() - start
    vectors = embedder.embeddings()
    start = time.perf_counter()
    inferred = embedder.infer(batch.graphs)
    infer_seconds = time.perf_counter() - start
    clusters = cluster_embeddings(vectors)
    families = [model_family(n) for n in vectors]
    s = embedder.settings
    lines = [
        f"- graph2vec fit ({len(vectors)} graphs, {s.epochs} epochs, {s.dimensions} dims, "
        f"down_sampling={s.down_sampling}, 1 worker): {fit_seconds:.1f} s; `infer` of all {len(inferred)} graphs: "
        f"{infer_seconds:.1f} s",
        f"- nearest neighbour (cosine) of the same family (family = leading letters of the name; "
        f"families of one left out): trained vectors {same_family_rate(vectors):.1%}, "
        f"inferred vectors {same_family_rate(inferred):.1%}, each inferred vector among the others' "
        f"trained vectors {inductive_same_family_rate(vectors, inferred):.1%}",
        f"- KMeans on the trained vectors, k by silhouette: {len(set(clusters.values()))} clusters, "
        f"adjusted Rand index against the {len(set(families))} name families: "
        f"{adjusted_rand_score(families, list(clusters.values())):.2f}",
    ]
    if {"resnet18", "resnet10", "alexnet"} <= set(vectors):
        lines.append(f"- cosine(resnet18, resnet10) = {cosine_similarity(vectors['resnet18'], vectors['resnet10']):.2f}, "
                     f"cosine(resnet18, alexnet) = {cosine_similarity(vectors['resnet18'], vectors['alexnet']):.2f}")
    karateclub = Graph2Vec(epochs=10, min_count=5, down_sampling=0.0001)  # karateclub's defaults
    baseline = karateclub.fit(batch.graphs)
    lines.append(f"- with karateclub's defaults (epochs=10, min_count=5, down_sampling=1e-4): same family "
                 f"{same_family_rate(baseline.embeddings()):.1%} trained, "
                 f"{inductive_same_family_rate(baseline.embeddings(), baseline.infer(batch.graphs)):.1%} inductive")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from fennec_mlflow.archi2vec import extract_graphs

    load = os.getloadavg()[0]
    names = model_names(args.source)[: args.limit]
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    batch = extract_graphs(names, processes=args.processes, progress=sys.stderr.isatty())
    wall = time.perf_counter() - wall_start
    cpu_total = sum(batch.cpu_seconds.values())

    devices = {}
    for name, graph in batch.graphs.items():
        devices.setdefault(graph.graph["device"], []).append(name)
    unexpected = [n for n, g in batch.graphs.items() if g.graph["output_shape"] != [1, 1000]]
    print(f"## archi2vec graph extraction: {args.source}\n")
    print(f"- command: `python benchmarks/bench_archi2vec.py --source {args.source} --processes {args.processes}"
          f"{' --embed' if args.embed else ''}{f' --limit {args.limit}' if args.limit else ''}`")
    print(f"- torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load:.1f} at start")
    print(f"- models: {len(names)}; graphs: {len(batch.graphs)}; failures: {len(batch.failures)}")
    parent_cpu = time.process_time() - cpu_start - (cpu_total if args.processes <= 1 else 0.0)
    print(f"- wall time: {wall:.1f} s with {args.processes} process(es); CPU time summed over models: "
          f"{cpu_total:.1f} s (+ {parent_cpu:.1f} s of coordination in the parent)")
    print("- device used: " + ", ".join(f"{d}: {len(v)}" for d, v in sorted(devices.items())))
    if "cpu" in devices:
        print(f"  (CPU fallback: {', '.join(devices['cpu'])})")
    if unexpected:
        print(f"- outputs other than 1000 classes: {', '.join(unexpected)}")
    for failure in batch.failures:
        print(f"- FAILED {failure.model} input {failure.input_shape}: {failure.error}")
    print("\nPer-model extraction time against model size:\n")
    print("\n".join(size_table(batch)))
    print("\nand against graph size:\n")
    print("\n".join(node_table(batch)))
    slowest = sorted(batch.cpu_seconds.items(), key=lambda kv: -kv[1])[:10]
    print("\nSlowest: " + ", ".join(f"{n} {s:.1f}s" for n, s in slowest))
    if args.embed and len(batch.graphs) >= 4:
        print("\n### graph2vec on these graphs\n")
        print("\n".join(embedding_report(batch)))
    if args.graphs_out:
        from fennec_mlflow.archi2vec import graph_to_json

        args.graphs_out.write_text(json.dumps({n: graph_to_json(g) for n, g in batch.graphs.items()}))
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["model", "ok", "device", "input_size", "parameters", "layers", "nodes", "edges",
                             "wall_s", "cpu_s", "error"])
            failed = {f.model: f for f in batch.failures}
            for name in names:
                graph = batch.graphs.get(name)
                if graph is not None:
                    writer.writerow([name, 1, graph.graph["device"], graph.graph["input_shape"][-1],
                                     graph.graph["parameters"], graph.graph["layers"], graph.number_of_nodes(),
                                     graph.number_of_edges(), f"{batch.seconds[name]:.3f}",
                                     f"{batch.cpu_seconds[name]:.3f}", ""])
                else:
                    writer.writerow([name, 0, "", "", "", "", "", "", f"{batch.seconds[name]:.3f}",
                                     f"{batch.cpu_seconds[name]:.3f}", failed[name].error])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
