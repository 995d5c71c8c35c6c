"""The undo stack of a workflow: each undo is registered just before the step it undoes and runs
in reverse order, shielded from cancellation, so a cancelled run still finishes its undo."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

Undo = Callable[[], Awaitable[Any]]


@dataclass
class Saga:
    """Undo steps, last registered first. Every undo must be safe when its step never ran (a
    step whose result was lost may or may not have taken effect)."""

    _steps: list[tuple[str, Undo]] = field(default_factory=list)

    def register(self, name: str, undo: Undo) -> None:
        self._steps.append((name, undo))

    def forget(self) -> None:
        """Nothing took effect (the order was rejected before anything was done)."""
        self._steps.clear()

    async def compensate(
        self, started: Callable[[str], None], finished: Callable[[str], None]
    ) -> None:
        """Run the undo steps in reverse, telling ``started`` and ``finished`` of each."""
        while self._steps:
            name, undo = self._steps.pop()
            started(name)
            # Shielded: cancelling the run must not stop an undo half way.
            await asyncio.shield(asyncio.ensure_future(undo()))
            finished(name)
