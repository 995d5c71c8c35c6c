"""How the programs (the worker, the ``checkout`` command, the demo stack) end."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import suppress
from typing import NoReturn


def exit_process(code: int) -> NoReturn:
    """End the process now that the output is flushed, skipping the interpreter's teardown: the
    Temporal client's Rust threads can abort it ("PyGILState_Release ... must be current when
    releasing", temporalio/sdk-python#300), which turns a success into exit status 134."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(code)


def finish(code: int, *, owns_process: bool) -> int:
    """The end of a program's ``main``: ``code`` for a caller in this process, else the process
    ends with it (:func:`exit_process`)."""
    if owns_process:
        exit_process(code)
    return code
