"""Ports on loopback."""

from __future__ import annotations

import socket

#: Every local server of ours listens here only.
LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (the system's pick, so parallel runs differ)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class OnLoopback:
    """A server of ours on ``port`` of the loopback interface (a mixin: the class has ``port``)."""

    port: int

    @property
    def address(self) -> str:
        """``host:port``, as Temporal's clients and the ``temporal`` CLI take it."""
        return f"{LOOPBACK}:{self.port}"
