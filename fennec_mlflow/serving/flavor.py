"""The fitted recommender as an MLflow pyfunc model: log, register (``fennec@champion``), load, serve.

Input (a DataFrame), either

- the fast path, one row per target task (many tasks in one request are ranked together):
  ``proxy_0 .. proxy_{d-1}`` (the task's proxy features,
  :func:`fennec_mlflow.data.proxy.task_proxy_features`), or the same as one list-valued column
  ``proxy``, plus the task meta columns ``class_count`` and ``sample_count`` (alias ``train_size``;
  NaN when unknown), optionally ``domain`` and ``task_id`` (any name of yours, echoed on that task's
  output rows), or ``dataset``: a public dataset's name, whose facts fill the ones not sent (as
  ``fennec rank --dataset``, from fennec_mlflow/resources/task_facts.csv); a recommender built
  without an encoder needs the facts only; or
- images: column ``image`` holding base64-encoded image files, one per row, all rows one target task
  or, with ``task_id``, the rows of each task_id one task
  (PNG/JPEG/...), optionally ``class_count``; the server encodes them with the proxy
  encoder saved inside the model.

Limits (each answers HTTP 400 at once): at most 1,000 task rows or 2,000 images per request, images
of at most 4096 x 4096 pixels; ``top_k`` in [0, 100,000], ``max_parameters`` >= 0, ``class_count``
in [2, 10^6], ``sample_count`` in [1, 10^9].

Params: ``top_k`` (default 10; 0 = all), ``include`` / ``exclude`` (regular expressions on
model names), ``max_parameters`` (0 = no limit), ``known_scores`` (a string holding a JSON object
``{"model": score}`` of models already scored on the target: the warm start; MLflow's param schema
refuses an object sent as it is).

Any other column is refused (400). The logged signature has params and outputs but no input
schema: MLflow would cast and check the ~140 optional columns one by one on every request, most of
a request's time (:func:`signature`); the model checks the input itself.

Output: one row per recommended model and task: ``task_index`` (the request row), ``task_id``
(when sent), ``rank``, ``model``, ``score``,
``bias_score``, ``transfer_score``, ``meta_score``: ``score`` is the predicted per-task z-score
(0 = an average model of the history, 1 = one standard deviation better) = ``bias_score``
(popularity; among similar history tasks when the task's facts are given) + the shrunk
``transfer_score`` and ``meta_score`` (+ the warm start's update);
``basis`` says in words what the ranking rests on (e.g. "popularity + 0.31 x transfer").
Also (issue 16, :mod:`fennec_mlflow.serving.answers`): ``predicted_accuracy``, ``accuracy_low``,
``accuracy_high`` (NaN when the history is not on an accuracy scale: ``basis`` then says the scores
are relative), ``latency_ms``, ``peak_memory_mb``, ``licence``; params ``max_latency_ms``,
``max_memory_mb``, ``licence``. A value unknown is NaN in process and null in the scoring server's
JSON (:func:`json_safe`).
"""
from __future__ import annotations

import base64
import contextlib
import difflib
import functools
import io
import json
import pickle
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import requires, version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from fennec_mlflow import config
from fennec_mlflow.core.accuracy import AccuracyModel
from fennec_mlflow.core.recommender import Fennec
from fennec_mlflow.errors import FennecError, InvalidInputError
from fennec_mlflow.serving import answers
from fennec_mlflow.serving.answers import ANSWER_COLUMNS
from fennec_mlflow.store.knowledge import domain_indicator
from fennec_mlflow.store.knowledge import task_meta_row as knowledge_row

REGISTERED_NAME = config.REGISTERED_MODEL
BUNDLED_ENCODER = "bundled"
CHAMPION = config.CHAMPION_ALIAS
OUTPUT_COLUMNS = ["task_index", "rank", "model", "score", "bias_score", "transfer_score", "meta_score",
                  "known_score", *ANSWER_COLUMNS, "basis"]


class RankRequestError(InvalidInputError):
    """A ranking request the model cannot answer; the message says what to send instead."""


class RejectedRequest(MlflowException):
    """Our one-line HTTP 400. MLflow's scoring server rewrites a model's error message to
    ``Failed to predict data '<the whole request table>'. Error: ...``, which can run to megabytes
    and buries the line; this exception keeps its own message."""

    def __init__(self, message: str):
        self._line = message
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:
        pass  # the scoring server's prefixed copy is dropped on purpose


