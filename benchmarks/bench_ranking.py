"""Online ranking speed: in-process scoring vs zoo size, the real scoring server, end-to-end rank.

    python benchmarks/bench_ranking.py --models 100 1000 10000 --requests 300

1. ``Fennec.rank`` on a fitted recommender with M candidate models (30 historical tasks,
   12 model-meta columns, 138 proxy features): total time per call, and the part that is the
   transfer score itself (one matrix-vector product).
2. ``mlflow models serve`` (``--env-manager local``) holding the 1,000-model recommender as a
   registered pyfunc: ``/invocations`` latency p50/p99 over sequential requests (proxy-feature
   fast path, top_k=10) and requests per second with 4 concurrent clients, on 127.0.0.1.
3. ``ranking.rank_task`` on a 500-image synthetic task with the demo proxy (a random-init
   resnet20 here, same cost as the demo's pre-trained one): proxy encoding vs scoring.
4. The warm start: ``Fennec.rank`` with 3 known scores against cold, 1,000 models, as the history
   grows (``--warm-tasks``); its level step checks itself on every history task (O(tasks² x models)),
   its posterior on up to 40 of them (O(tasks x models) each).
5. The offline fit: ``Fennec.fit`` with the defaults (``fennec build``'s, ``fennec evaluate``'s
   per target) on random histories shaped like the real benchmark (11 models, 22 tasks, an
   EfficientNet proxy of 2,570 features), the synthetic one (16 x 30, 138) and a 1,000-model zoo;
   median of ``--fit-repeats``. Every leave-one-task-out figure, tuning trial and nested-CV fold
   pays it once per target.

6. Validation as ``fennec build`` tunes (``selection.validate(tune=True)``: 20 Optuna trials, then
   nested CV) on PARC's table, once with every fit in this process
   (``parallel.in_this_process``) and once spread over the cores, as it runs by default.

``--only warm``, ``--only fit`` or ``--only validate`` runs part 4, 5 or 6 alone.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from fennec_mlflow import config
from fennec_mlflow.serving import flavor as pyfunc
from fennec_mlflow.core.recommender import Fennec

N_TASKS = 30
PROXY_DIM = 138  # a 64-d encoder's proxy statistics (2 * 64 + 10)


def random_history(n_models: int, n_tasks: int, proxy_dim: int, seed: int = 0):
    """A low-rank score matrix (10% missing) with model facts, task facts and task proxies."""
    rng = np.random.default_rng(seed)
    models = [f"model{i:05d}" for i in range(n_models)]
    tasks = [f"task{j:03d}" for j in range(n_tasks)]
    P = pd.DataFrame(rng.random((n_models, 4)) @ rng.random((4, n_tasks)), index=models, columns=tasks)
    P = P.mask(rng.random(P.shape) < 0.1)
    model_meta = pd.DataFrame(rng.normal(size=(n_models, 12)), index=models, columns=[f"m{i}" for i in range(12)])
    task_meta = pd.DataFrame(rng.normal(size=(n_tasks, 3)), index=tasks,
                             columns=["log_class_count", "log_sample_count", "domain=x"])
    proxy = pd.DataFrame(rng.normal(size=(n_tasks, proxy_dim)), index=tasks,
                         columns=[f"proxy_{i}" for i in range(proxy_dim)])
    return P, model_meta, task_meta, proxy


def synthetic_recommender(n_models: int, seed: int = 0, n_tasks: int = N_TASKS
                          ) -> tuple[Fennec, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    P, model_meta, task_meta, proxy = random_history(n_models, n_tasks, PROXY_DIM, seed)
    fennec = Fennec(k=4, nmf_max_iter=300).fit(P, model_meta, task_meta, proxy)
    return fennec, model_meta, task_meta, proxy


def time_calls(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_in_process(sizes: list[int]) -> list[dict]:
    rows = []
    for n_models in sizes:
        fennec, _, task_meta, proxy = synthetic_recommender(n_models)
        meta_row, proxy_row = task_meta.iloc[0], proxy.iloc[0]
        total = time_calls(lambda: fennec.rank(meta_row, proxy_row), 50)
        vector = fennec.task_vector(meta_row, proxy_row)
        product = time_calls(lambda: fennec.model_vectors_ @ vector, 200)
        rows.append({"models": n_models, "rank() total (ms)": total * 1e3,
                     "transfer score M·d (ms)": product * 1e3})
        print(rows[-1], flush=True)
    return rows


def bench_warm(task_counts: list[int], n_models: int = 1000) -> list[dict]:
    rows = []
    for n_tasks in task_counts:
        fennec, _, task_meta, proxy = synthetic_recommender(n_models, n_tasks=n_tasks)
        meta_row, proxy_row = task_meta.iloc[0], proxy.iloc[0]
        known = {name: float(value) for name, value in zip(fennec.model_names_[:3], (0.2, 0.5, 0.9))}
        cold = time_calls(lambda: fennec.rank(meta_row, proxy_row), 20)
        warm = time_calls(lambda: fennec.rank(meta_row, proxy_row, known_scores=known), 20)
        rows.append({"models": n_models, "history tasks": n_tasks, "cold rank() (ms)": cold * 1e3,
                     "rank() with 3 known scores (ms)": warm * 1e3})
        print(rows[-1], flush=True)
    return rows


# (models, history tasks, proxy features): the real benchmark's shape, the synthetic one's, a large zoo.
FIT_SHAPES = ((11, 22, 2570), (16, 30, 138), (1000, 30, 138))


def bench_fit(repeats: int) -> list[dict]:
    rows = []
    for n_models, n_tasks, proxy_dim in FIT_SHAPES:
        P, model_meta, task_meta, proxy = random_history(n_models, n_tasks, proxy_dim)

        def fit():
            Fennec(**config.FENNEC_DEFAULTS, random_state=0).fit(P, model_meta, task_meta, proxy)
        seconds = time_calls(fit, repeats)
        rows.append({"models": n_models, "history tasks": n_tasks, "proxy features": proxy_dim,
                     "fit (s)": seconds})
        print(rows[-1], flush=True)
    return rows


def bench_validate(table: str = "parc") -> list[dict]:
    import time
    import warnings

    from fennec_mlflow.bench.public import load_benchmark
    from fennec_mlflow.parallel import available_cores, in_this_process
    from fennec_mlflow.serving.selection import validate

    data = load_benchmark(table).tuning_data()
    rows = []
    for label, where in (("one process", in_this_process), (f"{available_cores()} cores", contextlib.nullcontext)):
        start = time.perf_counter()
        with where(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            validation = validate(data, tune=True)
        rows.append({"table": table, "fits": label, "validate (s)": time.perf_counter() - start,
                     "validated mean Pearson": 100 * validation.validated_mean_pearson,
                     "popularity": 100 * validation.popularity_mean_pearson})
        print(rows[-1], flush=True)
    return rows


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_server(n_models: int, n_requests: int, workdir: Path) -> dict:
    fennec, model_meta, task_meta, proxy = synthetic_recommender(n_models)
    bundle = pyfunc.RankerBundle(
        fennec=fennec, model_meta=model_meta, model_parameters=pd.Series(1e6, index=model_meta.index),
        domains=["x"], task_meta_fill=task_meta.mean(), proxy_dim=PROXY_DIM, encoder_spec="zoo:resnet20_cifar10:random")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench-serving")
    with mlflow.start_run():
        info = pyfunc.log_model(bundle, registered_model_name=pyfunc.REGISTERED_NAME)
        pyfunc.set_champion(info.registered_model_version)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/fennec@champion",
                               "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"],
                              env={**os.environ, "MLFLOW_TRACKING_URI": uri}, cwd=workdir,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("the scoring server did not start")
                time.sleep(1)
        frame = proxy.iloc[[0]].reset_index(drop=True)
        frame["class_count"], frame["sample_count"] = 10.0, 5000.0
        body = json.dumps({"dataframe_split": frame.to_dict(orient="split"), "params": {"top_k": 10}}).encode()

        def one_request() -> float:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
            start = time.perf_counter()
            answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
            assert len(answer["predictions"]) == 10
            return time.perf_counter() - start

        for _ in range(10):
            one_request()
        latencies = np.array([one_request() for _ in range(n_requests)]) * 1e3
        done = []
        start = time.perf_counter()
        workers = [threading.Thread(target=lambda: done.extend(one_request() for _ in range(n_requests // 4)))
                   for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        rps = len(done) / (time.perf_counter() - start)
    finally:
        server.terminate()
        server.wait(timeout=30)
        mlflow.set_tracking_uri(None)
    result = {"models": n_models, "requests": n_requests, "p50 (ms)": float(np.percentile(latencies, 50)),
              "p99 (ms)": float(np.percentile(latencies, 99)), "requests/s (4 clients)": rps}
    print(result, flush=True)
    return result


def bench_end_to_end(workdir: Path) -> dict:
    import torch

    from fennec_mlflow.data.proxy import load_encoder, task_proxy_features
    from fennec_mlflow.data.synthetic import synthetic_task

    torch.set_num_threads(2)
    encoder = load_encoder("zoo:resnet20_cifar10:random")
    task = synthetic_task("shapes-textured-10", samples_per_class=50)  # 500 images
    proxy_seconds = time_calls(lambda: task_proxy_features(encoder, task, sample_size=500), 3)
    fennec, _, task_meta, proxy = synthetic_recommender(100)
    features = task_proxy_features(encoder, task, sample_size=500)
    rank_seconds = time_calls(lambda: fennec.rank(task_meta.iloc[0], features[:PROXY_DIM]), 20)
    result = {"images": task.num_samples, "proxy encoding (s)": proxy_seconds, "scoring 100 models (ms)": rank_seconds * 1e3}
    print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--server-models", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warm-tasks", type=int, nargs="+", default=[30, 100, 400])
    parser.add_argument("--fit-repeats", type=int, default=5)
    parser.add_argument("--only", choices=["warm", "fit", "validate"], default=None)
    args = parser.parse_args()
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.only is None:
            tables["in-process"] = pd.DataFrame(bench_in_process(args.models))
            tables["server"] = pd.DataFrame([bench_server(args.server_models, args.requests, Path(tmp))])
            tables["end to end"] = pd.DataFrame([bench_end_to_end(Path(tmp))])
        if args.only in (None, "warm"):
            tables["warm start"] = pd.DataFrame(bench_warm(args.warm_tasks))
        if args.only in (None, "fit"):
            tables["offline fit"] = pd.DataFrame(bench_fit(args.fit_repeats))
        if args.only in (None, "validate"):
            tables["validation"] = pd.DataFrame(bench_validate())
    for title, table in tables.items():
        header = "| " + " | ".join(table.columns) + " |\n|" + "---:|" * len(table.columns)
        rows = ["| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |"
                for row in table.itertuples(index=False)]
        print(f"\n{title}\n{header}\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
