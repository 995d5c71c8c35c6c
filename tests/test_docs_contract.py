"""docs/contract.md and the code agree. Each name in the contract's tables (search attributes,
CheckoutStatus values, queries, updates, signals, commands, environment variables, result
reasons, the workflow types and ids) exists in the code as the code registers it: on the
workflows the worker runs, in the parser of the ``checkout`` command, in what the worker and
the commands read, in the enums. And where the code is the list (handlers, commands, reasons,
statuses, variables), everything in it is documented.

Names documented ahead of the code are in NOT_YET_BUILT with the work that builds them. The
test fails for them too once they exist, so building one means taking it off the list.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.envconfig import ClientConfigProfile

import starter
import worker
from checkout.contract import CHECKOUT_WORKFLOW
from checkout.contract import DEFAULT_TASK_QUEUE
from checkout.contract import EMAIL_DELIVERY_WORKFLOW
from checkout.contract import RECONCILE_SCHEDULE_ID
from checkout.contract import RECONCILE_WORKFLOW
from checkout.contract import SEARCH_ATTRIBUTES
from checkout.contract import TRIAL_WORKFLOW
from checkout.contract import checkout_workflow_id
from checkout.contract import idempotency_key
from checkout.contract import trial_workflow_id
from checkout.errors import REJECTION_REASONS
from checkout.errors import Reason
from checkout.models import CheckoutStatus
from tests.helpers import REPO

CONTRACT = REPO / "docs" / "contract.md"

#: Documented, not built yet: (table, name) -> the work that builds it.
NOT_YET_BUILT: dict[tuple[str, str], str] = {}

#: The code the worker and the ``checkout`` command run (the demo's included).
PRODUCTION_CODE = ["checkout", "activities", "workflows", "worker.py", "starter.py"]
#: The code that runs the tests.
TEST_CODE = ["tests", "devtools"]


# --- reading the contract ----------------------------------------------------------------------


def table(heading: str) -> list[list[str]]:
    """The body rows, as cells, of the first table under the heading named ``heading``."""
    lines = CONTRACT.read_text(encoding="utf-8").splitlines()
    title = re.compile(rf"#+ {re.escape(heading)}")
    start = next((i for i, line in enumerate(lines) if title.fullmatch(line.strip())), None)
    assert start is not None, f"docs/contract.md has no heading {heading!r}"
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("#") or (rows and not line.startswith("|")):
            break
        if line.startswith("|"):
            # Cells are split at the pipes that are not escaped (`a` \| `b` is one cell).
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])])
    assert len(rows) > 2, f"no table under {heading!r}"
    return rows[2:]  # past the header and the |---| line


def names(cell: str) -> list[str]:
    """What a cell names in backticks."""
    return re.findall(r"`([^`]+)`", cell)


def documented(heading: str) -> set[str]:
    """The names in the first column of the table under ``heading``."""
    return {name for row in table(heading) for name in names(row[0])}


def agree(heading: str, built: set[str], *, everything_documented: bool = True) -> None:
    """Each name of the table exists in ``built`` unless NOT_YET_BUILT says it does not yet,
    and then it must not; with ``everything_documented``, each name in ``built`` is in the
    table."""
    in_docs = documented(heading)
    pending = {name for table_, name in NOT_YET_BUILT if table_ == heading}
    assert pending <= in_docs, f"NOT_YET_BUILT names no longer in {heading}: {pending - in_docs}"
    missing = in_docs - pending - built
    assert not missing, f"documented in {heading!r}, missing in the code: {sorted(missing)}"
    now_built = pending & built
    assert not now_built, f"built now, take them off NOT_YET_BUILT: {sorted(now_built)}"
    if everything_documented:
        undocumented = built - in_docs
        assert not undocumented, f"not documented in {heading!r}: {sorted(undocumented)}"


# --- what the code registers -------------------------------------------------------------------


def workflow_definitions() -> dict[str, workflow._Definition]:
    """The workflows the worker registers, by workflow type."""
    definitions = [workflow._Definition.from_class(cls) for cls in worker.WORKFLOWS]
    return {d.name: d for d in definitions if d is not None and d.name is not None}


def handlers(kind: str, workflow_type: str) -> set[str]:
    """The named queries, updates or signals (``kind``) of a registered workflow."""
    by_name: dict[str | None, object] = getattr(workflow_definitions()[workflow_type], kind)
    return {name for name in by_name if name is not None}


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, bool]]:
    """Every command of the parser, ``accounts import`` style, and whether it is a leaf."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix}{name}"
                children = list(commands(sub, f"{path} "))
                yield path, not children
                yield from children


