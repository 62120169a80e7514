"""The five checks of issue 18, exact: each service's database read directly, the signals
topic read from the beginning, compared with the clients' ledger and with each other.

Each check returns its discrepancies, one a line: a customer (or entity) id and what is
wrong, so an engineer can open that customer and see it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from .platform import ChaosPlatform
from .traffic import Ledger, Write

PERSONAL = ("name", "email", "phone", "gender", "birth_date", "city")
TRANSITIONS = ("pay", "ship", "deliver", "cancel", "return", "refund")
CHECKS = {
    "writes": "1. every write answered 2xx is in its service's database once; nothing answered 5xx is half-applied",
    "profiles": "2. every profile's purchases, net spend, complaint counts, loyalty mirror and interactions equal the owners'",
    "loyalty": "3. every balance equals its ledger sum, every paid order earned once, no balance below zero",
    "signals": "4. every churn-warning episode reached crm.signals.v1 exactly once and the worklist holds it",
    "erasure": "5. an erased customer has no personal field anywhere",
}


@dataclass
class Finding:
    check: str
    customer_id: str
    what: str


@dataclass
class Snapshot:
    """What the platform holds once quiet."""

    orders: list[dict[str, Any]]
    complaints: list[dict[str, Any]]
    surveys: list[dict[str, Any]]
    accounts: list[dict[str, Any]]
    ledger: list[dict[str, Any]]
    customers: list[dict[str, Any]]
    erasures: set[str]
    profiles: dict[str, dict[str, Any]]
    warnings: list[dict[str, Any]]
    signals: list[dict[str, Any]]
    signal_records: int
    published_marks: dict[int, int] = field(default_factory=dict)  # the scorer's, per partition
    documents: list[tuple[str, str, bytes]] = field(default_factory=list)  # (db.collection, id, text)

    @classmethod
    def read(cls, platform: ChaosPlatform) -> Snapshot:
        client = platform.mongo(timeout_ms=10_000)
        try:
            db = {
                name: client[platform.db_name(name)]
                for name in ("orders", "complaints", "loyalty", "profiles")
            }
            profiles = {}
            for doc in db["profiles"]["profiles"].find({}):
                # The scorer's facts are JSON text (services/scoring/store.py `encode_facts`).
                doc["facts"] = orjson.loads(doc["facts"]) if isinstance(doc.get("facts"), str) else None
                profiles[doc["_id"]] = doc
            documents = []
            for name in client.list_database_names():
                if not name.startswith(platform.settings.db_prefix):
                    continue
                for collection in client[name].list_collection_names():
                    for doc in client[name][collection].find({}):
                        text = orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS)
                        documents.append((f"{name}.{collection}", str(doc.get("_id")), text))
            records = platform.read_topic("crm.signals.v1")
            signals = []
            for record in records:
                try:
                    signals.append(orjson.loads(record.value))
                except orjson.JSONDecodeError:
                    continue
            return cls(
                orders=list(db["orders"]["orders"].find({})),
                complaints=list(db["complaints"]["complaints"].find({})),
                surveys=list(db["complaints"]["surveys"].find({})),
                accounts=list(db["loyalty"]["accounts"].find({})),
                ledger=list(db["loyalty"]["ledger"].find({})),
                customers=list(db["profiles"]["customers"].find({})),
                erasures={d["_id"] for d in db["profiles"]["erasures"].find({}, {"_id": 1})},
                profiles=profiles,
                warnings=list(db["profiles"]["churn_warnings"].find({})),
                signals=signals,
                signal_records=len(records),
                published_marks={d["_id"]: d["seq"] for d in db["profiles"]["signals_published"].find({})},
                documents=documents,
            )
        finally:
            client.close()


def run_checks(snapshot: Snapshot, ledger: Ledger) -> dict[str, list[Finding]]:
    found = {
        "writes": check_writes(snapshot, ledger),
        "profiles": check_profiles(snapshot, ledger),
        "loyalty": check_loyalty(snapshot),
        "signals": check_signals(snapshot),
        "erasure": check_erasure(snapshot, ledger),
    }
    for finding in (f for findings in found.values() for f in findings):
        if finding.check != "erasure" and finding.customer_id in snapshot.erasures:
            finding.what += " [customer erased]"  # a clue for the diagnosis
    return found


def _answered_then_refused(write: Write) -> bool:
    """A retry with the same key refused (4xx) after an attempt that failed (5xx or no
    answer): the first attempt left something behind that its key does not answer for."""
    return write.retried_after_failure and isinstance(write.final, int) and 400 <= write.final < 500


def check_writes(snapshot: Snapshot, ledger: Ledger) -> list[Finding]:
    out: list[Finding] = []
    orders = {o["_id"]: o for o in snapshot.orders}
    complaints = {c["_id"]: c for c in snapshot.complaints}
    surveys = {s["_id"]: s for s in snapshot.surveys}
    customers = {c["_id"] for c in snapshot.customers}

    def finding(customer_id: str, what: str) -> None:
        out.append(Finding("writes", customer_id, what))

    for write in ledger.writes:
        if _answered_then_refused(write):
            finding(
                write.customer_id,
                f"{write.method} {write.path}: statuses {write.statuses} with one key; last answer {str(write.body)[:160]}",
            )

    # Entities a client created: each accepted one held, and nothing held beyond what was asked.
    for kind, held, collection in (
        ("order", orders, snapshot.orders),
        ("complaint", complaints, snapshot.complaints),
        ("survey", surveys, snapshot.surveys),
    ):
        answered: dict[str, set[str]] = defaultdict(set)
        unanswered: Counter[str] = Counter()
        for write in ledger.writes:
            if write.kind not in (kind, f"probe-{kind}"):
                continue
            if write.accepted and write.entity:
                answered[write.customer_id].add(write.entity)
                if write.entity not in held:
                    finding(
                        write.customer_id,
                        f"{kind} {write.entity} answered {write.final} but not in the database",
                    )
            elif write.unanswered:
                unanswered[write.customer_id] += 1
        stored: dict[str, set[str]] = defaultdict(set)
        for doc in collection:
            if doc["_id"] not in ledger.imported_orders:
                stored[doc["customer_id"]].add(doc["_id"])
        for customer_id, ids in stored.items():
            if customer_id not in ledger.customers and not customer_id.startswith("probe-"):
                continue  # not this run's traffic
            extra = ids - answered[customer_id]
            if len(extra) > unanswered[customer_id]:
                finding(
                    customer_id,
                    f"{len(extra)} {kind}s held that no 2xx answered ({sorted(extra)[:3]}), "
                    f"only {unanswered[customer_id]} requests unanswered: applied twice",
                )

    # Transitions: the order's history holds each accepted one exactly once.
    accepted: Counter[tuple[str, str]] = Counter()
    maybe: Counter[tuple[str, str]] = Counter()
    owner: dict[str, str] = {}
    for write in ledger.writes:
        if write.kind in TRANSITIONS and write.entity:
            owner[write.entity] = write.customer_id
            if write.accepted:
                accepted[(write.entity, write.kind)] += 1
            elif write.unanswered:
                maybe[(write.entity, write.kind)] += 1
    for order_id, customer_id in owner.items():
        order = orders.get(order_id)
        if order is None:
            continue  # reported above
        done = Counter(step["action"] for step in order.get("history", []))
        for action in TRANSITIONS:
            want, extra = accepted[(order_id, action)], maybe[(order_id, action)]
            if done[action] < want:
                finding(
                    customer_id,
                    f"order {order_id}: {want} accepted {action} but {done[action]} in its history",
                )
            elif done[action] > want + extra:
                finding(
                    customer_id,
                    f"order {order_id}: {action} {done[action]} times in its history, {want} accepted",
                )

    # Redemptions: the ledger holds one redeem entry per accepted redemption.
    redeemed: Counter[str] = Counter(e["customer_id"] for e in snapshot.ledger if e["kind"] == "redeem")
    want_redeemed: Counter[str] = Counter(w.customer_id for w in ledger.accepted("redeem"))
    maybe_redeemed: Counter[str] = Counter(
        w.customer_id for w in ledger.writes if w.kind == "redeem" and w.unanswered
    )
    for customer_id in set(redeemed) | set(want_redeemed):
        if redeemed[customer_id] < want_redeemed[customer_id]:
            finding(
                customer_id,
                f"{want_redeemed[customer_id]} redemptions accepted, {redeemed[customer_id]} in the ledger",
            )
        elif redeemed[customer_id] > want_redeemed[customer_id] + maybe_redeemed[customer_id]:
            finding(
                customer_id,
                f"{redeemed[customer_id]} redemptions in the ledger, {want_redeemed[customer_id]} accepted",
            )

    for write in ledger.accepted("register"):
        if write.customer_id not in customers:
            finding(write.customer_id, "registration answered 2xx but no customer record")
    for write in ledger.accepted("resolve"):
        doc = complaints.get(write.entity)
        if doc is not None and doc.get("status") not in ("resolved", "closed"):
            finding(write.customer_id, f"complaint {write.entity} resolved (2xx) but {doc.get('status')}")
    for write in ledger.accepted("erase"):
        if write.customer_id not in snapshot.erasures:
            finding(write.customer_id, "erasure answered 2xx but not recorded")
    return out


def _expected_purchases(orders: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """(paid orders, net spend cents) per customer, from the orders service: what the shop
    kept of every order ever paid (services/orders/domain.py `net_sales`)."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for order in orders:
        if order.get("paid_cents", 0) <= 0:
            continue
        row = out[order["customer_id"]]
        row[0] += 1
        row[1] += (
            order["paid_cents"]
            - order["returned_cents"]
            - (order["refunded_cents"] - order.get("refunded_for_returns_cents", 0))
        )
    return {k: (v[0], v[1]) for k, v in out.items()}


