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
    # Refused at the link itself: the expansion never walks outside (F7).
    with pytest.raises(PathNotAllowed, match="escape"):
        expand_source_paths(str(root / "*" / "*.csv"), roots(root))
    with pytest.raises(PathNotAllowed, match="escape"):
        expand_source_paths(str(root / "**"), roots(root))
    # Refused before walking it, not only when a match turns up out there.
    with pytest.raises(PathNotAllowed, match="leads outside"):
        expand_source_paths(str(root / "**" / "*.none"), roots(root))


def test_dotdot_after_a_wildcard_is_refused(root: Path) -> None:
    for pattern in (f"{root}/*/../../../../**", f"{root}/*/../a.csv", f"{root}/sub/../a.csv"):
        with pytest.raises(PathNotAllowed, match=r"'\.\.'"):
            expand_source_paths(pattern, roots(root))


def test_glob_matches_are_bounded(root: Path) -> None:
    assert len(expand_source_paths(str(root / "**" / "*.csv"), roots(root), max_files=2)) == 2
    with pytest.raises(InvalidInput, match="more than 1 files"):
        expand_source_paths(str(root / "**" / "*.csv"), roots(root), max_files=1)


def test_symlink_cycles_inside_the_root_end(root: Path) -> None:
    (root / "sub" / "loop").symlink_to(root)
    assert expand_source_paths(str(root / "**" / "*.csv"), roots(root)) == [
        str(root / "a.csv"),
        str(root / "sub" / "b.csv"),
    ]


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
        ("postgresql://u@[::ffff:127.0.0.1]/store", "postgresql://u@localhost/store"),
        ("postgresql://u@127.0.0.2/store", "postgresql://u@localhost/store"),
        ("postgresql://u@0x7f.1/store", "postgresql://u@localhost/store"),
        ("postgresql://u@2130706433/store", "postgresql://u@localhost/store"),
        ("postgresql://u@localhost./store", "postgresql://u@127.0.0.1/store"),
        ("postgresql://u@0.0.0.0/store", "postgresql://u@127.0.0.1/store"),
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
        "postgresql://u@192.0.2.1/store",
    ],
)
def test_other_databases_pass(url: str) -> None:
    checked = check_database_url(
        url, (), ("postgresql://u@localhost/store",), "source", must_exist=True
    )
    assert checked.drivername == "postgresql+psycopg"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        # Spellings that used to be compared and are now refused outright: the
        # query string may not redirect the connection, nor a database be implied.
        ("postgresql://store@db.example/", "must name the database"),
        ("postgresql://u@h/x?dbname=store", "option 'dbname'"),
        ("postgresql://u@192.0.2.1/x?hostaddr=127.0.0.1", "option 'hostaddr'"),
        ("postgresql://u@192.0.2.1/x?host=127.0.0.1", "option 'host'"),
        ("postgresql://u@192.0.2.1/x?service=meta", "option 'service'"),
        ("postgresql://u@192.0.2.1/x?passfile=/etc/pgpass", "option 'passfile'"),
        ("postgresql://u@192.0.2.1/x?options=-c%20x=y", "option 'options'"),
        ("postgresql://u@/store", "unix sockets"),
        ("postgresql://u@%2Ftmp/store", "unix sockets"),
        ("postgresql://u@192.0.2.1,127.0.0.1/store", "one host"),
        ("postgresql://u@db.invalid/store", "does not resolve"),
    ],
)
def test_redirecting_spellings_are_refused(url: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        check_database_url(url, (), ("postgresql://u@localhost/store",), "source", must_exist=True)


def test_checked_url_is_pinned_to_the_checked_address() -> None:
    checked = check_database_url(
        "postgresql://u:p@192.0.2.1/other?sslmode=require", (), (), "source", must_exist=True
    )
    assert checked.query == {"sslmode": "require", "hostaddr": "192.0.2.1"}


def test_sqlite_store_and_data_root_are_refused(root: Path) -> None:
    db = root / "meta.db"
    db.touch()
    # Its WAL, a super-journal SQLite names <database>-mj<hex>, and Datamill's start-up lock.
    for name in ("meta.db", "meta.db-wal", "meta.db-mj0A1B2C3D", "meta.db.startup-lock"):
        (root / name).touch()
        with pytest.raises(PathNotAllowed, match="own database"):
            check_database_url(
                f"sqlite:///{root / name}", roots(root), (f"sqlite:///{db}",), "s", must_exist=True
            )
    with pytest.raises(PathNotAllowed, match="data"):
        check_database_url(
            f"sqlite:///{db}", roots(root), (), "s", must_exist=True, forbidden_folders=(str(root),)
        )


def test_messages_never_show_passwords() -> None:
    assert "secret" not in safe_url("postgresql://u:secret@h/db")
    with pytest.raises(InvalidDefinition) as error:
        check_database_url("mysql://u:secret@h/db", (), (), "source", must_exist=True)
    assert "secret" not in error.value.message
