"""The shape of the code, checked: short functions, justified type ignores, explicit registries.

import-linter (`make lint`) checks the layers; these checks are the ones a
linter does not have. A long function is allowed when its docstring says why
(it contains "long because").
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compiler", "passes", "targets", "models")
MAX_FUNCTION_LINES = 80


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            doc = ast.get_docstring(node) or ""
            if length > MAX_FUNCTION_LINES and "long because" not in doc.lower():
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_longer_than_80_lines_without_saying_why(package: str) -> None:
    long = [f for path in _sources(package) for f in _long_functions(path)]
    assert not long, "split these (or say in the docstring why they are long because ...):\n" + (
        "\n".join(long)
    )


def test_every_type_ignore_names_its_code_and_its_reason() -> None:
    pattern = re.compile(r"#\s*type:\s*ignore(?P<code>\[[^\]]+\])?(?P<rest>.*)$")
    bad = []
    for path in _sources(*PACKAGES):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            m = pattern.search(line)
            if m and (not m["code"] or not re.match(r"\s*#\s*\S", m["rest"])):
                bad.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, "write `# type: ignore[code]  # reason`:\n" + "\n".join(bad)


def test_registries_are_tables_not_import_side_effects() -> None:
    """Nothing registers itself on import: no `@register` decorators left in the packages."""
    users = [
        f"{path.relative_to(ROOT)}:{i}"
        for path in _sources(*PACKAGES)
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if re.match(r"\s*@register\b", line)
    ]
    assert not users, users
