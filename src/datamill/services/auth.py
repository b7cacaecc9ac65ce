"""Password hashing (argon2) and verification with a short, safe cache."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from typing import NoReturn

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from datamill.domain.records import NO_PASSWORD, User
from datamill.errors import NotAuthenticated, TooManyRequests
from datamill.services.login_limits import FailureBuckets, VerificationGate
from datamill.store.store import Store

_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of the password."""
    return _HASHER.hash(password)


class Authenticator:
    """Checks HTTP Basic credentials against stored argon2 hashes.

    argon2 is deliberately slow (tens of ms), so a script polling status many
    times a second would be bound by it. A successful check is remembered as
    a MAC (keyed BLAKE2b) of the password under a key that lives only in this process, tied
    to the stored hash: a password change produces a new hash and so
    invalidates the entry at once. An entry lapses after `ttl_seconds` without
    use; each use extends it, because a password that verified against a
    hash keeps verifying against it, and a fixed expiry made every poller
    stall together on a fresh argon2 check once a minute.
    """

    def __init__(
        self,
        store: Store,
        ttl_seconds: float = 60.0,
        *,
        failures_per_name: int = 10,
        failures_per_client: int = 30,
        refill_seconds: float = 1.0,
        checks_at_once: int = 2,
    ) -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._key = secrets.token_bytes(32)
        self._cache: dict[str, tuple[bytes, str, float]] = {}
        self._verifying: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._by_name = FailureBuckets(failures_per_name, 1.0 / refill_seconds)
        self._by_client = FailureBuckets(failures_per_client, 1.0 / refill_seconds)
        # A few checks may queue behind the running ones; more are refused at
        # once, so waiting sign-ins never hold most of the request threads.
        self._gate = VerificationGate(checks_at_once, waiting=4 * checks_at_once)

    def authenticate(self, name: str, password: str, client: str | None = None) -> User:
        """The user if the credentials are right, else NotAuthenticated (or TooManyRequests).

        `client` is the caller's address; failed sign-ins are limited per user
        name and per address. A password verified a moment ago is accepted
        from the cache even while its name is limited, so an attacker who
        guesses at a name cannot lock its owner's running scripts out.
        """
        with self._store.db.read() as conn:
            user = self._store.users.get(conn, name)
        mac = self._mac(password)
        if user is not None and self._cached(name, mac, user.password_hash):
            return user
        if user is None or not user.has_password:
            # A user created without a password cannot log in until one is set;
            # answered exactly like an unknown name, so it reveals nothing either.
            keys = self._take_tokens(name, client)
            # Spend the same time as a real check so timing does not reveal user names.
            self._check(keys, lambda: _verify(_dummy_hash(), password))
            self._failed()
        # One verification per user at a time: when a cached login expires under
        # load, the other requests wait for its result instead of all running
        # argon2 at once (and take no token: they are answered from the cache).
        with self._lock:
            user_lock = self._verifying.setdefault(name, threading.Lock())
        with user_lock:
            if self._cached(name, mac, user.password_hash):
                return user
            keys = self._take_tokens(name, client)
            if not self._check(keys, lambda: _verify(user.password_hash, password)):
                self._failed()
            self._give_back(keys)
            with self._lock:
                self._cache[name] = (mac, user.password_hash, time.monotonic() + self._ttl)
        return user

    def _check(self, keys: list[tuple[FailureBuckets, str]], verify: Callable[[], bool]) -> bool:
        """Run one argon2 check through the gate; a full gate costs the caller no token."""
        try:
            return self._gate.run(verify)
        except TooManyRequests:
            self._give_back(keys)
            raise

    def _take_tokens(self, name: str, client: str | None) -> list[tuple[FailureBuckets, str]]:
        """A token from the name's and the client's bucket, or TooManyRequests.

        The name's bucket is per (name, client address): guessing at bob's
        password from one address must not lock bob out from his own.
        """
        keys = [(self._by_name, f"{name}\x00{client or ''}")]
        if client is not None:
            keys.append((self._by_client, client))
        taken: list[tuple[FailureBuckets, str]] = []
        for buckets, key in keys:
            if not buckets.take(key):
                self._give_back(taken)
                wait = buckets.retry_after(key)
                raise TooManyRequests(
                    f"too many failed sign-ins; try again in {wait} s", retry_after=wait
                )
            taken.append((buckets, key))
        return taken

    @staticmethod
    def _give_back(keys: list[tuple[FailureBuckets, str]]) -> None:
        for buckets, key in keys:
            buckets.give_back(key)

    @staticmethod
    def _failed() -> NoReturn:
        # The tokens taken for this sign-in stay taken: that is the failure's cost.
        raise NotAuthenticated("wrong user name or password")

    def recently_verified(self, name: str, password: str, password_hash: str) -> bool:
        """Whether this password was verified against this very hash within the TTL.

        No database access: the caller reads the user's current hash itself.
        """
        return self._cached(name, self._mac(password), password_hash)

    def _cached(self, name: str, mac: bytes, password_hash: str) -> bool:
        """Whether the cache holds `mac` for this hash; a hit extends the entry."""
        if password_hash == NO_PASSWORD:
            return False  # nothing ever verifies against "no password"
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(name)
            if (
                cached is None
                or cached[1] != password_hash
                or cached[2] <= now
                or not hmac.compare_digest(cached[0], mac)
            ):
                return False
            self._cache[name] = (cached[0], cached[1], now + self._ttl)
        return True

    def _mac(self, password: str) -> bytes:
        # BLAKE2b in its keyed mode is a MAC (RFC 7693) and costs a quarter of
        # an HMAC-SHA256 in Python: a status poll computes this each time.
        encoded = password.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(encoded, key=self._key, digest_size=32).digest()


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return _HASHER.hash(secrets.token_urlsafe(16))
