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
