"""Task specs as users type them: a folder, ``torchvision:NAME`` or a built-in synthetic task name."""
from __future__ import annotations

import difflib
from pathlib import Path

from fennec_mlflow.data.synthetic import SYNTHETIC_TASKS, synthetic_task
from fennec_mlflow.data.tasks import Task, TaskError, from_folder, from_torchvision


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
    if spec not in SYNTHETIC_TASKS:
        raise TaskError(unknown_spec_message(spec))
    return synthetic_task(spec, image_size=image_size, seed=seed)


def unknown_spec_message(spec: str) -> str:
    """A spec that is neither a folder here nor a built-in task: say both, and how to give either."""
    close = difflib.get_close_matches(spec, list(SYNTHETIC_TASKS), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return (f"no folder {spec!r} (resolved against {Path.cwd()}) and no built-in task of that name{hint}; give the "
            "folder's absolute path, or a built-in task: real:NAME (e.g. real:digits, real:mnist-rotation) or a "
            "synthetic one, listed by: python -c \"from fennec_mlflow.data.synthetic import SYNTHETIC_TASKS; "
            "print(*SYNTHETIC_TASKS)\"")
