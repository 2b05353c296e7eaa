"""What the served ranking adds to Fennec's scores: predicted accuracy with an interval, and constraints.

Kept apart from the pyfunc wrapper (:mod:`fennec_mlflow.serving.flavor`), which calls
:func:`constrain` on the candidates and :func:`annotate` on each task's ranking.

Output columns (:data:`ANSWER_COLUMNS`): ``predicted_accuracy``, ``accuracy_low``,
``accuracy_high`` (the fine-tune accuracy the model is predicted to reach on the task, on the
history's scale, and its interval; :mod:`fennec_mlflow.core.accuracy`; NaN when the history is
not on an accuracy scale, and ``basis`` then says the scores are relative), ``latency_ms`` and
``peak_memory_mb`` (measured by ``fennec profile`` on the user's machine, at
``profile_input_size`` pixels; NaN when never measured) and ``licence`` (an imported table's licence
column, else the built-in zoo's model of that name, else a profile run's; empty when unknown; a licence
filter says which models it kept only on an imported name matching the zoo's).

Params: ``max_latency_ms`` and ``max_memory_mb`` (0 = no limit; a model never profiled is left
out under a limit), ``licence`` (comma-separated licence names; a model passes when its licence
starts with one of them, case-insensitively, e.g. ``MIT,Apache,BSD``; unknown licences are left
out; empty or ``any``: no licence filter).

The basis also says which fine-tune regime the recommender predicts (issue 16, "recipe"): the
build's ``info["regime"]``, e.g. "predicts full fine-tune accuracy" or "predicts linear-probe
accuracy" (older bundles, which do not record it, say nothing of it).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.types import ColSpec, ParamSpec

from fennec_mlflow.core.accuracy import ACCURACY_COLUMNS
from fennec_mlflow.errors import InvalidInputError

CONSTRAINT_PARAMS = {"max_latency_ms": 0.0, "max_memory_mb": 0.0, "licence": ""}
ANSWER_COLUMNS = [*ACCURACY_COLUMNS, "latency_ms", "peak_memory_mb", "licence"]
# Below this many history tasks the interval's coverage strays from its level: a user's store of 5 tasks
# held 62.5 % at a nominal 80 %; sub-tables of 7 to 11 tasks held 79.8 % (interval_with_known_scores.py).
FEW_CALIBRATION_TASKS = 7
REGIME_WORDS = {"full": "full fine-tune accuracy", "linear-probe": "linear-probe accuracy"}


def predicted_regime(bundle) -> str | None:
    """The fine-tune regime ``bundle`` was built to predict, or None when it does not say."""
    return (getattr(bundle, "info", None) or {}).get("regime") or None


class ConstraintError(InvalidInputError):
    """A constraint param is malformed, or leaves no candidate."""


def default_params() -> dict:
    return dict(CONSTRAINT_PARAMS)


def param_specs() -> list[ParamSpec]:
    return [ParamSpec("max_latency_ms", "double", 0.0), ParamSpec("max_memory_mb", "double", 0.0),
            ParamSpec("licence", "string", "")]


def output_specs() -> list[ColSpec]:
    return [*(ColSpec("double", c, required=False) for c in ACCURACY_COLUMNS),
            ColSpec("double", "latency_ms", required=False), ColSpec("double", "peak_memory_mb", required=False),
            ColSpec("string", "licence", required=False)]


def _limit(params: dict, name: str) -> float:
    value = params.get(name) or 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= float(value) < np.inf:
        raise ConstraintError(f"{name} must be a finite number >= 0 (0 = no limit), got {value!r}")
    return float(value)


def _licences(params: dict) -> list[str]:
    text = params.get("licence") or ""
    if not isinstance(text, str):
        raise ConstraintError(f"licence must be a comma-separated string of licence names, got {text!r}")
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    return [] if names == ["any"] else names


def constraints_of(bundle) -> pd.DataFrame | None:
    """The bundle's per-model constraints table (None for bundles built before constraints existed)."""
    return getattr(bundle, "constraints", None)


