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
    if mlproject_default in ("", None):  # MLproject's empty string means "not given"
        return cli_default in ("", None)
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
