"""The package's seams hold: no import cycle, no hidden lazy import of our own modules, no
reaching into another object's private attributes, and a reason beside every lazy import.

These read the source with ``ast``; they fail with the file and line that breaks a rule.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import modelledger

PACKAGE = Path(modelledger.__file__).parent
# The facade is one class spread over two modules (the governance verbs are mixed in).
FACADE = {"modelledger._registry", "modelledger._governance"}


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return out


MODULES = _modules()


def _target(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
    """The modelledger modules an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "modelledger"]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    if prefix.split(".")[0] != "modelledger":
        return []
    out = []
    for alias in node.names:
        sub = f"{prefix}.{alias.name}"
        out.append(sub if sub in MODULES else prefix)
    return out


def _imports(module: str) -> list[tuple[ast.stmt, str]]:
    path, tree = MODULES[module]
    is_package = path.name == "__init__.py"
    return [
        (node, target)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for target in _target(module, node, is_package)
    ]


def _function_bodies(tree: ast.Module) -> list[ast.AST]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_the_module_table_is_real() -> None:
    assert {"modelledger", "modelledger._registry", "modelledger.stores.protocols"} <= set(MODULES)
    assert any(t == "modelledger.errors" for _n, t in _imports("modelledger._registry"))


def test_no_function_level_import_of_a_modelledger_module() -> None:
    found = []
    for module, (path, tree) in MODULES.items():
        is_package = path.name == "__init__.py"
        for fn in _function_bodies(tree):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and _target(module, node, is_package):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_even_through_type_checking_imports() -> None:
    graph = {m: {t for _n, t in _imports(m) if t != m} for m in MODULES}
    # A package's __init__ re-exports its modules; importing a module from the package
    # namespace is not an edge back into the package.
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    assert _cycles(graph) == []


def test_no_module_reaches_into_another_objects_private_attributes() -> None:
    found = []
    for module, (path, tree) in MODULES.items():
        if module in FACADE:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)}")
    assert found == []


def test_no_module_imports_a_private_name_from_another_module() -> None:
    found = []
    for module, (path, tree) in MODULES.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _target(module, node, is_package):
                found.extend(
                    f"{path.relative_to(PACKAGE)}:{node.lineno} {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__") and a.name not in MODULES_SHORT
                )
    assert found == []


# ``from . import _capture`` names a private *module*, which is fine: modules are private
# to the package, names inside them to the module.
MODULES_SHORT = {m.rsplit(".", 1)[-1] for m in MODULES}


def test_every_lazy_import_says_why() -> None:
    found = []
    for path, tree in MODULES.values():
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in _function_bodies(tree):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    here, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
                    if "#" not in here and not above.startswith("#"):
                        found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {here.strip()}")
    assert found == []


def test_import_modelledger_loads_no_heavy_library() -> None:
    code = (
        "import sys, modelledger; "
        "heavy = [m for m in ('sqlalchemy', 'pandas', 'pyarrow', 'numpy', 'cryptography', 'sklearn', "
        "'fsspec', 'alembic') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_import_modelledger_leaves_subprocess_and_temporary_folders_to_the_verbs_that_need_them() -> None:
    # git is asked, and scratch folders made, by a few verbs only; subprocess, tempfile and
    # shutil (with the bz2 and lzma modules) were a tenth of the time `import modelledger` took
    code = (
        "import sys, modelledger; "
        "print(','.join(m for m in ('subprocess', 'tempfile', 'shutil', 'bz2', 'lzma') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.count(".") == 1))
def test_private_modules_are_underscored_and_public_ones_are_few(module: str) -> None:
    leaf = module.split(".")[1]
    assert leaf.startswith("_") or leaf in {"errors", "cli", "flavors", "stores", "server"}
