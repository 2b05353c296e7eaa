"""Screenshots of the MLflow UI for docs/: the rank run, an evaluation leaderboard, the registered model.

    fennec rank                        # in a fresh folder: builds the default, writes the rank run
    fennec evaluate --benchmark parc   # the leaderboard parent and one child run per estimator
    python benchmarks/make_ui_screenshots.py --store sqlite:///mlflow.db --out docs/screenshots

Starts ``mlflow ui`` on the store, opens the pages in headless Chromium through Playwright
(``pip install playwright``; the browser is the system's, e.g. Debian's ``chromium`` package,
given with ``--browser``: Playwright's own browser download is not needed) and saves one PNG per
page. Nothing is written to the store.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlflow import MlflowClient


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def newest(client: MlflowClient, kind: str):
    """The newest finished run of ``fennec.kind=kind`` in any experiment, with its experiment id."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`fennec.kind` = '{kind}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SystemExit(f"no finished {kind} run in the store: run the commands in this script's docstring first")
    return runs[0]


def pages(client: MlflowClient) -> dict[str, str]:
    """File name -> UI route (hash routes of MLflow's single-page app)."""
    rank = newest(client, "rank")
    board = newest(client, "leaderboard")
    version = client.get_model_version_by_alias("fennec", "champion")
    exp_rank, exp_board = rank.info.experiment_id, board.info.experiment_id
    return {
        "rank-run.png": f"#/experiments/{exp_rank}/runs/{rank.info.run_id}",
        "rank-run-artifacts.png": f"#/experiments/{exp_rank}/runs/{rank.info.run_id}/artifacts/ranking.png",
        "leaderboard-run.png": f"#/experiments/{exp_board}/runs/{board.info.run_id}",
        "leaderboard-figure.png": f"#/experiments/{exp_board}/runs/{board.info.run_id}/artifacts/leaderboard.png",
        "evaluation-experiment.png": f"#/experiments/{exp_board}/runs",
        "registered-model.png": "#/models/fennec",
        "registered-model-version.png": f"#/models/fennec/versions/{version.version}",
    }


def tidy(page, expand: str | None = None) -> None:
    """Best effort: close the assistant panel and tips, expand a parent run's children (by its name prefix)."""
    for label in ("Close", "Got it"):
        button = page.get_by_role("button", name=label, exact=True)
        if button.count():
            with contextlib.suppress(Exception):  # a tip that went away meanwhile: nothing to close
                button.first.click(timeout=2000)
                time.sleep(1)
    if expand:
        name = page.locator(f"text=/^{expand}/").first
        if name.count():
            box = name.bounding_box()
            if box:  # the expander sits left of the run's colour dot
                page.mouse.click(box["x"] - 33, box["y"] + box["height"] / 2)
                time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--browser", default="/usr/bin/chromium", help="a Chromium executable")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--settle", type=float, default=6.0, help="seconds to wait on each page before the shot")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    client = MlflowClient(args.store)
    routes = pages(client)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.store,
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/"
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.time() + 120
        while True:
            try:
                opener.open(base + "health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise SystemExit("mlflow ui did not start")
                time.sleep(1)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.browser, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            for name, route in routes.items():
                page.goto(base + route, wait_until="load")
                time.sleep(args.settle)  # the app polls (never network-idle): let the data and images render
                tidy(page, expand="leaderboard-" if name == "evaluation-experiment.png" else None)
                page.screenshot(path=str(out / name), full_page=False)
                print(out / name, flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
