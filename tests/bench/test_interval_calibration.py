"""The evaluation's calibration metrics of Fennec's predicted-accuracy interval (issue 16)."""
from fennec_mlflow.bench.evaluate import evaluate_estimator
from fennec_mlflow.bench.public import load_benchmark


def test_fennec_evaluation_reports_interval_coverage_per_target():
    bench = load_benchmark("parc")
    metrics = evaluate_estimator(bench, "fennec", seeds=[0]).metrics()
    assert metrics["interval_level"] == 0.8
    assert 0.0 <= metrics["fennec_interval_coverage"] <= 1.0
    assert 0 < metrics["fennec_interval_width"] < 100  # percent points
    assert {f"interval_coverage.{t}" for t in bench.targets} <= set(metrics)
    # the baselines carry no interval
    assert "fennec_interval_coverage" not in evaluate_estimator(bench, "popularity", seeds=[0]).metrics()
