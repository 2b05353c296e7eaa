"""Predicted fine-tune accuracy with an interval, from a recommender's predicted per-task z-score.

A Fennec score is a z-score on the new task: 0 = an average model of the history, 1 = one
standard deviation better. A practitioner wants an accuracy. Everything here works on the
**logit scale** of the accuracy, ``l = logit(accuracy / scale)`` (clipped at 0.5 % and 99.5 %),
where tasks near the ceiling and tasks in the middle spread alike: a model's logit accuracy is
``task mean + task std x z``. For a new task both are unknown, so they are predicted from the
history's tasks: the median task mean and the median task std (robust to a few odd tasks), or,
given task facts, a ridge regression of the task mean and log std on them, used only when it
predicted held-out history tasks clearly better (5 %) than the medians.

**Interval: split conformal, leave one task out.** Every history task j is predicted from the
others: its mean and std from the other tasks, each model's z-score from the other tasks (its
mean z-score over them, i.e. popularity, by default; or the caller's out-of-fold predictions,
``oof_z``). The residuals ``true - predicted`` (logit scale) of all known cells are the
calibration set; the interval at level ``1 - a`` adds their ``a/2`` and ``1 - a/2`` quantiles
(finite-sample corrected) to the predicted logit. Back on the accuracy scale the interval is
asymmetric and never leaves [0, 100] % (or [0, 1]). The guarantee is marginal over cells,
assuming the new task is exchangeable with the history's tasks; most of the error is the task's
level (its cells miss together), so with a handful of history tasks the realised coverage is
coarse, and an unusual task (e.g. far harder than every history task) falls outside.

**Only on an accuracy scale.** :func:`accuracy_scale` accepts a history whose values all lie in
[0, 1] (fractions) or all in [0, 100] with every task above 1 (percent). Anything else (FDA
scores, LogME evidence, a mix of scales) gets no accuracy: ``available`` is False and ``note``
says that the scores are relative.

Pure numpy/pandas: no MLflow, no torch. The fitted object pickles.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fennec_mlflow.errors import InvalidInputError

DEFAULT_LEVEL = 0.8
ACCURACY_COLUMNS = ("predicted_accuracy", "accuracy_low", "accuracy_high")
RELATIVE_NOTE = ("the history is not on an accuracy scale (values in [0, 1] or [0, 100]), so the scores are "
                 "relative: they order the models but predict no accuracy")
_MIN_TASKS = 3  # leave-one-task-out calibration needs at least this many history tasks
# Known scores whose mean offset from the predicted level is beyond this many of its standard
# deviations under the history come from a task unlike any of it (e.g. far harder): the empirical
# Bayes weight, learned on tasks alike in level, would nearly ignore them, so they set the level.
UNLIKE_HISTORY_Z = 3.0
_MIN_CELLS = 10


def accuracy_scale(P: pd.DataFrame) -> tuple[float | None, str]:
    """(the scale's maximum: 1.0 or 100.0, or None; why) of a models x tasks history."""
    values = np.asarray(P, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None, "the history has no values"
    if finite.min() < 0:
        return None, "the history has negative values: not accuracies"
    if finite.max() <= 1.0:
        return 1.0, "accuracies as fractions in [0, 1]"
    if finite.max() <= 100.0:
        task_max = np.nanmax(np.where(np.isfinite(values), values, np.nan), axis=0)
        fractional = [str(t) for t, m in zip(P.columns, task_max) if np.isfinite(m) and m <= 1.0]
        if fractional:
            return None, (f"the history mixes scales: task(s) {fractional[:3]} lie in [0, 1] while others reach "
                          f"{finite.max():.3g}")
        return 100.0, "accuracies in percent, in [0, 100]"
    return None, f"the history has values up to {finite.max():.3g}: not accuracies in [0, 1] or [0, 100]"


def conformal_quantile(residuals: np.ndarray, probability: float) -> float:
    """The split-conformal quantile of ``residuals`` at ``probability`` (finite-sample corrected)."""
    residuals = np.sort(np.asarray(residuals, dtype=float))
    n = residuals.size
    if probability >= 0.5:
        rank = min(n, math.ceil((n + 1) * probability))
    else:
        rank = max(1, math.floor((n + 1) * probability))
    return float(residuals[rank - 1])


def _task_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-task mean and population std over the known cells (as the recommender standardises)."""
    mean = np.nanmean(values, axis=0)
    std = np.nanstd(values, axis=0)
    return mean, np.where(std > 0, std, np.nan)


def loto_popularity_z(P: pd.DataFrame) -> pd.DataFrame:
    """Each cell's z-score predicted from the other tasks: the model's mean z-score over them (NaN if none)."""
    values = P.to_numpy(dtype=float)
    mean, std = _task_stats(values)
    z = (values - mean) / np.where(np.isfinite(std), std, 1.0)
    known = np.isfinite(z)
    total = np.where(known, z, 0.0).sum(axis=1, keepdims=True)
    count = known.sum(axis=1, keepdims=True)
    others = np.where(known, (total - np.where(known, z, 0.0)) / np.maximum(count - 1, 1), total / np.maximum(count, 1))
    others = np.where((count - known) > 0, others, np.nan)
    return pd.DataFrame(others, index=P.index, columns=P.columns)


class _TaskLevel:
    """Predicts a new task's mean and log std: medians of the history's, or a ridge on task facts."""

    def __init__(self, means: np.ndarray, log_stds: np.ndarray, facts: np.ndarray | None, ridge: float):
        self.mean_median = float(np.median(means))
        self.log_std_median = float(np.median(log_stds))
        self.weights = None
        if facts is not None:
            self.centre, self.scale = facts.mean(axis=0), facts.std(axis=0)
            self.scale = np.where(self.scale > 0, self.scale, 1.0)
            x = (facts - self.centre) / self.scale
            targets = np.column_stack([means - means.mean(), log_stds - log_stds.mean()])
            self.weights = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ targets)
            self.offsets = np.array([means.mean(), log_stds.mean()])

    def predict(self, facts: np.ndarray | None) -> tuple[float, float]:
        if self.weights is None or facts is None:
            return self.mean_median, float(np.exp(self.log_std_median))
        mean, log_std = ((facts - self.centre) / self.scale) @ self.weights + self.offsets
        return float(mean), float(np.exp(log_std))


@dataclass
class AccuracyModel:
    """Maps a predicted per-task z-score to a predicted accuracy on a new task, with a conformal interval.

    Parameters
    ----------
    level : float
        Nominal coverage of the interval, in (0, 1); default 0.8 (an 80 % interval).
    task_facts_ridge : float
        Ridge penalty of the task-level regression on task facts (inputs standardised).

    After :meth:`fit`: ``available`` (False when the history is not on an accuracy scale or too
    thin), ``note`` (why not, or what the prediction rests on), ``scale`` (1.0 or 100.0),
    ``residual_quantiles_`` (the logit-scale offsets of the interval), ``calibration_cells_``.
    See the module docstring.
    """

    level: float = DEFAULT_LEVEL
    task_facts_ridge: float = 3.0
    available: bool = field(default=False, init=False)
    note: str = field(default="not fitted", init=False)
    scale: float | None = field(default=None, init=False)

    @classmethod
    def unavailable(cls, why: str, level: float = DEFAULT_LEVEL) -> AccuracyModel:
        """A model that predicts no accuracy, saying why (e.g. the history is FDA scores)."""
        model = cls(level=level)
        model.note = f"{RELATIVE_NOTE}: {why}"
        return model

    # ------------------------------------------------------------------ fit
    def fit(self, P: pd.DataFrame, oof_z: pd.DataFrame | None = None,
            task_meta: pd.DataFrame | None = None) -> AccuracyModel:
        """Learn the task level and the interval's residual quantiles from the history ``P``.

        ``oof_z``: out-of-fold predicted z-scores of the history's cells (models x tasks, each task
        predicted by a fit that did not see it); default :func:`loto_popularity_z`.
        ``task_meta``: numeric task facts indexed by task (e.g. log class count); used for the task
        level only when it beats the medians leave-one-task-out.
        """
        if not 0 < float(self.level) < 1:
            raise InvalidInputError(f"the interval level must lie in (0, 1), e.g. 0.8; got {self.level!r}")
        if not isinstance(P, pd.DataFrame):
            raise InvalidInputError(f"P must be a models x tasks DataFrame, got {type(P).__name__}")
        self.available, self.scale = False, None
        scale, why = accuracy_scale(P)
        if scale is None:
            self.note = f"{RELATIVE_NOTE}: {why}"
            return self
        self.scale = scale
        values = self._logit(P.to_numpy(dtype=float))  # everything below works on the logit scale
        mean, std = _task_stats(values)
        usable = np.isfinite(std) & (np.isfinite(values).sum(axis=0) >= 2)
        if usable.sum() < _MIN_TASKS:
            self.scale = None
            self.note = (f"predicted accuracy needs at least {_MIN_TASKS} history tasks with 2 or more distinct "
                         f"accuracies to calibrate its interval; the history has {int(usable.sum())}")
            return self
        P = P.loc[:, usable]
        values, mean, std = values[:, usable], mean[usable], std[usable]
        oof = loto_popularity_z(P) if oof_z is None else oof_z.reindex(index=P.index, columns=P.columns)
        oof = oof.to_numpy(dtype=float)
        self.tasks_ = [str(t) for t in P.columns]
        facts = self._facts(task_meta, P.columns)
        log_std = np.log(std)
        use_facts = False
        if facts is not None:
            errors = {flag: self._loto_level_error(mean, log_std, facts if flag else None) for flag in (False, True)}
            use_facts = errors[True] < 0.95 * errors[False]  # clearly better, not by chance
        self.uses_task_facts_ = use_facts
        residuals, level_errors, within_task = [], [], []
        for j in range(values.shape[1]):
            others = np.arange(values.shape[1]) != j
            level = _TaskLevel(mean[others], log_std[others], facts[others] if use_facts else None,
                               self.task_facts_ridge)
            task_mean, task_std = level.predict(facts[j] if use_facts else None)
            cells = np.isfinite(values[:, j]) & np.isfinite(oof[:, j])
            task_residuals = values[cells, j] - (task_mean + task_std * oof[cells, j])
            residuals.append(task_residuals)
            if task_residuals.size >= 2:
                level_errors.append(task_residuals.mean())
                within_task.append(task_residuals - task_residuals.mean())
        # How far a task's level strays from its prediction, and how far its cells stray from their
        # level: the weights of known scores against that prediction (:meth:`predict`, ``known``).
        self.level_variance_ = float(np.var(level_errors)) if len(level_errors) >= 2 else 0.0
        self.cell_variance_ = float(np.var(np.concatenate(within_task))) if within_task else 0.0
        residuals = np.concatenate(residuals) if residuals else np.array([])
        if residuals.size < _MIN_CELLS:
            self.scale = None
            self.note = f"predicted accuracy needs at least {_MIN_CELLS} calibration cells; the history has {residuals.size}"
            return self
        alpha = 1 - float(self.level)
        self.residual_quantiles_ = (conformal_quantile(residuals, alpha / 2), conformal_quantile(residuals, 1 - alpha / 2))
        self.calibration_cells_ = int(residuals.size)
        self._level = _TaskLevel(mean, log_std, facts if use_facts else None, self.task_facts_ridge)
        self.task_mean_ = float(self._expit(self._level.mean_median))  # the median task, in accuracy units
        self.available = True
        unit = "%" if scale == 100.0 else " (fraction)"
        self.note = (f"predicted accuracy{unit} = task mean + task std x score, the new task's mean and std "
                     f"{'regressed on its facts' if use_facts else 'the median of the history tasks'} "
                     f"(median task {self.task_mean_:.3g}); {100 * self.level:.0f}% interval "
                     f"by split conformal, leave-one-task-out over {len(self.tasks_)} history tasks "
                     f"({self.calibration_cells_} cells)")
        return self

    def _facts(self, task_meta: pd.DataFrame | None, tasks: pd.Index) -> np.ndarray | None:
        if task_meta is None or task_meta.shape[1] == 0:
            self.fact_columns_ = None
            return None
        table = task_meta.reindex(tasks).apply(pd.to_numeric, errors="coerce")
        if table.isna().all(axis=None):
            self.fact_columns_ = None
            return None
        self.fact_columns_ = [str(c) for c in table.columns]
        self.fact_fill_ = table.mean().fillna(0.0)
        return table.fillna(self.fact_fill_).to_numpy(dtype=float)

    def _loto_level_error(self, mean: np.ndarray, log_std: np.ndarray, facts: np.ndarray | None) -> float:
        errors = []
        for j in range(mean.size):
            others = np.arange(mean.size) != j
            level = _TaskLevel(mean[others], log_std[others], None if facts is None else facts[others],
                               self.task_facts_ridge)
            predicted, _ = level.predict(None if facts is None else facts[j])
            errors.append(abs(mean[j] - predicted))
        return float(np.mean(errors))

    def _logit(self, accuracy: np.ndarray) -> np.ndarray:
        # Clip half a percent from each bound: a task at 100 % stays finite and ranks as near-perfect.
        p = np.clip(np.asarray(accuracy, dtype=float) / self.scale, 0.005, 0.995)
        return np.log(p / (1 - p))

    def _expit(self, logit: np.ndarray) -> np.ndarray:
        return self.scale / (1 + np.exp(-np.asarray(logit, dtype=float)))

    # ------------------------------------------------------------------ predict
    def task_level(self, task_meta_row=None) -> tuple[float, float]:
        """(predicted mean, predicted std) of a new task's logit accuracies (logit of accuracy / scale)."""
        self._check()
        facts = None
        if self.uses_task_facts_ and task_meta_row is not None:
            row = pd.Series(task_meta_row, dtype=float) if isinstance(task_meta_row, dict) else pd.Series(task_meta_row)
            row = pd.to_numeric(row.reindex(self.fact_columns_), errors="coerce")
            facts = row.fillna(self.fact_fill_.reindex(self.fact_columns_).set_axis(row.index)).to_numpy(dtype=float)
        return self._level.predict(facts)

    def predict(self, z, task_meta_row=None, known: tuple[np.ndarray, np.ndarray] | None = None) -> pd.DataFrame:
        """``predicted_accuracy``, ``accuracy_low``, ``accuracy_high`` for each predicted z-score in ``z``.

        ``known``: (predicted z-scores, accuracies) of models already fine-tuned on this task. They
        anchor the task's level: the predicted level moves toward what they imply by the history's
        ratio of level variance to level variance plus cell variance over their count (empirical
        Bayes), so one score moves it part way and many nearly all the way; all the way when they are
        beyond :data:`UNLIKE_HISTORY_Z` standard deviations of what the history expects. The interval
        narrows with them (:meth:`_interval_factor`): the level they leave uncertain is what remains.
        """
        self._check()
        scores = np.asarray(z, dtype=float).reshape(-1)
        task_mean, task_std = self._anchored_level(task_meta_row, known)
        centre = task_mean + task_std * scores
        factor = self._interval_factor(known, task_meta_row)
        low, high = factor * self.residual_quantiles_[0], factor * self.residual_quantiles_[1]
        predicted = self._expit(centre)
        index = z.index if isinstance(z, pd.Series) else None
        return pd.DataFrame({"predicted_accuracy": predicted,
                             "accuracy_low": np.minimum(self._expit(centre + low), predicted),
                             "accuracy_high": np.maximum(self._expit(centre + high), predicted)}, index=index)

    def score_of_accuracy(self, accuracy, task_meta_row=None,
                          known: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """The z-scores that :meth:`predict` (with the same ``task_meta_row`` and ``known``) maps to these
        accuracies: where a measured model stands among the predicted ones on the accuracy it shows."""
        self._check()
        task_mean, task_std = self._anchored_level(task_meta_row, known)
        return (self._logit(np.asarray(accuracy, dtype=float)) - task_mean) / task_std

    def _anchored_level(self, task_meta_row, known) -> tuple[float, float]:
        """The task's (mean, std) on the logit scale, its mean moved toward what ``known`` implies."""
        task_mean, task_std = self.task_level(task_meta_row)
        if known is not None and self.known_scale_problem(known[1]) is None:
            task_mean += self._level_shift(np.asarray(known[0], dtype=float), np.asarray(known[1], dtype=float),
                                           task_mean, task_std)
        return task_mean, task_std

    def _interval_factor(self, known, task_meta_row) -> float:
        """How much of the interval's width remains once ``known`` scores anchored the level (1 without).

        A residual is the task's level error plus the cell's own (variances ``level_variance_`` and
        ``cell_variance_``); n known scores leave the level the empirical-Bayes posterior variance
        ``v_l·(v_c/n) / (v_l + v_c/n)`` (``v_c/n`` when they set it alone, a task unlike the history),
        so the quantiles shrink by ``sqrt((posterior + v_c) / (v_l + v_c))``. Held out on PARC,
        PARC-6, TransferGraph and 20 random sub-tables with 3 known scores, the unshrunk 80 % interval
        held 91.6 % of the other models' accuracies; shrunk, 80.2 %, 27 % narrower (without known
        scores, 77.1 %; ``benchmarks/interval_with_known_scores.py``, issue 13, 2026-12-02).
        """
        if known is None or len(known[1]) == 0 or not hasattr(self, "level_variance_") \
                or self.known_scale_problem(known[1]) is not None:
            return 1.0
        level, cell, n = self.level_variance_, self.cell_variance_, len(known[1])
        if level + cell <= 0:
            return 1.0
        _, expected, unlike = self._known_offset(np.asarray(known[0], dtype=float), np.asarray(known[1], dtype=float),
                                                 *self.task_level(task_meta_row))
        remaining = cell / n if unlike else level * (cell / n) / expected if expected > 0 else 0.0
        return float(min(1.0, np.sqrt((remaining + cell) / (level + cell))))

    def _known_offset(self, known_z: np.ndarray, known_accuracy: np.ndarray, task_mean: float,
                      task_std: float) -> tuple[float, float, bool]:
        """(the known scores' mean logit offset from the predicted level, its variance expected under the
        history, whether it lies beyond :data:`UNLIKE_HISTORY_Z` of that: a level the history never showed)."""
        offset = float(np.mean(self._logit(known_accuracy) - (task_mean + task_std * known_z)))
        expected = self.level_variance_ + self.cell_variance_ / known_z.size
        return offset, expected, offset ** 2 > UNLIKE_HISTORY_Z ** 2 * expected

    def _level_shift(self, known_z: np.ndarray, known_accuracy: np.ndarray, task_mean: float,
                     task_std: float) -> float:
        if known_z.size == 0 or not hasattr(self, "level_variance_"):  # older pickles: no anchoring
            return 0.0
        offset, expected, unlike = self._known_offset(known_z, known_accuracy, task_mean, task_std)
        if unlike:
            return offset  # a level the history never showed: the known scores are the only evidence
        return offset * self.level_variance_ / expected if expected > 0 else 0.0

    def known_scale_problem(self, known_accuracy) -> str | None:
        """Why known scores cannot anchor the level (not on the history's accuracy scale), or None."""
        values = np.asarray(known_accuracy, dtype=float)
        if values.size == 0:
            return None
        if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > self.scale:
            return f"known scores outside [0, {self.scale:g}], the history's accuracy scale"
        if self.scale == 100.0 and values.max() <= 1.0:
            return "known scores look like fractions while the history is in percent"
        return None

    def annotate(self, ranking: pd.DataFrame, task_meta_row=None, score_column: str = "score",
                 known: tuple[np.ndarray, np.ndarray] | None = None) -> pd.DataFrame:
        """``ranking`` with the three accuracy columns (NaN when not available) and ``attrs["accuracy_note"]``.

        ``known`` as in :meth:`predict`; by default the ranking's own rows with a ``known_score``. A row
        with a ``known_score`` on the history's scale shows it as its accuracy (an interval of width 0);
        off that scale, no accuracy.
        """
        out = ranking.copy()
        anchor = ""  # what the known scores did to the task's level, for the answer's basis
        problem = None
        if self.available:
            if known is None and "known_score" in out:
                told = out["known_score"].notna().to_numpy()
                known = (out[score_column].to_numpy(dtype=float)[told], out["known_score"].to_numpy(dtype=float)[told])
            if known is not None and len(known[1]):
                problem = self.known_scale_problem(known[1])
                anchor = (f"the task's level not anchored to its known scores ({problem})" if problem
                          else f"the task's level anchored to its {len(known[1])} known score(s)")
            predicted = self.predict(out[score_column].to_numpy(dtype=float), task_meta_row, known)
            for column in ACCURACY_COLUMNS:
                out[column] = predicted[column].to_numpy()
            if "known_score" in out and known is not None:  # measured: no prediction needed
                # Off the history's scale, their measured value cannot be shown on it either; and the
                # prediction from their score would be another known model's (they rank as measured).
                told = out["known_score"].notna()
                for column in ACCURACY_COLUMNS:
                    out.loc[told, column] = np.nan if problem else out.loc[told, "known_score"].astype(float)
        else:
            for column in ACCURACY_COLUMNS:
                out[column] = np.nan
        out.attrs = {**ranking.attrs, "accuracy_note": f"{self.note}; {anchor}" if anchor else self.note,
                     "accuracy_anchor": anchor}
        return out

    def _check(self) -> None:
        if not self.available:
            raise InvalidInputError(f"no predicted accuracy: {self.note}")


# --------------------------------------------------------------------------- calibration (evaluation)

def interval_coverage(P: pd.DataFrame, targets: Sequence[str], predict_z: Callable[[pd.DataFrame, str], pd.Series],
                      *, level: float = DEFAULT_LEVEL, task_meta: pd.DataFrame | None = None) -> pd.DataFrame:
    """Leave-one-target-out calibration: per target, the share of its known cells inside their interval.

    For each target t the accuracy model is fitted on ``P`` without t's column (its own
    leave-one-task-out residuals on those tasks), ``predict_z(history, t)`` gives each model's
    predicted z-score on t, and t's known accuracies are checked against the intervals. Returns one
    row per target: ``coverage``, ``width`` (mean interval width, in P's units), ``cells``,
    ``abs_error`` (mean |predicted - true|); empty when P is not on an accuracy scale.
    """
    rows = {}
    for target in targets:
        history = P.drop(columns=[target])
        model = AccuracyModel(level=level).fit(history, task_meta=task_meta)
        if not model.available:
            continue
        true = P[target].dropna()
        z = predict_z(history, target).reindex(true.index).astype(float)
        keep = z.notna()
        true, z = true[keep], z[keep]
        if true.empty:
            continue
        meta = None if task_meta is None or target not in task_meta.index else task_meta.loc[target]
        predicted = model.predict(z.to_numpy(), meta)
        inside = (true.to_numpy() >= predicted["accuracy_low"].to_numpy()) & (
            true.to_numpy() <= predicted["accuracy_high"].to_numpy())
        rows[target] = {"coverage": float(inside.mean()),
                        "width": float((predicted["accuracy_high"] - predicted["accuracy_low"]).mean()),
                        "cells": int(inside.size),
                        "abs_error": float(np.abs(predicted["predicted_accuracy"].to_numpy() - true.to_numpy()).mean())}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["coverage", "width", "cells", "abs_error"])


def coverage_summary(per_target: pd.DataFrame) -> dict[str, float]:
    """Pooled over cells: ``interval_coverage`` (share inside), ``interval_width`` and ``accuracy_abs_error``
    (cell-weighted means), ``interval_targets``."""
    if per_target.empty:
        return {}
    cells = per_target["cells"].astype(float)
    total = float(cells.sum())
    return {"interval_coverage": float((per_target["coverage"] * cells).sum() / total),
            "interval_width": float((per_target["width"] * cells).sum() / total),
            "accuracy_abs_error": float((per_target["abs_error"] * cells).sum() / total),
            "interval_targets": float(len(per_target))}
