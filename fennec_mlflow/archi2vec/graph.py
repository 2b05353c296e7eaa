"""A model's architecture as a graph: one forward pass, then the autograd graph as a networkx DAG.

Nodes are autograd operations (``grad_fn`` objects) reached by walking from the output back to
the input; edges follow the data (producer -> consumer). Each node carries:

- ``type``: the normalised op name (see :func:`normalise_op_name`), the attribute graph2vec hashes;
- ``op``: the raw autograd class name (``ConvolutionBackward0``), kept for audit;
- ``params``: how many parameter tensors feed this op directly. Parameter leaves
  (``AccumulateGrad``) are not nodes: a graph of ops, not of tensors, is what the paper embeds,
  and a leaf per weight and bias would double the node count with no structural information.

Graph attributes: ``model``, ``parameters`` and ``layers`` (see :mod:`.meta`), ``input_shape``,
``output_shape``, ``device`` (``meta`` or ``cpu``), ``vocabulary_version``, ``torch_version``.
Node ids are ``0..n-1`` in a deterministic topological order (inputs first), which is also what
karateclub's estimators require.

**Output choice.** A tensor output is used as is. For a dict, the ``"logits"`` key, then
``"out"``, then the first tensor value; for a tuple/list (Inception's auxiliary heads, a
namedtuple), the first element; both recursively. The graph therefore describes the path to the
main prediction.

**Input choice.** Batch 1, three channels, square images. The forward runs first on the
``meta`` device: tensors carry shapes but no data, autograd records the same graph, and a forward
costs only shape arithmetic at any image size (resnet152: 0.25 s on meta against 0.86 s on CPU at
224 px, and no weight initialisation to pay). Since the size is free there, the model's natural
size goes first (pytorchcv's ``in_size``, torchvision ViT's ``image_size``, else 224): it is the
size the model's fixed-size layers were built for (an ``AvgPool2d(7)`` head), so the graph is the
one the model has in use. Other sizes follow (:data:`FALLBACK_SIZES`, smallest first). A model
whose forward fails on meta (``.item()`` or a kernel with data-dependent output on a meta
tensor, a CPU tensor meeting a meta one in a kernel that refuses mixed devices) is rebuilt on CPU,
where compute grows with the pixel count: there the smallest size that works is used. (With
torch 2.14 all 468 pytorchcv ImageNet and 80 torchvision classification models run on meta.)

**Mode.** ``eval()``: batch-norm accepts batch 1, and there is no randomness (dropout, stochastic
depth) to make two extractions of one model differ. Parameters are switched to
``requires_grad=True`` for the forward (and restored), and the input requires grad too, so a
frozen model gives the same graph as a trainable one and ops before the first parametric layer
(input normalisation) are in the graph.
"""
from __future__ import annotations

import multiprocessing as mp
import re
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import networkx as nx
import torch
from torch import nn

from fennec_mlflow.archi2vec.meta import learnable_layer_count, parameter_count
from fennec_mlflow.errors import FennecError, InvalidInputError

# ----------------------------------------------------------------------------- vocabulary

VOCABULARY_VERSION = "1"
"""Bump whenever :data:`OP_ALIASES`, :data:`BACKEND_PREFIXES` or the rules in
:func:`normalise_op_name` change: graphs (and embeddings) of different versions are not comparable."""

BACKEND_PREFIXES = ("Cudnn", "Miopen", "Mkldnn", "Mps", "Native", "Thnn", "Slow", "Fused")
"""Prefixes naming the kernel that ran, not the operation: ``CudnnBatchNorm``, ``NativeBatchNorm``
and ``MiopenBatchNorm`` are one batch-norm. Stripped before the alias table is consulted."""