def string_constants(roots: list[str]) -> set[str]:
    """Every string literal in the Python files under ``roots`` (paths from the repository)."""
    files: list[Path] = []
    for root in roots:
        path = REPO / root
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    found: set[str] = set()
    for file in files:
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        found |= {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
    return found


def variables_in(roots: list[str]) -> set[str]:
    """The environment variables of ours the code under ``roots`` names in full."""
    pattern = re.compile(r"(CHECKOUT|STRIPE|TEMPORAL)_[A-Z0-9_]+")
    return {text for text in string_constants(roots) if pattern.fullmatch(text)}


# --- the tests ---------------------------------------------------------------------------------


def test_not_yet_built_names_are_in_the_contract() -> None:
    """Every name waiting to be built is still documented, in the table it is listed under."""
    for (heading, name), work in NOT_YET_BUILT.items():
        assert name in documented(heading), (heading, name, work)


def test_workflow_types_and_ids_are_the_documented_ones() -> None:
    """The task queue, the four workflow types the worker registers, the reconcile Schedule and
    the ids built from business ids are as the contract writes them."""
    values = {row[0]: names(row[1]) for row in table("Connection, task queue, workflows")}
    assert values["task queue"][0] == DEFAULT_TASK_QUEUE
    types = {
        "checkout": CHECKOUT_WORKFLOW,
        "trial": TRIAL_WORKFLOW,
        "reconcile": RECONCILE_WORKFLOW,
        "e-mail delivery": EMAIL_DELIVERY_WORKFLOW,
    }
    for kind, workflow_type in types.items():
        assert values[f"{kind} workflow type"][0] == workflow_type, kind
    assert set(workflow_definitions()) == set(types.values())
    assert RECONCILE_SCHEDULE_ID in values["reconcile workflow type"]
    assert values["checkout workflow id"][0] == checkout_workflow_id("<order_id>")
    assert values["trial workflow id"][0] == trial_workflow_id("<account_id>", "<product>")
    identifiers = {row[0]: row[1:] for row in table("Identifiers derived from business ids")}
    form_cell, example_cell = identifiers["idempotency key of a step"]
    form, example = names(form_cell)[0], names(example_cell)[0]
    assert form == idempotency_key("<order_id>", "<step>")
    assert example == idempotency_key("ord-1001", "charge")


def test_search_attributes_are_the_registered_keywords() -> None:
    """The search attributes `checkout setup` registers are the documented ones, all Keyword."""
    agree("Search attributes", {key.name for key in SEARCH_ATTRIBUTES})
    types = {names(row[0])[0]: row[1] for row in table("Search attributes")}
    for key in SEARCH_ATTRIBUTES:
        assert key.indexed_value_type is SearchAttributeIndexedValueType.KEYWORD, key.name
        assert types[key.name] == "Keyword", key.name


def test_checkout_status_values_are_the_enum() -> None:
    """The CheckoutStatus values operators filter by are exactly the enum's values."""
    agree("CheckoutStatus values", {status.value for status in CheckoutStatus})


@pytest.mark.parametrize(
    ("heading", "kind", "target"),
    [("Queries", "queries", 1), ("Updates", "updates", None), ("Signals", "signals", 1)],
)
def test_queries_updates_and_signals_are_the_workflows_handlers(
    heading: str, kind: str, target: int | None
) -> None:
    """Each documented query, update and signal is a handler of the workflow it is documented
    for (updates: CheckoutWorkflow), and every handler of the registered workflows is
    documented."""
    pending = {name for table_, name in NOT_YET_BUILT if table_ == heading}
    documented_for: dict[str, set[str]] = {}
    for row in table(heading):
        workflow_type = names(row[target])[0] if target is not None else CHECKOUT_WORKFLOW
        documented_for.setdefault(workflow_type, set()).update(names(row[0]))
    for workflow_type in workflow_definitions():
        in_docs = documented_for.get(workflow_type, set())
        built = handlers(kind, workflow_type)
        missing = in_docs - pending - built
        assert not missing, f"{workflow_type}: documented {kind}, not handled: {sorted(missing)}"
        assert not pending & built, f"built now, take off NOT_YET_BUILT: {sorted(pending & built)}"
        undocumented = built - in_docs
        assert not undocumented, f"{workflow_type}: undocumented {kind}: {sorted(undocumented)}"
    assert set(documented_for) <= set(workflow_definitions()), documented_for


def test_commands_are_the_parsers_commands() -> None:
    """Each documented command (``accounts import`` included) is a command of ``checkout``, and
    every command ``checkout`` has is documented."""
    found = dict(commands(starter.build_parser()))
    agree("Commands", set(found), everything_documented=False)
    leaves = {path for path, leaf in found.items() if leaf}
    assert leaves <= documented("Commands"), sorted(leaves - documented("Commands"))


def test_environment_variables_are_the_ones_the_code_reads() -> None:
    """Each documented variable is read by the worker and the commands (or, if the contract says
    "tests only", by the tests), and each variable of ours the code reads is documented, here or
    among Temporal's own."""
    rows = {names(row[0])[0]: row[2] for row in table("Environment variables")}
    for_tests = {name for name, meaning in rows.items() if meaning.startswith("tests only")}
    production = variables_in(PRODUCTION_CODE)
    agree("Environment variables", production | for_tests, everything_documented=False)
    assert for_tests <= string_constants(TEST_CODE), for_tests - string_constants(TEST_CODE)
    temporals = documented("Connection to Temporal")
    undocumented = production - set(rows) - temporals
    assert not undocumented, f"read but not documented: {sorted(undocumented)}"


def test_temporal_connection_variables_are_temporals_own(tmp_path: Path) -> None:
    """The documented connection variables are the ones temporalio.envconfig reads: each one
    set alone changes the profile it loads, and a config file's profile is picked by them."""
    plain = {name for name in documented("Connection to Temporal") if "..." not in name}
    file_based = {"TEMPORAL_CONFIG_FILE", "TEMPORAL_PROFILE"}
    unset = ClientConfigProfile.load(disable_file=True, override_env_vars={}).to_dict()
    for name in sorted(plain - file_based):
        profile = ClientConfigProfile.load(disable_file=True, override_env_vars={name: "true"})
        assert profile.to_dict() != unset, f"{name} is not read by temporalio.envconfig"
    config = tmp_path / "temporal.toml"
    config.write_text('[profile.other]\naddress = "elsewhere:7233"\n', encoding="utf-8")
    assert file_based <= plain
    picked = ClientConfigProfile.load(
        override_env_vars={"TEMPORAL_CONFIG_FILE": str(config), "TEMPORAL_PROFILE": "other"}
    )
    assert picked.address == "elsewhere:7233"


def test_result_reasons_are_the_reason_codes_and_end_as_documented() -> None:
    """The result reasons are exactly the Reason codes, and each ends ``rejected`` or
    ``compensated`` as the contract's table says."""
    agree("Result reasons", {reason.value for reason in Reason})
    ends = {names(row[0])[0]: row[1] for row in table("Result reasons")}
    for reason in Reason:
        expected = "rejected" if reason in REJECTION_REASONS else "compensated"
        assert ends[reason.value] == expected, reason
