"""The official Python client's side of `bench/sdk_overhead`.

Run by the benchmark (`bench/src/bin/sdk_overhead.rs` embeds this file and
passes it to `target/python-venv/bin/python -c`), not by hand. Arguments:

    BASE_URL CALLS WARMUP ROUNDS [CONCURRENCY BATCH_CALLS BATCH_ROUNDS]
    (the key comes in NOXUS_BENCH_API_KEY)

One `Client` (no node catalog, no `/v1/admin/me` at construction); the
node types are then loaded once from `GET /v1/nodes`, untimed, because the
listed flows have nodes and `WorkflowDefinition` refuses node types it does
not know (this is what `load_nodes=True` does at construction). Then
WARMUP calls of each operation, then ROUNDS rounds of CALLS/ROUNDS sequential
calls of `client.admin.get_me()` and of `client.workflows.list()` each (the
order alternates per round), each call timed with `time.perf_counter_ns()`;
the CPU time of this (single) thread over each batch comes from
`time.thread_time_ns()`. Prints one JSON object on stdout: the per-call
nanoseconds and the CPU nanoseconds of each operation, and what the calls
returned, for the benchmark to check.

With CONCURRENCY > 0 it then measures calls made CONCURRENCY at a time, as
the client allows: its async methods `client.admin.aget_me()` and
`client.workflows.alist()` on one event loop, CONCURRENCY tasks each making
its share of BATCH_CALLS calls one after another (BATCH_ROUNDS rounds, the
operations alternating). Reported per operation: calls, wall nanoseconds and
CPU nanoseconds of the (single) thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import time


async def measure_batches(
    client, concurrency: int, calls: int, rounds: int, warmup: int, me_id: str
) -> dict:
    operations = {
        "me": client.admin.aget_me,
        "workflows": client.workflows.alist,
    }

    async def batch(call, n: int) -> int:
        per_task = max(1, n // concurrency)

        async def task() -> None:
            for _ in range(per_task):
                await call()

        await asyncio.gather(*(task() for _ in range(concurrency)))
        return per_task * concurrency

    for call in operations.values():
        await batch(call, max(warmup, concurrency))
    checked = await client.admin.aget_me()
    if checked.id != me_id:
        raise SystemExit(f"aget_me() returned key {checked.id}, expected {me_id}")

    per_round = max(concurrency, calls // max(1, rounds))
    out = {name: {"calls": 0, "ns": 0, "cpu_ns": 0} for name in operations}
    for round_ in range(max(1, rounds)):
        names = list(operations)
        if round_ % 2 == 1:
            names.reverse()
        for name in names:
            cpu_started = time.thread_time_ns()
            started = time.perf_counter_ns()
            done = await batch(operations[name], per_round)
            out[name]["ns"] += time.perf_counter_ns() - started
            out[name]["cpu_ns"] += time.thread_time_ns() - cpu_started
            out[name]["calls"] += done
    await client.aclose()
    return out


def main() -> None:
    base_url, calls, warmup, rounds = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    concurrency, batch_calls, batch_rounds = (
        (int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]))
        if len(sys.argv) > 7
        else (0, 0, 0)
    )
    api_key = os.environ["NOXUS_BENCH_API_KEY"]

    import noxus_sdk
    from noxus_sdk.client import Client
    from noxus_sdk.workflows.workflow import load_node_types

    client = Client(
        api_key=api_key, base_url=base_url, load_nodes=False, load_me=False
    )
    load_node_types(client.get_nodes())
    operations = {
        "me": client.admin.get_me,
        "workflows": client.workflows.list,
    }

    for call in operations.values():
        for _ in range(warmup):
            call()

    per_round = max(1, calls // rounds)
    timings: dict[str, list[int]] = {name: [] for name in operations}
    cpu: dict[str, int] = {name: 0 for name in operations}
    clock = time.perf_counter_ns
    thread_clock = time.thread_time_ns
    for round_ in range(rounds):
        names = list(operations)
        if round_ % 2 == 1:
            names.reverse()
        for name in names:
            call = operations[name]
            out = timings[name]
            cpu_started = thread_clock()
            for _ in range(per_round):
                started = clock()
                call()
                out.append(clock() - started)
            cpu[name] += thread_clock() - cpu_started

    me = client.admin.get_me()
    workflows = client.workflows.list()
    client.close()
    batches = (
        asyncio.run(
            measure_batches(
                client, concurrency, batch_calls, batch_rounds, warmup, me.id
            )
        )
        if concurrency > 0
        else None
    )
    json.dump(
        {
            "sdk_version": noxus_sdk.__version__,
            "python": platform.python_version(),
            "me_id": me.id,
            "workflow_ids": [w.id for w in workflows],
            "me_ns": timings["me"],
            "workflows_ns": timings["workflows"],
            "me_cpu_ns": cpu["me"],
            "workflows_cpu_ns": cpu["workflows"],
            "batches": batches,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