OP_ALIASES: Mapping[str, str] = {
    # Convolutions: one autograd node in torch >= 1.11, one per kernel before.
    "Conv2D": "Convolution",
    "Conv3D": "Convolution",
    "ConvDepthwise2D": "Convolution",
    "ConvDepthwise3D": "Convolution",
    "ConvDilated2D": "Convolution",
    "ConvDilated3D": "Convolution",
    "ConvolutionOverrideable": "Convolution",
    "ConvTranspose2D": "ConvolutionTranspose",
    "ConvTranspose3D": "ConvolutionTranspose",
    # Normalisation layers (after the backend prefix is gone).
    "BatchNormLegit": "BatchNorm",
    "BatchNormLegitNoTraining": "BatchNorm",
    "BatchNormLegitFunctional": "BatchNorm",
    "BatchNormWithUpdate": "BatchNorm",
    "BatchNormNoUpdate": "BatchNorm",
    # Reshapes that move no data: which one torch picks depends on version and strides.
    "Reshape": "View",
    "ReshapeAlias": "View",
    "UnsafeView": "View",
    "Alias": "View",
    "AsStrided": "View",
    "ViewAs": "View",
    "Flatten": "View",
    "Unflatten": "View",
    # Axis swaps: ``.t()`` inside ``F.linear``, ``transpose`` and ``permute`` are one operation.
    "T": "Transpose",
    "Permute": "Transpose",
    # Splits: ``chunk`` is recorded as Split, ``split`` with a list as SplitWithSizes.
    "SplitWithSizes": "Split",
    "UnsafeSplit": "Split",
    "UnsafeSplitWithSizes": "Split",
    "Chunk": "Split",
    "Narrow": "Slice",
    # ReLU: old torch recorded ``F.relu`` as a threshold at 0.
    "Threshold": "Relu",
    # Parametric ReLU kernels renamed across versions.
    "PreluKernel": "Prelu",
    # Softmax that maps fully masked rows to 0 instead of NaN (attention's math path).
    "SafeSoftmax": "Softmax",
    # Pooling variants that differ only in whether indices are returned.
    "MaxPool2DWithIndices": "MaxPool2D",
    "MaxPool3DWithIndices": "MaxPool3D",
    # A dtype/device copy (``CopyBackwards``) moves data like ``clone``.
    "Copy": "Clone",
}
"""Names (after stripping ``Backward<N>`` and a backend prefix) that denote the same operation."""

_BACKWARD_SUFFIX = re.compile(r"Backwards?\d*$")
_ATTENTION = re.compile(r"^ScaledDotProduct\w*Attention")


def normalise_op_name(raw: str) -> str:
    """Map an autograd class name to its vocabulary type (version :data:`VOCABULARY_VERSION`).

    1. Drop the ``Backward`` suffix with its overload/version number (``MeanBackward1`` -> ``Mean``,
       ``CopyBackwards`` -> ``Copy``; digits inside a name such as ``MaxPool2D`` stay).
    2. Every fused/backend attention kernel (``ScaledDotProductFlashAttentionForCpu``,
       ``...EfficientAttention``) -> ``ScaledDotProductAttention``.
    3. Drop one backend prefix (:data:`BACKEND_PREFIXES`): ``CudnnConvolution`` -> ``Convolution``.
    4. Apply :data:`OP_ALIASES`: ``UnsafeView`` -> ``View``, ``Threshold`` -> ``Relu``...

    Names outside the table pass through step 1-3 unchanged, so the vocabulary is open: a new op
    gets its own type rather than an error.
    """
    name = _BACKWARD_SUFFIX.sub("", raw)
    if _ATTENTION.match(name):
        return "ScaledDotProductAttention"
    for prefix in BACKEND_PREFIXES:
        rest = name[len(prefix):]
        # ``Native`` + ``BatchNorm``, not ``Slow`` + ``down``: the rest must start a new word.
        if name.startswith(prefix) and rest[:1].isupper():
            name = rest
            break
    return OP_ALIASES.get(name, name)


# ----------------------------------------------------------------------------- errors


class GraphExtractionError(FennecError, RuntimeError):
    """A model's graph cannot be extracted; says which model, with which input, and why.

    ``stage``: ``"input"`` (not a module), ``"build"`` (constructor failed), ``"forward"`` (the
    forward raised: another size or device may work) or ``"graph"`` (no usable autograd graph:
    retrying cannot help).
    """

    def __init__(self, model: str, input_shape: tuple[int, ...] | None, reason: str, stage: str = "forward"):
        self.model = model
        self.input_shape = input_shape
        self.reason = reason
        self.stage = stage
        shape = f" with input {tuple(input_shape)}" if input_shape else ""
        super().__init__(f"model {model!r}{shape}: {reason}")


@dataclass(frozen=True)
class ExtractionFailure:
    """One model that batch extraction skipped."""

    model: str
    input_shape: tuple[int, ...] | None
    error: str


