"""Import speed: cells per second written by `fennec import`, before and after batching.

    python benchmarks/bench_import.py                     # the TransferGraph and PARC (all) tables
    python benchmarks/bench_import.py --tables my.csv --http-uri http://127.0.0.1:5077

For each table, in fresh sqlite stores in a temp dir (MLflow's schema created first and not
timed: a one-time cost of a new store, printed apart):

- "one run per cell": the cells written as before this change, one `tracking.write_run` each
  (create_run + log_batch + set_terminated through MlflowClient);
- "import_table": `external.import_table`, as now (finished cells read in one query, then
  batched transactions); the matrix read back is checked equal to the table;
- "re-import": the same call again, every cell already there;
- "CLI": `fennec import TABLE --source NAME` in a subprocess on a ready store, interpreter start
  and imports included (what a user waits for).

``--http-uri`` also times a tracking server you started (e.g. `mlflow server --port 5077
--backend-store-uri sqlite:////tmp/srv.db`): one client thread as before, and `import_table`'s
writer threads, on the first ``--http-cells`` cells of each table.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fennec_mlflow.store import external, tracking

BUNDLED = {"transfergraph": "tg", "parc_all": "parc"}


def ready_store(folder: Path, name: str):
    """A sqlite store with MLflow's schema and the experiment created; seconds that took."""
    start = time.perf_counter()
    client = tracking.client(f"sqlite:///{folder / f'{name}.db'}")
    tracking.experiment_id(client)
    return client, time.perf_counter() - start


def timed(function, *args, **kwargs) -> tuple[object, float]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def row(table: str, cells: int, path: str, seconds: float) -> None:
    print(f"| {table} | {cells} | {path} | {seconds:.2f} | {cells / seconds:,.0f} |", flush=True)


def check_read_back(client, source: str, table) -> None:
    values = tracking.load_matrix("external", source=source, mlflow_client=client).values
    truth = table.pivot(index="model", columns="task", values="score")
    assert values.shape == truth.shape and np.array_equal(values.to_numpy(), truth.loc[values.index, values.columns]
                                                          .to_numpy(), equal_nan=True), "read-back differs"


def bench_sqlite(name: str, path: Path, source: str, folder: Path, before: bool) -> None:
    table, _ = external.read_rows(path)
    cells = len(table)
    records = external.cell_records(table, source=source, source_file=path.name)
    if before:
        client, _ = ready_store(folder, f"{source}-before")
        exp_id = tracking.experiment_id(client)
        _, seconds = timed(lambda: [tracking.write_run(client, exp_id, record) for record in records])
        row(name, cells, "one run per cell (before)", seconds)
    client, setup = ready_store(folder, f"{source}-after")
    print(f"<!-- {name}: new store's schema + experiment {setup:.1f} s, not timed -->", flush=True)
    (created, _), seconds = timed(external.import_table, path, source=source, mlflow_client=client,
                                  progress=False, report=lambda line: None)
    assert created == cells
    row(name, cells, "import_table (after)", seconds)
    check_read_back(client, source, table)
    (created, present), seconds = timed(external.import_table, path, source=source, mlflow_client=client,
                                        progress=False, report=lambda line: None)
    assert (created, present) == (0, cells)
    row(name, cells, "re-import, all present", seconds)
    client, _ = ready_store(folder, f"{source}-cli")
    env = {**os.environ, "MLFLOW_TRACKING_URI": client.tracking_uri}
    _, seconds = timed(subprocess.run, ["fennec", "import", str(path), "--source", source], env=env,
                       check=True, capture_output=True, cwd=folder)
    row(name, cells, "`fennec import` CLI, end to end", seconds)


def bench_http(name: str, path: Path, source: str, folder: Path, uri: str, n_cells: int) -> None:
    table, _ = external.read_rows(path)
    subset = folder / f"{source}-subset.csv"
    table.head(n_cells).to_csv(subset, index=False)
    stamp = f"{time.time():.0f}"  # a server keeps its runs: new sources, so nothing is already there
    records = external.cell_records(table.head(n_cells), source=f"{source}-{stamp}-1", source_file=path.name)
    client = tracking.client(uri)
    exp_id = tracking.experiment_id(client)
    _, seconds = timed(tracking.write_runs, client, exp_id, records, threads=1)
    row(name, n_cells, "HTTP server, one client thread (before)", seconds)
    (created, _), seconds = timed(external.import_table, subset, source=f"{source}-{stamp}-2", mlflow_client=client,
                                  progress=False, report=lambda line: None)
    assert created == n_cells
    row(name, n_cells, f"HTTP server, import_table ({tracking._WRITER_THREADS} threads)", seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=list(BUNDLED),
                        help="bundled table names (transfergraph, parc_all, parc_controlled) or CSV paths")
    parser.add_argument("--no-before", dest="before", action="store_false",
                        help="skip the slow one-run-per-cell baseline")
    parser.add_argument("--http-uri", default=None,
                        help="also time this MLflow tracking server (http://HOST:PORT), which you start")
    parser.add_argument("--http-cells", type=int, default=300, help="cells per HTTP measurement")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("\n| table | cells | writer | seconds | cells/s |\n|---|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            path = external.bundled_table(name) if name in external.BUNDLED_TABLES else Path(name)
            source = BUNDLED.get(name, path.stem)
            bench_sqlite(name, path, source, Path(tmp), args.before)
            if args.http_uri:
                bench_http(name, path, source, Path(tmp), args.http_uri, args.http_cells)
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
