"""Bearer API keys with roles. The keys file holds only SHA-256 hashes, one key a line:

    <role> <sha256 hex of the key> [label]

Keys are long random tokens, so a plain SHA-256 is enough (no password stretching needed).
The file is re-read when it changes, so keys can be rotated without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from .problems import Problem

ROLES = ("viewer", "agent", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
# A bulk export of personal data (e.g. GET /customers?format=csv) needs more than reading one
# customer at a time, and each one is recorded (who, when, what filter).
BULK_EXPORT_ROLE = "agent"


@dataclass(frozen=True)
class Principal:
    role: str
    label: str

    def can(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(role: str) -> str:
    return f"crm_{role}_{secrets.token_urlsafe(24)}"


def write_keys_file(path: Path, keys: dict[str, str]) -> None:
    """keys: {label: key}; the label's first word is the role."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{label.split('-')[0]} {hash_key(key)} {label}" for label, key in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


class ApiKeys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_hash: dict[str, Principal] = {}
        self._mtime: float | None = None
        self._checked = 0.0

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
            table[parts[1]] = Principal(parts[0], parts[2] if len(parts) > 2 else parts[0])
        self._by_hash, self._mtime = table, mtime

    def authenticate(self, authorization: str | None) -> Principal:
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
        digest = hash_key(token.strip())
        for known, principal in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise Problem(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})


def authorize(keys: ApiKeys, authorization: str | None, role: str) -> Principal:
    """The caller's principal, which must hold at least `role`: a Problem (401 without a known
    key, 403 with a lower role) otherwise. `require` serves FastAPI; the scorer's web views
    call this directly."""
    principal = keys.authenticate(authorization)
    if not principal.can(role):
        raise Problem(403, f"this needs the {role} role; the key has {principal.role}")
    return principal


def require(role: str):
    """FastAPI dependency: the caller's principal, which must hold at least `role`."""
    if role not in _RANK:
        raise ValueError(role)

    def dependency(request: Request) -> Principal:
        return authorize(request.app.state.api_keys, request.headers.get("authorization"), role)

    dependency.required_role = role  # read by services/common/routes.py's checks
    return dependency
