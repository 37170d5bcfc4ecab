"""Many cheap agent streams from one process (asyncio gRPC): the fault suite's and the bench's load generator.

``python stream_swarm.py ADDRESS FIRST COUNT BATCHES EVENTS HOLD_S`` opens COUNT Ingest
streams (hosts ``swarm-FIRST`` ..), each sending BATCHES batches of EVENTS events and
then holding the stream open, idle, for HOLD_S seconds (so all are open at once) before
closing. Prints one JSON line: streams opened, acks received, events acked, errors.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc

from dnstrace.wire import dnstrace_pb2, dnstrace_pb2_grpc
from dnstrace.wire.codec import SCHEMA_VERSION, encode_events

BASE_TS = 1_700_000_000_000_000_000


def events_for(host: str, seq: int, count: int) -> bytes:
    return encode_events([{"kind": "gai", "ts": BASE_TS + seq * 1_000_000 + i, "pid": 1000 + i, "comm": "swarm",
                           "name": f"{host}.example", "latency_ns": 1000 + i} for i in range(count)])


async def one_stream(stub, host: str, batches: int, events: int, hold_until: float, result: dict) -> None:
    queue: asyncio.Queue = asyncio.Queue()

    async def requests():
        for seq in range(1, batches + 1):
            yield dnstrace_pb2.Batch(schema_version=SCHEMA_VERSION, host_id=host, boot_id="swarm-boot", instance=1,
                                     seq=seq, event_count=events, events=events_for(host, seq, events))
        await queue.get()  # hold the stream open (idle) until told to close

    try:
        call = stub.Ingest(requests(), timeout=600)
        result["opened"] += 1
        acked = 0
        async for ack in call:
            acked += 1
            result["acks"] += 1
            result["events"] += ack.stored
            if acked == batches:
                await asyncio.sleep(max(0.0, hold_until - time.monotonic()))
                queue.put_nowait(None)
    except grpc.aio.AioRpcError as err:
        result["errors"] += 1
        result.setdefault("codes", {}).setdefault(err.code().name, 0)
        result["codes"][err.code().name] += 1
        details = result.setdefault("details", [])
        if len(details) < 20:  # what an unexpected code said, for the assertion message
            details.append(f"{err.code().name}: {err.details()}")


async def main(address: str, first: int, count: int, batches: int, events: int, hold_s: float) -> dict:
    result = {"opened": 0, "acks": 0, "events": 0, "errors": 0}
    hold_until = time.monotonic() + hold_s
    async with grpc.aio.insecure_channel(address, options=[("grpc.max_concurrent_streams", 1 << 16)]) as channel:
        stub = dnstrace_pb2_grpc.CollectorStub(channel)
        await asyncio.gather(*(one_stream(stub, f"swarm-{first + n}", batches, events, hold_until, result)
                               for n in range(count)))
    return result


if __name__ == "__main__":
    address, first, count, batches, events, hold_s = sys.argv[1:7]
    print(json.dumps(asyncio.run(main(address, int(first), int(count), int(batches), int(events), float(hold_s)))))
