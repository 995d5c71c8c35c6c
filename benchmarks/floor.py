"""The floor the checkout is measured against: a workflow of five activities that do nothing.

``python -m benchmarks.floor`` runs a worker for it (task queue from ``FLOOR_TASK_QUEUE``,
server from ``TEMPORAL_ADDRESS``), as a process of its own like the checkout's worker, so both
are measured the same way on the same server.
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import timedelta

from temporalio import activity
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

FLOOR_WORKFLOW = "FloorWorkflow"
STEPS = 5


@activity.defn(name="floor_step")
async def floor_step(step: int) -> int:
    return step


@workflow.defn(name=FLOOR_WORKFLOW)
class FloorWorkflow:
    @workflow.run
    async def run(self, order_id: str) -> str:
        for step in range(STEPS):
            await workflow.execute_activity(
                floor_step, step, start_to_close_timeout=timedelta(seconds=30)
            )
        return order_id


async def main() -> None:
    client = await Client.connect(os.environ.get("TEMPORAL_ADDRESS", "localhost:7233"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(
        client,
        task_queue=os.environ["FLOOR_TASK_QUEUE"],
        workflows=[FloorWorkflow],
        activities=[floor_step],
        # The same limits as the checkout's worker.
        max_concurrent_activities=20,
        max_concurrent_workflow_tasks=20,
        max_cached_workflows=1000,
    ):
        print("floor worker polling", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
