"""Bearer API keys with roles, from two places:

- the keys file (`crm keys`, `crm up`: the first admin and the role keys), SHA-256 hashes only,
  one key a line, re-read when it changes:

      <role> <sha256 hex of the key> [label]

- the staff directory (services/staff): keys issued to a user, asked for by hash at
  `GET /auth/keys/{sha256 hex}` when the file does not know a key that looks like one of its
  own. Answers are kept `auth_cache_seconds` (a revoked key stops working everywhere within
  that); while the directory does not answer, a key it answered for keeps working for up to
  `auth_stale_seconds` and any other key gets a 503, never a 401 that would look like a revocation.

Keys are long random tokens, so a plain SHA-256 is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog
from fastapi import Request
from prometheus_client import Counter

from .problems import Problem

log = structlog.get_logger(__name__)
DIRECTORY_ANSWERS = Counter(
    "crm_auth_directory_answers_total",
    "User keys checked with the staff directory, by outcome (known, unknown, cached, stale, unavailable).",
    ["outcome"],
)

# Least to most: a person's highest role counts. Viewers read; analysts read reports; agents
# act on customers and cases; supervisors also approve and take escalations; admins run it.
ROLES = ("viewer", "analyst", "agent", "supervisor", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
# The roles a staff user may hold (a viewer is a key in the keys file, not a person).
USER_ROLES = ("agent", "supervisor", "analyst", "admin")
# Keys the staff directory issues start so; only those are asked about (a stray token is a
# 401 at once, whether the directory answers or not).
USER_KEY_PREFIX = "crm_user_"
# A bulk export of personal data (e.g. GET /customers?format=csv) needs more than reading one
# customer at a time, and each one is recorded (who, when, what filter).
BULK_EXPORT_ROLE = "agent"


@dataclass(frozen=True)
class Principal:
    """Who calls. `label` names them wherever an action is recorded (history entries, exports,
    idempotency scopes): the user id for a staff user's key, the keys file's label otherwise."""

    role: str  # the highest role held
    label: str
    user: str | None = None  # None for a keys-file key
    roles: tuple[str, ...] = ()
    team: str | None = None
    key_id: str | None = None

    def can(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]


def highest_role(roles: Iterable[str]) -> str:
    """The role that counts for a person holding `roles` (viewer when none is known)."""
    known = [role for role in roles if role in _RANK]
    return max(known, key=_RANK.__getitem__) if known else "viewer"


def assignee_problem(user_id: str, user: dict[str, Any] | None) -> str | None:
    """Why work (a case, a task) cannot be assigned to this staff user, as the directory shows
    them (`GET /users/{id}`, `Peers.staff_user`); None when it can: active and holding the
    agent role or above."""
    if user is None:
        return f"no staff user {user_id}"
    if not user.get("active"):
        return f"{user_id} is deactivated"
    if _RANK[highest_role(user.get("roles", ()))] < _RANK["agent"]:
        return f"{user_id} holds no agent role (roles: {', '.join(user.get('roles', ())) or 'none'})"
    return None


def user_principal(answer: dict[str, Any]) -> Principal:
    """The principal of the staff directory's answer {user, roles, team, key_id}."""
    roles = tuple(answer["roles"])
    return Principal(
        highest_role(roles), answer["user"], answer["user"], roles, answer.get("team"), answer.get("key_id")
    )


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(role: str) -> str:
    return f"crm_{role}_{secrets.token_urlsafe(24)}"


def new_user_key() -> str:
    return f"{USER_KEY_PREFIX}{secrets.token_urlsafe(32)}"


class DirectoryUnavailable(Exception):
    """The staff directory did not answer (down, timed out, or answered 5xx)."""


# (sha256 hex of a key) -> the directory's answer {user, roles, team, key_id}, or None when it
# does not know the key (unknown, revoked, or its user deactivated).
Lookup = Callable[[str], Awaitable[dict[str, Any] | None]]


class StaffDirectory:
    """Asks the staff service about a key by its hash, over HTTP."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, digest: str) -> dict[str, Any] | None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout))
        try:
            response = await self._client.get(f"{self.url}/auth/keys/{digest}")
        except httpx.HTTPError as exc:
            raise DirectoryUnavailable(f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise DirectoryUnavailable(f"HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise DirectoryUnavailable("answered something that is not JSON") from None


def write_keys_file(path: Path, keys: dict[str, str]) -> None:
    """keys: {label: key}; the label's first word is the role."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{label.split('-')[0]} {hash_key(key)} {label}" for label, key in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