def constrain(bundle, params: dict, candidates: list[str] | None) -> tuple[list[str] | None, str]:
    """``candidates`` (None: every model) after the latency, memory and licence filters, and a note
    naming the models left out only because their licence or profile is not known ("" if none):
    a filter that silently drops the best model reads as if that model were not recommended."""
    max_latency, max_memory, licences = _limit(params, "max_latency_ms"), _limit(params, "max_memory_mb"), _licences(params)
    if not (max_latency or max_memory or licences):
        return candidates, ""
    names = list(bundle.model_meta.index) if candidates is None else list(candidates)
    table = constraints_of(bundle)
    if table is None:
        table = pd.DataFrame(index=pd.Index(names), columns=["latency_ms", "peak_memory_mb", "licence"], dtype=float)
    table = table.reindex(names)
    keep = pd.Series(True, index=names)
    unknown = {}  # why a model was left out without being known to fail: the missing fact, its models
    if max_latency or max_memory:
        measured = pd.to_numeric(table["latency_ms"], errors="coerce").notna()
        unknown["no measured profile (`fennec profile`)"] = measured[~measured].index.tolist()
    if max_latency:
        keep &= pd.to_numeric(table["latency_ms"], errors="coerce").le(max_latency).fillna(False).astype(bool)
    if max_memory:
        keep &= pd.to_numeric(table["peak_memory_mb"], errors="coerce").le(max_memory).fillna(False).astype(bool)
    if licences:
        known = table["licence"].map(lambda v: str(v).lower() if isinstance(v, str) and v else "")
        keep &= known.map(lambda v: bool(v) and any(v.startswith(name) for name in licences)).astype(bool)
        unknown["no known licence"] = known[known == ""].index.tolist()
    chosen = [n for n in names if keep[n]]
    if not chosen:
        measured = int(pd.to_numeric(table["latency_ms"], errors="coerce").notna().sum())
        licensed = int(table["licence"].map(lambda v: isinstance(v, str) and bool(v)).sum())
        why = [f"{measured} of {len(names)} candidates have a measured profile (`fennec profile`, then rebuild)"
               ] if max_latency or max_memory else []
        why += [f"{licensed} of {len(names)} have a known licence (from an imported table's licence column, the "
                "built-in zoo's model of that name, or a `fennec profile` run)"] if licences else []
        raise ConstraintError(
            f"no candidate model meets max_latency_ms={max_latency:g}, max_memory_mb={max_memory:g}, "
            f"licence={params.get('licence') or 'any'!r} ({'; '.join(why)}; relax the limits)")
    unknown = {why: models for why, models in unknown.items() if models}
    said = [f"{len(models)} left out for {why}: {_some(models)}" for why, models in unknown.items()]
    return chosen, "; ".join(said)


def _some(models: list) -> str:
    return f"{', '.join(map(str, models[:5]))}{' ...' if len(models) > 5 else ''}"


def known_at_their_accuracy(bundle, table: pd.DataFrame, task_meta_row, known) -> pd.DataFrame:
    """One task's full ranking with its measured models re-placed by the accuracy they measured.

    The recommender places them on its z scale with the history's typical task spread; the answer
    shows the others' predicted accuracy on this task's own level and spread (near-saturated tasks
    spread little). So a model measured at 98.5 could be listed below models predicted at 97.5-98.2:
    here each measured model gets the score the accuracy model maps to its measured accuracy, and
    the ranking is re-sorted. ``known``: (scores, known scores) of the models told, as given to
    :func:`annotate`; the table is returned as it is where no accuracy is predicted or the known
    scores are off the history's scale.
    """
    accuracy = getattr(bundle, "accuracy", None)
    if known is None or accuracy is None or not accuracy.available or accuracy.known_scale_problem(known[1]):
        return table
    told = table["known_score"].notna().to_numpy()
    score = table["score"].to_numpy(dtype=float).copy()
    score[told] = accuracy.score_of_accuracy(table["known_score"].to_numpy(dtype=float)[told], task_meta_row, known)
    # ties (two scores clipped at the scale's end) go to the higher measurement, then the order given
    order = np.lexsort((np.arange(len(table)), -table["known_score"].fillna(-np.inf).to_numpy(float), -score))
    out = table.assign(score=score).iloc[order].reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    out.attrs = dict(table.attrs)
    return out


def annotate(bundle, table: pd.DataFrame, task_meta_row=None, known=None) -> pd.DataFrame:
    """One task's ranking with :data:`ANSWER_COLUMNS`; ``attrs["basis"]`` says whether scores are relative.

    ``known``: (scores, known scores) of the models told, which anchor the predicted accuracy's level
    (:meth:`AccuracyModel.annotate`); by default those rows of ``table``.
    """
    accuracy = getattr(bundle, "accuracy", None)
    predicts = accuracy is not None and accuracy.available
    basis = table.attrs.get("basis", "")
    regime = predicted_regime(bundle)
    if regime:  # without predicted accuracy the scores still follow that regime's accuracies, relatively
        basis += f"; {'predicts' if predicts else 'ranks by'} {REGIME_WORDS.get(regime, f'{regime} accuracy')}"
    if predicts:
        out = accuracy.annotate(table, task_meta_row, known=known)
        basis += f"; predicted accuracy with a {100 * accuracy.level:.0f}% conformal interval"
        calibrated_on = len(getattr(accuracy, "tasks_", ()))
        if 0 < calibrated_on < FEW_CALIBRATION_TASKS:
            basis += (f" learned on {calibrated_on} history tasks only, so its coverage is rough (`fennec evaluate` "
                      "measures it)")
        if out.attrs["accuracy_anchor"]:
            basis += f" ({out.attrs['accuracy_anchor']})"
    else:
        out = table.copy()
        for column in ACCURACY_COLUMNS:
            out[column] = np.nan
        basis += "; scores are relative (no predicted accuracy: " + (
            accuracy.note.split(": ", 1)[-1] if accuracy is not None else "the recommender was built without one") + ")"
    constraints = constraints_of(bundle)
    if constraints is not None:
        rows = constraints.reindex(out["model"].astype(str))
        out["latency_ms"] = pd.to_numeric(rows["latency_ms"], errors="coerce").to_numpy(dtype=float)
        out["peak_memory_mb"] = pd.to_numeric(rows["peak_memory_mb"], errors="coerce").to_numpy(dtype=float)
        out["licence"] = rows["licence"].map(lambda v: v if isinstance(v, str) else "").to_numpy(dtype=object)
    else:
        out["latency_ms"] = np.nan
        out["peak_memory_mb"] = np.nan
        out["licence"] = ""
    out.attrs = {**table.attrs, "basis": basis}
    return out
