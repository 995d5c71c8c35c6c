"""The Temporal dev server as a process of our own (``temporal server start-dev``), the way the
demo, the chaos experiments and the benchmarks run it: on loopback, its state in
``<folder>/temporal.db`` so it can be stopped and started again on the same workflows, its
output appended to ``<folder>/temporal.log``, errors only.

The search attributes come from the caller (devtools imports nothing of the checkout).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.common import SearchAttributeIndexedValueType
from temporalio.common import SearchAttributeKey

from devtools.binaries import tool_path
from devtools.net import LOOPBACK
from devtools.process import spawn_logged

#: The type names ``--search-attribute NAME=TYPE`` takes.
_TYPE_NAMES = {
    SearchAttributeIndexedValueType.TEXT: "Text",
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}


def dev_server_command(
    folder: Path,
    port: int,
    search_attributes: Sequence[SearchAttributeKey[Any]],
    *,
    ui_port: int | None = None,
    ui_codec_endpoint: str | None = None,
) -> list[str]:
    """The command line: headless unless ``ui_port`` is given; the Web UI then decodes payloads
    through ``ui_codec_endpoint`` if there is one (the browser calls it)."""
    command = [
        tool_path("temporal"),
        "server",
        "start-dev",
        "--ip",
        LOOPBACK,
        "--port",
        str(port),
        "--db-filename",
        str(folder / "temporal.db"),
        "--namespace",
        "default",
        "--log-level",
        "error",
        # On by default in today's dev server; pinned, as the checkout's decision is an update.
        "--dynamic-config-value",
        "frontend.enableUpdateWorkflowExecution=true",
    ]
    for key in search_attributes:
        command += ["--search-attribute", f"{key.name}={_TYPE_NAMES[key.indexed_value_type]}"]
    if ui_port is None:
        command.append("--headless")
    else:
        command += ["--ui-port", str(ui_port)]
        if ui_codec_endpoint is not None:
            command += ["--ui-codec-endpoint", ui_codec_endpoint]
    return command


def start_dev_server(command: Sequence[str], folder: Path) -> subprocess.Popen[bytes]:
    """Start ``command`` (from :func:`dev_server_command`) with its output appended to
    ``folder/temporal.log`` (see :func:`devtools.process.spawn_logged`); not waited on: the
    caller waits until it answers, and stops it with :func:`devtools.process.stop_process`."""
    folder.mkdir(parents=True, exist_ok=True)
    return spawn_logged(command, folder / "temporal.log")
