"""Platform faults on the real stack: dead letters, the broker going away, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from kafka import KafkaProducer

from services.common.contracts import build_event, encode
from services.common.errors import RuleBroken
from services.common.handlers import Handlers
from services.common.kafka import EventConsumer, EventProducer, ensure_topics
from services.common.metrics import EVENTS_DEADLETTERED
from services.stack.embedded import free_port, port_open
from services.stack.harness import ROOT, TopicReader, once, start_service, start_stack, unique_id, until


def paid_event(customer: str) -> dict:
    return build_event(
        "crm.order.paid",
        {
            "order_id": unique_id("o"),
            "customer_id": customer,
            "amount_cents": 100,
            "currency": "CNY",
            "paid_at": "2026-11-22T07:00:00Z",
        },
        source="/services/orders",
    )


async def test_invalid_records_go_to_the_dead_letter_topic_and_the_consumer_moves_on(stack):
    settings = stack.settings(topic_prefix=f"dlq{uuid.uuid4().hex[:6]}.")
    ensure_topics(settings)
    customer = unique_id()
    good = [paid_event(customer) for _ in range(3)]
    raw = KafkaProducer(bootstrap_servers=stack.bootstrap)
    topic = settings.topic_prefix + "crm.orders.v1"
    poison = [b"{not json", orjson.dumps({**good[0], "data": {**good[0]["data"], "amount_cents": -1}})]
    raw.send(topic, key=customer.encode(), value=encode(good[0]))
    for record in poison:
        raw.send(topic, key=customer.encode(), value=record)
    for event in good[1:]:
        raw.send(topic, key=customer.encode(), value=encode(event))
    raw.flush()
    raw.close()

    producer = EventProducer(settings, "test")
    consumer = EventConsumer(settings, "dlq-test", ["crm.orders.v1"], producer)
    handled: list[str] = []
    stop = asyncio.Event()
    before = EVENTS_DEADLETTERED.labels(topic, "data")._value.get()

    async def handle(batch):
        handled.extend(d.event["id"] for d in batch)
        if len(handled) >= 3:
            stop.set()

    await asyncio.wait_for(consumer.run(handle, stop), 60)  # the group join included
    consumer.close()
    assert handled == [e["id"] for e in good]
    assert EVENTS_DEADLETTERED.labels(topic, "data")._value.get() == before + 1

    dead = TopicReader(stack, settings.topic_prefix + "crm.deadletter.v1").records()
    assert [r.value for r in dead] == poison
    reasons = [dict(r.headers)["crm.dlq.reason"].decode() for r in dead]
    assert "not JSON" in reasons[0] and "data.amount_cents" in reasons[1]
    assert dict(dead[1].headers)["crm.dlq.topic"].decode() == topic

    # The offsets were committed: a new member of the group starts after the batch.
    again = EventConsumer(settings, "dlq-test", ["crm.orders.v1"], producer)
    redelivered: list = []
    stop2 = asyncio.Event()

    async def handle_again(batch):
        redelivered.extend(batch)

    async def stop_soon():
        await asyncio.sleep(8)
        stop2.set()

    await asyncio.gather(again.run(handle_again, stop2), stop_soon())
    again.close()
    producer.close()
    assert redelivered == []


async def test_an_event_a_rule_refuses_is_dead_lettered_and_the_rest_are_handled(stack):
    settings = stack.settings(topic_prefix=f"ref{uuid.uuid4().hex[:6]}.")
    ensure_topics(settings)
    customer = unique_id()
    refused, good = paid_event(customer), paid_event(customer)
    producer = EventProducer(settings, "test")
    producer.publish([refused, good])
    topic = settings.topic_prefix + "crm.orders.v1"
    before = EVENTS_DEADLETTERED.labels(topic, "refused")._value.get()

    handlers: Handlers[list] = Handlers()
    handled: list[str] = []
    stop = asyncio.Event()

    @handlers.on("crm.order.paid")
    async def paid(seen: list, event: dict) -> None:
        if event["id"] == refused["id"]:
            raise RuleBroken("the account is closed", 409)
        seen.append(event["id"])
        stop.set()

    consumer = EventConsumer(settings, "refusal-test", handlers.topics, producer)
    await asyncio.wait_for(consumer.run(handlers.one_by_one(handled), stop), 60)
    consumer.close()
    producer.close()
    assert handled == [good["id"]]
    assert EVENTS_DEADLETTERED.labels(topic, "refused")._value.get() == before + 1
    dead = TopicReader(stack, settings.topic_prefix + "crm.deadletter.v1").records()
    assert [orjson.loads(r.value)["id"] for r in dead] == [refused["id"]]
    headers = dict(dead[0].headers)
    assert headers["crm.dlq.reason"] == b"refused: the account is closed"
    assert headers["crm.dlq.consumer"].decode().endswith("refusal-test")


def test_publishing_an_invalid_event_is_refused_before_sending(stack):
    producer = EventProducer(stack.settings(), "test")
    event = paid_event(unique_id())
    event["data"]["currency"] = "XXX1"
    with pytest.raises(ValueError, match="data.currency"):
        producer.publish([event])
    producer.close()


def test_writes_are_accepted_while_the_broker_is_down_and_published_once_when_it_returns(tmp_path):
    stack = start_stack(tmp_path)
    orders = start_service(stack, "orders")
    try:
        customer = unique_id()
        stack.broker.stop()
        assert orders.get("/readyz", role=None).status_code == 503
        ids = []
        for _ in range(4):
            placed = orders.post(
                "/orders",
                json={
                    "customer_id": customer,
                    "currency": "EUR",
                    "items": [{"sku": "A", "category": "c", "brand": "b", "qty": 1, "unit_price_cents": 700}],
                },
            )
            assert placed.status_code == 201
            ids.append(placed.json()["order_id"])
            assert orders.post(f"/orders/{ids[-1]}/pay", headers=once()).status_code == 200
        time.sleep(2)  # the relay tries, fails, and keeps the events
        stack.start_broker()
        reader = TopicReader(stack, "crm.orders.v1")
        events = reader.collect(lambda e: e["subject"] == customer, 8, timeout=60, settle=3)
        reader.close()
        assert len(events) == 8
        assert len({e["id"] for e in events}) == 8
        for oid in ids:
            assert [e["type"] for e in events if e["data"]["order_id"] == oid] == [
                "crm.order.placed",
                "crm.order.paid",
            ]
        assert orders.get("/readyz", role=None).status_code == 200
    finally:
        orders.stop()
        stack.stop()


def processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ:
            found.append(int(pid))
    return found


def test_crm_up_starts_everything_healthy_and_ctrl_c_leaves_nothing_behind(tmp_path):
    ports = {
        name: free_port()
        for name in (
            "broker",
            "mongo",
            "smtp",
            "orders",
            "complaints",
            "loyalty",
            "profiles",
            "scoring",
            "engagement",
            "reports",
            "staff",
            "desk",
            "console",
        )
    }
    marker = f"CRM_TEST_MARKER={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    env.update({f"CRM_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    env[marker.split("=")[0]] = marker.split("=")[1]
    data_dir = tmp_path / "crm"
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.stack.cli",
            "up",
            "--demo",
            "--data-dir",
            str(data_dir),
            "--broker-port",
            str(ports["broker"]),
            "--mongo-port",
            str(ports["mongo"]),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = ""
        deadline = time.monotonic() + 120
        while "Ctrl-C stops everything" not in output and time.monotonic() < deadline:
            line = launcher.stdout.readline()
            if not line and launcher.poll() is not None:
                break
            output += line
        assert "Ctrl-C stops everything" in output, output
        keys = dict(line.split("=", 1) for line in (data_dir / "api-keys.txt").read_text().split())
        assert set(keys) == {"viewer", "analyst", "agent", "supervisor", "admin"}
        assert str(data_dir / "api-keys.txt") in output.replace("\n", "")
        from services.stack.embedded import existing_services

        for service in existing_services():
            assert httpx.get(f"http://127.0.0.1:{ports[service]}/readyz", timeout=5).status_code == 200
        answer = httpx.get(
            f"http://127.0.0.1:{ports['orders']}/orders",
            headers={"Authorization": f"Bearer {keys['viewer']}"},
            timeout=5,
        )
        assert answer.status_code == 200
        # The local SMTP server's mailbox, listed by engagement (the demo's mail lands there).
        mailbox = httpx.get(
            f"http://127.0.0.1:{ports['engagement']}/mailbox",
            headers={"Authorization": f"Bearer {keys['viewer']}"},
            timeout=5,
        )
        assert mailbox.status_code == 200 and "items" in mailbox.json()
        # The demo's service desk: teams with their supervisors in the staff directory.
        teams = until(
            lambda: httpx.get(
                f"http://127.0.0.1:{ports['staff']}/teams",
                headers={"Authorization": f"Bearer {keys['viewer']}"},
                timeout=5,
            ).json()["items"],
            lambda items: any(len(team["supervisors"]) == 2 for team in items),
            timeout=60,
        )
        assert {team["id"] for team in teams} == {"east", "north"}
        assert len(processes_with(marker)) >= 4  # launcher, broker, database, services, demo

        # A child that dies is restarted by the launcher.
        orders_pids = [
            p for p in processes_with(marker) if b"services.orders" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        assert len(orders_pids) == 1
        os.kill(orders_pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{ports['orders']}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the launcher did not restart the orders service"
            time.sleep(0.2)
        status = subprocess.run(
            [sys.executable, "-m", "services.stack.cli", "status"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **env,
                "CRM_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports['broker']}",
                "CRM_MONGO_URL": f"mongodb://127.0.0.1:{ports['mongo']}",
            },
        )
        assert status.returncode == 0, status.stdout
        assert "orders" in status.stdout and "ready" in status.stdout

        launcher.send_signal(signal.SIGINT)
        launcher.wait(60)
        assert launcher.returncode == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    time.sleep(0.5)
    assert processes_with(marker) == []
    assert [name for name, port in ports.items() if port_open(port)] == []
