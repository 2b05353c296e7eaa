"""Does the predicted-accuracy interval stay calibrated once the user tells a few known scores?

    python benchmarks/interval_with_known_scores.py [--known 3] [--tables 20] [--seed 0]

On PARC, PARC-6, TransferGraph and ``--tables`` random sub-tables of them (``heldout_tables.py``'s
draws), each target is held out in turn: the accuracy model and default Fennec are fitted on the
other tasks, told the true accuracy of ``--known`` random models of the target (3 draws per
target), and the 80 % intervals of the *other* models are checked against their true accuracies.
Prints coverage, mean width and mean absolute error per group, cold (no known scores) beside warm.
Takes about 5 minutes on 2 cores. README and ``fennec_mlflow/core/accuracy.py`` quote it.
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
from heldout_tables import draw_tables, parc_all  # a sibling script (on sys.path)
from tqdm import tqdm

from fennec_mlflow.bench.evaluate import draw_known
from fennec_mlflow.bench.public import load_benchmark
from fennec_mlflow.config import FENNEC_DEFAULTS
from fennec_mlflow.core.accuracy import AccuracyModel
from fennec_mlflow.serving.selection import fennec_scores, fit_fennec

PUBLIC = ("parc", "parc6", "transfergraph")


def judged(predicted: pd.DataFrame, truth: np.ndarray) -> dict[str, float]:
    inside = (truth >= predicted["accuracy_low"].to_numpy()) & (truth <= predicted["accuracy_high"].to_numpy())
    return {"coverage": float(inside.mean()),
            "width": float((predicted["accuracy_high"] - predicted["accuracy_low"]).mean()),
            "abs_error": float(np.abs(predicted["predicted_accuracy"].to_numpy() - truth).mean())}


def table_rows(table, n_known: int) -> list[dict]:
    data = table.tuning_data()
    rows = []
    for target in table.targets:
        history = table.history_for(target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fit_fennec(history, dict(FENNEC_DEFAULTS), data, seed=0)
        accuracy = AccuracyModel().fit(history, task_meta=data.task_meta)
        if not accuracy.available:
            continue
        truth = table.P[target].dropna()
        facts = data.task_meta.loc[target] if data.task_meta is not None and target in data.task_meta.index else None
        fitted = set(model.model_names_)
        for draw in range(3):
            known = [name for name in draw_known(truth, n_known, draw, target) if name in fitted]
            values = truth[known].to_numpy(float)
            if len(known) < 2 or np.ptp(values) == 0:
                continue
            others = truth.index.difference(known)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                warm = fennec_scores(model, target, data, truth.index, dict(zip(known, values)))
                cold = fennec_scores(model, target, data, others)
            told = (warm[known].to_numpy(float), values)
            for kind, predicted in (("cold", accuracy.predict(cold.to_numpy(), facts)),
                                    ("warm", accuracy.predict(warm[others].to_numpy(float), facts, told))):
                rows.append({"table": table.name, "target": target, "kind": kind,
                             **judged(predicted, truth[others].to_numpy(float))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--known", type=int, default=3)
    parser.add_argument("--tables", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sources = {"transfergraph": load_benchmark("transfergraph"), "parc_all": parc_all()}
    tables = [load_benchmark(name) for name in PUBLIC] + draw_tables(sources, args.tables, args.seed)
    rows = pd.DataFrame([row for table in tqdm(tables, desc="tables") for row in table_rows(table, args.known)])
    rows["group"] = rows["table"].where(rows["table"].isin(PUBLIC), "sub-tables")
    summary = rows.pivot_table(index="group", columns="kind", values=["coverage", "width", "abs_error"], aggfunc="mean")
    overall = rows.groupby("kind")[["coverage", "width", "abs_error"]].mean()
    print(f"80 % intervals of the models not told, {args.known} known scores, 3 draws per target "
          f"(width and error in each table's units: TransferGraph's are fractions)")
    print(summary.round(3).to_string())
    print("all targets pooled:")
    print(overall.round(3).to_string())


if __name__ == "__main__":
    main()
