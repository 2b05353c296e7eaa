"""REST speed of the served recommender next to a trivial pyfunc model served the same way.

    python benchmarks/bench_rest.py --requests 400 --workers 1 2

Both models are registered in a temp sqlite store and served by the real
``mlflow models serve -m models:/<name>@champion --env-manager local -w <workers>`` (a subprocess,
uvicorn + FastAPI). Four client threads, each on its own keep-alive HTTP/1.1 connection, send the
same fast-path request (one task: proxy features + class_count + sample_count, no images,
``top_k=10``) back to back; the report gives requests/s, p50 and p99 over all requests and the
ratio to the trivial model (the floor the server itself allows for the same body).

- ``fennec``: the 1,000-model recommender of ``bench_ranking.py`` (30 history tasks, 12 model-meta
  columns, 138 proxy features, k = 4), logged with ``flavor.log_model`` like ``fennec build``.
- ``trivial``: a pyfunc model with the same signature whose ``predict`` returns a constant 10-row
  table: MLflow's request parsing, param checks and JSON answer, no model work.
- ``trivial_schema`` (``--schema-floor``): the same with an input schema naming every request
  column (138 optional ``proxy_*`` columns), as the served model had before: what MLflow's
  per-column casting and schema enforcement cost by themselves.
- ``--batch N`` also times one request that ranks N tasks (one row per task).

Both servers run one after the other on the same machine in the same invocation, so their
figures share whatever load the machine had; ``uptime``'s load average is printed with them.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
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
from mlflow.models import ModelSignature
from mlflow.types import Schema

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ranking import PROXY_DIM, synthetic_recommender

from fennec_mlflow.serving import flavor

TOP_K = 10


class Trivial(mlflow.pyfunc.PythonModel):
    """The floor: MLflow's serving work for the same request, and no model work."""

    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"rank": np.arange(1, TOP_K + 1), "model": [f"model{i:05d}" for i in range(TOP_K)],
                             "score": np.zeros(TOP_K)})


