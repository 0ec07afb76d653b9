"""The package layout's one-way dependencies: `scheduler` is the shared base, so it never imports
`worker` or `scion_scheduler`, and `worker` never imports `scion_scheduler` (the control side).
Read from the source with `ast`, so an import inside a function or a string passed to
`importlib.import_module` counts as well as one at the top of a module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "scheduler": ("worker", "scion_scheduler"),
    "worker": ("scion_scheduler",),
}


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) for every import statement and every `import_module("...")` or
    `__import__("...")` call with a literal name. Relative imports stay inside their package,
    so they are not listed."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def violations(package: str) -> list[str]:
    """`path:line imports module` for each forbidden import under `package`."""
    banned = FORBIDDEN[package]
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module in imported_modules(tree):
            if any(is_within(module, b) for b in banned):
                out.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package: str) -> None:
    assert list((ROOT / package).rglob("*.py")), f"no sources found under {package}/"
    assert violations(package) == []


def test_the_check_sees_every_kind_of_import() -> None:
    source = (
        "import worker\n"
        "import scion_scheduler.cli as cli\n"
        "from worker.pipeline import Pipeline\n"
        "from . import sibling\n"
        "def f():\n"
        "    import importlib\n"
        "    importlib.import_module('scion_scheduler.commands')\n"
        "    __import__('workers_elsewhere')\n"
    )
    modules = [m for _, m in imported_modules(ast.parse(source))]
    assert {"worker", "scion_scheduler.cli", "worker.pipeline", "scion_scheduler.commands"} <= set(
        modules
    )
    assert not any(is_within(m, "worker") for m in ("workers_elsewhere", "scheduler.worker_like"))
