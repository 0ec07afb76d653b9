"""The Terraform module in terraform/ (and its example root) parsed with python-hcl2, and ways to
read its resources, locals, strings and the environment variables it sets. Providers cannot be
downloaded here, so `terraform validate` cannot run; the tests check the parsed HCL instead."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

from scheduler.config import SETTINGS

MODULE_DIR = Path(__file__).resolve().parent.parent / "terraform"
EXAMPLE_DIR = MODULE_DIR / "examples" / "complete"

KNOWN_ENVS = {s.env for s in SETTINGS}
EMULATOR_ENVS = {s.env for s in SETTINGS if s.attr.endswith("_emulator_host")}
SECRET_ENVS = {s.env for s in SETTINGS if s.secret}
PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}

# Anything that looks like one of our variables: checked against SETTINGS wherever it appears.
ENV_LIKE = re.compile(r"\b(SCION_SCHEDULER_[A-Z0-9_]+|[A-Z0-9_]+_EMULATOR_HOST)\b")
LOCAL_REF = re.compile(r"\blocal\.([A-Za-z0-9_]+)\b")


# --------------------------------------------------------------------------- loading


def _unquote(text: str) -> str:
    """python-hcl2 >= 8 keeps the quotes of string literals and labels; older versions do not."""
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _clean(node: Any) -> Any:
    """Drop parser metadata (`__is_block__`, `__comments__`, ...) and literal quotes."""
    if isinstance(node, dict):
        return {_unquote(k): _clean(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    if isinstance(node, str):
        return _unquote(node)
    return node


@cache
def load_dir(directory: Path) -> dict[str, list[Any]]:
    """All top-level blocks of the .tf files of `directory`, merged by block type."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for kind, items in _clean(hcl2.loads(path.read_text())).items():
            merged.setdefault(kind, []).extend(items)
    return merged


def named(directory: Path, kind: str) -> dict[str, dict[str, Any]]:
    """`variable`, `output` or `module` blocks by name."""
    return {name: body for item in load_dir(directory).get(kind, []) for name, body in item.items()}


def resources(
    directory: Path, rtype: str | None = None
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(type, name, body) of every resource, optionally of one type."""
    for item in load_dir(directory).get("resource", []):
        for type_, by_name in item.items():
            if rtype in (None, type_):
                for name, body in by_name.items():
                    yield type_, name, body


def resource(directory: Path, rtype: str, name: str) -> dict[str, Any]:
    found = [body for _, n, body in resources(directory, rtype) if n == name]
    assert found, f"no resource {rtype}.{name} in {directory}"
    return found[0]


def locals_of(directory: Path) -> dict[str, Any]:
    return {k: v for block in load_dir(directory).get("locals", []) for k, v in block.items()}


def strings(node: Any) -> Iterator[str]:
    """Every string (keys included) anywhere in a parsed tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


def env_keys(expr: Any, local_values: dict[str, Any]) -> set[str]:
    """The variable names of an env map: a literal map, or an expression over `local.` maps
    (e.g. `merge(local.a, cond ? local.b : {})`), followed through the locals."""
    if isinstance(expr, dict):
        return set(expr)
    assert isinstance(expr, str), f"cannot read env names from {expr!r}"
    refs = LOCAL_REF.findall(expr)
    assert refs, f"env map {expr!r} is neither a literal map nor built from locals"
    return set().union(*(env_keys(local_values[ref], local_values) for ref in refs))


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The single nested block `name` of a block body."""
    blocks = body.get(name)
    assert isinstance(blocks, list) and len(blocks) == 1, f"expected one {name} block"
    found: dict[str, Any] = blocks[0]
    return found


def cloud_run_env(directory: Path) -> dict[str, dict[str, Any]]:
    """Env var name -> its env block (value or value_source) for every Cloud Run container."""
    local_values = locals_of(directory)
    result: dict[str, dict[str, Any]] = {}
    for _, _, body in resources(directory, "google_cloud_run_v2_service"):
        for container in block(body, "template")["containers"]:
            for env in container.get("env", []):
                result[env["name"]] = env
            for dynamic in container.get("dynamic", []):
                for content in (dynamic.get("env") or {}).get("content", []):
                    if content["name"] == "${env.key}":
                        for_each = dynamic["env"]["for_each"]
                        for key in env_keys(for_each, local_values):
                            result[key] = content
                    else:
                        result[content["name"]] = content
    return result


def output_env(directory: Path, output: str) -> set[str]:
    return env_keys(named(directory, "output")[output]["value"], locals_of(directory))
