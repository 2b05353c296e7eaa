"""A worker process for the concurrency tests: ``python -m tests.store.workers fda|finetune MODELS TASKS``.

MODELS and TASKS are comma-separated; tasks are small synthetic ones (the same in every process).
The store is ``MLFLOW_TRACKING_URI``. Prints one JSON line per cell outcome.
"""
from __future__ import annotations

import json
import sys


def tasks(names: str):
    from fennec_mlflow.data.synthetic import synthetic_task

    return [synthetic_task(name, samples_per_class=20) for name in names.split(",")]


def main(argv: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    job, models, task_names = argv
    if job == "fda":
        from fennec_mlflow.store.jobs import score_cells

        outcomes = score_cells(models.split(","), tasks(task_names), probe_size=40, weights="random",
                               progress=False)
    else:
        from fennec_mlflow.store.jobs import finetune_cells
        from fennec_mlflow.training.finetune import FinetuneConfig

        config = FinetuneConfig(learning_rates=(0.05, 0.01), weight_decays=(1e-4,), max_epochs=1, patience=1,
                                progress=False)
        outcomes = finetune_cells(models.split(","), tasks(task_names), config=config, weights="random",
                                  progress=False)
    for outcome in outcomes:
        print(json.dumps({"model": outcome.model, "task": outcome.task, "run_id": outcome.run_id,
                          "score": outcome.score, "reused": outcome.reused}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
