"""The checkout worker under cProfile, for ``python -m benchmarks.pipeline --profile-worker``:
``worker.main`` leaves with ``os._exit`` (see checkout/process.py), which would skip cProfile's
own dump, so this writes the figures itself once the worker has stopped."""

from __future__ import annotations

import asyncio
import cProfile
import logging
import sys

from checkout.process import exit_process
from worker import run_worker


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    profile = cProfile.Profile()
    profile.enable()
    try:
        asyncio.run(run_worker())
    finally:
        profile.disable()
        profile.dump_stats(sys.argv[1])
    exit_process(0)


if __name__ == "__main__":
    main()
