"""Issue 16 in the evaluation: Fennec's predicted-accuracy interval calibrated leave one target out, and the
calibration table of docs/evaluation.md (benchmarks/make_evaluation_report.py) drawn from those runs."""
import os
import subprocess
import sys

from fennec_mlflow.bench.evaluate import run_evaluation
from fennec_mlflow.bench.public import load_benchmark
from tests.helpers import REPO, sqlite_store, store_env


def test_fennec_run_logs_interval_coverage_and_the_report_tables_it(tmp_path, monkeypatch):
    bench = load_benchmark("parc")
    with sqlite_store(tmp_path, monkeypatch) as client:
        runs = run_evaluation(bench, estimators="fennec,popularity", seeds=[0], progress=False)
        metrics = client.get_run(runs.outcomes["fennec"].run_id).data.metrics
        popularity = client.get_run(runs.outcomes["popularity"].run_id).data.metrics
    assert metrics["interval_level"] == 0.8
    assert 0.0 <= metrics["fennec_interval_coverage"] <= 1.0
    assert 0 < metrics["fennec_interval_width"] < 100  # percent points
    assert {f"interval_coverage.{t}" for t in bench.targets} <= set(metrics)
    assert "fennec_interval_coverage" not in popularity  # the baselines predict no accuracy
    from fennec_mlflow.cli import _interval_line  # what `fennec evaluate` prints under its table

    printed = f"its 80% interval held {100 * metrics['fennec_interval_coverage']:.1f}% of the held-out targets'"
    assert printed in _interval_line(runs.outcomes["fennec"])
    assert _interval_line(runs.outcomes["popularity"]) is None and _interval_line(None) is None

    report = tmp_path / "docs" / "evaluation.md"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_evaluation_report.py"), "--benchmarks", "parc",
                    "--output", str(report)], cwd=tmp_path, env={**os.environ, **store_env(tmp_path)},
                   check=True, capture_output=True, timeout=300)
    text = report.read_text()
    assert "## Predicted accuracy: calibration of the interval" in text
    coverage = 100 * metrics["fennec_interval_coverage"]
    assert f"| parc | 80 % | {coverage:.1f} % |" in text
