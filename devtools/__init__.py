"""Tools for running the checkout's pieces on one machine: a free port on loopback, an SMTP sink
that keeps what arrives, the paths of the Temporal binaries that come with the venv, the dev
server as a process of one's own (``devtools.temporal``, on ``devtools.process``), and raw
records to feed the checkout (``devtools.builders``).

Used by the tests, the benchmarks, the demo and the chaos scripts. Nothing here is part of the
checkout, and nothing here imports it, so any layer may import this one.
"""

from devtools.binaries import tool_path
from devtools.net import LOOPBACK
from devtools.net import OnLoopback
from devtools.net import free_port
from devtools.smtp import SmtpSink

__all__ = ["LOOPBACK", "OnLoopback", "SmtpSink", "free_port", "tool_path"]
