"""Event contracts: the CloudEvents envelope, JSON Schema validation, encoding.

Schemas live in `schemas/<family.name>/v<N>.json` (draft 2020-12); `schemas/common/v1.json`
holds the shared definitions they reference. Validation runs on publish and on consume.
"""

from __future__ import annotations

import copy
import uuid
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource

from .clock import SystemClock, to_rfc3339
from .errors import Kind, RuleBroken

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_BASE = "https://schemas.crm.example"
SPEC_VERSION = "1.0"
# The satisfaction dimensions a survey scores (besides "overall"); tests/unit/test_contracts.py
# checks they are the survey schema's.
SATISFACTION_DIMENSIONS = ("website", "product", "payment", "service", "logistics")
_clock = SystemClock()


class EventValidationError(ValueError):
    """An event that breaks its contract. `field` is the JSON path of the offending value."""

    def __init__(self, reason: str, field: str | None = None, event_type: str | None = None) -> None:
        self.reason = reason
        self.field = field
        self.event_type = event_type
        where = f" at {field}" if field else ""
        of = f" in {event_type}" if event_type else ""
        super().__init__(f"invalid event{of}{where}: {reason}")


def schema_url(event_type: str, version: int = 1) -> str:
    return f"{SCHEMA_BASE}/{event_type.removeprefix('crm.')}/v{version}.json"


class SchemaRegistry:
    """Every schema under `schemas/`, compiled once.

    Two validators per schema: jsonschema (draft 2020-12, the authority; it explains a
    failure precisely) and a fastjsonschema compilation of the same schema with its
    `$ref`s inlined, about 30 times faster, which decides the common case of a valid
    event. tests/unit/test_contracts.py checks that both agree on every example.
    """

    def __init__(self, root: Path = SCHEMAS_DIR) -> None:
        self.root = root
        resources = []
        self.documents: dict[str, dict] = {}
        for path in sorted(root.glob("*/v*.json")):
            if path.name.endswith(".examples.json"):
                continue
            doc = orjson.loads(path.read_bytes())
            self.documents[doc["$id"]] = doc
            resources.append((doc["$id"], Resource.from_contents(doc)))
        self._registry = Registry().with_resources(resources)
        self._validators: dict[str, Draft202012Validator] = {}
        self._fast: dict[str, Any] = {}
        self.envelope_url = f"{SCHEMA_BASE}/envelope/v1.json"

    def validator(self, url: str) -> Draft202012Validator:
        found = self._validators.get(url)
        if found is None:
            if url not in self.documents:
                raise EventValidationError(f"no schema {url}", "dataschema")
            found = Draft202012Validator(
                self.documents[url], registry=self._registry, format_checker=FormatChecker()
            )
            self._validators[url] = found
        return found

    def fast_validator(self, url: str):
        found = self._fast.get(url)
        if found is None:
            if url not in self.documents:
                raise EventValidationError(f"no schema {url}", "dataschema")
            inlined = self._inline(self.documents[url], url)
            for key in ("$schema", "$id", "$defs"):
                inlined.pop(key, None)
            found = fastjsonschema.compile(inlined, formats=_FORMATS)
            self._fast[url] = found
        return found

    def _inline(self, node: Any, base: str) -> Any:
        if isinstance(node, dict):
            target = node.get("$ref")
            if target is not None:
                doc_url, _, pointer = (target if "://" in target else base.split("#")[0] + target).partition(
                    "#"
                )
                resolved: Any = self.documents[doc_url]
                for part in pointer.strip("/").split("/") if pointer else []:
                    resolved = resolved[part]
                return self._inline(copy.deepcopy(resolved), doc_url)
            return {k: self._inline(v, base) for k, v in node.items()}
        if isinstance(node, list):
            return [self._inline(v, base) for v in node]
        return node

    def event_types(self) -> list[str]:
        """Every event type with a data schema, e.g. 'crm.order.paid'."""
        names = {url.removeprefix(SCHEMA_BASE + "/").split("/")[0] for url in self.documents}
        return sorted(f"crm.{n}" for n in names if n not in ("common", "envelope"))

    def check(self, url: str, instance: Any, prefix: str = "", event_type: str | None = None) -> None:
        try:
            self.fast_validator(url)(instance)
            return
        except fastjsonschema.JsonSchemaException as fast_error:
            fast_message = fast_error.message
        error: ValidationError | None = best_match(self.validator(url).iter_errors(instance))
        if error is None:  # the two disagree: trust the stricter answer, say what it said
            raise EventValidationError(fast_message, prefix or None, event_type)
        path = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise EventValidationError(_short(error), path.lstrip(".") or None, event_type)

    def validate(self, event: Any) -> None:
        """Envelope first, then `data` against the schema that `dataschema` names."""
        if not isinstance(event, dict):
            raise EventValidationError("an event must be a JSON object")
        self.check(
            self.envelope_url,
            event,
            event_type=event.get("type") if isinstance(event.get("type"), str) else None,
        )
        etype = event["type"]
        expected = schema_url(etype)
        if event["dataschema"] != expected:
            raise EventValidationError(f"dataschema must be {expected}", "dataschema", etype)
        self.check(expected, event["data"], "data", etype)
        data_customer = event["data"].get("customer_id")
        if data_customer is not None and data_customer != event["subject"]:
            raise EventValidationError("subject must equal data.customer_id", "subject", etype)


