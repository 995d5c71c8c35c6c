"""Replaying recorded histories of every CheckoutWorkflow and TrialWorkflow path: a workflow
change that would break orders or trials in flight fails here, before it reaches a worker."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.common import RawValue
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from checkout.contract import checkout_workflow_id
from worker import WORKFLOWS
from workflows.checkout import CHECKOUT_V2
from workflows.checkout import PARKED_EMAIL
from workflows.interceptors import CheckoutInterceptor

HISTORIES = sorted((Path(__file__).parent / "histories").glob("v*/*.json"))


def name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def workflow_id(text: str, fallback: str) -> str:
    """The id the run had: ``order-<order_id>`` for a checkout (v2 checks it on replay too)."""
    started = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"]
    try:
        order = json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))
        return checkout_workflow_id(order["order_id"])
    except (KeyError, IndexError, TypeError, ValueError):
        return fallback


def load(path: Path) -> WorkflowHistory:
    text = path.read_text(encoding="utf-8")
    return WorkflowHistory.from_json(workflow_id(text, path.stem), text)


PATHS = {
    "completed",
    "cart_with_trial",
    "rejected_declined",
    "rejected_malformed",
    "parked_then_retried",
    "parked_then_compensated",
    "parked_then_timed_out",
    "parked_then_cancelled",
    "corporate_approved",
    "corporate_rejected",
    "corporate_approval_timed_out",
    "bought_during_trial",
    "trial_expired",
    "trial_converted",
}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_histories_cover_every_path(version: str) -> None:
    """Each version's recorded set names each path the runbook describes: v1 for runs started
    before the ``checkout-v2`` patch, v2 for today's code."""
    assert {p.stem for p in HISTORIES if p.parent.name == version} >= PATHS


def test_v2_histories_took_the_v2_path() -> None:
    """Today's recordings carry the checkout-v2 patch (its TemporalChangeVersion), so they test
    the new code, and the queued path is among them."""
    v2 = [p for p in HISTORIES if p.parent.name == "v2" and workflow_type(p) == "CheckoutWorkflow"]
    assert v2
    patch = base64.b64encode(json.dumps([CHECKOUT_V2]).encode()).decode()
    assert all(patch in p.read_text(encoding="utf-8") for p in v2)
    assert "queued_behind_an_earlier_order" in {p.stem for p in v2}


def test_parked_email_histories_took_the_parked_email_path() -> None:
    """Every path that parks is recorded again with the ``parked-email`` patch (its marker in the
    history), so replaying them tests the code that sends the parked e-mail, while the v2
    recordings keep testing runs that parked before it."""
    folder = [p for p in HISTORIES if p.parent.name == "v2-parked-email"]
    assert {p.stem for p in folder} == {name for name in PATHS if name.startswith("parked_")}
    marker = base64.b64encode(
        json.dumps({"id": PARKED_EMAIL, "deprecated": False}, separators=(",", ":")).encode()
    ).decode()
    assert all(marker in p.read_text(encoding="utf-8") for p in folder)


def test_trial_attributes_histories_start_trials_with_their_account() -> None:
    """Trials recorded since the checkout sets AccountId with the trial's start carry it in their
    start event and upsert nothing, while the v2 recordings keep testing trials that upserted it
    themselves."""

    def trial_events(folder: str) -> list[list[str]]:
        histories = [load(p) for p in HISTORIES if p.parent.name == folder]
        return [
            [EventType.Name(e.event_type) for e in h.events]
            for h in histories
            if h.events[0].workflow_execution_started_event_attributes.workflow_type.name
            == "TrialWorkflow"
        ]

    upsert = "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES"
    new, old = trial_events("v2-trial-attributes"), trial_events("v2")
    assert len(new) == len(old) == 2
    assert all(upsert not in events for events in new)
    assert all(upsert in events for events in old)


def workflow_type(path: Path) -> str:
    started = load(path).events[0].workflow_execution_started_event_attributes
    return started.workflow_type.name


def test_histories_include_both_workflow_types() -> None:
    """Trials in flight are covered as well as checkouts: each type has recorded histories."""
    types = {path.stem: workflow_type(path) for path in HISTORIES if path.parent.name == "v1"}
    assert types["trial_expired"] == types["trial_converted"] == "TrialWorkflow"
    assert types["corporate_approved"] == types["completed"] == "CheckoutWorkflow"


@pytest.mark.parametrize("path", HISTORIES, ids=[name(p) for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    """The current workflow code makes the same decisions as the code that recorded it."""
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        interceptors=[CheckoutInterceptor()],
    )
    result = await replayer.replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{name(path)}: {result.replay_failure}"


@workflow.defn(name="CheckoutWorkflow", sandboxed=False)
class ChangedCheckout:
    """A changed CheckoutWorkflow: it only runs ``steps`` (an activity's name and its arguments
    each), one after the other."""

    steps: ClassVar[Sequence[tuple[str, *tuple[object, ...]]]] = ()

    @workflow.run
    async def run(self, raw_order: RawValue) -> None:
        for activity, *args in self.steps:
            await workflow.execute_activity(
                activity, args=args, start_to_close_timeout=timedelta(seconds=5)
            )


@pytest.mark.parametrize(
    "steps",
    [
        # The price is asked for before the worker's settings are read.
        [("price_order", {}), ("load_checkout_policy",)],
        # The worker's settings are no longer read first.
        [("claim_order", {})],
    ],
    ids=["reordered_first_activities", "unversioned_removal_of_a_step"],
)
async def test_incompatible_change_fails_replay(
    steps: Sequence[tuple[str, *tuple[object, ...]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scheduling a different first activity than the history recorded is caught, and so is
    dropping a step that recorded orders took (here: the policy read)."""
    monkeypatch.setattr(ChangedCheckout, "steps", steps)
    replayer = Replayer(workflows=[ChangedCheckout], data_converter=pydantic_data_converter)
    completed = next(p for p in HISTORIES if name(p) == "v1/completed")
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(load(completed))
