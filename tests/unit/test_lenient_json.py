"""The lenient JSON reader: Datameer's bodies, strict JSON, and garbage."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datamill.api.lenient_json import loads_lenient
from datamill.errors import InvalidInput


def test_datameers_documented_body() -> None:
    body = '{ variables : { "foo": "fooValue" }, "fileIds" : [4, ]}'
    assert loads_lenient(body) == {"variables": {"foo": "fooValue"}, "fileIds": [4]}


def test_unquoted_values_single_quotes_and_equals() -> None:
    assert loads_lenient("{name='g1',flags:{readable:true,writable:false}}") == {
        "name": "g1",
        "flags": {"readable": True, "writable": False},
    }
    assert loads_lenient("{owner:bob}") == {"owner": "bob"}
    assert loads_lenient('[4, "/Data/a b.imp", /Data/x.imp]') == [4, "/Data/a b.imp", "/Data/x.imp"]


@pytest.mark.parametrize(
    "body", ["", "   ", "{", "[1, 2", '{"a" 1}', '"unterminated', "{a:}", "[1] 2", '"\\x"']
)
def test_broken_bodies_fail_with_a_position(body: str) -> None:
    with pytest.raises(InvalidInput, match="JSON"):
        loads_lenient(body)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    with pytest.raises(InvalidInput, match="nested deeper"):
        loads_lenient("[" * 10_000 + "]" * 10_000)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_strict_json_reads_exactly_as_json_does(value: object) -> None:
    text = json.dumps(value)
    assert loads_lenient(text) == json.loads(text)


@given(st.text(max_size=200))
@settings(max_examples=500, deadline=None)
def test_any_text_either_parses_or_fails_cleanly(text: str) -> None:
    try:
        loads_lenient(text)
    except InvalidInput as error:
        # "Cleanly": a 400 with a message a user can act on, not any exception.
        assert error.http_status == 400 and error.message, error