def check_profiles(snapshot: Snapshot, ledger: Ledger) -> list[Finding]:
    out: list[Finding] = []
    purchases = _expected_purchases(snapshot.orders)
    complaints = Counter(c["customer_id"] for c in snapshot.complaints)
    accounts = {a["_id"]: a for a in snapshot.accounts}
    interactions: dict[str, set[str]] = defaultdict(set)
    for write in ledger.accepted("interactions"):
        interactions[write.customer_id].update((write.body or {}).get("interaction_ids", []))
    everyone = set(purchases) | set(complaints) | set(accounts) | set(interactions)
    for customer_id in sorted(everyone):
        profile = snapshot.profiles.get(customer_id)
        if profile is None:
            out.append(Finding("profiles", customer_id, "no profile"))
            continue
        problems = []
        count, net = purchases.get(customer_id, (0, 0))
        held = profile.get("purchases") or {}
        if held.get("count", 0) != count:
            problems.append(f"purchases {held.get('count')} (orders: {count})")
        if held.get("net_spend_cents", 0) != net:
            problems.append(f"net spend {held.get('net_spend_cents')} (orders: {net})")
        total = (profile.get("service") or {}).get("complaints_total", 0)
        if total != complaints[customer_id]:
            problems.append(f"complaints {total} (complaints: {complaints[customer_id]})")
        account = accounts.get(customer_id)
        mirror = profile.get("loyalty") or {}
        balance, tier = (account["balance"], account["tier"]) if account else (0, "member")
        if mirror.get("points", 0) != balance or mirror.get("tier", "member") != tier:
            problems.append(
                f"loyalty mirror {mirror.get('points')} {mirror.get('tier')} (loyalty: {balance} {tier})"
            )
        seen = set((profile.get("facts") or {}).get("interactions") or {})
        missing = interactions[customer_id] - seen
        if missing:
            problems.append(f"{len(missing)} accepted interactions missing ({sorted(missing)[:2]})")
        if problems:
            out.append(Finding("profiles", customer_id, "; ".join(problems)))
    return out


