"""The command line's error contract: a user's mistake is one line and exit code 2; a bug keeps its traceback."""
import subprocess
import sys

from click.testing import CliRunner

from fennec_mlflow.cli import main


def test_a_user_error_is_one_line_with_exit_code_2(store):
    result = CliRunner().invoke(main, ["matrix", "--kind", "fda", "--experiment", "no-such-experiment"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no-such-experiment" in lines[0]


def test_an_unknown_benchmark_names_the_choices(store):
    result = CliRunner().invoke(main, ["evaluate", "--benchmark", "nope"])
    assert result.exit_code == 2 and "parc" in result.output and "Traceback" not in result.output


def test_a_bug_is_not_disguised_as_a_user_error(store, tmp_path):
    # A ValueError that is not a FennecError (here raised inside the matrix reader) must surface with
    # its traceback instead of the one-line "error:" reserved for mistakes a user can fix.
    code = ("import sys\n"
            "from fennec_mlflow.store import tracking\n"
            "def broken(*args, **kwargs):\n"
            "    raise ValueError('an internal bug')\n"
            "tracking.load_matrix = broken\n"
            "from fennec_mlflow.cli import main\n"
            "sys.argv = ['fennec', 'matrix']\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "an internal bug" in done.stderr and "error: " not in done.stderr


BAD_INPUTS = [
    ["fda", "--device", "banana"],
    ["fda", "--batch-size", "0"],
    ["fda", "--models", ","],
    ["fda", "--probe-size", "1"],
    ["finetune", "--tasks", ","],
    ["finetune", "--epochs", "0"],
    ["finetune", "--lrs", "fast"],
    ["rank", "--top-k", "-5"],
    ["rank", "--class-count", "-5"],
    ["rank", "--max-parameters", "-1"],
    ["rank", "--model-uri", "models:/nosuch@x"],
    ["matrix", "--kind", "banana"],
]


def test_every_bad_input_is_one_clear_line_exit_2_and_no_run(store):
    import mlflow

    for args in BAD_INPUTS:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output, args
        assert result.output.strip().splitlines()[-1].lower().startswith("error"), (args, result.output)
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_an_unreachable_tracking_server_fails_fast_naming_the_uri(tmp_path):
    import time

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fennec_mlflow.cli", "matrix"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60,
                          env={**__import__("os").environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert time.perf_counter() - start < 10
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "http://127.0.0.1:9" in done.stderr
