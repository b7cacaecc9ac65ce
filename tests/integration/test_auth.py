"""Password checks: argon2 hashes, the verification cache, password changes."""

from __future__ import annotations

import pytest

from datamill.bootstrap import Node
from datamill.errors import NotAuthenticated
from datamill.services.auth import Authenticator, hash_password
from datamill.store import tables as t


def test_passwords_are_stored_as_argon2_hashes(node: Node) -> None:
    node.store.users.create("bob", hash_password("correct horse"))
    with node.store.db.read() as conn:
        stored = conn.execute(t.users.select().where(t.users.c.name == "bob")).first()
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$")
    assert "correct horse" not in stored.password_hash


def test_right_and_wrong_credentials(node: Node) -> None:
    node.store.users.create("bob", hash_password("pw1"))
    auth = Authenticator(node.store)
    assert auth.authenticate("bob", "pw1").name == "bob"
    assert auth.authenticate("bob", "pw1").name == "bob"  # from the cache
    with pytest.raises(NotAuthenticated):
        auth.authenticate("bob", "pw2")
    with pytest.raises(NotAuthenticated):
        auth.authenticate("nobody", "pw1")


def test_a_password_change_invalidates_cached_logins_at_once(node: Node) -> None:
    node.store.users.create("bob", hash_password("old"))
    auth = Authenticator(node.store)
    assert auth.authenticate("bob", "old").name == "bob"
    node.store.users.set_password_hash("bob", hash_password("new"))
    with pytest.raises(NotAuthenticated):
        auth.authenticate("bob", "old")
    assert auth.authenticate("bob", "new").name == "bob"


def test_the_status_fast_paths_check_needs_name_password_hash_and_a_live_entry(
    node: Node,
) -> None:
    # recently_verified is all the status fast path asks of a Basic caller.
    node.store.users.create("bob", hash_password("pw1"))
    auth = Authenticator(node.store)
    stored = auth.authenticate("bob", "pw1").password_hash
    assert auth.recently_verified("bob", "pw1", stored)
    assert not auth.recently_verified("bob", "pw2", stored)
    assert not auth.recently_verified("eve", "pw1", stored)
    # Another hash (a new password, even the same text): verified afresh by the route.
    assert not auth.recently_verified("bob", "pw1", hash_password("pw1"))
    # An entry lapses: with no time to live, it has lapsed by the next check.
    lapsed = Authenticator(node.store, ttl_seconds=0.0)
    lapsed.authenticate("bob", "pw1")
    assert not lapsed.recently_verified("bob", "pw1", stored)