@dataclass
class RankerBundle:
    """Everything the served model needs, independent of MLflow (pickled into one artifact)."""

    fennec: Fennec
    model_meta: pd.DataFrame  # rows = candidate models, the columns the meta regression was fitted on
    model_parameters: pd.Series  # parameter count per model, for the max_parameters filter
    domains: list[str]  # task domains one-hot encoded in the task meta (others -> all zeros)
    task_meta_fill: pd.Series  # fitted task meta columns, in order (values: the history's means)
    proxy_dim: int
    encoder_spec: str  # proxy.load_encoder spec; BUNDLED_ENCODER = the weights file shipped in the model
    proxy_sample_size: int = config.PROBE_SIZE
    info: dict = field(default_factory=dict)
    accuracy: AccuracyModel | None = None  # predicted accuracy (issue 16); absent from older bundles
    constraints: pd.DataFrame | None = None  # per model: latency_ms, peak_memory_mb, licence, profile_input_size


# Request limits (documented in the module docstring): they answer 400 fast instead of working for minutes.
MAX_TASK_ROWS = 1000  # fast-path rows (tasks) per request
MAX_IMAGES = 2000  # images per request
MAX_IMAGE_PIXELS = 4096 * 4096  # per image, checked from the header before decoding
MAX_TOP_K = 100_000
MAX_CLASS_COUNT = 1_000_000
MAX_SAMPLE_COUNT = 1e9


def check_request_params(params: dict) -> None:
    """Range checks of the served params; a bad one is a RankRequestError (HTTP 400)."""
    top_k = params.get("top_k")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 0 <= top_k <= MAX_TOP_K:
        raise RankRequestError(f"top_k must be an integer in [0, {MAX_TOP_K}] (0 = all), got {top_k!r}")
    limit = params.get("max_parameters") or 0
    if not isinstance(limit, (int, float, np.number)) or not 0 <= float(limit) < np.inf:
        raise RankRequestError(f"max_parameters must be a finite number >= 0 (0 = no limit), got {limit!r}")


def is_whole(values):
    """Whether counts are whole numbers, up to the rounding of a computed count (exp(log(3)))."""
    return np.abs(values - np.round(values)) < 1e-6


def check_task_facts(class_count, sample_count) -> None:
    """A task's facts, when given, must be plausible numbers."""
    for name, value, upper, least in (("class_count", class_count, MAX_CLASS_COUNT, 2),
                                      ("sample_count", sample_count, MAX_SAMPLE_COUNT, 1)):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        if not isinstance(value, (int, float, np.number)) or not least <= float(value) <= upper \
                or not is_whole(float(value)):
            raise RankRequestError(f"{name} must be a whole number in [{least}, {upper:g}] or missing, got {value!r}")


@functools.lru_cache(maxsize=1)
def public_domains() -> tuple[str, ...]:
    from fennec_mlflow.core.evaluation import load_task_facts

    return tuple(sorted(load_task_facts()["domain"].dropna().unique()))


