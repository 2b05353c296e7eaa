"""Proof that the registered recommender stands on its own: served, predicted and containerised from a fresh environment.

    python benchmarks/serve_fresh_env.py            # 3-5 min here: most of it is pip filling a new venv (6.4 GB)

What it does, in a new temp folder with its own store (``MLFLOW_TRACKING_URI=sqlite:///<tmp>/mlflow.db``):

1. registers a small ``fennec@champion`` the way a user does, with the CLI and no images: a planted
   ``model,task,score`` table with task/model facts -> ``fennec import`` -> ``fennec build --kind external
   --encoder none --no-tune`` (a new task is placed by its facts: the fast path needs no proxy features);
2. ``mlflow models serve -m models:/fennec@champion`` with MLflow's DEFAULT environment manager (no
   ``--env-manager``: virtualenv, i.e. pyenv's Python + ``python -m venv`` + ``pip install`` of the model's
   pinned requirements; the package itself comes from the model's ``code_paths``, it is on no index).
   ``MLFLOW_ENV_ROOT`` and ``PIP_CACHE_DIR`` point into the temp folder, so no environment or wheel cached
   by an earlier run is reused;
3. waits for ``/ping``, sends a fast-path request (one row per task: ``class_count``, ``sample_count``,
   ``domain``, ``task_id``) and malformed ones, and checks 200 with a ranking, 400 with the project's
   one-line message (``INVALID_PARAMETER_VALUE``, no server paths);
4. ``mlflow models predict -m models:/fennec@champion --env-manager virtualenv`` on the same request
   (MLflow reuses the environment step 2 built: same requirements, same ``MLFLOW_ENV_ROOT``) and
   ``mlflow models generate-dockerfile -m models:/fennec@champion -d <tmp>/docker`` (the Dockerfile and the
   model copy are generated; no image is built: no Docker daemon here);
5. prints the timings (environment creation, first answer) and what was proved, then stops the server
   (SIGTERM to its process group, SIGKILL after 30 s) and exits 0 only if every check passed.

A plain script, not a test (pytest collects ``tests/`` only): it needs the package registries and many
minutes of pip. Results: docs/benchmarks.md, "Fresh environment serving".
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the planted table generator the tests use
from tests.planted import planted_long_table  # noqa: E402
MODEL_URI = "models:/fennec@champion"
TOP_K = 5
REQUEST = {"dataframe_split": {"columns": ["task_id", "class_count", "sample_count", "domain"],
                               "data": [["my-xray-task", 12, 2400, "medical"],
                                        ["my-birds", 200, 30000, "natural"]]},
           "params": {"top_k": TOP_K}}
MALFORMED = [  # (body, a piece of the project's own message)
    ({"dataframe_split": {"columns": ["class_count", "sample_count"], "data": [["many", 2400]]}},
     "class_count must be a number"),
    ({"dataframe_split": {"columns": ["class_count", "banana"], "data": [[12, 1]]}}, "unknown column"),
    ({"dataframe_split": {"columns": ["class_count"], "data": [[12]]}, "params": {"top_k": -5}},
     "top_k must be an integer"),
]
# Lines of `mlflow models serve`'s log that mark the phases of building the environment.
MARKERS = {"pyenv/venv": re.compile(r"Creating a new environment in"),
           "pip install": re.compile(r"Installing dependencies"),
           "server start": re.compile(r"=== Running command|Uvicorn running|Listening at|Started server process")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], env: dict, cwd: Path, log: Path, timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    """Run a command to completion, its output in ``log``; returns (seconds, result)."""
    print(f"$ {' '.join(cmd)}", flush=True)
    start = time.time()
    with open(log, "w") as out:
        done = subprocess.run(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    seconds = time.time() - start
    if done.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"FAILED ({done.returncode}) after {seconds:.1f} s: {' '.join(cmd)}\n{tail}")
    return seconds, done


class Server:
    """``mlflow models serve`` in its own process group; its log timestamped, phase markers timed."""

    def __init__(self, cmd: list[str], env: dict, cwd: Path, log: Path):
        self.start = time.time()
        self.marks: dict[str, float] = {}
        self.log = log
        self.process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True, text=True, bufsize=1)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        with open(self.log, "w") as out:
            for line in self.process.stdout:
                elapsed = time.time() - self.start
                out.write(f"[{elapsed:8.1f}s] {line}")
                out.flush()
                for name, pattern in MARKERS.items():
                    if name not in self.marks and pattern.search(line):
                        self.marks[name] = elapsed
                        print(f"  [{elapsed:7.1f} s] {name}: {line.strip()[:160]}", flush=True)

    def stop(self) -> str:
        if self.process.poll() is not None:
            return f"had exited ({self.process.returncode})"
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
            return f"stopped by SIGTERM (exit {self.process.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            return "killed after 30 s (SIGKILL)"


def post(opener, port: int, body: dict, timeout: float = 120) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with opener.open(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as failure:
        return failure.code, json.loads(failure.read() or b"{}")


def check_ranking(predictions, where: str) -> pd.DataFrame:
    table = pd.DataFrame(predictions)
    assert {"task_index", "task_id", "rank", "model", "score"} <= set(table.columns), f"{where}: {table.columns}"
    assert len(table) == 2 * TOP_K, f"{where}: {len(table)} rows, expected {2 * TOP_K}"
    assert set(table["task_id"]) == {"my-xray-task", "my-birds"}, where
    assert table["model"].str.startswith("net").all(), where
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="folder to work in (default: a new temp folder)")
    parser.add_argument("--ping-timeout", type=float, default=3600, help="seconds to wait for the environment and /ping")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (the venv is several GB)")
    args = parser.parse_args(argv)

    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="fennec-fresh-env-"))
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
           "MLFLOW_ENV_ROOT": str(tmp / "envs"), "PIP_CACHE_DIR": str(tmp / "pip-cache")}
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    env.pop("MLFLOW_RUN_ID", None)
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"work folder {tmp}; store {env['MLFLOW_TRACKING_URI']}; environments under {env['MLFLOW_ENV_ROOT']}")
    mlflow_cli = [sys.executable, "-m", "mlflow"]
    fennec_cli = [sys.executable, "-m", "fennec_mlflow.cli"] if not _has("fennec") else ["fennec"]
    timings: dict[str, float] = {}
    proved: list[str] = []
    not_proved: list[str] = []
    total = time.time()

    # 1. a small registered champion, built as a user would
    csv = tmp / "planted.csv"
    planted_long_table(12, 8, seed=0, holes=0).to_csv(csv, index=False)
    timings["fennec import"], _ = run([*fennec_cli, "import", str(csv), "--source", "planted"], env, tmp,
                                      tmp / "import.log", 900)
    timings["fennec build"], _ = run([*fennec_cli, "build", "--kind", "external", "--source", "planted",
                                      "--encoder", "none", "--no-tune"], env, tmp, tmp / "build.log", 900)
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(env["MLFLOW_TRACKING_URI"])
    version = mlflow.MlflowClient().get_model_version_by_alias("fennec", "champion")
    local = Path(mlflow.artifacts.download_artifacts(MODEL_URI, dst_path=str(tmp / "registered")))
    requirements = (local / "requirements.txt").read_text().split()
    code = sorted(p.name for p in (local / "code").iterdir()) if (local / "code").is_dir() else []
    python_env = (local / "python_env.yaml").read_text()
    print(f"registered fennec version {version.version} (champion); code_paths in the model: {code}; "
          f"{len(requirements)} requirements: {' '.join(requirements)}")
    print(python_env.strip())
    assert "fennec_mlflow" in code, "the model does not carry the package code"
    assert not any(r.startswith("fennec") for r in requirements), "the requirements name the package itself"
    proved.append(f"fennec import + build registered {MODEL_URI} (version {version.version}) carrying "
                  f"code/fennec_mlflow and {len(requirements)} pinned requirements")

    # 2. serve with MLflow's default environment manager (no --env-manager)
    port = free_port()
    cmd = [*mlflow_cli, "models", "serve", "-m", MODEL_URI, "-p", str(port), "-h", "127.0.0.1"]
    print(f"$ {' '.join(cmd)}   (log: {tmp / 'serve.log'})", flush=True)
    server = Server(cmd, env, tmp, tmp / "serve.log")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    ok = False
    try:
        while True:
            try:
                opener.open(f"http://127.0.0.1:{port}/ping", timeout=5)
                break
            except OSError:
                if server.process.poll() is not None:
                    time.sleep(1)  # let the reader drain the last lines
                    raise SystemExit(f"FAILED: the server exited ({server.process.returncode}) before /ping "
                                     f"answered\n{(tmp / 'serve.log').read_text()[-4000:]}")
                if time.time() - server.start > args.ping_timeout:
                    raise SystemExit(f"FAILED: no /ping within {args.ping_timeout:.0f} s\n"
                                     f"{(tmp / 'serve.log').read_text()[-4000:]}")
                time.sleep(2)
        timings["serve: first /ping"] = time.time() - server.start
        for name, at in server.marks.items():
            timings[f"serve: {name} began"] = at
        if "pip install" in server.marks and "server start" in server.marks:
            timings["serve: pip install (environment)"] = server.marks["server start"] - server.marks["pip install"]

        # 3. the fast-path request and malformed ones
        began = time.time()
        status, answer = post(opener, port, REQUEST)
        timings["serve: first answer (request)"] = time.time() - began
        timings["serve: first answer (since start)"] = time.time() - server.start
        assert status == 200, f"fast path: HTTP {status} {str(answer)[:500]}"
        table = check_ranking(answer["predictions"], "serve")
        print(f"HTTP 200, {len(table)} rows:\n{table[['task_id', 'rank', 'model', 'score']].to_string(index=False)}")
        began = time.time()
        for _ in range(20):
            post(opener, port, REQUEST)
        timings["serve: warm request (mean of 20)"] = (time.time() - began) / 20
        for body, message in MALFORMED:
            status, answer = post(opener, port, body)
            text = answer.get("message", "")
            assert status == 400 and message in text, f"malformed: HTTP {status} {str(answer)[:500]}"
            assert answer.get("error_code") == "INVALID_PARAMETER_VALUE", answer
            assert str(REPO) not in json.dumps(answer) and "site-packages" not in json.dumps(answer), answer
            print(f"HTTP 400 INVALID_PARAMETER_VALUE: {text}")
        proved.append(f"`mlflow models serve -m {MODEL_URI}` (default env manager) built a fresh venv, answered "
                      f"the fast path with HTTP 200 and a {TOP_K}-row ranking per task, and {len(MALFORMED)} "
                      "malformed requests with HTTP 400 INVALID_PARAMETER_VALUE carrying the project's message "
                      "(after MLflow's own prefix \"Failed to predict data '<the frame>'. Error:\") and no server paths")
        ok = True
    finally:
        stopped = server.stop()
        print(f"server {stopped}")
        envs = sorted(p.name for p in (tmp / "envs").glob("mlflow-*"))
        print(f"environments built under {tmp / 'envs'}: {envs}")
    if not ok:
        return 1

    # 4. models predict: MLflow's default (virtualenv) first, then uv when it is on PATH
    request_file = tmp / "request.json"
    request_file.write_text(json.dumps(REQUEST))
    for manager in ("virtualenv", "uv"):
        if manager == "uv" and not _has("uv"):
            print("uv is not on PATH: `mlflow models predict --env-manager uv` not tried")
            continue
        predict_env = ({**env, **uv_settings_from_pip(), "UV_CACHE_DIR": str(tmp / "uv-cache")} if manager == "uv"
                       else env)
        output = tmp / f"predictions-{manager}.json"
        cmd = [*mlflow_cli, "models", "predict", "-m", MODEL_URI, "-i", str(request_file), "-t", "json",
               "-o", str(output), "--env-manager", manager]
        log = tmp / f"predict-{manager}.log"
        try:
            timings[f"models predict ({manager})"], _ = run(cmd, predict_env, tmp, log, args.ping_timeout)
        except SystemExit as failure:
            lines = [line.strip() for line in log.read_text().splitlines()
                     if re.search(r"Could not resolve host|failed to download|No interpreter found|error:", line)]
            reason = " / ".join(dict.fromkeys(lines[:3])) or str(failure).splitlines()[0]
            not_proved.append(f"`mlflow models predict --env-manager {manager}` failed: {reason}")
            print(f"models predict ({manager}) FAILED: {reason} (log: {log})")
            continue
        predicted = json.loads(output.read_text())
        check_ranking(predicted.get("predictions", predicted), f"predict ({manager})")
        proved.append(f"`mlflow models predict --env-manager {manager}` built its own fresh environment "
                      "(MLflow gives each predict a new env root) and ranked the same request in it")
    timings["models generate-dockerfile"], _ = run(
        [*mlflow_cli, "models", "generate-dockerfile", "-m", MODEL_URI, "-d", str(tmp / "docker")],
        env, tmp, tmp / "dockerfile.log", 900)
    dockerfile = (tmp / "docker" / "Dockerfile").read_text()
    assert "FROM" in dockerfile and (tmp / "docker" / "model_dir").exists(), dockerfile[:500]
    proved.append("`mlflow models generate-dockerfile` wrote docker/Dockerfile with the model copied beside it ("
                  + "; ".join(l.strip() for l in dockerfile.splitlines()
                              if l.startswith(("FROM", "RUN python -c", "RUN pip", "ENTRYPOINT")))[:300] + ")")

    timings["total"] = time.time() - total
    print(f"\nload average at the end (1, 5, 15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores")
    print("\nTimings (s):")
    for name, seconds in timings.items():
        print(f"  {name:40s} {seconds:9.2f}")
    print("\nProved:")
    for line in proved:
        print(f"  - {line}")
    if not_proved:
        print("\nNot proved here:")
        for line in not_proved:
            print(f"  - {line}")
    if not args.keep and args.workdir is None:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}")
    return 0 if any(line.startswith("`mlflow models predict") for line in proved) else 1


def uv_settings_from_pip() -> dict[str, str]:
    """This machine's pip settings (indexes, find-links, constraints) for uv, which does not read pip.conf."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    values = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        values[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    settings = {"UV_INDEX_STRATEGY": "unsafe-best-match"}  # like pip: the best version over all indexes
    for pip_key, uv_key in (("index-url", "UV_INDEX_URL"), ("extra-index-url", "UV_EXTRA_INDEX_URL"),
                            ("find-links", "UV_FIND_LINKS"), ("constraint", "UV_CONSTRAINT")):
        if values.get(pip_key):
            settings[uv_key] = values[pip_key]
    return settings


def _has(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


if __name__ == "__main__":
    sys.exit(main())
