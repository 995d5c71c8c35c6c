"""The local servers and workers as processes of our own: started with their output appended to a
log file, in a session of their own (Ctrl-C reaches the caller only, which stops them after what
uses them), and stopped with SIGTERM, then SIGKILL."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path


def spawn_logged(
    command: Sequence[str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` without waiting on it, stdin closed, stdout and stderr appended to
    ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - the callers' own command lines
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes], within: float) -> None:
    """SIGTERM, and SIGKILL if it has not exited ``within`` seconds; returns once it is gone."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