@dataclass
class BatchExtraction:
    """What :func:`extract_graphs` returns: graphs by name (in input order), failures, timings.

    ``seconds``: wall-clock time per model (build + forward + graph); ``cpu_seconds``: CPU time
    of the process doing it, the figure to compare on a shared machine.
    """

    graphs: dict[str, nx.DiGraph] = field(default_factory=dict)
    failures: list[ExtractionFailure] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- graph from an output


def select_output(output: Any) -> torch.Tensor | None:
    """The tensor the graph is built from (see the module docstring for the rule)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        for key in ("logits", "out"):
            if key in output:
                return select_output(output[key])
        for value in output.values():
            tensor = select_output(value)
            if tensor is not None:
                return tensor
        return None
    if isinstance(output, (tuple, list)) and output:
        return select_output(output[0])
    # Hugging Face style ModelOutput objects expose their fields as attributes.
    for attribute in ("logits", "out"):
        value = getattr(output, attribute, None)
        if isinstance(value, torch.Tensor):
            return value
    return None


def autograd_graph(output: torch.Tensor, parameters: Iterable[torch.Tensor] = ()) -> nx.DiGraph:
    """The autograd graph behind ``output`` as a DAG of typed ops (no graph attributes set).

    ``parameters``: tensors whose ``AccumulateGrad`` leaves are counted in the consumer's
    ``params`` attribute; every other leaf (the input) is dropped without a count.
    """
    if output.grad_fn is None:
        raise InvalidInputError("the output has no grad_fn: the forward ran under no_grad, detached its result, "
                         "or nothing in it requires grad")
    parameter_ids = {id(p) for p in parameters}
    # Discovery order of a depth-first walk over next_functions: deterministic for one model,
    # and the tie-breaker of the topological numbering below.
    discovery: dict[Any, int] = {}
    params: dict[Any, int] = {}
    edges: list[tuple[Any, Any]] = []
    stack = [output.grad_fn]
    discovery[output.grad_fn] = 0
    while stack:
        node = stack.pop()
        params.setdefault(node, 0)
        for producer, _ in node.next_functions:
            if producer is None:  # an input that needs no gradient
                continue
            if type(producer).__name__ == "AccumulateGrad":
                if id(producer.variable) in parameter_ids:
                    params[node] += 1
                continue
            edges.append((producer, node))
            if producer not in discovery:
                discovery[producer] = len(discovery)
                stack.append(producer)
    raw = nx.DiGraph()
    raw.add_nodes_from(discovery)
    raw.add_edges_from(edges)
    if not nx.is_directed_acyclic_graph(raw):  # autograd graphs are DAGs; anything else is a bug here
        raise InvalidInputError("the autograd graph has a cycle")
    order = list(nx.lexicographical_topological_sort(raw, key=discovery.__getitem__))
    index = {node: i for i, node in enumerate(order)}
    graph = nx.DiGraph()
    for node in order:
        op = type(node).__name__
        graph.add_node(index[node], type=normalise_op_name(op), op=op, params=params[node])
    graph.add_edges_from((index[a], index[b]) for a, b in edges)
    return graph


@contextmanager
def _all_parameters_require_grad(model: nn.Module) -> Iterator[None]:
    """Temporarily make every parameter require grad, so frozen layers still show in the graph."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def trace_graph(model: nn.Module, input_shape: Sequence[int], *, name: str | None = None,
                device: str | torch.device | None = None) -> nx.DiGraph:
    """One forward pass of ``model`` on a zero tensor of ``input_shape``; its autograd graph.

    ``device``: where the input lives; default: the device of the model's first parameter (CPU
    for a parameterless model). Tensors a forward creates without naming a device stay on CPU:
    on meta they are mostly index arithmetic that mixes with meta tensors, and forcing them onto
    meta (``with torch.device("meta")``) made more models fail (``nonzero`` has no meta kernel)
    and every op 7% slower. Raises :class:`GraphExtractionError` naming the model for any failure.
    """
    label = name or type(model).__name__
    shape = tuple(int(s) for s in input_shape)
    if not isinstance(model, nn.Module):
        raise GraphExtractionError(label, shape, f"expected a torch.nn.Module, got {type(model).__name__}",
                                   stage="input")
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    modes = [(module, module.training) for module in model.modules()]  # restored exactly afterwards
    model.eval()
    try:
        with _all_parameters_require_grad(model), torch.enable_grad():
            x = torch.zeros(shape, device=device, requires_grad=True)
            try:
                output = model(x)
            except Exception as exc:  # any forward error, reported with the model and shape
                raise GraphExtractionError(label, shape, f"forward failed on {device.type}: "
                                           f"{type(exc).__name__}: {exc}") from exc
            tensor = select_output(output)
            if tensor is None:
                raise GraphExtractionError(label, shape, f"the output ({type(output).__name__}) holds no tensor",
                                           stage="graph")
            try:
                graph = autograd_graph(tensor, model.parameters())
            except ValueError as exc:
                raise GraphExtractionError(label, shape, str(exc), stage="graph") from exc
    finally:
        for module, training in modes:
            module.training = training
    graph.graph.update(
        model=label,
        parameters=parameter_count(model),
        layers=learnable_layer_count(model),
        input_shape=list(shape),
        output_shape=list(tensor.shape),
        device=device.type,
        vocabulary_version=VOCABULARY_VERSION,
        torch_version=torch.__version__.split("+")[0],
    )
    return graph