def _is_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
        return len(value) == 10
    except ValueError:
        return False


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


_FORMATS = {"date": _is_date, "date-time": _is_datetime}


def _short(error: ValidationError) -> str:
    message = error.message
    return message if len(message) <= 300 else message[:297] + "..."


@lru_cache(maxsize=1)
def registry() -> SchemaRegistry:
    return SchemaRegistry()


def build_event(
    event_type: str,
    data: dict[str, Any],
    *,
    source: str,
    subject: str | None = None,
    time: datetime | None = None,
    event_id: str | None = None,
    validate: bool = True,
) -> dict[str, Any]:
    """A CloudEvents 1.0 structured-mode event, keyed (subject) by the customer id."""
    event = {
        "specversion": SPEC_VERSION,
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": event_type,
        "time": to_rfc3339(time or _clock.now()),
        "subject": subject or data.get("customer_id"),
        "datacontenttype": "application/json",
        "dataschema": schema_url(event_type),
        "data": data,
    }
    if validate:
        registry().validate(event)
    return event


# The largest encoded event the platform publishes. The producer sends requests of up to
# 1 MiB (kafka.EventProducer, as Kafka's default message.max.bytes takes); the rest leaves
# room for the key, the headers and the batch framing. An API body may be 1 MiB itself
# (settings.max_body_bytes), so a write whose event would be larger is refused with a 413
# (`encode_bounded`) instead of being accepted and then refused by the broker.
MAX_EVENT_BYTES = 1_000_000


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def encode_bounded(event: dict[str, Any]) -> bytes:
    """`encode`, refusing an event larger than MAX_EVENT_BYTES (RuleBroken too_large, a 413
    for a request; a consumer's handler dead-letters the event that led to it)."""
    raw = encode(event)
    if len(raw) > MAX_EVENT_BYTES:
        raise RuleBroken(
            f"the {event['type']} event this makes would be {len(raw)} bytes; events are at most "
            f"{MAX_EVENT_BYTES} bytes: send less (e.g. fewer or shorter attributes)",
            Kind.TOO_LARGE,
            size=len(raw),
            limit=MAX_EVENT_BYTES,
        )
    return raw


def decode(raw: bytes | None) -> dict[str, Any]:
    """Bytes -> validated event; EventValidationError for anything else."""
    if raw is None:
        raise EventValidationError("empty record")
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventValidationError(f"not JSON: {exc}") from None
    registry().validate(event)
    return event


def jsonable(value: Any) -> Any:
    """Domain values -> JSON values: datetimes as RFC 3339 UTC, dates as ISO dates."""
    if isinstance(value, datetime):
        return to_rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def events_from_facts(
    facts: list[tuple[str, dict[str, Any]]],
    ids: dict[str, Any],
    *,
    source: str,
    when: dict[str, str | None],
    default_time: datetime | None = None,
) -> list[dict[str, Any]]:
    """Domain facts (event type, data) -> CloudEvents, each timed when it happened (the data
    field that `when` names for its type, else `default_time`), with the entity's ids added to
    the data. Validation happens once, when the outbox stores them."""
    return [
        build_event(
            event_type,
            {**ids, **jsonable(data)},
            source=source,
            time=data[when[event_type]] if when.get(event_type) else default_time,
            validate=False,
        )
        for event_type, data in facts
    ]
