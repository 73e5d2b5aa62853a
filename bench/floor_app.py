"""The smallest Faust worker there is: one agent that only counts the events of a topic.
`bench floor` runs it as a subprocess; it prints `rate <events/s>` and exits when it has
seen CR_FLOOR_EVENTS events (timed from the first one)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import faust

TOPIC = os.environ["CR_FLOOR_TOPIC"]
EXPECTED = int(os.environ["CR_FLOOR_EVENTS"])

app = faust.App(
    f"floor-{TOPIC}",
    broker=f"kafka://{os.environ['KAFKA_BOOTSTRAP_SERVERS']}",
    store="memory://",  # no table: this measures the stream machinery alone
    web_enabled=False,
    datadir=os.environ["CR_FLOOR_DATA"],
    consumer_auto_offset_reset="earliest",
)
source = app.topic(TOPIC, key_type=bytes, value_type=bytes, value_serializer="raw")


@app.agent(source)
async def count(stream: Any) -> None:
    seen, started = 0, 0.0
    async for _event in stream.events():
        if not seen:
            started = time.perf_counter()
        seen += 1
        if seen == EXPECTED:
            print(f"rate {EXPECTED / (time.perf_counter() - started):.0f}", flush=True)
            os._exit(0)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()
