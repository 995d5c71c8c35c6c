"""The checkout workflow's plain records: its progress and an operator's pending action.

They live outside ``workflows/checkout.py`` because the sandbox imports a workflow's own module
afresh for every run it builds, and building a dataclass is not free; this module comes in
through the sandbox's passthrough (``workflow.unsafe.imports_passed_through``), so its classes are
built once per worker. Nothing here may read the clock, randomness or I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from checkout.models import Decision
from checkout.models import VatCheck
from workflows.common import Progress as CommonProgress


@dataclass
class Progress(CommonProgress):
    """What v2 adds to the shared progress: the VAT check, the decision, and why it waits."""

    vat: VatCheck | None = None
    decision: Decision | None = None

    def wait(
        self, what: str | None, action: str | None = None, until: datetime | None = None
    ) -> None:
        self.waiting_for, self.next_action, self.deadline = what, action, until


@dataclass
class OperatorAction:
    """An operator's update that the workflow acts on between its steps."""

    kind: Literal["retry", "approve", "reject", "compensate"]
    reason: str | None = None
