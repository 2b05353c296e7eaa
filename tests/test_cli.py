"""The command line's error contract: a user's mistake is one line and exit code 2; a bug keeps its traceback."""
import subprocess
import sys

import pytest
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
    ["rank", "--output", "nodir/out.csv"],  # checked before the embedded default is built or a run written
    ["rank", "--output", "ranking.txt"],
    ["matrix", "--output", "nodir/m.csv"],
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


def test_a_bad_output_path_says_what_is_wrong_in_one_line(store, tmp_path):
    missing = CliRunner().invoke(main, ["rank", "--output", "nodir/out.csv"])
    assert missing.output.strip() == (f"error: --output 'nodir/out.csv': no folder '{tmp_path / 'nodir'}'; create "
                                      "it or write to an existing folder")
    suffix = CliRunner().invoke(main, ["rank", "--output", "out.txt"])
    assert suffix.output.strip() == "error: --output 'out.txt': give a file name ending in .csv or .json"
    (tmp_path / "taken.csv").mkdir()
    folder = CliRunner().invoke(main, ["rank", "--output", "taken.csv"])
    assert folder.exit_code == 2 and "cannot write there" in folder.output


def test_rank_help_names_the_default_target_it_ranks():
    from fennec_mlflow.serving.demo import REAL_TARGET

    shown = " ".join(CliRunner().invoke(main, ["rank", "--help"]).output.split())
    assert f"default: {REAL_TARGET}, held out" in shown and "held-out synthetic task" not in shown


def test_an_unreachable_tracking_server_fails_fast_naming_the_uri(tmp_path):
    import time

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fennec_mlflow.cli", "matrix"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60,
                          env={**__import__("os").environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert time.perf_counter() - start < 10
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "http://127.0.0.1:9" in done.stderr


def test_import_with_the_wrong_layout_names_the_files_layout_and_the_fix(store, tmp_path):
    from tests.planted import planted_long_table, write_table

    path = write_table(planted_long_table(), tmp_path / "long.csv")
    result = CliRunner().invoke(main, ["import", str(path), "--layout", "parc"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is a long table (model, task, score), not the parc layout" in result.output
    assert "--layout long or --layout auto" in result.output


def test_import_says_a_reading_as_a_note_and_a_skipped_cell_as_a_warning(store, tmp_path):
    path = tmp_path / "paper.csv"
    path.write_text("Method,cifar10,dtd\nresnet50,96.3,-\nvit_b16,98.1,75.3\n")
    result = CliRunner().invoke(main, ["import", str(path)])
    assert result.exit_code == 0, result.output
    assert "note: paper.csv: read 'Method' as model" in result.output
    assert "warning: paper.csv: 1 cell(s) skipped, no score (empty, nan or a dash)" in result.output
    # what was read, to check against the paper
    assert "paper.csv: read 2 models x 2 tasks, 3 cells; models 'resnet50', 'vit_b16'; tasks 'cifar10', 'dtd'" \
        in result.output


def test_progress_bars_redraw_sparsely_into_a_redirected_log_unless_the_user_says_otherwise(store, tmp_path,
                                                                                          monkeypatch):
    from fennec_mlflow import config, progress

    monkeypatch.setattr(progress, "_sparse", False)
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    path = tmp_path / "paper.csv"
    path.write_text("model,cifar10,dtd\nresnet50,96.3,70.1\nvit_b16,98.1,75.3\n")
    with progress.tqdm(total=1) as bar:
        assert bar.mininterval == 0.1  # tqdm's own, used as a library
    assert CliRunner().invoke(main, ["import", str(path)]).exit_code == 0  # the runner's stderr is no terminal
    with progress.tqdm(total=1) as bar:
        assert bar.mininterval == config.LOG_PROGRESS_SECONDS
    monkeypatch.setenv("TQDM_MININTERVAL", "2")
    assert CliRunner().invoke(main, ["import", str(path)]).exit_code == 0
    with progress.tqdm(total=1) as bar:
        assert bar.mininterval != config.LOG_PROGRESS_SECONDS  # the user's (tqdm reads it when imported)


def test_a_store_that_refuses_writes_is_one_line(store, tmp_path):
    """A read-only sqlite file (chmod for a user; the immutable flag for root, where chattr works)."""
    import os
    import shutil

    import pytest

    from tests.planted import planted_long_table, write_table

    path = write_table(planted_long_table(), tmp_path / "long.csv")
    assert CliRunner().invoke(main, ["import", str(path), "--source", "first"]).exit_code == 0
    database = tmp_path / "mlflow.db"
    locked = False
    if os.geteuid() != 0:
        database.chmod(0o444)
        locked = True
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(database)], check=False, capture_output=True).returncode == 0:
        locked = True
    if not locked:
        pytest.skip("cannot make the sqlite file read-only here")
    try:  # a fresh process, as a user runs it (this one holds the file open already)
        command = [sys.executable, "-m", "fennec_mlflow.cli"]
        done = subprocess.run([*command, "import", str(path), "--source", "second"], check=False, capture_output=True,
                              text=True, cwd=tmp_path, timeout=120)
        reading = subprocess.run([*command, "matrix", "--kind", "external"], check=False, capture_output=True,
                                 text=True, cwd=tmp_path, timeout=120)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(database)], check=False, capture_output=True)
        database.chmod(0o644)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: the tracking store sqlite:///") and "refuses writes" in line
    assert reading.returncode == 0, reading.stderr[-2000:]  # reading never needed writes


def test_ctrl_c_says_that_the_finished_work_is_kept(store, monkeypatch):
    from fennec_mlflow.store import tracking

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tracking, "load_matrix", interrupted)
    result = CliRunner().invoke(main, ["matrix", "--kind", "fda"])
    assert result.exit_code == 1 and "run the same command again to resume" in result.output
    assert "Aborted!" in result.output and "Traceback" not in result.output


def test_ctrl_c_in_an_optuna_trial_leaves_no_failed_trial_traceback_but_other_failures_keep_it():
    # Optuna logs a trial ended by KeyboardInterrupt as a failed trial, traceback and all, before the
    # CLI's one resume note; the user pressed Ctrl-C. A trial that really failed keeps Optuna's report.
    import logging

    import optuna

    from fennec_mlflow.cli import _one_line_warnings

    _one_line_warnings()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    optuna_logger = logging.getLogger("optuna")
    optuna_logger.addHandler(handler)
    try:
        def stopped(trial):
            raise KeyboardInterrupt

        def broken(trial):
            raise ValueError("a real failure")

        with pytest.raises(KeyboardInterrupt):
            optuna.create_study().optimize(stopped, n_trials=1)
        assert not [r for r in records if r.exc_info], [r.getMessage() for r in records]
        optuna.create_study().optimize(broken, n_trials=1, catch=(ValueError,))
        assert [r for r in records if r.exc_info and isinstance(r.exc_info[1], ValueError)]
    finally:
        optuna_logger.removeHandler(handler)
