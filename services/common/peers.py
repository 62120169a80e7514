"""Other services' HTTP APIs, as a service that needs their data calls them: httpx with the
short timeout CRM_PEER_TIMEOUT_SECONDS, the caller's own API key passed on (a peer checks it
as it checks any client, so a caller sees through a peer only what its key may see), and an
answer even when the peer is down (status `unavailable`, logged and counted in
crm_peer_requests_total) so each caller decides its own fallback."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from prometheus_client import Counter, Histogram

from .metrics import LATENCY_BUCKETS
from .settings import Settings

log = structlog.get_logger(__name__)
PEER_REQUESTS = Counter(
    "crm_peer_requests_total", "Calls to other services, by service and outcome.", ["service", "outcome"]
)
PEER_LATENCY = Histogram(
    "crm_peer_request_duration_seconds",
    "Latency of calls to other services.",
    ["service"],
    buckets=LATENCY_BUCKETS,
)


@dataclass(frozen=True)
class Answer:
    service: str
    status: str  # ok | not_found | unavailable
    body: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Unavailable(Exception):
    def __init__(self, answer: Answer) -> None:
        super().__init__(f"{answer.service} is unavailable: {answer.error}")
        self.answer = answer


class Peers:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.peer_timeout_seconds),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
        )

    async def get(self, service: str, path: str, authorization: str | None, **params: Any) -> Answer:
        url = self.settings.url_of(service) + path
        headers = {"Authorization": authorization} if authorization else {}
        started = time.perf_counter()
        try:
            response = await self.client.get(
                url, params={k: v for k, v in params.items() if v is not None}, headers=headers
            )
        except httpx.HTTPError as exc:
            answer = Answer(service, "unavailable", error=f"{type(exc).__name__}: {exc}".rstrip(": "))
        else:
            if response.status_code == 404:
                answer = Answer(service, "not_found")
            elif response.status_code >= 400:
                detail = (
                    response.json().get("detail")
                    if response.headers.get("content-type", "").endswith("json")
                    else None
                )
                answer = Answer(
                    service,
                    "unavailable",
                    error=f"HTTP {response.status_code}: {detail or response.text[:200]}",
                )
            else:
                answer = Answer(service, "ok", response.json())
        PEER_LATENCY.labels(service).observe(time.perf_counter() - started)
        PEER_REQUESTS.labels(service, answer.status).inc()
        if answer.status == "unavailable":
            log.warning("peer unavailable", service=service, path=path, error=answer.error)
        return answer

    async def every_page(
        self, service: str, path: str, authorization: str | None, limit: int = 500, **params: Any
    ) -> list[dict[str, Any]]:
        """All items of a paginated list; raises Unavailable rather than return part of it."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            answer = await self.get(service, path, authorization, limit=limit, cursor=cursor, **params)
            if not answer.ok:
                raise Unavailable(answer)
            items += answer.body["items"]
            cursor = answer.body.get("next_cursor")
            if not cursor:
                return items

    async def close(self) -> None:
        await self.client.aclose()
