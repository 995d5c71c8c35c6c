"""The ``checkout`` command run in this process, as the CLI tests drive it."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from checkout.config import Settings
from checkout.store import Store
from cli import main as checkout_command
from tests.helpers.processes import set_checkout_env


async def run_checkout(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `checkout …` in this process: (exit status, stdout, stderr) of this run alone."""
    capsys.readouterr()
    code = await checkout_command.run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@dataclass
class Cli:
    """Runs `checkout …` in this process and hands back (exit status, stdout, stderr)."""

    capsys: pytest.CaptureFixture[str]
    tmp_path: Path
    store: Store
    settings: Settings
    client: Client | None = None

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        return await run_checkout(self.capsys, *argv)

    def file(self, content: Any, name: str | None = None) -> str:
        """The path of a new file (a random ``….json`` name unless given) holding ``content``:
        a text as it is, anything else as JSON."""
        path = self.tmp_path / (name or f"{uuid.uuid4().hex[:8]}.json")
        text = content if isinstance(content, str) else json.dumps(content)
        path.write_text(text, encoding="utf-8")
        return str(path)


def point_checkout_at(monkeypatch: pytest.MonkeyPatch, settings: Settings, address: str) -> None:
    """The environment a person would set for the command: the Temporal server at ``address``
    (no API key, profile, config file or TLS of the machine's own), the settings' task queue,
    database and SMTP server."""
    for name in ("TEMPORAL_API_KEY", "TEMPORAL_PROFILE", "TEMPORAL_CONFIG_FILE", "TEMPORAL_TLS"):
        monkeypatch.delenv(name, raising=False)
    set_checkout_env(monkeypatch, address, settings)