def register_models(n_models: int, uri: str) -> pd.DataFrame:
    """Register ``fennec`` and ``trivial`` (alias champion each); returns the one-task request frame."""
    fennec, model_meta, task_meta, proxy = synthetic_recommender(n_models)
    bundle = flavor.RankerBundle(
        fennec=fennec, model_meta=model_meta, model_parameters=pd.Series(1e6, index=model_meta.index),
        domains=["x"], task_meta_fill=task_meta.mean(), proxy_dim=PROXY_DIM,
        encoder_spec="zoo:resnet20_cifar10:random")
    client = mlflow.MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench-rest")
    with mlflow.start_run(run_name="bench-rest-fennec"):
        info = flavor.log_model(bundle, registered_model_name="fennec")
        client.set_registered_model_alias("fennec", "champion", info.registered_model_version)
    with mlflow.start_run(run_name="bench-rest-trivial"):
        info = mlflow.pyfunc.log_model(name="trivial", python_model=Trivial(), signature=flavor.signature(bundle),
                                       registered_model_name="trivial")
        client.set_registered_model_alias("trivial", "champion", info.registered_model_version)
    with mlflow.start_run(run_name="bench-rest-trivial-schema"):
        schema = ModelSignature(inputs=Schema(flavor.input_columns(bundle)), params=flavor.signature(bundle).params)
        info = mlflow.pyfunc.log_model(name="trivial", python_model=Trivial(), signature=schema,
                                       registered_model_name="trivial_schema")
        client.set_registered_model_alias("trivial_schema", "champion", info.registered_model_version)
    mlflow.set_tracking_uri(None)
    frame = proxy.iloc[[0]].reset_index(drop=True)
    frame["class_count"], frame["sample_count"] = 10.0, 5000.0
    return frame


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``mlflow models serve`` of a registered model, stopped on exit."""

    def __init__(self, name: str, uri: str, workdir: Path, workers: int):
        self.port = free_port()
        command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}@champion",
                   "--env-manager", "local", "-p", str(self.port), "-h", "127.0.0.1", "-w", str(workers)]
        self.process = subprocess.Popen(command, env={**os.environ, "MLFLOW_TRACKING_URI": uri}, cwd=workdir,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.time() + 300
        while True:
            try:
                opener.open(f"http://127.0.0.1:{self.port}/ping", timeout=2)
                break
            except OSError:
                if self.process.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"the scoring server for {name} did not start: "
                                       f"{self.process.stderr.read().decode()[-2000:]}")
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def post(connection: http.client.HTTPConnection, body: bytes) -> dict:
    connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {payload[:500]!r}")
    return json.loads(payload)


def load(port: int, body: bytes, n_requests: int, clients: int, expected_rows: int) -> dict:
    """``clients`` threads on keep-alive connections send ``n_requests`` in all, back to back."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def client(count: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for _ in range(5):  # warm: the connection, the server's first requests
                post(connection, body)
            barrier.wait()
            mine = []
            for _ in range(count):
                start = time.perf_counter()
                rows = post(connection, body)["predictions"]
                mine.append(time.perf_counter() - start)
                if len(rows) != expected_rows:
                    raise RuntimeError(f"{len(rows)} rows, expected {expected_rows}")
            latencies.extend(mine)
        except (OSError, RuntimeError, ValueError, threading.BrokenBarrierError) as exc:  # reported by the caller
            errors.append(exc)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(n_requests // clients,)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]!r}")
    ms = np.array(latencies) * 1e3
    return {"requests": len(ms), "requests/s": len(ms) / elapsed, "p50 (ms)": float(np.percentile(ms, 50)),
            "p99 (ms)": float(np.percentile(ms, 99))}


def request_body(frame: pd.DataFrame, **params) -> bytes:
    split = frame.to_dict(orient="split")
    split.pop("index", None)
    return json.dumps({"dataframe_split": split, "params": {"top_k": TOP_K, **params}}).encode()


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000, help="candidate models in the recommender")
    parser.add_argument("--requests", type=int, default=400, help="timed requests per server and setting")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="uvicorn workers (mlflow models serve -w)")
    parser.add_argument("--batch", type=int, default=100, help="also time one request ranking this many tasks (0: skip)")
    parser.add_argument("--schema-floor", action="store_true", help="also serve trivial_schema")
    parser.add_argument("--known-scores", action="store_true", help="send known_scores (the warm start) too")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        uri = f"sqlite:///{workdir / 'mlflow.db'}"
        frame = register_models(args.models, uri)
        params = {}
        if args.known_scores:
            params["known_scores"] = json.dumps({"model00000": 0.9, "model00001": 0.4, "model00002": 0.6})
        body = request_body(frame, **params)
        for workers in args.workers:
            for name in ("trivial_schema", "trivial", "fennec")[0 if args.schema_floor else 1:]:
                with Server(name, uri, workdir, workers) as server:
                    row = {"model": name, "workers": workers, "clients": args.clients, "load average": load_average(),
                           **load(server.port, body, args.requests, args.clients, TOP_K)}
                    if name == "fennec" and args.batch:
                        batch = pd.concat([frame] * args.batch, ignore_index=True)
                        batch["task_id"] = [f"task-{i}" for i in range(args.batch)]
                        batch_body = request_body(batch, **params)
                        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                        post(connection, batch_body)
                        start = time.perf_counter()
                        answer = post(connection, batch_body)["predictions"]
                        row[f"{args.batch} tasks in one request (ms)"] = (time.perf_counter() - start) * 1e3
                        connection.close()
                        assert len(answer) == args.batch * TOP_K, len(answer)
                rows.append(row)
                print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    for workers in args.workers:
        at = table[table["workers"] == workers].set_index("model")
        ratio = at.loc["fennec", "requests/s"] / at.loc["trivial", "requests/s"]
        table.loc[table["workers"] == workers, "throughput / trivial"] = ratio
    header = "| " + " | ".join(table.columns) + " |\n|" + "---:|" * len(table.columns)
    lines = ["| " + " | ".join(f"{v:.3g}" if isinstance(v, float) and not np.isnan(v) else
                               ("" if isinstance(v, float) else str(v)) for v in row) + " |"
             for row in table.itertuples(index=False)]
    print(f"\n{header}\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
