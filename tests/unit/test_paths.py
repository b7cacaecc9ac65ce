"""paths.py: local paths and database URLs stay inside what the operator allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamill.engine.paths import (
    check_database_url,
    check_path,
    check_sink_path,
    expand_source_paths,
    safe_url,
)
from datamill.errors import InvalidDefinition, InvalidInput, PathNotAllowed


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An allowed root with two files, and a sibling folder outside it."""
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "a.csv").write_text("x")
    (tmp_path / "root" / "sub" / "b.csv").write_text("x")
    (tmp_path / "rootless").mkdir()
    (tmp_path / "rootless" / "c.csv").write_text("x")
    return tmp_path / "root"


def roots(root: Path) -> tuple[str, ...]:
    """The roots tuple for one root."""
    return (str(root),)


def test_check_path_resolves_and_compares_whole_components(root: Path) -> None:
    assert check_path(str(root / "a.csv"), roots(root)) == str((root / "a.csv").resolve())
    # "root" must not admit its sibling "rootless".
    with pytest.raises(PathNotAllowed):
        check_path(str(root.parent / "rootless" / "c.csv"), roots(root))
    with pytest.raises(PathNotAllowed, match="absolute"):
        check_path("a.csv", roots(root))
    with pytest.raises(PathNotAllowed):
        check_path(str(root / "a.csv"), ())


def test_expand_plain_path_and_globs(root: Path) -> None:
    assert expand_source_paths(str(root / "a.csv"), roots(root)) == [str(root / "a.csv")]
    assert expand_source_paths(str(root / "**" / "*.csv"), roots(root)) == [
        str(root / "a.csv"),
        str(root / "sub" / "b.csv"),
    ]


def test_expand_refuses_escapes_before_revealing_existence(root: Path) -> None:
    with pytest.raises(PathNotAllowed):
        expand_source_paths(str(root.parent / "rootless" / "missing.csv"), roots(root))
    with pytest.raises(PathNotAllowed):
        expand_source_paths(f"{root}/../rootless/*.csv", roots(root))
    with pytest.raises(InvalidInput, match="does not exist"):
        expand_source_paths(str(root / "missing.csv"), roots(root))
    with pytest.raises(InvalidInput, match="does not exist"):
        expand_source_paths(str(root / "sub"), roots(root))


def test_symlinked_folder_out_of_the_root_is_refused_in_globs(root: Path) -> None:
    (root / "escape").symlink_to(root.parent / "rootless")
    with pytest.raises(PathNotAllowed, match=r"c\.csv"):
        expand_source_paths(str(root / "*" / "*.csv"), roots(root))


def test_sink_path(root: Path) -> None:
    assert check_sink_path(str(root / "new.csv"), roots(root)) == str(root / "new.csv")
    with pytest.raises(InvalidInput, match="does not exist"):
        check_sink_path(str(root / "nope" / "new.csv"), roots(root))
    with pytest.raises(InvalidInput, match="is a folder"):
        check_sink_path(str(root / "sub"), roots(root))
    with pytest.raises(PathNotAllowed, match="wildcards"):
        check_sink_path(str(root / "*.csv"), roots(root))
    (root / "out.csv").symlink_to(root.parent / "rootless" / "c.csv")
    with pytest.raises(PathNotAllowed):
        check_sink_path(str(root / "out.csv"), roots(root))


def test_sqlite_urls(root: Path) -> None:
    db = root / "a.db"
    db.touch()
    url = check_database_url(f"sqlite:///{db}", roots(root), (), "source", must_exist=True)
    assert url.database == str(db)
    for bad in ("sqlite://", "sqlite:///:memory:", f"sqlite:///file:{db}?uri=true"):
        with pytest.raises(InvalidDefinition):
            check_database_url(bad, roots(root), (), "source", must_exist=True)
    with pytest.raises(InvalidInput, match="does not exist"):
        check_database_url(f"sqlite:///{root}/b.db", roots(root), (), "source", must_exist=True)
    with pytest.raises(PathNotAllowed):
        check_database_url(
            f"sqlite:///{root.parent}/x.db", roots(root), (), "sink", must_exist=False
        )


@pytest.mark.parametrize(
    ("url", "forbidden"),
    [
        ("postgresql://u:p@localhost/store", "postgresql+psycopg://x:y@127.0.0.1:5432/store"),
        ("postgresql+psycopg://u@127.0.0.1/store", "postgresql://u@localhost/store?host=/tmp"),
        ("postgresql://u@LOCALHOST:5432/store", "postgresql://u@[::1]/store"),
        ("postgresql://store@db.example/", "postgresql://other@db.example/store"),
        ("postgresql://u@h/x?dbname=store", "postgresql://u@h/store"),
    ],
)
def test_store_database_is_refused_under_any_spelling(url: str, forbidden: str) -> None:
    with pytest.raises(PathNotAllowed, match="Datamill's own database"):
        check_database_url(url, (), (forbidden,), "source", must_exist=True)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@localhost:5433/store",
        "postgresql://u@localhost/other",
        "postgresql://u@db.invalid/store",
    ],
)
def test_other_databases_pass(url: str) -> None:
    checked = check_database_url(
        url, (), ("postgresql://u@localhost/store",), "source", must_exist=True
    )
    assert checked.drivername == "postgresql+psycopg"


def test_messages_never_show_passwords() -> None:
    assert "secret" not in safe_url("postgresql://u:secret@h/db")
    with pytest.raises(InvalidDefinition) as error:
        check_database_url("mysql://u:secret@h/db", (), (), "source", must_exist=True)
    assert "secret" not in error.value.message
