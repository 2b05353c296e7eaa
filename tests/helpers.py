"""Plain helpers shared by the test modules (fixtures live in conftest.py): ``from tests.helpers import ...``."""
from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
"""The repository root: the MLproject, benchmarks/ and the package."""


# ----------------------------------------------------------------------------- tracking stores


def store_env(folder: Path) -> dict[str, str]:
    """The environment that points MLflow and the feature cache at a sqlite store in ``folder``."""
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{Path(folder) / 'mlflow.db'}",
            "FENNEC_CACHE_DIR": str(Path(folder) / "cache")}


@contextmanager
def sqlite_store(folder: Path, monkeypatch):
    """A fresh sqlite MLflow store in ``folder``, the current tracking store while the block runs.

    The working directory moves to ``folder`` too: a sqlite store's default artifact root is
    ./mlruns of the working directory, so nothing lands in the checkout."""
    from mlflow import MlflowClient
    import mlflow

    env = store_env(folder)
    monkeypatch.chdir(folder)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        yield MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    finally:
        mlflow.set_tracking_uri(None)


def runs_in(client, experiment: str, max_results: int = 1000):
    """Every run of the named experiment, which must exist."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    return client.search_runs([exp.experiment_id], max_results=max_results)


def run_entry_point(entry_point: str, params: dict, *, cwd: Path, env: dict, timeout: float = 600):
    """``mlflow run <repo> -e entry_point -P k=v ...`` in a subprocess; asserts it succeeded."""
    command = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry_point, "--env-manager", "local"]
    for name, value in params.items():
        command += ["-P", f"{name}={value}"]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# ----------------------------------------------------------------------------- data


def blob_images(n_per_class: int, n_classes: int, size: int = 32, seed: int = 0):
    """Tiny procedural images whose class is the colour of a square: easy, deterministic."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(n_classes, 3))
    images, labels = [], []
    for c in range(n_classes):
        for _ in range(n_per_class):
            img = rng.integers(0, 40, size=(size, size, 3))
            y, x = rng.integers(0, size // 2, size=2)
            img[y:y + size // 2, x:x + size // 2] = palette[c]
            images.append(img)
            labels.append(c)
    return np.asarray(images, dtype=np.uint8), np.asarray(labels)


def image_folder(root: Path, seed: int, classes=("a", "b", "c"), per_class: int = 12) -> Path:
    """An ImageFolder ``root/<class>/<i>.png`` of small noisy images, one brightness per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(60 + 60 * index, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def planted_benchmark(n_models: int = 12, n_tasks: int = 5, seed: int = 0):
    """A small low-rank table with holes, two families and task facts: fast to evaluate."""
    from fennec_mlflow.bench.public import Benchmark

    rng = np.random.default_rng(seed)
    models = [f"m{i:02d}" for i in range(n_models)]
    tasks = [f"t{j}" for j in range(n_tasks)]
    family = np.array(["A", "B"])[np.arange(n_models) % 2]
    values = rng.uniform(0.5, 1.5, (n_models, 2)) @ rng.uniform(0.5, 1.5, (2, n_tasks))
    values += (family == "A")[:, None] * 0.5 + rng.normal(0, 0.05, values.shape)
    P = pd.DataFrame(60 + 10 * values, index=pd.Index(models, name="model"), columns=pd.Index(tasks, name="task"))
    P.iloc[0, 1] = P.iloc[3, 2] = np.nan
    model_meta = pd.DataFrame({"family=A": (family == "A").astype(float), "size": rng.normal(size=n_models)},
                              index=models)
    task_meta = pd.DataFrame({"log_class_count": np.log(rng.integers(5, 200, n_tasks)),
                              "domain=x": (np.arange(n_tasks) % 2).astype(float)}, index=tasks)
    return Benchmark(name="planted", description="planted", P=P, model_meta=model_meta, task_meta=task_meta,
                     targets=tasks, families=pd.Series(family, index=models), units="accuracy (%)")


def wait_for_scoring_server(server, port: int, opener, timeout: float = 180) -> None:
    """Block until the `mlflow models serve` process ``server`` answers /ping on ``port``; fail with its stderr if it dies."""
    import time

    deadline = time.time() + timeout
    while True:
        try:
            opener.open(f"http://127.0.0.1:{port}/ping", timeout=2)
            return
        except OSError:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.time() < deadline, f"the scoring server did not answer /ping within {timeout:.0f} s"
            time.sleep(0.5)


def crash_on_second_trial(monkeypatch):
    """Make every fine-tune raise when its second grid point starts (a job killed mid-cell); returns
    the function that undoes it."""
    from fennec_mlflow.store import jobs

    original = jobs._TrackedFinetune.on_trial_start

    def crash(self, params):
        if params.index == 1:
            raise RuntimeError("simulated kill")
        original(self, params)

    monkeypatch.setattr(jobs._TrackedFinetune, "on_trial_start", crash)
    return lambda: monkeypatch.setattr(jobs._TrackedFinetune, "on_trial_start", original)
