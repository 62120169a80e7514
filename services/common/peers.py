"""Other services' HTTP APIs, as a service that needs their data calls them: httpx with the
short timeout CRM_PEER_TIMEOUT_SECONDS (or the caller's own), the caller's own API key passed on
(a peer checks it as it checks any client, so a caller sees through a peer only what its key may
see), and an answer even when the peer is down (status `unavailable`, logged and counted in
crm_peer_requests_total) so each caller decides its own fallback. Writes (`send`, the console's
actions) also tell a refusal (4xx, with the peer's problem document) from an outage."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

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
    status: str  # ok | not_found | unavailable | refused (a write the service turned down)
    body: Any = None
    error: str | None = None
    code: int | None = None  # the HTTP status, when the service answered

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Unavailable(Exception):
    def __init__(self, answer: Answer) -> None:
        super().__init__(f"{answer.service} is unavailable: {answer.error}")
        self.answer = answer


class Peers:
    def __init__(self, settings: Settings, timeout: float | None = None) -> None:
        self.settings = settings
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout or settings.peer_timeout_seconds),
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
                answer = Answer(service, "not_found", code=404)
            elif response.status_code >= 400:
                answer = Answer(
                    service,
                    "unavailable",
                    _problem(response),
                    error=f"HTTP {response.status_code}: {_detail(response)}",
                    code=response.status_code,
                )
            else:
                answer = _success(service, response)
        return self._observed(answer, path, started)

    async def send(
        self,
        service: str,
        path: str,
        authorization: str | None,
        body: Any = None,
        idempotency_key: str | None = None,
        method: str = "POST",
    ) -> Answer:
        """POST (or `method`) a JSON body. A 4xx is `refused` with the problem document as body (the caller
        shows its detail); a 5xx or no answer is `unavailable`."""
        url = self.settings.url_of(service) + path
        headers = {"Authorization": authorization} if authorization else {}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        started = time.perf_counter()
        try:
            response = await self.client.request(method, url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            answer = Answer(service, "unavailable", error=f"{type(exc).__name__}: {exc}".rstrip(": "))
        else:
            code = response.status_code
            if code >= 500:
                answer = Answer(service, "unavailable", error=f"HTTP {code}: {_detail(response)}", code=code)
            elif code >= 400:
                answer = Answer(service, "refused", _problem(response), error=_detail(response), code=code)
            else:
                answer = _success(service, response) if response.content else Answer(service, "ok", code=code)
        return self._observed(answer, path, started)

    def _observed(self, answer: Answer, path: str, started: float) -> Answer:
        PEER_LATENCY.labels(answer.service).observe(time.perf_counter() - started)
        PEER_REQUESTS.labels(answer.service, answer.status).inc()
        if answer.status == "unavailable":
            log.warning("peer unavailable", service=answer.service, path=path, error=answer.error)
        return answer

    async def staff_user(self, user_id: str, authorization: str | None) -> Answer:
        """A person in the staff directory (GET /users/{id} on the staff service): whether work
        may be assigned to them is `auth.assignee_problem`; their team's supervisors by level
        are `GET /teams/{team}`."""
        return await self.get("staff", f"/users/{quote(user_id, safe='')}", authorization)

    async def staff_team(self, team: str, authorization: str | None) -> Answer:
        """A team in the staff directory (GET /teams/{id}): `supervisors[level - 1]` is the
        supervisor of escalation level `level`."""
        return await self.get("staff", f"/teams/{quote(team, safe='')}", authorization)

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
            if "next_cursor" not in answer.body and len(answer.body["items"]) >= limit:
                # A full page from a list that does not page: the rest would be left out silently.
                raise Unavailable(
                    Answer(service, "unavailable", error=f"{path} answered a full page and no cursor")
                )
            cursor = answer.body.get("next_cursor")
            if not cursor:
                return items

    async def close(self) -> None:
        await self.client.aclose()


def _problem(response: httpx.Response) -> dict[str, Any]:
    if response.headers.get("content-type", "").split(";")[0].endswith("json"):
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}
    return {}


def _detail(response: httpx.Response) -> str:
    return str(_problem(response).get("detail") or response.text[:200])


def _success(service: str, response: httpx.Response) -> Answer:
    """A 2xx answer. One that is not JSON (a proxy's HTML page, a misrouted URL) is as good as
    down: `unavailable`, never an exception in the caller (the 360 view stays partial)."""
    content_type = response.headers.get("content-type", "")
    if content_type.split(";")[0].endswith("json"):
        try:
            return Answer(service, "ok", response.json(), code=response.status_code)
        except ValueError:
            pass
    return Answer(
        service,
        "unavailable",
        error=f"HTTP {response.status_code} answered {content_type or 'no content type'}, not JSON",
        code=response.status_code,
    )
