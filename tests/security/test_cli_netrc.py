"""The CLI's ~/.netrc: used only when others may not read it; its errors never quote it."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamill.cli.context import credentials

HOST = "datamill.example"
URL = f"http://{HOST}:8080"


@pytest.fixture
def netrc_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(path))
    monkeypatch.delenv("DATAMILL_USER", raising=False)
    monkeypatch.delenv("DATAMILL_PASSWORD", raising=False)
    return path


def test_a_private_netrc_gives_the_login(netrc_file: Path) -> None:
    netrc_file.write_text(f"machine {HOST} login eve password s3cret-pw\n")
    netrc_file.chmod(0o600)
    assert credentials(URL, None) == ("eve", "s3cret-pw")


def test_a_netrc_others_may_read_is_not_used(
    netrc_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    netrc_file.write_text(f"machine {HOST} login eve password s3cret-pw\n")
    netrc_file.chmod(0o644)
    with pytest.raises(Exception) as refused:  # no terminal to ask: a usage error
        credentials(URL, None)
    err = capsys.readouterr().err
    assert "others may read it" in err and "chmod 600" in err
    assert "s3cret-pw" not in err + str(refused.value)


def test_a_netrc_that_cannot_be_parsed_is_not_quoted(
    netrc_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A password with a space: netrc's own error would quote its second word.
    netrc_file.write_text(f"machine {HOST} login eve password my hidden-half\n")
    netrc_file.chmod(0o600)
    with pytest.raises(Exception) as refused:
        credentials(URL, None)
    err = capsys.readouterr().err
    assert "is not used: it cannot be read (line" in err
    assert "hidden-half" not in err + str(refused.value)
