"""The local Spark Connect server answers only the engine that started it (attack review)."""

from __future__ import annotations

import re

import pytest

from datamill.engine.spark.session import connect, shown_remote

pytestmark = pytest.mark.spark


def test_a_local_process_without_the_token_cannot_use_the_local_spark(
    spark_remote: str,
) -> None:
    from pyspark.errors import PySparkException

    port = re.search(r":(\d+)(?:/|$)", spark_remote)
    assert port is not None
    # Any local process (any local user) can open a TCP connection to the port;
    # without the token it may not run anything, least of all read a file.
    stranger = connect(f"sc://127.0.0.1:{port.group(1)}", "00000000-0000-4000-8000-000000000001")
    try:
        with pytest.raises(PySparkException, match=r"(?i)unauthenticated|token|auth"):
            stranger.read.text("/etc/hostname").collect()
    finally:
        stranger.stop()
    engine = connect(spark_remote, "00000000-0000-4000-8000-000000000002")
    try:
        assert engine.range(2).count() == 2
    finally:
        engine.stop()


def test_a_spark_address_is_shown_with_its_token_masked() -> None:
    assert (
        shown_remote("sc://localhost:15002/;token=s3cret;session_id=x")
        == "sc://localhost:15002/;token=***;session_id=x"
    )