def check_loyalty(snapshot: Snapshot) -> list[Finding]:
    out: list[Finding] = []
    sums: Counter[str] = Counter()
    earned: dict[str, Counter[str]] = defaultdict(Counter)
    for entry in snapshot.ledger:
        sums[entry["customer_id"]] += entry["points"]
        if entry["kind"] == "earn" and entry.get("order_id") and entry.get("reason") == "purchase":
            earned[entry["customer_id"]][entry["order_id"]] += 1
    accounts = {a["_id"]: a for a in snapshot.accounts}
    for customer_id, account in accounts.items():
        if account["balance"] != sums[customer_id]:
            out.append(
                Finding(
                    "loyalty",
                    customer_id,
                    f"balance {account['balance']} but ledger sums to {sums[customer_id]}",
                )
            )
        if account["balance"] < 0 or any(lot.get("remaining", 0) < 0 for lot in account.get("lots", [])):
            out.append(Finding("loyalty", customer_id, f"balance below zero: {account['balance']}"))
    paid = {o["_id"]: o for o in snapshot.orders if o.get("paid_cents", 0) > 0}
    for order_id, order in paid.items():
        customer_id = order["customer_id"]
        times = earned[customer_id][order_id]
        account = accounts.get(customer_id)
        if times == 1:
            continue
        if times == 0 and account is not None and account.get("closed"):
            continue  # erased before the payment reached loyalty: a closed account earns nothing
        out.append(Finding("loyalty", customer_id, f"order {order_id} paid, earned {times} times"))
    for customer_id, orders in earned.items():
        for order_id in orders:
            if order_id not in paid:
                out.append(Finding("loyalty", customer_id, f"points earned on order {order_id}, never paid"))
    return out


