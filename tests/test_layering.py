"""The package's layers, enforced: arrows only point down (see README, "Code layout").

core (numpy/scipy/scikit-learn) <- data, archi2vec (torch) <- training <- store (MLflow) <- serving
<- bench <- cli. ``errors``, ``config``, ``parallel`` and ``progress`` sit below everything. Every import counts, including
the ones inside functions.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fennec_mlflow"
# Layer rank of each top-level part of the package; a module may import only parts of lower or
# equal rank (equal: within its own layer, or data <-> archi2vec, which are independent).
RANK = {"errors": 0, "config": 0, "parallel": 0, "progress": 0, "core": 1, "estimators": 1, "data": 2, "archi2vec": 2, "training": 3,
        "store": 4, "serving": 5, "bench": 6, "cli": 7}
FORBIDDEN_THIRD_PARTY = {
    "core": {"torch", "torchvision", "pytorchcv", "open_clip", "PIL", "mlflow", "optuna", "gensim", "networkx", "click"},
    "data": {"mlflow", "optuna", "click"},
    "archi2vec": {"mlflow", "optuna", "click"},
    "training": {"mlflow", "optuna", "click"},
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports (absolute names), with the line."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            # `from fennec_mlflow.store import tracking` imports the submodule store.tracking
            found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_point_down(path):
    own = _part(_module_name(path))
    if own == "__init__":
        return  # the public API re-exports lazily by name, from every layer
    wrong = []
    for target, line in _imports(path):
        top = target.split(".")[0]
        if top == "fennec_mlflow":
            other = _part(target)
            if other in RANK and RANK[other] > RANK[own]:
                wrong.append(f"line {line}: {own} imports {target} (a higher layer)")
        elif top in FORBIDDEN_THIRD_PARTY.get(own, ()):
            wrong.append(f"line {line}: {own} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(_module_name(path)) for path in MODULES} - {"__init__"}
    assert parts <= RANK.keys(), f"give these a layer in RANK: {sorted(parts - RANK.keys())}"


def test_no_import_cycles_between_modules():
    """Module-level imports only (the ones that run at import time) form no cycle."""
    names = {_module_name(path): path for path in MODULES}
    graph = {}
    for name, path in names.items():
        tree = ast.parse(path.read_text())
        top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        targets = {t for t, line in _imports(path) if any(n.lineno == line for n in top_level)}
        graph[name] = {t for t in targets if t in names and t != name and not name.startswith(t + ".")}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for child in graph[node]:
            if state.get(child) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(child):] + [child]))
            if child not in state:
                visit(child, trail + [child])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_the_pure_core_imports_without_torch_or_mlflow():
    """Run in a fresh interpreter that refuses torch and MLflow: the core must still import and fit."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'torch', 'mlflow', 'torchvision', 'optuna'}:\n"
        "            raise ImportError('refused: ' + name)\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "import numpy as np, pandas as pd\n"
        "from fennec_mlflow import Fennec, get_estimator\n"
        "import fennec_mlflow.core.evaluation\n"
        "P = pd.DataFrame(np.random.default_rng(0).random((6, 5)), index=list('abcdef'), columns=list('vwxyz'))\n"
        "meta = pd.DataFrame({'c': [1.0, 2, 3, 4, 5]}, index=P.columns)\n"
        "Fennec(k=2).fit(P, task_meta=meta)\n"
        "print(get_estimator('logme').score(np.random.default_rng(0).random((40, 5)), np.arange(40) % 2))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