# ----------------------------------------------------------------------------- input sizes

FALLBACK_SIZES = (32, 64, 96, 128, 160, 224, 256, 299, 331)
"""Square image sizes tried after the model's natural one, smallest first."""


def natural_input_size(model: nn.Module) -> int:
    """The image size a model declares (pytorchcv ``in_size``, torchvision ViT ``image_size``), else 224."""
    for attribute in ("in_size", "image_size", "input_size"):
        value = getattr(model, attribute, None)
        if isinstance(value, int):
            return value
        if isinstance(value, (tuple, list)) and value and isinstance(value[-1], int):
            return int(value[-1])
    return 224


def candidate_input_shapes(model: nn.Module, device: str | torch.device = "meta",
                           sizes: Sequence[int] = FALLBACK_SIZES) -> list[tuple[int, ...]]:
    """Batch-1 RGB shapes to try, in order.

    On ``meta`` a forward costs the same at any size, so the model's natural size goes first;
    elsewhere compute grows with the pixel count, so the smallest size goes first.
    """
    natural = natural_input_size(model)
    if torch.device(device).type == "meta":
        ordered = [natural] + [s for s in sizes if s != natural]
    else:
        ordered = sorted(set(sizes) | {natural})
    return [(1, 3, s, s) for s in ordered]


def extract_graph(model: nn.Module, *, name: str | None = None, input_shape: Sequence[int] | None = None,
                  device: str | torch.device | None = None) -> nx.DiGraph:
    """The graph of a built model: ``input_shape`` if given, otherwise the first candidate shape that works.

    Raises :class:`GraphExtractionError` naming the model and the last shape tried.
    """
    label = name or type(model).__name__
    if not isinstance(model, nn.Module):
        raise GraphExtractionError(label, None, f"expected a torch.nn.Module, got {type(model).__name__}",
                                   stage="input")
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    shapes = [tuple(input_shape)] if input_shape is not None else candidate_input_shapes(model, device)
    errors = []
    for shape in shapes:
        try:
            return trace_graph(model, shape, name=label, device=device)
        except GraphExtractionError as exc:
            if exc.stage != "forward":  # a graph problem does not depend on the size
                raise
            errors.append(exc)
            if _is_meta_limitation(exc.__cause__):  # no other size will get past it either
                break
    first, last = errors[0], errors[-1]
    if len(errors) == 1:
        raise first
    tried = ", ".join(str(e.input_shape[-1]) for e in errors)
    raise GraphExtractionError(label, first.input_shape, f"{first.reason} (tried sizes {tried}; "
                               f"last: {last.reason})")


def _is_meta_limitation(exc: BaseException | None) -> bool:
    """Whether a forward error comes from running on ``meta`` rather than from the input size.

    Meta kernels that cannot exist (``nonzero``, ``.item()``) raise NotImplementedError; a CPU
    tensor meeting a meta one fails with a message naming the devices.
    """
    return isinstance(exc, NotImplementedError) or (exc is not None and "meta" in str(exc).lower())


# ----------------------------------------------------------------------------- model catalogues

_PYTORCHCV_OTHER_TASK_SUFFIX = re.compile(
    r"_(cifar10|cifar100|svhn|cub|voc|coco|ade20k|cityscapes|celebamaskhq|widerface|things)$")
