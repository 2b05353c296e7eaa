"""Planted long tables (``model,task,score`` plus facts) to import into a test store: fast, with a known structure."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def planted_long_table(n_models: int = 12, n_tasks: int = 6, *, seed: int = 0, facts: bool = True,
                       holes: int = 3) -> pd.DataFrame:
    """A low-rank table whose tasks re-order the models by a task fact (class count) times a model fact.

    score = 60 + 3·quality_i + 8·size_i·c_t + noise, c_t the standardised log class count of task t,
    so the per-task ranking depends on the task (popularity alone cannot follow it) and on facts
    Fennec is given. Two families (even/odd models). ``holes`` cells are left out.
    """
    rng = np.random.default_rng(seed)
    models = [f"net{i:02d}" for i in range(n_models)]
    tasks = [f"task{j}" for j in range(n_tasks)]
    classes = np.geomspace(4, 400, n_tasks).round().astype(int)[rng.permutation(n_tasks)]
    c = np.log(classes)
    c = (c - c.mean()) / c.std()
    quality, size = rng.normal(size=n_models), rng.normal(size=n_models)
    score = 60 + 3 * quality[:, None] + 8 * size[:, None] * c[None, :] + rng.normal(0, 0.5, (n_models, n_tasks))
    rows = pd.DataFrame([{"model": m, "task": t, "score": score[i, j]}
                         for i, m in enumerate(models) for j, t in enumerate(tasks)])
    rows = rows.drop(index=rng.choice(len(rows), size=holes, replace=False)).reset_index(drop=True)
    if facts:
        model_index = rows["model"].map({m: i for i, m in enumerate(models)})
        task_index = rows["task"].map({t: j for j, t in enumerate(tasks)})
        rows["model_parameters"] = np.exp(14 + size[model_index])  # the size fact, as a parameter count
        rows["model_family"] = np.where(model_index % 2 == 0, "even", "odd")
        rows["task_class_count"] = classes[task_index]
        rows["task_train_size"] = 100 * classes[task_index]
        rows["task_domain"] = np.where(task_index % 2 == 0, "natural", "medical")
    return rows


def write_table(table: pd.DataFrame, path: Path) -> Path:
    table.to_csv(path, index=False)
    return path