class ApiKeys:
    """The keys file, and the staff directory for the keys it does not hold (`lookup`: None
    for a process that knows only the file)."""

    MAX_CACHED = 10_000

    def __init__(
        self,
        path: Path,
        lookup: Lookup | None = None,
        cache_seconds: float = 5.0,
        stale_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.lookup = lookup
        self.cache_seconds = cache_seconds
        self.stale_seconds = stale_seconds
        self._clock = clock
        self._by_hash: dict[str, Principal] = {}
        self._mtime: float | None = None
        self._checked = 0.0
        # digest -> (the directory's principal or None, when it answered)
        self._answers: OrderedDict[str, tuple[Principal | None, float]] = OrderedDict()

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < 2.0 and self._mtime is not None:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._by_hash, self._mtime = {}, None
            return
        if mtime == self._mtime:
            return
        table = {}
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) < 2 or parts[0] not in _RANK or len(parts[1]) != 64:
                raise ValueError(f"{self.path}:{number}: expected '<role> <sha256 hex> [label]'")
            label = parts[2] if len(parts) > 2 else parts[0]
            table[parts[1]] = Principal(parts[0], label, roles=(parts[0],))
        self._by_hash, self._mtime = table, mtime

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Problem(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(
                401,
                "malformed Authorization header: expected 'Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        self._refresh()
        token = token.strip()
        digest = hash_key(token)
        for known, principal in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return principal
        if self.lookup is not None and token.startswith(USER_KEY_PREFIX):
            found = await self._ask_directory(digest)
            if found is not None:
                return found
        raise Problem(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})

    async def _ask_directory(self, digest: str) -> Principal | None:
        assert self.lookup is not None
        now = self._clock()
        cached = self._answers.get(digest)
        if cached is not None and now - cached[1] < self.cache_seconds:
            DIRECTORY_ANSWERS.labels("cached").inc()
            return cached[0]
        try:
            answer = await self.lookup(digest)
        except DirectoryUnavailable as exc:
            if cached is not None and now - cached[1] < self.stale_seconds:
                DIRECTORY_ANSWERS.labels("stale").inc()
                return cached[0]  # what it said last, while it cannot say otherwise
            DIRECTORY_ANSWERS.labels("unavailable").inc()
            log.warning("staff directory unavailable", error=str(exc))
            raise Problem(
                503,
                "the staff directory does not answer, so this key cannot be checked now; retry shortly",
                headers={"Retry-After": "5"},
            ) from None
        principal = user_principal(answer) if answer is not None else None
        DIRECTORY_ANSWERS.labels("known" if principal else "unknown").inc()
        self._answers[digest] = (principal, now)
        self._answers.move_to_end(digest)
        while len(self._answers) > self.MAX_CACHED:
            self._answers.popitem(last=False)
        return principal


def api_keys(settings: Any, lookup: Lookup | None = None) -> ApiKeys:
    """A process's keys: the keys file and, unless `lookup` says otherwise, the staff service
    at its configured address."""
    return ApiKeys(
        settings.api_keys_file,
        lookup or StaffDirectory(settings.url_of("staff"), settings.auth_timeout_seconds),
        settings.auth_cache_seconds,
        settings.auth_stale_seconds,
    )


async def authorize(keys: ApiKeys, authorization: str | None, role: str) -> Principal:
    """The caller's principal, which must hold at least `role`: a Problem (401 without a known
    key, 403 with a lower role, 503 when the staff directory cannot tell) otherwise. `require`
    serves FastAPI; the scorer's web views call this directly."""
    principal = await keys.authenticate(authorization)
    if not principal.can(role):
        raise Problem(403, f"this needs the {role} role; the key has {principal.role}")
    return principal


def require(role: str):
    """FastAPI dependency: the caller's principal, which must hold at least `role`."""
    if role not in _RANK:
        raise ValueError(role)

    async def dependency(request: Request) -> Principal:
        return await authorize(request.app.state.api_keys, request.headers.get("authorization"), role)

    dependency.required_role = role  # read by services/common/routes.py's checks
    return dependency
