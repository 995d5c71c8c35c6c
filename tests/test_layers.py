"""The layers of docs/architecture.md as a test, over every first-party source file's imports
(read with ``ast``, so nothing is imported to check it; imports inside functions count too):

- ``checkout/`` (the library) imports none of the project's other parts;
- ``workflows/`` imports ``checkout`` and nothing else but the standard library and the SDK
  (what the workflow sandbox can replay deterministically);
- ``activities/`` imports ``checkout`` and nothing else of the project;
- the programs on top (``cli/``, ``demo/``, ``worker.py``, ``starter.py``, ``benchmarks/``)
  may import anything below them;
- nothing but ``tests/`` imports ``tests``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: The top-level names of the project's own code.
PROJECT = frozenset(
    {
        "checkout",
        "workflows",
        "activities",
        "cli",
        "demo",
        "worker",
        "starter",
        "benchmarks",
        "chaos",
        "devtools",
        "docs",
        "tests",
    }
)
#: docs/ holds one program: the script that takes the operator guide's screenshots.
PROGRAMS = frozenset({"cli", "demo", "worker", "starter", "benchmarks", "chaos", "docs"})
#: What a workflow may import besides ``checkout`` and itself.
SDK = frozenset({"temporalio"})
#: Folders that hold no source of ours.
NOT_SOURCE = frozenset({".venv", ".tools", ".data", ".git"})


def allowed(layer: str, module: str) -> bool:
    """Whether code of ``layer`` may import the top-level module ``module``."""
    if layer == "tests":
        return True
    if layer == "checkout":
        return module not in PROJECT - {"checkout"}
    if layer == "workflows":
        return (
            module in {"checkout", "workflows", "__future__"}
            or module in SDK
            or module in sys.stdlib_module_names
        )
    if layer == "activities":
        return module not in PROJECT - {"checkout", "activities"}
    if layer in PROGRAMS:
        return module != "tests"
    if layer == "devtools":
        # Local-stack tools (ports, the SMTP sink, the Temporal binaries): nothing of ours.
        return module not in PROJECT - {"devtools"}
    raise AssertionError(f"no rule for the layer {layer!r}: add one to tests/test_layers.py")


def layer_of(path: Path) -> str:
    """``checkout/store/store.py`` is in ``checkout``; ``worker.py`` is ``worker``."""
    parts = path.relative_to(REPO).parts
    return parts[0] if len(parts) > 1 else path.stem


def imported(source: str, filename: str = "<source>") -> Iterator[tuple[int, str]]:
    """(line, top-level module) of every absolute import, also ``importlib.import_module("x")``
    and ``__import__("x")`` with a literal name. Relative imports stay in their package."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]
        elif isinstance(node, ast.Call) and node.args:
            func, first = node.func, node.args[0]
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if (
                name in {"import_module", "__import__"}
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield node.lineno, first.value.split(".")[0]


def violations(layer: str, source: str, filename: str = "<source>") -> list[str]:
    return [
        f"{filename}:{line}: {layer} may not import {module}"
        for line, module in imported(source, filename)
        if not allowed(layer, module)
    ]


def source_files() -> list[Path]:
    return sorted(
        path
        for path in REPO.rglob("*.py")
        if not NOT_SOURCE.intersection(path.relative_to(REPO).parts)
    )


def test_every_source_file_keeps_to_its_layer() -> None:
    """The whole tree: no import crosses a layer the wrong way."""
    found = [
        problem
        for path in source_files()
        for problem in violations(
            layer_of(path), path.read_text(encoding="utf-8"), str(path.relative_to(REPO))
        )
    ]
    assert not found, "\n".join(found)


def test_the_layers_cover_the_tree() -> None:
    """Each part the rules name is there, and each source file falls under a rule."""
    layers = {layer_of(path) for path in source_files()}
    assert {"checkout", "workflows", "activities", "cli", "demo", "worker", "starter"} <= layers
    for layer in layers:
        allowed(layer, "os")  # raises for a layer without a rule


@pytest.mark.parametrize(
    ("layer", "source", "bad"),
    [
        # The library imports nothing above it, at the top or inside a function.
        ("checkout", "from worker import run_worker", ["worker"]),
        ("checkout", "def main():\n    from demo import stack\n", ["demo"]),
        ("checkout", "import workflows.checkout", ["workflows"]),
        ("checkout", "from activities.checkout import CheckoutActivities", ["activities"]),
        ("checkout", "import cli.render as render", ["cli"]),
        ("checkout", "import importlib\nimportlib.import_module('starter')", ["starter"]),
        ("checkout", "from benchmarks import checkout_throughput", ["benchmarks"]),
        ("checkout", "import chaos", ["chaos"]),
        ("checkout", "from tests.helpers import account", ["tests"]),
        (
            "checkout",
            "import sqlalchemy\nfrom checkout.models import Order\nfrom . import money",
            [],
        ),
        # Workflows: the library, the SDK and the standard library only.
        ("workflows", "import sqlalchemy", ["sqlalchemy"]),
        ("workflows", "from activities.checkout import CheckoutActivities", ["activities"]),
        ("workflows", "from jinja2 import Environment", ["jinja2"]),
        ("workflows", "from datetime import timedelta\nfrom temporalio import workflow", []),
        ("workflows", "from checkout.models import Order\nfrom workflows.options import QUICK", []),
        # Activities: the library only, of the project.
        ("activities", "from workflows.checkout import CheckoutWorkflow", ["workflows"]),
        ("activities", "from worker import build_activities", ["worker"]),
        ("activities", "from cli.common import CliError", ["cli"]),
        ("activities", "from checkout.store import Store\nimport aiosmtplib", []),
        # The programs: anything below them, never the tests.
        ("cli", "from tests.conftest import free_port", ["tests"]),
        ("demo", "__import__('tests.support')", ["tests"]),
        ("worker", "import tests", ["tests"]),
        ("starter", "from cli.main import main", []),
        ("demo", "from worker import run_worker\nfrom cli import render", []),
        ("tests", "from tests.helpers import account\nfrom demo.stack import load_orders", []),
    ],
)
def test_a_violation_fails(layer: str, source: str, bad: list[str]) -> None:
    """The check catches each kind of violation in a made-up file, and passes clean ones."""
    found = violations(layer, source)
    assert [line.rsplit(" ", 1)[1] for line in found] == bad


def test_workflow_code_imports_its_helpers_by_name() -> None:
    """``from workflows import common`` reaches the module past the workflow sandbox's import
    hook, so the sandbox executes it again for every run instead of passing it through
    (docs/architecture.md, "The worker"); ``from workflows.common import X`` passes through."""
    offenders = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in sorted((REPO / "workflows").glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.module in PROJECT
    ]
    assert offenders == []
