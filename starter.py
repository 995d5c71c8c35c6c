"""The ``checkout`` command (docs/contract.md, section 4) as a file to run: ``python starter.py``.

The command lives in the ``cli`` package (``cli/main.py``); this file stays where the repository
layout promises it. The names below are the ones callers of ``starter`` have used.
"""

from __future__ import annotations

from cli.accounts import parse_accounts
from cli.main import EXIT_ORDER_NOT_COMPLETED
from cli.main import build_parser
from cli.main import main
from cli.main import run

__all__ = ["EXIT_ORDER_NOT_COMPLETED", "build_parser", "main", "parse_accounts", "run"]

if __name__ == "__main__":
    main()
