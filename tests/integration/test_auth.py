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
