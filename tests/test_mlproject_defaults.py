"""MLproject entry points are thin wrappers over CLI subcommands: same options, same defaults."""
import re
from pathlib import Path

import click
import pytest
import yaml

from fennec_mlflow.cli import main

MLPROJECT = yaml.safe_load((Path(__file__).resolve().parents[1] / "MLproject").read_text())
ENTRY_POINTS = MLPROJECT["entry_points"]


def _same(mlproject_default, cli_default) -> bool:
    if mlproject_default in ("", None, "none", "default", "all", "any"):  # MLproject's words for "not given"
        return cli_default in ("", None) or str(cli_default) == str(mlproject_default)
    try:
        return float(mlproject_default) == float(cli_default)
    except (TypeError, ValueError):
        pass
    if isinstance(cli_default, str) and "," in cli_default:  # comma-separated number grids
        try:
            return [float(v) for v in str(mlproject_default).split(",")] == [float(v) for v in cli_default.split(",")]
        except ValueError:
            pass
    return str(mlproject_default) == str(cli_default)


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_every_mlproject_default_equals_the_cli_default(entry_point):
    spec = ENTRY_POINTS[entry_point]
    words = spec["command"].split()
    assert words[:3] == ["python", "-m", "fennec_mlflow.cli"], "each entry point wraps one fennec subcommand"
    command = main.commands[words[3]]
    options = {opt: param for param in command.params for opt in param.opts}
    arguments = {param.name: param for param in command.params if isinstance(param, click.Argument)}
    checked = 0
    for name, parameter in spec.get("parameters", {}).items():
        flag = re.search(r"(--[\w-]+) \{" + name + r"\}", spec["command"])
        cli_param = options[flag.group(1)] if flag else arguments.get(name)
        assert cli_param is not None, f"{entry_point}: parameter {name!r} reaches no CLI option"
        if entry_point == "import" and name == "table":
            continue  # a required CLI argument; MLproject names the bundled table as its example
        assert _same(parameter.get("default"), cli_param.default), (
            f"{entry_point}.{name}: MLproject default {parameter.get('default')!r} != CLI default {cli_param.default!r}")
        checked += 1
    assert checked or not spec.get("parameters")


def test_no_mlproject_parameter_defaults_to_an_empty_string():
    """MLflow logs each parameter's shell-quoted value on the project run: "" would show as the literal ''."""
    empty = [f"{entry}.{name}" for entry, spec in ENTRY_POINTS.items()
             for name, parameter in spec.get("parameters", {}).items() if parameter.get("default") == ""]
    assert not empty


@pytest.mark.slow
def test_mlflow_run_logs_real_parameter_values_on_the_project_run(tmp_path):
    """`mlflow run . -e matrix` with its defaults: the project run's params are words, never ''."""
    import os

    import mlflow

    from fennec_mlflow.store.external import import_table
    from tests.helpers import run_entry_point, sqlite_store
    from tests.planted import planted_long_table, write_table

    with pytest.MonkeyPatch.context() as mp, sqlite_store(tmp_path, mp) as client:
        import_table(write_table(planted_long_table(), tmp_path / "planted.csv"), source="planted", progress=False)
        done = run_entry_point("matrix", {"kind": "external"}, cwd=tmp_path, env=dict(os.environ))
        assert "12 models x 6 tasks" in done.stdout
        default = client.get_experiment_by_name("Default")
        (project_run,) = client.search_runs([default.experiment_id])
        params = project_run.data.params
        assert params == {"kind": "external", "experiment": "fennec", "output": "none"}
        assert "''" not in params.values()
        mlflow.set_tracking_uri(None)