_PYTORCHCV_OTHER_TASK_MODULES = frozenset({
    # speech recognition
    "jasper", "jasperdr", "quartznet",
    # audio-driven faces, face alignment, keypoints, optical flow, video inpainting
    "voca", "nvpattexp", "visemenet", "prnet", "pfpcnet", "superpointnet", "raft",
    "propainter", "propainter_ip", "propainter_rfc",
})


def pytorchcv_imagenet_models() -> list[str]:
    """pytorchcv's ImageNet-1k classification models, in pytorchcv's own order.

    pytorchcv has no task field, so other tasks are recognised by what its names and modules
    encode: a dataset suffix (``resnet20_cifar10``, ``pspnet_resnetd101b_voc``, ``resnet18_cub``)
    or a model module of another task (:data:`_PYTORCHCV_OTHER_TASK_MODULES`: speech, faces,
    optical flow, inpainting).
    """
    from pytorchcv.model_provider import _models

    return [
        name for name, factory in _models.items()
        if not _PYTORCHCV_OTHER_TASK_SUFFIX.search(name)
        and factory.__module__.rsplit(".", 1)[-1] not in _PYTORCHCV_OTHER_TASK_MODULES
    ]


def torchvision_classification_models() -> list[str]:
    """torchvision's image classification models (``torchvision.models``, not its sub-packages)."""
    import torchvision.models as tvm

    return list(tvm.list_models(module=tvm))


