"""The ``checkout`` command run in this process, as the CLI tests drive it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from cli import main as checkout_command


async def run_checkout(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `checkout …` in this process: (exit status, stdout, stderr) of this run alone."""
    capsys.readouterr()
    code = await checkout_command.run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def json_file(directory: Path, content: Any, name: str | None = None) -> str:
    """The path of a new file in ``directory`` (a random ``….json`` name unless given) holding
    ``content``: a text as it is, anything else as JSON."""
    path = directory / (name or f"{uuid.uuid4().hex[:8]}.json")
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)
