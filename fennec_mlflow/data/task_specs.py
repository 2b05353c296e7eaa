"""Task specs as users type them: a folder, ``torchvision:NAME`` or a built-in synthetic task name."""
from __future__ import annotations

from pathlib import Path

from fennec_mlflow.data.synthetic import synthetic_task
from fennec_mlflow.data.tasks import Task, from_folder, from_torchvision


def load_task(spec: str, *, image_size: int = 32, seed: int = 0, unlabelled_ok: bool = False) -> Task:
    """A task from a command-line spec.

    ``folder:PATH`` (or an existing directory) -> :func:`from_folder`;
    ``torchvision:NAME`` -> :func:`from_torchvision`; ``real:NAME`` -> real labelled images that
    install offline and tasks derived from them (:mod:`fennec_mlflow.data.real_tasks`, e.g.
    ``real:fashion-mnist-footwear``, ``real:mnist-rotation``, ``real:digits-fewshot-10``);
    anything else names a built-in synthetic
    task (see ``fennec_mlflow.data.synthetic.SYNTHETIC_TASKS``), rendered at ``image_size``.
    """
    if spec.startswith("real:"):
        from fennec_mlflow.data.real_tasks import load_real_task

        return load_real_task(spec, seed=seed)
    if spec.startswith("folder:") or "/" in spec or Path(spec).expanduser().is_dir():  # a path, even a wrong one
        return from_folder(spec.removeprefix("folder:"), image_size=max(image_size, 32), unlabelled_ok=unlabelled_ok)
    if spec.startswith("torchvision:"):
        return from_torchvision(spec.removeprefix("torchvision:"), seed=seed)
    return synthetic_task(spec, image_size=image_size, seed=seed)
