"""What a candidate costs to run here: inference latency and peak memory at a given input size.

Measured on this machine, once per (model, input size, batch size, device); the store keeps
the result as a ``profile`` run (:mod:`fennec_mlflow.serving.profiles`) and ``rank`` filters on it.

- **Latency**: the median wall time of ``repeats`` forward passes of a zero batch under
  ``torch.inference_mode`` after ``warmup`` passes, with the threads torch uses now.
- **Peak memory**: the model's weights and buffers plus the peak of the tensors alive during one
  forward pass, counted exactly from the tensors each operator returns (a dispatch mode) and
  freed when they are; on CUDA, ``torch.cuda.max_memory_allocated``. The runtime's own overhead
  (the interpreter, torch's libraries) is not a model's and is not counted.
"""
from __future__ import annotations

import statistics
import time
import weakref
from dataclasses import asdict, dataclass

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from fennec_mlflow.data.zoo import ZooModel, licence_of
from fennec_mlflow.errors import InvalidInputError

MB = 2 ** 20


@dataclass
class Profile:
    model: str
    input_size: int
    batch_size: int
    device: str
    latency_ms: float  # median over repeats
    latency_p90_ms: float
    peak_memory_mb: float  # weights + peak live activations
    weights_mb: float
    parameters: int
    threads: int
    licence: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class _LiveTensors(TorchDispatchMode):
    """Counts the bytes of the tensors operators return, as long as they live; keeps the peak."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in pytree.tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in self._seen:  # in-place results and views share a counted storage
                continue
            self._seen.add(key)
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(tensor, self._free, key, size)
        return out


def _weights_bytes(module: torch.nn.Module) -> int:
    tensors = {t.data_ptr(): t.untyped_storage().nbytes() for t in [*module.parameters(), *module.buffers()]}
    return int(sum(tensors.values()))


def profile_model(model: ZooModel, *, input_size: int | None = None, batch_size: int = 1, device: str = "cpu",
                  warmup: int = 2, repeats: int = 10) -> Profile:
    """Latency and peak memory of one forward pass of ``model`` on a zero batch (module docstring).

    ``input_size``: the image side in pixels (default: the model's own input size).
    """
    size = int(input_size or model.input_size)
    if size < 1 or batch_size < 1 or repeats < 1 or warmup < 0:
        raise InvalidInputError(f"input_size, batch_size and repeats must be positive (got {size}, {batch_size}, "
                                f"{repeats}) and warmup >= 0 ({warmup})")
    module = model.module.to(device).eval()
    batch = torch.zeros(batch_size, 3, size, size, device=device)
    cuda = torch.device(device).type == "cuda"
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                module(batch)
            times = []
            for _ in range(repeats):
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                module(batch)
                if cuda:
                    torch.cuda.synchronize()
                times.append(1000 * (time.perf_counter() - start))
            weights = _weights_bytes(module)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                module(batch)
                peak = weights + torch.cuda.max_memory_allocated() - base
            else:
                counter = _LiveTensors()
                with counter:
                    out = module(batch)
                del out
                peak = weights + counter.peak
    except RuntimeError as exc:  # e.g. a CIFAR network's fixed pooling at another size
        raise InvalidInputError(f"cannot run {model.name} on {batch_size}x3x{size}x{size} inputs: "
                                f"{str(exc).splitlines()[0]}; give its own input size ({model.input_size})") from None
    ordered = sorted(times)
    return Profile(model=model.name, input_size=size, batch_size=int(batch_size), device=str(device),
                   latency_ms=float(statistics.median(times)),
                   latency_p90_ms=float(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]),
                   peak_memory_mb=peak / MB, weights_mb=weights / MB, parameters=model.parameter_count,
                   threads=torch.get_num_threads(), licence=licence_of(model.name))