TYPO_EDITS = 2  # a domain this many letters (inserted, deleted or changed) from a known one is a typo


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest letters inserted, deleted or changed to turn ``a`` into ``b``."""
    previous = list(range(len(b) + 1))
    for i, letter in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (letter != other)))
        previous = current
    return previous[-1]


def check_domain(domain, bundle: RankerBundle, where: str = ""):
    """The domain as the history spells it ("Industrial" is "industrial"); None or NaN when not given.
    A domain a letter or two off a known one (the history's or a public dataset's) is a typo, refused
    with the name meant; any other new domain is a fact: unlike every history domain."""
    if domain is None or (isinstance(domain, float) and np.isnan(domain)):
        return domain
    if not isinstance(domain, str):
        raise RankRequestError(f"{where}domain must be a text such as 'natural' or missing, got {domain!r}")
    spelt = {name.strip().lower(): name for name in bundle.domains}
    domain = spelt.get(domain.strip().lower(), domain)
    if not domain or domain in bundle.domains:
        return domain
    meant = min(sorted(set(bundle.domains) | set(public_domains())), key=lambda name: edit_distance(domain, name))
    if 0 < edit_distance(domain.lower(), meant.lower()) <= TYPO_EDITS:  # "medicl"; not "digits, inverted" for "digits"
        raise RankRequestError(f"{where}unknown domain {domain!r}; did you mean {meant!r}? (the history's "
                               f"domains: {', '.join(bundle.domains) or 'none'})")
    return domain


def new_domain_note(meta: pd.Series, bundle: RankerBundle) -> str | None:
    """The basis's word on a task whose domain is given but none of the history's (every domain column 0)."""
    columns = [f"domain={d}" for d in bundle.domains if f"domain={d}" in meta.index]
    if not columns or not (meta[columns] == 0).all():
        return None
    return f"its domain is none of the history's ({', '.join(bundle.domains)}): taken as unlike them all"


def task_meta_row(class_count, sample_count, domain, bundle: RankerBundle) -> pd.Series:
    check_task_facts(class_count, sample_count)
    domain = check_domain(domain, bundle)
    return knowledge_row(class_count, sample_count, domain, bundle.domains, bundle.task_meta_fill.index)


FACT_COLUMNS = ("class_count", "sample_count", "domain")
ID_COLUMN = "task_id"  # optional: echoed on every output row of that task


def _numbers(frame: pd.DataFrame, column: str, names=None) -> np.ndarray:
    """A numeric request column as floats (missing = NaN); text that is not a number is a 400.

    ``names``: the frame's column names as a set, when the caller has them (a lookup in a pandas
    string index costs tens of microseconds)."""
    if column not in (frame.columns if names is None else names):
        return np.full(len(frame), np.nan)
    values = frame[column]
    if values.dtype.kind in "fiu":
        return values.to_numpy(dtype=float)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any() or values.map(lambda v: isinstance(v, bool)).any():
        row = int(np.flatnonzero(bad.to_numpy() | values.map(lambda v: isinstance(v, bool)).to_numpy())[0])
        raise RankRequestError(f"row {row}: {column} must be a number, got {values.iloc[row]!r}")
    return numbers.to_numpy(dtype=float)


SAMPLE_COUNT_ALIAS = "train_size"  # the CLI's --train-size and the import's task_train_size
DATASET_COLUMN = "dataset"  # a public dataset's name, placed by its facts


def with_fact_aliases(frame: pd.DataFrame) -> pd.DataFrame:
    """The request with its facts under their own names: ``train_size`` is ``sample_count``, and a
    ``dataset`` column (a public dataset's name, as ``fennec rank --dataset``) fills each row's missing
    ``class_count``, ``sample_count`` and ``domain`` from fennec_mlflow/resources/task_facts.csv."""
    names = set(map(str, frame.columns.tolist()))
    if SAMPLE_COUNT_ALIAS in names:
        if "sample_count" in names:
            raise RankRequestError("send sample_count or its alias train_size, not both")
        frame = frame.rename(columns={SAMPLE_COUNT_ALIAS: "sample_count"})
    return with_dataset_facts(frame) if DATASET_COLUMN in names else frame


def history_task_named(name: str, history_tasks) -> str | None:
    """The history task that is the public dataset ``name`` names ("Oxford-IIIT Pets" and "pets"), or None."""
    from fennec_mlflow.core.evaluation import find_task_facts

    names = tuple(str(task) for task in history_tasks)
    if name in names:
        return name
    facts = find_task_facts(name)
    return None if facts is None else _history_datasets(names).get(facts["dataset"])


@functools.lru_cache(maxsize=8)
def _history_datasets(history_tasks: tuple[str, ...]) -> dict[str, str]:
    """public dataset -> the first history task named like it; once per recommender, not per request
    (7 ms for 225 history tasks)."""
    from fennec_mlflow.core.evaluation import find_task_facts

    found: dict[str, str] = {}
    for task in history_tasks:
        facts = find_task_facts(task)
        if facts is not None:
            found.setdefault(facts["dataset"], task)
    return found


def in_history_note(name: str, bundle: RankerBundle) -> str | None:
    """The basis's word on a dataset asked for that is one of the history's tasks, as `fennec rank` says it."""
    task = history_task_named(name, bundle.fennec.task_names_)
    if task is None:
        return None
    return (f"{name!r} is {'one of' if task == name else f'the dataset of {task!r}, one of'} this recommender's "
            "history tasks: its measured results were learned from, and this is Fennec's prediction for it, not them")


def with_dataset_facts(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without its ``dataset`` column, each row's missing facts filled from its public
    dataset's (the facts a row sends win); a name no public dataset answers to is a 400."""
    from fennec_mlflow.core.evaluation import find_task_facts

    datasets = frame[DATASET_COLUMN].tolist()
    frame = frame.drop(columns=DATASET_COLUMN)
    for column in FACT_COLUMNS:
        frame[column] = frame[column].astype(object) if column in frame.columns else None
    public = {"class_count": "class_count", "sample_count": "train_size", "domain": "domain"}
    for row, name in enumerate(datasets):
        if name is None or (isinstance(name, float) and np.isnan(name)):
            continue
        facts = find_task_facts(str(name))
        if facts is None:
            raise RankRequestError(f"row {row}: no public dataset answers to {name!r}; send its class_count, "
                                   "sample_count and domain instead")
        for column, fact in public.items():
            if pd.isna(frame.iat[row, frame.columns.get_loc(column)]):
                frame.iat[row, frame.columns.get_loc(column)] = facts[fact]
    return frame


@functools.lru_cache(maxsize=8)
def _proxy_columns(dim: int) -> tuple[list[str], frozenset[str]]:
    """The proxy column names of a dim-dimensional proxy, and every column a request may carry."""
    columns = [f"proxy_{i}" for i in range(dim)]
    return columns, frozenset([*columns, "image", "proxy", ID_COLUMN, *FACT_COLUMNS])


def _proxy_matrix(frame: pd.DataFrame, names: list[str], kinds: list[str], dim: int) -> np.ndarray:
    """(rows, dim) floats from the columns proxy_0.. or from one list-valued column ``proxy``."""
    if "proxy" in names:
        try:
            matrix = np.array([np.asarray(v, dtype=float).ravel() for v in frame["proxy"]], dtype=float)
        except (TypeError, ValueError) as exc:
            raise RankRequestError(f"'proxy' must hold a list of {dim} numbers per row") from exc
        if matrix.shape != (len(frame), dim):
            raise RankRequestError(f"'proxy' must hold a list of {dim} numbers per row")
        return matrix
    columns, _ = _proxy_columns(dim)
    where = {name: i for i, name in enumerate(names)}
    positions = [where.get(c, -1) for c in columns]
    if min(positions) < 0:
        missing = [c for c, i in zip(columns, positions) if i < 0]
        raise RankRequestError(
            f"this recommender places a task by its images: send either an 'image' column (base64 image files, "
            f"one per row) or the proxy features "
            f"proxy_0..proxy_{dim - 1} (or one list-valued column 'proxy'); "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
    if all(kind in "fiu" for kind in kinds):  # the usual request: one numeric block
        return frame.to_numpy(dtype=float)[:, positions]
    if all(kinds[i] in "fiu" for i in positions):
        return frame.iloc[:, positions].to_numpy(dtype=float)
    return np.column_stack([_numbers(frame, c) for c in columns])


def fast_path_tasks(frame: pd.DataFrame, bundle: RankerBundle) -> list[tuple[np.ndarray, pd.Series]]:
    """One (proxy features, task meta row) per request row, vectorised over the rows and checked."""
    names = [str(c) for c in frame.columns.tolist()]
    kinds = [d.kind for d in frame.dtypes.tolist()]
    _, allowed = _proxy_columns(bundle.proxy_dim)
    unknown = [c for c in names if c not in allowed]
    if unknown:
        proxy = (f"proxy_0..proxy_{bundle.proxy_dim - 1} (or 'proxy'), " if bundle.proxy_dim
                 else "")  # a model built without an image encoder takes task facts only
        raise RankRequestError(f"unknown column(s) {unknown[:5]}; send {proxy}class_count, sample_count (alias "
                               f"{SAMPLE_COUNT_ALIAS}), domain, {DATASET_COLUMN} (a public dataset's name), "
                               f"{ID_COLUMN}" + (" or 'image'" if bundle.proxy_dim else ""))
    proxy = (_proxy_matrix(frame, names, kinds, bundle.proxy_dim) if bundle.proxy_dim
             else np.zeros((len(frame), 0)))
    bad = ~np.isfinite(proxy).all(axis=1)
    if bad.any():
        raise RankRequestError(f"task {int(np.flatnonzero(bad)[0])}: proxy features contain NaN or inf")
    present = set(names)
    classes, samples = _numbers(frame, "class_count", present), _numbers(frame, "sample_count", present)
    for name, values, least, upper in (("class_count", classes, 2, MAX_CLASS_COUNT),
                                       ("sample_count", samples, 1, MAX_SAMPLE_COUNT)):
        wrong = ~np.isnan(values) & ~((values >= least) & (values <= upper) & is_whole(values))
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise RankRequestError(f"row {row}: {name} must be a whole number in [{least}, {upper:g}] or missing, "
                                   f"got {float(values[row]):g}")
    domains = frame["domain"].tolist() if "domain" in present else [None] * len(frame)
    domains = [check_domain(domain, bundle, f"row {row}: ") for row, domain in enumerate(domains)]
    columns = bundle.task_meta_fill.index
    with np.errstate(divide="ignore", invalid="ignore"):
        values = {"log_class_count": np.log(classes), "log_sample_count": np.log(samples)}
    for d in bundle.domains:
        values[f"domain={d}"] = np.array([domain_indicator(domain, d) for domain in domains])
    # unknown facts stay NaN (see knowledge.task_meta_row)
    meta = np.column_stack([values[c] for c in columns]) if len(columns) else np.zeros((len(frame), 0))
    return [(proxy[i], pd.Series(meta[i], index=columns)) for i in range(len(frame))]


def decode_images(encoded: pd.Series) -> np.ndarray:
    """base64 image files -> uint8 (n, S, S, 3) as ``fennec rank --target FOLDER`` loads a folder's files
    (S = ``config.IMAGE_SIZE``), so that the same images give the same proxy over REST and on the CLI."""
    from PIL import Image

    from fennec_mlflow.data.tasks import rgb_array

    if len(encoded) > MAX_IMAGES:
        raise RankRequestError(f"{len(encoded)} images in one request; send at most {MAX_IMAGES}")
    images = []
    for i, text in enumerate(encoded):
        try:
            with Image.open(io.BytesIO(base64.b64decode(text, validate=True))) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise RankRequestError(f"row {i}: a {img.width}x{img.height} image is over the limit of "
                                           f"{MAX_IMAGE_PIXELS} pixels; downscale it first")
                images.append(rgb_array(img, config.IMAGE_SIZE))
        except RankRequestError:
            raise
        except Exception as exc:
            raise RankRequestError(f"row {i}: 'image' is not a base64-encoded image file ({type(exc).__name__})") from exc
    if not images:
        raise RankRequestError("no images in the request")
    return np.stack(images)


def encode_image_files(images: np.ndarray) -> list[str]:
    """uint8 (n, H, W, 3) -> base64 PNG strings, the request format of the image path."""
    from PIL import Image

    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        out.append(base64.b64encode(buffer.getvalue()).decode())
    return out


class FennecRanker(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper: thin; the ranking itself is :meth:`Fennec.rank`."""

    def load_context(self, context):
        with open(context.artifacts["bundle"], "rb") as handle:
            self.bundle: RankerBundle = pickle.load(handle)
        self.encoder_file = context.artifacts.get("proxy_encoder")
        self._encoder = None

    def encoder(self):
        if self._encoder is None:
            from fennec_mlflow.data.proxy import load_encoder

            spec = self.bundle.encoder_spec
            if spec in (None, "", "none"):
                raise RankRequestError("this recommender was built without a proxy encoder (build --encoder none): "
                                       "send the task's class_count, sample_count and domain instead of images")
            self._encoder = load_encoder(f"file:{self.encoder_file}" if spec == BUNDLED_ENCODER else spec)
        return self._encoder

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if not getattr(self, "_threads_checked", False):
            self._threads_checked = True
            serving_blas_threads()
        try:
            ranking = self._rank(model_input, params)
            return json_safe(ranking) if answers_in_json() else ranking
        except FennecError as exc:
            # The scoring server answers an MlflowException with its own HTTP status (400 here)
            # and message at the top level; anything else is a bug and stays a 500 with a trace.
            raise RejectedRequest(str(exc)) from None

    def _rank(self, model_input: pd.DataFrame, params: dict | None) -> pd.DataFrame:
        params = {**default_params(), **(params or {})}
        check_request_params(params)
        bundle = self.bundle
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        datasets = (frame[DATASET_COLUMN].tolist() if DATASET_COLUMN in set(map(str, frame.columns.tolist()))
                    else [None] * len(frame))
        frame = with_fact_aliases(frame)
        present = set(map(str, frame.columns.tolist()))
        images = "image" in present and frame["image"].notna().any()
        if not images and len(frame) > MAX_TASK_ROWS:
            raise RankRequestError(f"{len(frame)} task rows in one request; send at most {MAX_TASK_ROWS}")
        if len(frame) == 0:
            raise RankRequestError("no task rows in the request: send one row per task")
        candidates = select_candidates(bundle, params)
        candidates, left_out = answers.constrain(bundle, params, candidates)
        known, known_converted = known_on_history_scale(parse_known_scores(params.get("known_scores") or "", bundle),
                                                        bundle)
        task_ids = None
        if images:
            from fennec_mlflow.data.proxy import image_proxy_features

            missing = frame["image"].isna().to_numpy()
            if missing.any():
                raise RankRequestError(f"row {int(np.flatnonzero(missing)[0])}: no image; an image request sends "
                                       "one image file per row")
            if len(frame) > MAX_IMAGES:
                raise RankRequestError(f"{len(frame)} images in one request; send at most {MAX_IMAGES}")
            # The rows of one task_id are one task's images (no task_id: all rows are one task).
            groups = [frame] if ID_COLUMN not in present else [
                rows for _, rows in frame.groupby(frame[ID_COLUMN].astype(str), sort=False, dropna=False)]
            if ID_COLUMN in present and frame[ID_COLUMN].isna().any():
                raise RankRequestError(f"row {int(np.flatnonzero(frame[ID_COLUMN].isna().to_numpy())[0])}: no "
                                       f"{ID_COLUMN}; when one image row names its task, every row must")
            requests, task_ids = [], [] if ID_COLUMN in present else None
            for index, rows in enumerate(groups):
                decoded = decode_images(rows["image"])
                proxy = image_proxy_features(self.encoder(), decoded, sample_size=bundle.proxy_sample_size)
                if not np.isfinite(proxy).all():
                    raise RankRequestError(f"task {index}: proxy features contain NaN or inf")
                requests.append((proxy, task_meta_row(_first(rows, "class_count"), len(decoded),
                                                      _first(rows, "domain"), bundle)))
                if task_ids is not None:
                    task_ids.append(_first(rows, ID_COLUMN))
        else:
            requests = fast_path_tasks(frame, bundle)
            if ID_COLUMN in present:
                task_ids = frame[ID_COLUMN].tolist()
        top_k = int(params["top_k"])
        scored = [c for c in OUTPUT_COLUMNS if c not in ("task_index", "basis")]
        parts: dict[str, list] = {c: [] for c in ["task_index", *scored, "basis"]}
        for index, (proxy, meta) in enumerate(requests):
            table = bundle.fennec.rank(meta, proxy, known_scores=known or None, models=candidates)
            told = table["known_score"].notna().to_numpy()
            known_rows = (table["score"].to_numpy(float)[told], table["known_score"].to_numpy(float)[told])
            if told.any():
                table = answers.known_at_their_accuracy(bundle, table, meta, known_rows)
            shown = len(table) if top_k == 0 else min(top_k, len(table))
            head = table.iloc[:shown]  # before to_numpy: the model names are not converted for every model
            head.attrs = dict(table.attrs)
            # row by row: only the rows answered (1 ms at 1,000 models); the told rows anchor the level
            head = answers.annotate(bundle, head, meta, known_rows if told.any() else None)
            dataset = datasets[index] if not images and isinstance(datasets[index], str) else None
            for note in (dataset and in_history_note(dataset, bundle), new_domain_note(meta, bundle), left_out,
                         known_converted, licence_by_name_note(bundle, head["model"])):
                if note:
                    head.attrs["basis"] += f"; {note}"
            for column in scored:
                parts[column].append(head[column].to_numpy())
            parts["task_index"].append(np.full(shown, index))
            parts["basis"].append(np.full(shown, head.attrs.get("basis", ""), dtype=object))
        ranking = pd.DataFrame({c: np.concatenate(v) for c, v in parts.items()})
        if task_ids is not None:  # the caller's own task names, next to task_index
            ranking.insert(1, ID_COLUMN, np.repeat(np.asarray(task_ids, dtype=object),
                                                   [len(v) for v in parts["task_index"]]))
        return ranking


def serving_blas_threads() -> None:
    """In the scoring server, BLAS on one thread (``FENNEC_SERVING_BLAS_THREADS``, default 1; 0 leaves it).

    The server runs requests on a thread pool beside its event loop; OpenBLAS's own threads spin
    after each call, and on a small machine they take the cores the server needs, while the
    fast path's products (1,000 x 4 and the like) gain nothing from them (paired runs on the shared
    2-core machine: 158-192 requests/s with it, 115-178 without; within that machine's noise, see
    docs/benchmarks.md, REST). Only in the server process
    (MLflow's scoring app is loaded): ``fennec rank``, ``mlflow models predict``, a notebook and the
    input-example check at logging time keep BLAS as it is. Torch's threads (image path) are not BLAS's.
    """
    import os
    import sys

    threads = int(os.environ.get("FENNEC_SERVING_BLAS_THREADS", "1") or 0)
    if threads <= 0 or "mlflow.pyfunc.scoring_server.app" not in sys.modules:  # not `mlflow models serve`
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it, BLAS keeps its default
        return
    threadpool_limits(limits=threads, user_api="blas")


def _first(frame: pd.DataFrame, column: str):
    if column not in frame.columns:
        return None
    values = frame[column].dropna()
    return values.iloc[0] if len(values) else None


def default_params() -> dict:
    return {"top_k": 10, "include": "", "exclude": "", "max_parameters": 0.0, "known_scores": "",
            **answers.default_params()}


def select_candidates(bundle: RankerBundle, params: dict) -> list[str] | None:
    """Candidate models after the include/exclude patterns and the parameter budget (None: all of them)."""
    if not params.get("include") and not params.get("exclude") and not float(params.get("max_parameters") or 0):
        return None  # every model: Fennec.rank skips the name lookup
    names = list(bundle.model_meta.index)
    try:
        if params.get("include"):
            names = [n for n in names if re.search(params["include"], n)]
        if params.get("exclude"):
            names = [n for n in names if not re.search(params["exclude"], n)]
    except re.error as exc:
        raise RankRequestError(f"include/exclude must be regular expressions: {exc}") from exc
    limit = float(params.get("max_parameters") or 0)
    if limit > 0:
        counted = [n for n in names if np.isfinite(bundle.model_parameters.get(n, np.inf))]
        if not counted:
            raise RankRequestError(f"max_parameters needs parameter counts, and none of the {len(names)} candidates "
                                   "has one (an imported table without a Params column); leave it out")
        names = [n for n in counted if bundle.model_parameters[n] <= limit]
    if not names:
        raise RankRequestError("no candidate model is left after include/exclude/max_parameters")
    return names


def licence_by_name_note(bundle: RankerBundle, shown) -> str | None:
    """The basis's word on licences shown that only a name match gave (an imported table's "resnet50"
    may be another resnet50 than the built-in zoo's), with or without a licence filter."""
    constraints = bundle.constraints
    if constraints is None or "licence_from" not in constraints:
        return None
    by_name = [str(m) for m in shown if constraints["licence_from"].get(m) == "zoo name"]
    if not by_name:
        return None
    return (f"the licence of {len(by_name)} shown model(s) ({', '.join(map(repr, by_name[:3]))}"
            f"{', ...' if len(by_name) > 3 else ''}) is the built-in zoo's model of that name, which the table's "
            "names only match: check it (a licence column in the table states them)")


def parse_known_scores(text: str, bundle: RankerBundle) -> dict[str, float]:
    if not text:
        return {}
    try:
        known = {str(k): float(v) for k, v in json.loads(text).items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise RankRequestError(f"known_scores must be a string holding a JSON object {{\"model name\": score, ...}} "
                               f"on the history's scale, e.g. '{known_scores_example(bundle)}'") from exc
    models = [str(name) for name in bundle.model_meta.index]
    unknown = sorted(set(known) - set(models))
    if unknown:
        named = ", ".join(repr(name) + did_you_mean(name, models) for name in unknown[:5])
        raise RankRequestError(f"known_scores names models the recommender does not know: {named}")
    return known


def _accuracy_scale(bundle: RankerBundle) -> float | None:
    """The history's accuracy scale (1.0 or 100.0), None when it holds no accuracies (or an older bundle)."""
    accuracy = getattr(bundle, "accuracy", None)
    return accuracy.scale if accuracy is not None and accuracy.available else None


def known_scores_example(bundle: RankerBundle) -> str:
    """A known_scores value for this recommender: one of its models, on its history's scale."""
    scale = _accuracy_scale(bundle)
    return json.dumps({str(bundle.model_meta.index[0]): 0.91 if scale == 1.0 else 91.0})


def known_on_history_scale(known: dict[str, float], bundle: RankerBundle) -> tuple[dict[str, float], str | None]:
    """Known accuracies on the history's scale, and what was converted: percents told to a history of
    fractions (or the reverse) are divided (multiplied) by 100. Two scores on the wrong scale would
    otherwise be read in the history's spread: 91 and 93.5 against fractions stood 60 z apart.
    A mix of the two, or a value off both scales, is refused."""
    scale = _accuracy_scale(bundle)
    if not known or scale is None:
        return known, None
    values = np.array(list(known.values()))
    off = (~np.isfinite(values)) | (values < 0) | (values > 100)
    fractions = values <= 1.0
    if off.any() or (fractions.any() and not fractions.all() and scale == 1.0):
        raise RankRequestError(f"known_scores {json.dumps(known)} are not accuracies on one scale; this recommender's "
                               f"history is in [0, {scale:g}]: give them so, e.g. '{known_scores_example(bundle)}'")
    if scale == 1.0 and not fractions.any():
        return ({name: value / 100 for name, value in known.items()},
                "known scores given in percent, read as fractions like the history's (divided by 100)")
    if scale == 100.0 and fractions.all():
        return ({name: value * 100 for name, value in known.items()},
                "known scores given as fractions, read in percent like the history's (multiplied by 100)")
    return known, None


def did_you_mean(name: str, models: list[str]) -> str:
    """The hint " (did you mean 'real:usps_cnn'?)" for ``usps_cnn``: a model whose name after its hub prefix is
    ``name``, else the closest name; "" when none is close."""
    same = [model for model in models if model.split(":", 1)[-1] == name.split(":", 1)[-1]]
    close = same or difflib.get_close_matches(name, models, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def json_safe(ranking: pd.DataFrame) -> pd.DataFrame:
    """``ranking`` with None where a float column holds NaN: the scoring server writes its answer with
    ``json.dump``, which writes NaN, and strict JSON parsers refuse it; None is written as null."""
    out = ranking.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]) and out[column].isna().any():
            out[column] = out[column].astype(object).where(out[column].notna(), None)
    return out


# The modules of MLflow's processes that answer a model's predictions in JSON: `mlflow models serve`,
# its stdin server, and the backend of `mlflow models predict`. Logging a model imports
# mlflow.pyfunc.scoring_server itself (to check the input example), so that one says nothing.
JSON_ANSWERING_MODULES = ("mlflow.pyfunc.scoring_server.app", "mlflow.pyfunc.stdin_server",
                          "mlflow.pyfunc._mlflow_pyfunc_backend_predict")


def answers_in_json() -> bool:
    """Whether this process is one of MLflow's that answer in JSON (:data:`JSON_ANSWERING_MODULES`, loaded
    or run as ``__main__``); in-process callers keep NaN in float columns."""
    import sys

    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    loaded = set(sys.modules) | {getattr(main, "name", "")}
    return any(name in loaded for name in JSON_ANSWERING_MODULES)


def input_columns(bundle: RankerBundle) -> list[ColSpec]:
    """The request columns, as documentation: the served signature leaves them out (see :func:`signature`)."""
    columns = [ColSpec("string", "image", required=False), ColSpec("string", ID_COLUMN, required=False)]
    columns += [ColSpec("double", f"proxy_{i}", required=False) for i in range(bundle.proxy_dim)]
    columns += [ColSpec("double", "class_count", required=False), ColSpec("double", "sample_count", required=False),
                ColSpec("string", "domain", required=False)]
    return columns


def signature(bundle: RankerBundle) -> ModelSignature:
    """Outputs and params; no input schema, on purpose.

    MLflow casts and checks every column of an input schema one by one on every request: with the
    138 optional ``proxy_*`` columns that was ~85% of a fast-path request's time over REST
    (docs/benchmarks.md, REST). The model checks its input itself instead (:func:`fast_path_tasks`:
    types, ranges, unknown columns, all answered with HTTP 400), and the logged input example shows
    the request format.
    """
    outputs = Schema([ColSpec("long", "task_index"), ColSpec("string", ID_COLUMN, required=False),
                      ColSpec("long", "rank"), ColSpec("string", "model"),
                      ColSpec("double", "score"), ColSpec("double", "bias_score", required=False),
                      ColSpec("double", "transfer_score"), ColSpec("double", "meta_score"),
                      *answers.output_specs(), ColSpec("string", "basis", required=False)])
    defaults = default_params()
    params = ParamSchema([ParamSpec("top_k", "long", defaults["top_k"]), ParamSpec("include", "string", ""),
                          ParamSpec("exclude", "string", ""), ParamSpec("max_parameters", "double", 0.0),
                          ParamSpec("known_scores", "string", ""), *answers.param_specs()])
    return ModelSignature(inputs=None, outputs=outputs, params=params)


MODEL_CODE = Path(__file__).with_name("model_code.py")  # MLflow logs the model from this file


@contextlib.contextmanager
def _model_files(bundle: RankerBundle, encoder_file: Path | None) -> Iterator[dict]:
    """The artifacts of one saved model: the pickled bundle and, when given, the proxy encoder file."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle_path = Path(tmp) / "bundle.pkl"
        with open(bundle_path, "wb") as handle:
            pickle.dump(bundle, handle)
        artifacts = {"bundle": str(bundle_path)}
        if encoder_file is not None:
            artifacts["proxy_encoder"] = str(encoder_file)
        yield {"python_model": str(MODEL_CODE), "artifacts": artifacts, "signature": signature(bundle),
               "pip_requirements": _requirements(), "code_paths": [str(PACKAGE_DIR)]}


def save_model(bundle: RankerBundle, path: str | Path, *, encoder_file: Path | None = None,
               input_example: pd.DataFrame | None = None) -> None:
    """Save the recommender as a pyfunc model in the local folder ``path`` (like ``mlflow.pyfunc.save_model``)."""
    with _model_files(bundle, encoder_file) as files:
        mlflow.pyfunc.save_model(str(path), input_example=input_example, **files)


def log_model(bundle: RankerBundle, name: str = "fennec", *, encoder_file: Path | None = None,
              registered_model_name: str | None = None, input_example: pd.DataFrame | None = None):
    """Log the recommender as a pyfunc model of the active run (optionally registered); returns MLflow's ModelInfo."""
    with _model_files(bundle, encoder_file) as files:
        return mlflow.pyfunc.log_model(name=name, input_example=input_example,
                                       registered_model_name=registered_model_name, **files)


def load_model(model_uri: str) -> FennecRanker:
    """The recommender behind ``model_uri`` (``models:/fennec@champion``, ``runs:/...``, a folder)."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model()


def set_champion(version: str | int, mlflow_client: mlflow.MlflowClient | None = None,
                 name: str = REGISTERED_NAME) -> None:
    """Point the alias ``champion`` of the registered model ``name`` at ``version``."""
    (mlflow_client or mlflow.MlflowClient()).set_registered_model_alias(name, CHAMPION, str(version))


PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the fennec_mlflow package, shipped inside every model


def _requirements() -> list[str]:
    """This package's own requirements, pinned to the versions installed here.

    The package itself is not on any index: its code travels in the model (``code_paths``), so
    ``mlflow models serve`` with MLflow's default environment manager rebuilds it from PyPI alone.
    """
    wanted = [re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0] for line in requires("fennec-mlflow") or []
              if "extra ==" not in line]
    return sorted(f"{name}=={version(name)}" for name in wanted)


def champion_exists(mlflow_client: mlflow.MlflowClient | None = None) -> bool:
    mlflow_client = mlflow_client or mlflow.MlflowClient()
    try:
        mlflow_client.get_model_version_by_alias(REGISTERED_NAME, CHAMPION)
        return True
    except mlflow.exceptions.MlflowException:
        return False


def other_champions(mlflow_client: mlflow.MlflowClient | None = None) -> list[str]:
    """``models:/NAME@champion`` of each registered model other than ``fennec`` that has a champion
    (e.g. one built with ``fennec build --registered-model``), by name."""
    mlflow_client = mlflow_client or mlflow.MlflowClient()
    return sorted(f"models:/{model.name}@{CHAMPION}" for model in mlflow_client.search_registered_models()
                  if model.name != REGISTERED_NAME and CHAMPION in (model.aliases or {}))

