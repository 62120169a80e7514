"""Baseline faust agents for the scorer benchmark: `noop` consumes and does nothing,
`naive` awaits one database upsert per event. Run as a faust worker by bench/scoring.py."""

from __future__ import annotations

import os
import sys
import time

import faust
import orjson

MODE, BROKER, TOPIC, N = os.environ["MODE"], os.environ["BROKER"], os.environ["TOPIC"], int(os.environ["N"])
app = faust.App(
    f"bench-{MODE}-{os.getpid()}",
    broker=f"kafka://{BROKER}",
    store="memory://",
    web_enabled=False,
    topic_disable_leader=True,
    topic_allow_declare=False,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=6.0,
    datadir=os.environ["DATADIR"],
)
topic = app.topic(TOPIC, key_serializer="raw", value_serializer="raw")
state = {"n": 0, "t0": 0.0}


def done(count: int) -> None:
    state["n"] += count
    if state["n"] >= N:
        rate = N / (time.perf_counter() - state["t0"])
        sys.stderr.write(f"RATE {rate}\n")
        sys.stderr.flush()
        os._exit(0)


@app.agent(topic)
async def consume(stream):
    if MODE == "noop":
        async for events in stream.take_events(1000, within=0.2):
            state["t0"] = state["t0"] or time.perf_counter()
            done(len(events))
    else:
        from services.common.mongo import async_client

        profiles = async_client(os.environ["MONGO"])[os.environ["DB"]]["profiles"]
        async for value in stream:
            state["t0"] = state["t0"] or time.perf_counter()
            event = orjson.loads(value)
            await profiles.update_one(
                {"_id": event["subject"]},
                {"$inc": {"events": 1}, "$set": {"last": event["time"]}},
                upsert=True,
            )
            done(1)


if __name__ == "__main__":
    app.main()
