"""`crm deadletters` on the real stack: a record loyalty dead-lettered is listed, refused while
still broken, fixed and replayed, and then earns its points once, however often it is replayed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from kafka import KafkaProducer

from services.common.clock import to_rfc3339
from services.common.contracts import build_event, encode
from services.stack import cli
from services.stack.deadletters import read_deadletters, read_replay_markers
from services.stack.harness import Service, start_service, unique_id, until


@pytest.fixture(scope="module")
def loyalty(stack, prefix) -> Service:
    service = start_service(stack, "loyalty", CRM_TOPIC_PREFIX=prefix)
    yield service
    service.stop()


@pytest.fixture
def crm(stack, prefix, monkeypatch, capsys):
    """Runs the `crm` command against the test stack, as an operator would with its settings in
    the environment; returns the exit code and what it printed."""
    monkeypatch.setenv("CRM_KAFKA_BOOTSTRAP", stack.bootstrap)
    monkeypatch.setenv("CRM_MONGO_URL", stack.mongo_url)
    monkeypatch.setenv("CRM_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("COLUMNS", "250")  # rich tables on one line each

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = cli.main(list(argv))
        return code, capsys.readouterr().out

    return run


def paid(customer: str, order: str, cents: int) -> dict:
    at = datetime.now(UTC) - timedelta(hours=1)
    return build_event(
        "crm.order.paid",
        {
            "order_id": order,
            "customer_id": customer,
            "amount_cents": cents,
            "currency": "CNY",
            "paid_at": to_rfc3339(at),
        },
        source="/services/orders",
        time=at,
        validate=cents >= 0,
    )


def balance(loyalty: Service, customer: str) -> int | None:
    answer = loyalty.get(f"/accounts/{customer}")
    return answer.json()["balance"] if answer.status_code == 200 else None


def test_a_dead_letter_fixed_and_replayed_is_taken_once(loyalty, stack, prefix, crm, tmp_path, publish):
    settings = stack.settings(topic_prefix=prefix)
    customer = unique_id()
    broken = paid(customer, "o-1", -1)  # breaks the order.paid schema: loyalty dead-letters it
    raw = KafkaProducer(bootstrap_servers=stack.bootstrap)
    raw.send(prefix + "crm.orders.v1", key=customer.encode(), value=encode(broken))
    raw.flush()
    raw.close()
    (letter,) = until(
        lambda: [x for x in read_deadletters(settings) if x.key == customer.encode()], lambda found: found
    )
    assert letter.consumer.endswith("crm-loyalty")

    code, out = crm("deadletters", "list", "--json", "--topic", "crm.orders.v1", "--since", "1h")
    assert code == 0
    (group,) = [g for g in orjson.loads(out)["groups"] if letter.address in g["dead_letters"]]
    assert "data.amount_cents" in group["reason"] and group["age"] == "under 1 h"
    assert group["topic"] == prefix + "crm.orders.v1" and group["replayed"] == 0
    code, out = crm("deadletters", "list", "--json", "--older-than", "1h")
    assert orjson.loads(out) == {"total": 0, "groups": []}
    code, out = crm("deadletters", "list")
    assert code == 0 and "data.amount_cents" in out and letter.address in out

    code, out = crm("deadletters", "show", letter.address)
    assert code == 0 and '"amount_cents": -1' in out and "crm-loyalty" in out

    # Still broken: refused with the reason, nothing sent.
    code, out = crm("deadletters", "replay", letter.address)
    assert code == 1 and "refused: still invalid" in out and "data.amount_cents" in out
    fix = tmp_path / "fixed.json"
    fix.write_bytes(orjson.dumps({**broken, "data": {**broken["data"], "amount_cents": 4_200}}))
    code, out = crm("deadletters", "replay", letter.address, "--fix", str(fix), "--dry-run")
    assert code == 0 and "would send" in out
    assert read_replay_markers(settings) == {} and balance(loyalty, customer) is None

    code, out = crm("deadletters", "replay", letter.address, "--fix", str(fix))
    assert code == 0 and "sent (fixed)" in out
    assert until(lambda: balance(loyalty, customer), lambda b: b is not None) == 42

    # Run twice by mistake: skipped, nothing sent.
    code, out = crm("deadletters", "replay", "--topic", "crm.orders.v1", "--reason", "amount_cents")
    assert code == 0 and "skipped: already replayed" in out
    assert list(read_replay_markers(settings)) == [letter.address]
    code, out = crm("deadletters", "list", "--json", "--topic", "crm.orders.v1")
    assert [g["replayed"] for g in orjson.loads(out)["groups"] if letter.address in g["dead_letters"]] == [1]

    # Sent again on purpose: loyalty has taken this event id already and changes nothing.
    code, out = crm("deadletters", "replay", letter.address, "--fix", str(fix), "--again")
    assert code == 0 and "sent (fixed)" in out
    publish(paid(customer, "o-2", 1_000))  # behind the replay on the customer's partition
    assert until(lambda: balance(loyalty, customer), lambda b: b != 42) == 52
    ledger = loyalty.get(f"/accounts/{customer}/ledger").json()["items"]
    assert sorted((e["kind"], e["points"]) for e in ledger) == [("earn", 10), ("earn", 42)]