def check_signals(snapshot: Snapshot) -> list[Finding]:
    out: list[Finding] = []
    on_topic: dict[str, set[str]] = defaultdict(set)
    for event in snapshot.signals:
        if event.get("type") == "crm.profile.churn_warning":
            on_topic[event["data"]["episode_id"]].add(event["id"])
    worklist = {w["_id"] for w in snapshot.warnings}
    expected = set()
    for customer_id, profile in snapshot.profiles.items():
        episodes = (((profile.get("churn") or {}).get("warning")) or {}).get("episode", 0)
        stored = _stored_episodes(profile, snapshot.published_marks.get(profile.get("partition"), 0))
        for k in range(1, episodes + 1):
            episode_id = f"cw-{customer_id}-{k}"
            expected.add(episode_id)
            problems = []
            if len(on_topic[episode_id]) != 1:
                problems.append(f"{len(on_topic[episode_id])} distinct warnings on crm.signals.v1")
            if episode_id not in worklist:
                problems.append("not in the worklist")
            if problems:
                # Where it stopped: stored with the profile, past its partition's published mark
                # (waiting) or at or below it (counted as published); or in the worklist though
                # gone from the topic (published, then lost by the broker).
                if episode_id in stored:
                    problems.append(f"stored with the profile, {stored[episode_id]}")
                elif episode_id in worklist:
                    problems.append("the worklist has it: published once, then gone from the topic")
                out.append(Finding("signals", customer_id, f"episode {episode_id}: " + ", ".join(problems)))
    for episode_id in sorted(set(on_topic) - expected):
        out.append(
            Finding(
                "signals",
                episode_id.rsplit("-", 1)[0][3:],
                f"warning {episode_id} on the topic, no such episode",
            )
        )
    return out


def _stored_episodes(profile: dict[str, Any], mark: int) -> dict[str, str]:
    """Churn warnings the scorer stored with the profile (services/scoring/signal_outbox.py:
    signals wait there until the broker has them), each with where it stands against the
    partition's published mark."""
    out = {}
    for item in profile.get("pending") or []:
        raw, seq = (item.get("event"), item.get("seq", 0)) if isinstance(item, dict) else (item, 0)
        try:
            event = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("type") == "crm.profile.churn_warning":
            out[event["data"]["episode_id"]] = (
                f"batch {seq} past the published mark {mark}: waiting"
                if seq > mark
                else f"batch {seq} at or below the published mark {mark}: counted as published"
            )
    return out


def check_erasure(snapshot: Snapshot, ledger: Ledger) -> list[Finding]:
    """Every person erased (the erasure answered 2xx, or recorded though unanswered): none of
    their personal strings in any document of any database, no personal field in their
    customer record or profile."""
    out: list[Finding] = []
    erased = {
        w.customer_id
        for w in ledger.writes
        if w.kind == "erase" and (w.accepted or w.customer_id in snapshot.erasures)
    }
    tokens = {t.encode(): cid for cid in erased for t in ledger.customers[cid].tokens}
    for where, doc_id, text in snapshot.documents:
        for token, customer_id in tokens.items():
            if token in text:
                out.append(Finding("erasure", customer_id, f"personal data in {where} {doc_id}"))
    customers = {c["_id"]: c for c in snapshot.customers}
    for customer_id in sorted(erased):
        record = customers.get(customer_id) or {}
        left = [name for name in PERSONAL if record.get(name) not in (None, "")]
        identity = (snapshot.profiles.get(customer_id) or {}).get("identity") or {}
        left += [f"profile.{name}" for name in PERSONAL if identity.get(name) not in (None, "")]
        if left:
            out.append(Finding("erasure", customer_id, f"personal fields kept: {', '.join(left)}"))
    return out
