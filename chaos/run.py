"""Run the chaos experiments and print one markdown table: ``python -m chaos.run``.

(A) the issue's experiment: 200 orders, 20 % of them in racing pairs, 10 worker SIGKILLs, one
Temporal restart and one 60 s PostgreSQL outage; (B) a short PostgreSQL outage: 30 orders, 20 s,
no kills. Each runs on parts of its own (see chaos/harness.py). Exits 1 if any invariant fails,
and lists what failed under the table. The logs of each experiment are kept in
``.data/chaos/<date>-<experiment>/`` (``--keep-logs``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from chaos.harness import Experiment
from chaos.harness import ExperimentResult
from chaos.harness import FaultPlan
from chaos.harness import Limits
from chaos.harness import run_experiment

REPO = Path(__file__).resolve().parents[1]

EXPERIMENTS: dict[str, Experiment] = {
    # One line each: the orders, the faults, the load, the time limits.
    "A": Experiment(
        name="A: races, 10 kills, Temporal restart, 60 s outage",
        orders=200, racing_fraction=0.2, repeat_fraction=0.05,
        faults=FaultPlan(worker_kills=10, temporal_restarts=1, postgres_outage=60.0, outage_at=0.5),
        concurrency=20, workers=2,
        limits=Limits(deadline=2700.0, settle_within=900.0),
    ),
    "B": Experiment(
        name="B: short PostgreSQL outage",
        orders=30, racing_fraction=0.2,
        faults=FaultPlan(postgres_outage=20.0, outage_at=0.7),
        concurrency=20, workers=2,
        limits=Limits(deadline=900.0, settle_within=420.0),
    ),
}  # fmt: skip

COLUMNS = (
    "experiment",
    "orders",
    "faults injected",
    "completed",
    "rejected",
    "compensated",
    "Σ charges - refunds = Σ completed totals",
    "subscriptions as sequential (mismatches)",
    "left running",
    "duplicate e-mails",
    "wall time",
)


def machine() -> str:
    """Cores, memory, CPU model and load: what the figures were measured on."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown memory"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB memory"
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, {model}, {memory}; load average {load} at the start"


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def row(result: ExperimentResult) -> list[str]:
    orders = f"{result.orders} ({result.racing_pairs} racing pairs"
    orders += f", {result.repeated} repeated)" if result.repeated else ")"
    faults = []
    if result.kills:
        faults.append(f"{_plural(result.kills, 'worker SIGKILL')}")
    faults += [
        f"Temporal restart ({fault.downtime:.0f} s down)"
        for fault in result.faults
        if fault.kind == "restart_temporal"
    ]
    if result.outage_seconds:
        faults.append(f"PostgreSQL down {result.outage_seconds:.0f} s")
    rejected = sum(result.rejected.values())
    rejected_cell = str(rejected)
    if rejected:
        rejected_cell += ": " + ", ".join(f"{n} {r}" for r, n in sorted(result.rejected.items()))
    compensated = sum(result.compensated.values())
    compensated_cell = str(compensated)
    if compensated:
        compensated_cell += ": " + ", ".join(
            f"{n} {r}" for r, n in sorted(result.compensated.items())
        )
    money = "; ".join(
        f"{currency} {_money(store)} {'=' if store == due else '≠'} {_money(due)}"
        for currency, (store, due) in result.money.items()
    )
    money_cell = f"{'yes' if result.money_balances else 'no'}: {money or 'not checked'}"
    mismatches = len(result.subscription_mismatches)
    subs_cell = f"{'yes' if not mismatches and result.money else 'no'} ({mismatches})"
    running = str(len(result.left_running)) if result.money else "not checked"
    duplicates = sum(n - 1 for n in result.duplicate_emails.values())
    dup_cell = str(duplicates)
    if duplicates:
        dup_cell += f" ({result.excused_duplicates} in the SMTP acceptance window)"
    if result.missing_emails:
        dup_cell += f"; {len(result.missing_emails)} missing"
    return [
        result.name,
        orders,
        ", ".join(faults) or "none",
        str(result.completed),
        rejected_cell,
        compensated_cell,
        money_cell,
        subs_cell,
        running,
        dup_cell,
        _duration(result.wall_time),
    ]


def table(results: Sequence[ExperimentResult]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    lines += ["| " + " | ".join(row(r)) + " |" for r in results]
    return "\n".join(lines)


def notes(result: ExperimentResult) -> list[str]:
    """What else happened, for whoever reads the table."""
    phases = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.phases.items())
    lines = [
        (
            f"{result.name}: {phases}; {result.worker_starts} worker processes started"
            f" ({result.workers_exited_on_their_own} exited on their own, e.g. no database to"
            f" migrate at start); {result.parked} parked, {result.emails_given_up} e-mails"
            " given up."
        ),
    ]
    lines += [
        f"  {fault.kind} at {fault.at:.0f} s with {fault.in_flight} orders in flight"
        + (f", {fault.downtime:.1f} s down" if fault.downtime else "")
        for fault in result.faults
    ]
    return lines


async def main(names: Sequence[str], keep_logs: Path | None) -> int:
    stamp = datetime.now(UTC)
    on = machine()
    print(f"Machine: {on}", file=sys.stderr)
    results = []
    for name in names:
        exp = EXPERIMENTS[name]
        logs = None
        if keep_logs is not None:
            logs = keep_logs / f"{stamp:%Y%m%dT%H%M%SZ}-{name}"
            exp = dataclasses.replace(exp, keep_logs=logs)
        print(f"running {exp.name} ...", file=sys.stderr)
        result = await run_experiment(exp)
        verdict = "holds" if not result.failures() else "FAILS"
        where = f"; logs in {logs}" if logs else ""
        print(f"  {verdict} after {_duration(result.wall_time)}{where}", file=sys.stderr)
        results.append(result)

    print(f"Chaos experiments, {stamp:%Y-%m-%d %H:%M} UTC. Machine: {on}.")
    print()
    print(table(results))
    print()
    for result in results:
        for line in notes(result):
            print(line)
    failed = [(r.name, f) for r in results for f in r.failures()]
    if failed:
        print()
        print("Invariants that do not hold:")
        for name, failure in failed:
            print(f"- {name}: {failure}")
        return 1
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument(
        "--only",
        default=",".join(EXPERIMENTS),
        help=f"comma-separated experiments to run (default: {','.join(EXPERIMENTS)})",
    )
    parser.add_argument(
        "--keep-logs",
        type=Path,
        default=REPO / ".data" / "chaos",
        help="where to copy each experiment's logs (default .data/chaos)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiments {unknown}; there are {list(EXPERIMENTS)}")

    async def guarded() -> int:
        # SIGTERM like Ctrl-C: the experiment's own cleanup stops every part it started.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main(names, args.keep_logs)

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every part the experiment started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli())
