"""A shop whose customers all buy alike (the same days, the same amounts): the population job's
fit has nothing to tell them apart by. It keeps the previous parameters or finite ones, and the
scorer keeps counting every purchase with no event dead-lettered."""

from __future__ import annotations

import time
from datetime import timedelta

from services.common.mongo import blocking_client
from services.stack.harness import TopicReader, unique_id
from tests.conftest import NOW
from tests.integration import test_scoring
from tests.integration.test_scoring import paid
from tests.unit.test_scoring_scores import non_finite

scorer = test_scoring.scorer  # the module's own scorer, as test_scoring starts it

CUSTOMERS = 60
DAYS_AGO = (120, 90, 60, 30)


def counts_reach(profiles, customers, count, timeout=90.0):
    deadline = time.monotonic() + timeout
    while True:
        found = {
            d["_id"]: d["purchases"]["count"]
            for d in profiles.find({"_id": {"$in": customers}}, {"facts": 0})
        }
        if len(found) == len(customers) and all(c == count for c in found.values()):
            return
        assert time.monotonic() < deadline, f"purchase counts never reached {count}: {sorted(found.values())}"
        time.sleep(0.3)


def test_a_uniform_shop_keeps_every_purchase_through_a_population_refresh(stack, scorer, prefix, publish):
    profiles = blocking_client(stack.mongo_url)[scorer.env["CRM_DB_PREFIX"] + "profiles"]["profiles"]
    customers = [unique_id() for _ in range(CUSTOMERS)]
    publish([paid(c, f"o-{d}", NOW - timedelta(days=d), 9_900) for c in customers for d in DAYS_AGO])
    counts_reach(profiles, customers, len(DAYS_AGO))

    assert scorer.post("/population/refresh", role="admin").status_code == 200
    publish([paid(c, "o-last", NOW - timedelta(days=1), 9_900) for c in customers])
    counts_reach(profiles, customers, len(DAYS_AGO) + 1)

    for doc in profiles.find({"_id": {"$in": customers}}, {"facts": 0}):
        assert non_finite(doc) == [], doc["_id"]
        assert doc["value"]["expected_purchases_90d"] is not None
    dead = TopicReader(stack, prefix + "crm.deadletter.v1").records()
    assert [r for r in dead if r.key and r.key.decode() in set(customers)] == []