def split_model_name(name: str) -> tuple[str, str]:
    """``("pytorchcv"|"torchvision", bare name)``, with the zoo's naming rule.

    ``pytorchcv:NAME`` and ``torchvision:NAME`` are explicit; a bare name is pytorchcv's if it
    has one, else torchvision's.
    """
    if ":" in name:
        hub, bare = name.split(":", 1)
        if hub not in ("pytorchcv", "torchvision"):
            raise InvalidInputError(f"unknown model hub {hub!r} in {name!r}; use pytorchcv:NAME or torchvision:NAME")
        return hub, bare
    from pytorchcv.model_provider import _models

    if name.lower() in _models:
        return "pytorchcv", name.lower()
    if name in torchvision_classification_models():
        return "torchvision", name
    raise InvalidInputError(f"unknown model {name!r}: neither a pytorchcv nor a torchvision classification model")


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Send every parameter and buffer to ``meta`` as a module registers it.

    Unlike ``with torch.device("meta")``, the constructor's own arithmetic still runs on CPU
    (torchvision's RegNet computes its widths with ``torch.round(...).tolist()``, impossible on
    meta), while weights never hold data and their initialisers become no-ops. The patch of
    ``nn.Module.register_parameter``/``register_buffer`` lives only inside this context, but it
    is process-wide while it lasts: do not build other modules in another thread meanwhile
    (batch extraction uses processes, not threads).
    """
    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer

    def register_meta_parameter(module, name, param):
        register_parameter(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    def register_meta_buffer(module, name, tensor, persistent=True):
        register_buffer(module, name, tensor, persistent=persistent)
        if tensor is not None:
            module._buffers[name] = tensor.to("meta")

    nn.Module.register_parameter = register_meta_parameter
    nn.Module.register_buffer = register_meta_buffer
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter
        nn.Module.register_buffer = register_buffer


def build_model(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """A randomly initialised model by name (see :func:`split_model_name`), built on ``device``.

    On ``meta``, parameters and buffers hold no data and weight initialisers cost nothing.
    """
    hub, bare = split_model_name(name)
    placement = _parameters_on_meta() if torch.device(device).type == "meta" else torch.device(device)
    with placement:
        if hub == "pytorchcv":
            from pytorchcv.model_provider import get_model

            return get_model(bare, pretrained=False)
        import torchvision.models as tvm

        if bare not in torchvision_classification_models():
            raise InvalidInputError(f"unknown torchvision classification model {bare!r}")
        with warnings.catch_warnings():
            # GoogLeNet/Inception warn that their default init will change: irrelevant to a graph.
            warnings.filterwarnings("ignore", message="The default weight initialization", category=FutureWarning)
            return tvm.get_model(bare, weights=None)


def graph_from_name(name: str, devices: Sequence[str] = ("meta", "cpu")) -> nx.DiGraph:
    """Build the named model and extract its graph, on the first of ``devices`` where that works."""
    split_model_name(name)  # an unknown name is a ValueError, not a device problem
    errors: list[GraphExtractionError] = []
    for device in devices:
        try:
            model = build_model(name, device)
        except Exception as exc:  # a constructor that needs real data on this device
            errors.append(GraphExtractionError(name, None, f"construction failed on {device}: "
                                               f"{type(exc).__name__}: {exc}", stage="build"))
            continue
        try:
            return extract_graph(model, name=name, device=device)
        except GraphExtractionError as exc:
            if exc.stage != "forward":
                raise
            errors.append(exc)
        finally:
            del model
    if len(errors) == 1:
        raise errors[0]
    # Report every device's reason: the CPU error alone would hide why meta was not enough.
    raise GraphExtractionError(name, errors[-1].input_shape,
                               "; ".join(f"[{device}] {exc.reason}" for device, exc in zip(devices, errors)))


# ----------------------------------------------------------------------------- batches


def _graph_or_failure(item: str | tuple[str, nn.Module]) -> tuple[str, nx.DiGraph | ExtractionFailure, float, float]:
    start, cpu_start = time.perf_counter(), time.process_time()
    name = item if isinstance(item, str) else item[0]
    try:
        if isinstance(item, str):
            graph = graph_from_name(item)
        else:
            graph = extract_graph(item[1], name=name)
        result: nx.DiGraph | ExtractionFailure = graph
    except GraphExtractionError as exc:
        result = ExtractionFailure(name, exc.input_shape, exc.reason)
    except ValueError as exc:  # unknown name
        result = ExtractionFailure(name, None, str(exc))
    return name, result, time.perf_counter() - start, time.process_time() - cpu_start


def _worker_init() -> None:
    # Meta-device forwards are Python-bound: one intra-op thread per process avoids oversubscription.
    torch.set_num_threads(1)


def extract_graphs(models: Iterable[str | tuple[str, nn.Module]], *, processes: int = 1,
                   progress: bool = True) -> BatchExtraction:
    """Graphs for many models; a model that fails is recorded in ``failures`` and skipped.

    ``models``: names (``resnet18``, ``torchvision:vit_b_16``) or ``(name, module)`` pairs.
    ``processes`` > 1 spreads names over worker processes (modules given as objects are
    pickled to the workers, so pass names for big batches).
    """
    from fennec_mlflow.progress import tqdm

    items = list(models)
    names = [item if isinstance(item, str) else item[0] for item in items]
    if len(set(names)) != len(names):
        raise InvalidInputError("model names must be unique in one batch")
    results: dict[str, tuple[nx.DiGraph | ExtractionFailure, float, float]] = {}
    bar = tqdm(total=len(items), desc="archi2vec graphs", unit="model", disable=not progress)
    if processes <= 1:
        for item in items:
            name, *outcome = _graph_or_failure(item)
            results[name] = tuple(outcome)
            bar.update()
    else:
        # fork shares the imported torch/pytorchcv/torchvision with the workers (importing
        # pytorchcv's ~200 model modules costs seconds); spawn would re-import in each worker.
        import pytorchcv.model_provider  # noqa: F401
        import torchvision.models  # noqa: F401

        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(processes, mp_context=mp.get_context(method), initializer=_worker_init) as pool:
            # chunksize 1: models differ 100-fold in cost, so hand them out one at a time.
            for name, *outcome in pool.map(_graph_or_failure, items, chunksize=1):
                results[name] = tuple(outcome)
                bar.update()
    bar.close()
    batch = BatchExtraction()
    for name in names:
        result, batch.seconds[name], batch.cpu_seconds[name] = results[name]
        if isinstance(result, ExtractionFailure):
            batch.failures.append(result)
        else:
            batch.graphs[name] = result
    return batch


# ----------------------------------------------------------------------------- serialisation


def graph_to_json(graph: nx.DiGraph) -> dict:
    """Node-link JSON (``networkx.node_link_data`` with ``edges="edges"``) of a graph."""
    return nx.node_link_data(graph, edges="edges")


def graph_from_json(data: Mapping) -> nx.DiGraph:
    """Inverse of :func:`graph_to_json`; node ids come back as the integers they were."""
    graph = nx.node_link_graph(data, directed=True, multigraph=False, edges="edges")
    if not nx.is_directed_acyclic_graph(graph):
        raise InvalidInputError(f"graph {graph.graph.get('model', '?')!r} from JSON is not acyclic")
    return graph
