"""s3a:// URIs: what a definition may name, and what a glob matches (engine/objects.py)."""

from __future__ import annotations

import pytest

from datamill.engine.objects import ObjectPath, ObjectStore, inside, parse, temporary_uri
from datamill.engine.objects import _segments_match as matches
from datamill.errors import PathNotAllowed


@pytest.mark.parametrize(
    "uri",
    [
        "s3a://lake/a/../b",
        "s3a://lake/a/./b",
        "s3a://lake/a//b",
        "s3a://lake//a",
        "s3a://lake/a%2f..%2fb",
        "s3a://lake/%2e%2e/b",
        "s3a://lake/a\\b",
        "s3a://lake/a b",
        "s3a://lake/a\x00b",
        "s3a://lake/a?b",
        "s3a://lake/a#b",
        "s3a://Lake/a",
        "s3a://la/a",
        "s3a://lake..x/a",
        "s3a://user:pw@lake/a",
        "s3a://lake:9000/a",
        "s3://lake/a",
        "hdfs://namenode/a",
        "file:///etc/passwd",
        "s3a:///a",
    ],
)
def test_uris_that_could_mean_another_key_or_store_are_refused(uri: str) -> None:
    with pytest.raises(PathNotAllowed):
        parse(uri, "source path")


def test_plain_uris_parse_to_bucket_and_key() -> None:
    assert parse("s3a://lake", "root") == ObjectPath("lake", "")
    assert parse("s3a://lake/", "root") == ObjectPath("lake", "")
    assert parse("s3a://my-lake.eu/in/year=2024/part-0.csv", "x").key == "in/year=2024/part-0.csv"
    assert parse("s3a://lake/in/", "root").uri == "s3a://lake/in"
    # Wildcards only where a glob is allowed.
    assert parse("s3a://lake/in/*/[ab]?.csv", "x", glob=True).key == "in/*/[ab]?.csv"
    with pytest.raises(PathNotAllowed):
        parse("s3a://lake/in/*.csv", "sink path")


def test_inside_compares_bucket_and_whole_segments() -> None:
    root = ObjectPath("lake", "in")
    assert inside(ObjectPath("lake", "in/a.csv"), root)
    assert inside(ObjectPath("lake", "in"), root)
    assert not inside(ObjectPath("lake", "inner/a.csv"), root)
    assert not inside(ObjectPath("lake2", "in/a.csv"), root)
    assert not inside(ObjectPath("lake", "a.csv"), root)
    assert inside(ObjectPath("lake", "x/y"), ObjectPath("lake", ""))


def test_globs_match_segments_and_skip_hidden_names() -> None:
    assert matches(["*.csv"], ["a.csv"])
    assert not matches(["*.csv"], ["d", "a.csv"])
    assert not matches(["*.csv"], [".a.csv"])
    assert matches(["**", "*.csv"], ["d", "e", "a.csv"])
    assert matches(["**", "*.csv"], ["a.csv"])
    assert not matches(["**", "*.csv"], [".hidden", "a.csv"])
    assert matches(["d", "*"], ["d", "x"])
    assert not matches(["d", "*"], ["e", "x"])


def test_the_temporary_object_is_hidden_next_to_the_sink() -> None:
    assert temporary_uri("s3a://lake/out/r.csv", "ab-12") == "s3a://lake/out/.datamill-ab-12.r.csv"
    assert temporary_uri("s3a://lake/r.csv", "ab") == "s3a://lake/.datamill-ab.r.csv"


def test_credentials_are_never_shown() -> None:
    shown = repr(ObjectStore("http://127.0.0.1:9", "eu", "AKIDSECRET", "verysecret"))
    assert "AKIDSECRET" not in shown and "verysecret" not in shown
