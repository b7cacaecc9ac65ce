"""Browser-style sessions: a signed cookie that stands for a Basic login.

`GET /browser` with Basic credentials answers a cookie; later requests that
carry only the cookie are the same user. The cookie holds no secret, only a
signed claim: the user's name, their session epoch, a fingerprint of their
stored password hash, and an expiry. It stops authenticating when

- its signature does not match (forged or altered: the key is the server's),
- it has expired (absolute, `session_lifetime_seconds` after the login),
- the user was deleted (no such user) or recreated (another hash),
- the password changed (another hash: the fingerprint differs),
- the user logged out (the epoch was raised: migration 0006).

Checking it needs the user's row, which every authenticated request reads
anyway (one query): no extra query, and no server-side session table.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from datamill.domain.records import NO_PASSWORD, User
from datamill.errors import NotAuthenticated
from datamill.store.store import Store
from datamill.store.users import end_sessions

COOKIE_NAME = "JSESSIONID"  # the Java servlet name Datameer's clients know
SECRET_FILE = "session-secret"
MAX_COOKIE_LENGTH = 1024
_VERSION = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """What a session cookie says, once its signature and expiry are checked."""

    name: str
    epoch: int
    fingerprint: str
    expires: int


def load_secret(home: Path, configured: str | None) -> bytes:
    """The signing key: the configured one, else `<home>/session-secret`, made once (0600)."""
    if configured:
        return hashlib.sha256(configured.encode("utf-8")).digest()
    path = home / SECRET_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        temporary = home / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
        try:
            # A link never replaces: of two servers starting at once, the first wins
            # and the other reads it, so both sign with the same key.
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return bytes.fromhex(path.read_text().strip())


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and checks session cookies under one server key."""

    def __init__(
        self,
        store: Store,
        secret: bytes,
        lifetime_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._secret = secret
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock

    def issue(self, user: User) -> str:
        """A cookie value standing for `user` until it expires or is voided."""
        claim = {
            "v": _VERSION,
            "u": user.name,
            "e": user.session_epoch,
            "h": self.fingerprint(user),
            "x": int(self._clock() + self.lifetime_seconds),
        }
        # UTF-8, not \uXXXX escapes: a name of 63 emoji, escaped (12
        # characters each) made a cookie longer than MAX_COOKIE_LENGTH that never worked.
        text = json.dumps(claim, separators=(",", ":"), ensure_ascii=False)
        payload = _encode(text.encode("utf-8"))
        return f"{payload}.{self._sign(payload)}"

    def fingerprint(self, user: User) -> str:
        """A keyed digest of the stored hash: another password, another fingerprint."""
        return self._fingerprint(user.password_hash)

    def _fingerprint(self, password_hash: str) -> str:
        digest = hmac.new(self._secret, b"hash\x00" + password_hash.encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._secret, b"session\x00" + payload.encode("ascii"), hashlib.sha256)
        return _encode(digest.digest())

    def claim(self, cookie: str) -> Claim | None:
        """The claim of a cookie whose signature holds and which has not expired, else None."""
        if len(cookie) > MAX_COOKIE_LENGTH or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        try:
            if not hmac.compare_digest(signature.encode("ascii"), self._sign(payload).encode()):
                return None
            data = json.loads(_decode(payload))
        except (UnicodeError, ValueError, binascii.Error):
            return None
        if not isinstance(data, dict) or data.get("v") != _VERSION:
            return None
        name, epoch, fingerprint, expires = (data.get(k) for k in ("u", "e", "h", "x"))
        if not (
            isinstance(name, str)
            and isinstance(epoch, int)
            and isinstance(fingerprint, str)
            and isinstance(expires, int)
        ):
            return None
        if expires <= self._clock():
            return None
        return Claim(name=name, epoch=epoch, fingerprint=fingerprint, expires=expires)

    def holds(self, epoch: int, fingerprint: str, password_hash: str, user_epoch: int) -> bool:
        """Whether a checked claim still stands for the user with this stored hash and epoch."""
        return (
            password_hash != NO_PASSWORD
            and user_epoch == epoch
            and hmac.compare_digest(self._fingerprint(password_hash), fingerprint)
        )

    def authenticate(self, cookie: str) -> User:
        """The user a cookie stands for, else NotAuthenticated."""
        claim = self.claim(cookie)
        if claim is not None:
            with self._store.db.read() as conn:
                user = self._store.users.get(conn, claim.name)
            if user is not None and self.holds(
                claim.epoch, claim.fingerprint, user.password_hash, user.session_epoch
            ):
                return user
        raise NotAuthenticated(
            "the session has ended or is not valid; log in again (GET /browser with"
            " curl -u user:password) or send Basic credentials"
        )

    def end(self, user: User) -> None:
        """Void every session of `user` (a logout ends them on all their devices)."""
        with self._store.db.write() as conn:
            end_sessions(conn, user.name)
