"""The service layer's writes (services/common/writes.py) on the real embedded database."""

from __future__ import annotations

import asyncio

from services.common.auth import Principal
from services.common.mongo import Mongo, ensure_indexes
from services.common.outbox import INDEXES as OUTBOX_INDEXES
from services.common.outbox import Outbox
from services.common.problems import Problem
from services.common.writes import INDEXES as WRITES_INDEXES
from services.common.writes import IdempotencyKey, Outcome, Writes
from services.stack.harness import unique_id


def test_a_retry_overlapping_its_original_gets_the_original_answer_not_the_conflict(stack):
    """Issue 18: a client timed out during a slow pay and asked again with the same key while
    the first request still ran. The retry answers what the first did; the work runs once."""
    settings = stack.settings()

    async def scenario() -> tuple[list[Outcome], int]:
        mongo = await Mongo.open(settings, f"writes-{unique_id()}")
        writes = Writes(mongo, Outbox(mongo, settings, "writes-test"))
        await ensure_indexes(mongo.db, {**WRITES_INDEXES, **OUTBOX_INDEXES, "accounts": []})
        accounts = mongo.db["accounts"]
        await accounts.insert_one({"_id": "a1", "paid": 0})
        principal = Principal("client", "shop")
        key = IdempotencyKey.from_request("pay-1", principal, "POST /accounts/a1/pay", b"{}")

        async def pay(session) -> Outcome:
            account = await accounts.find_one({"_id": "a1"}, session=session)
            if account["paid"]:
                raise Problem(409, "already paid")
            await asyncio.sleep(0.3)  # the slow database the client gave up on
            await accounts.update_one({"_id": "a1"}, {"$inc": {"paid": 1}}, session=session)
            return Outcome(200, {"paid": True})

        try:
            answers = await asyncio.gather(writes.run(pay, key), writes.run(pay, key))
            return answers, (await accounts.find_one({"_id": "a1"}))["paid"]
        finally:
            await mongo.client.drop_database(mongo.db.name)
            mongo.close()

    (first, retry), paid = asyncio.run(scenario())
    assert paid == 1
    assert (first.status, first.body) == (retry.status, retry.body) == (200, {"paid": True})
    assert [first.replayed, retry.replayed] == [False, True]
