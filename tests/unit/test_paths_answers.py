"""paths.py: the exact answer a user gets for each path the confinement refuses or accepts."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from datamill.engine.paths import (
    _interface_addresses,
    _metadata_target,
    check_database_url,
    check_path,
    check_sink_path,
    check_url_text,
    expand_source_paths,
    is_glob,
    is_local,
    resolved_url,
    safe_url,
)
from datamill.errors import InvalidDefinition, InvalidInput, PathNotAllowed
from tests.unit import test_paths

# The same allowed root, with a file, a sub-folder and the sibling "rootless" outside it.
root = test_paths.root


def _exact(text: str) -> str:
    return "^" + re.escape(text) + "$"


def test_a_path_outside_names_itself_and_every_allowed_folder(root: Path) -> None:
    outside = str(root.parent / "rootless" / "c.csv")
    other = str(root.parent / "rootless" / "none")
    with pytest.raises(
        PathNotAllowed,
        match=_exact(f"path {outside!r} is outside the allowed folders ({root}, {other})"),
    ):
        check_path(outside, (str(root), other))
    with pytest.raises(
        PathNotAllowed, match=_exact(f"sink path {outside!r} is outside the allowed folders (none)")
    ):
        check_path(outside, (), "sink path")
    with pytest.raises(PathNotAllowed, match=_exact("path 'a.csv' must be an absolute path")):
        check_path("a.csv", (str(root),))
    with pytest.raises(
        PathNotAllowed, match=_exact(f"path {str(root) + '/a' + chr(0)!r} holds a NUL character")
    ):
        check_path(f"{root}/a\x00", (str(root),))


def test_the_root_itself_and_a_root_however_spelled(root: Path) -> None:
    assert check_path(str(root), (str(root),)) == str(root)
    # The operator may allow the whole machine.
    assert check_path(str(root / "a.csv"), ("/",)) == str(root / "a.csv")
    # A root written with a trailing slash, and one whose name ends in a letter
    # a careless strip would eat.
    assert check_path(str(root / "a.csv"), (f"{root}/",)) == str(root / "a.csv")
    rootx = root.parent / "rootX"
    (rootx / "in").mkdir(parents=True)
    assert check_path(str(rootx / "in"), (str(rootx),)) == str(rootx / "in")
    with pytest.raises(PathNotAllowed):
        check_path(str(root.parent / "rootXY"), (str(rootx),))


def test_dotdot_is_refused_by_name_even_where_it_stays_inside(root: Path) -> None:
    path = f"{root}/sub/../a.csv"
    with pytest.raises(PathNotAllowed, match=_exact(f"source path {path!r} must not contain '..'")):
        expand_source_paths(path, (str(root),))
    with pytest.raises(PathNotAllowed, match=_exact(f"sink path {path!r} must not contain '..'")):
        check_sink_path(path, (str(root),))
    # A name that only starts with two dots is a name.
    (root / "..a.csv").write_text("x")
    assert expand_source_paths(f"{root}/..a.csv", (str(root),)) == [str(root / "..a.csv")]


def test_a_capital_x_is_no_wildcard(root: Path) -> None:
    assert not is_glob(f"{root}/X.csv")
    assert is_glob(f"{root}/a?.csv") and is_glob(f"{root}/[ab].csv") and is_glob(f"{root}/*")
    assert check_sink_path(f"{root}/X.csv", (str(root),)) == str(root / "X.csv")
    missing = f"{root}/X.csv"
    with pytest.raises(
        InvalidInput, match=_exact(f"source file {missing!r} does not exist or is not a file")
    ):
        expand_source_paths(missing, (str(root),))


def test_a_glob_starting_at_the_top_is_checked_from_the_top(root: Path) -> None:
    pattern = f"/*{root}/*.csv"
    with pytest.raises(
        PathNotAllowed, match=_exact(f"source glob '/' is outside the allowed folders ({root})")
    ):
        expand_source_paths(pattern, (str(root),))
    with pytest.raises(
        PathNotAllowed, match=_exact("source glob '*/a.csv' must be an absolute path")
    ):
        expand_source_paths("*/a.csv", (str(root),))


def test_glob_answers_name_the_pattern(root: Path) -> None:
    none = f"{root}/*.none"
    with pytest.raises(InvalidInput, match=_exact(f"source glob {none!r} matches no file")):
        expand_source_paths(none, (str(root),))
    many = f"{root}/**/*.csv"
    with pytest.raises(
        InvalidInput, match=_exact(f"source glob {many!r} matches more than 1 files")
    ):
        expand_source_paths(many, (str(root),), max_files=1)
    # A glob whose folder part does not exist matches nothing (it is inside the root).
    gone = f"{root}/gone/*.csv"
    with pytest.raises(InvalidInput, match=_exact(f"source glob {gone!r} matches no file")):
        expand_source_paths(gone, (str(root),))
    (root / "escape").symlink_to(root.parent / "rootless")
    walk = f"{root}/*/*.csv"
    with pytest.raises(
        PathNotAllowed,
        match=_exact(
            f"source glob {walk!r} leads outside the allowed folders at {str(root / 'escape')!r}"
        ),
    ):
        expand_source_paths(walk, (str(root),))


def test_globs_skip_hidden_names_and_match_case(root: Path) -> None:
    (root / ".hidden.csv").write_text("x")
    (root / ".dot").mkdir()
    (root / ".dot" / "d.csv").write_text("x")
    (root / "A.CSV").write_text("x")
    assert expand_source_paths(f"{root}/*.csv", (str(root),)) == [str(root / "a.csv")]
    assert expand_source_paths(f"{root}/**", (str(root),)) == [
        str(root / "A.CSV"),
        str(root / "a.csv"),
        str(root / "sub" / "b.csv"),
    ]
    # Named plainly, a hidden file is a file like any other.
    assert expand_source_paths(f"{root}/.hidden.csv", (str(root),)) == [str(root / ".hidden.csv")]
    assert expand_source_paths(f"{root}/.dot/*.csv", (str(root),)) == [str(root / ".dot" / "d.csv")]


def test_a_glob_part_after_the_wildcard_is_matched_literally_and_in_folders(root: Path) -> None:
    (root / "sub" / "deeper").mkdir()
    (root / "sub" / "deeper" / "b.csv").write_text("x")
    (root / "sub" / "b.csv.d").mkdir()
    assert expand_source_paths(f"{root}/s*/b.csv", (str(root),)) == [str(root / "sub" / "b.csv")]
    assert expand_source_paths(f"{root}/*/deeper/b.csv", (str(root),)) == [
        str(root / "sub" / "deeper" / "b.csv")
    ]
    # A folder is never a match, not even where the pattern names it exactly.
    with pytest.raises(InvalidInput, match="matches no file"):
        expand_source_paths(f"{root}/s*/b.csv.d", (str(root),))
    assert expand_source_paths(f"{root}/**/b.csv", (str(root),)) == [
        str(root / "sub" / "b.csv"),
        str(root / "sub" / "deeper" / "b.csv"),
    ]


def test_excluded_locations_are_as_if_absent(root: Path) -> None:
    excluded = (str(root / "sub"),)
    with pytest.raises(InvalidInput, match="does not exist or is not a file"):
        expand_source_paths(str(root / "sub" / "b.csv"), (str(root),), excluded=excluded)
    assert expand_source_paths(f"{root}/**/*.csv", (str(root),), excluded=excluded) == [
        str(root / "a.csv")
    ]
    for pattern in (f"{root}/*/*.csv", f"{root}/sub/*.csv"):
        with pytest.raises(InvalidInput, match="matches no file"):
            expand_source_paths(pattern, (str(root),), excluded=excluded)
    # One file excluded, its folder not.
    with pytest.raises(InvalidInput, match="matches no file"):
        expand_source_paths(f"{root}/*.csv", (str(root),), excluded=(str(root / "a.csv"),))
    # A sink there: as if its folder did not exist.
    sink = str(root / "sub" / "new.csv")
    with pytest.raises(
        InvalidInput, match=_exact(f"sink folder {str(root / 'sub')!r} does not exist")
    ):
        check_sink_path(sink, (str(root),), excluded)
    assert check_sink_path(str(root / "new.csv"), (str(root),), excluded) == str(root / "new.csv")


def test_sink_answers(root: Path) -> None:
    for path in (f"{root}/sub/", f"{root}/"):
        with pytest.raises(
            InvalidInput, match=_exact(f"sink path {path!r} must name a file, not a folder")
        ):
            check_sink_path(path, (str(root),))
    with pytest.raises(
        PathNotAllowed, match=_exact(f"sink path {str(root / '*.csv')!r} must not hold wildcards")
    ):
        check_sink_path(str(root / "*.csv"), (str(root),))
    with pytest.raises(
        InvalidInput, match=_exact(f"sink folder {str(root / 'nope')!r} does not exist")
    ):
        check_sink_path(str(root / "nope" / "new.csv"), (str(root),))
    with pytest.raises(InvalidInput, match=_exact(f"sink path {str(root / 'sub')!r} is a folder")):
        check_sink_path(str(root / "sub"), (str(root),))
    outside = str(root.parent / "rootless" / "new.csv")
    with pytest.raises(
        PathNotAllowed,
        match=_exact(
            f"sink folder {str(root.parent / 'rootless')!r} is outside the allowed folders ({root})"
        ),
    ):
        check_sink_path(outside, (str(root),))
    with pytest.raises(
        PathNotAllowed, match=_exact("sink path 'new.csv' must be an absolute path")
    ):
        check_sink_path("new.csv", (str(root),))
    # A link in the folder pointing out: refused by the final path's check.
    (root / "out.csv").symlink_to(root.parent / "rootless" / "c.csv")
    link = str(root / "out.csv")
    with pytest.raises(
        PathNotAllowed, match=_exact(f"sink path {link!r} is outside the allowed folders ({root})")
    ):
        check_sink_path(link, (str(root),))


# ---------------------------------------------------------------- database URLs

FORBIDDEN = ("postgresql://u@localhost/store",)


def _check(url: str, forbidden: tuple[str, ...] = FORBIDDEN) -> sa.URL:
    return check_database_url(url, (), forbidden, "source", must_exist=True)


def test_safe_url_hides_the_password_and_survives_nonsense() -> None:
    assert safe_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert safe_url("not a url") == "<invalid URL>"
    with pytest.raises(
        InvalidDefinition, match=_exact("source URL '<invalid URL>' is not a SQLAlchemy URL")
    ):
        _check("not a url")
    with pytest.raises(
        InvalidDefinition, match=_exact("source URL must not hold control characters")
    ):
        _check("postgresql://u:p@192.0.2.1/x\x1f")
    with pytest.raises(
        InvalidDefinition,
        match=_exact(
            "source URL 'mysql://u:***@h/db': only sqlite and postgresql databases are supported"
        ),
    ):
        _check("mysql://u:secret@h/db")


@pytest.mark.parametrize("char", ["\x00", "\x1f", "\x7f", "\x80", "\x9f"])
def test_control_characters_c0_del_and_c1_are_refused(root: Path, char: str) -> None:
    with pytest.raises(InvalidDefinition, match="must not hold control characters"):
        check_database_url(
            f"sqlite:///{root}/a{char}.db", (str(root),), (), "sink", must_exist=False
        )


@pytest.mark.parametrize("char", [" ", "~", "\xa0", "é"])
def test_the_characters_around_the_controls_are_fine(root: Path, char: str) -> None:
    checked = check_database_url(
        f"sqlite:///{root}/a{char}.db", (str(root),), (), "sink", must_exist=False
    )
    assert checked.database == f"{root}/a{char}.db"


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("postgresql://u%20x:p@192.0.2.1/x", "user"),
        ("postgresql://u:p@192.0.2.1/x%3Dy", "database"),
        ("postgresql://u:p@192.0.2.1/x%5Cy", "database"),
        ('postgresql://u:p@192.0.2.1/x"y', "database"),
        ("postgresql://u:p@192.0.2.1/x?application_name=a%27b", "option 'application_name'"),
        (
            "postgresql://u:p@192.0.2.1/x?application_name=a&application_name=b%20c",
            "option 'application_name'",
        ),
        ("postgresql://u:p@192.0.2.1/x?a%3Db=1", "option name"),
    ],
)
def test_conninfo_syntax_is_refused_in_each_part_by_name(url: str, part: str) -> None:
    with pytest.raises(
        InvalidDefinition,
        match=_exact(f"source URL: the {part} must not hold spaces, '=', quotes or backslashes"),
    ):
        _check(url)


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("postgresql://u%01:p@192.0.2.1/x", "user"),
        ("postgresql://u:p@192.0.2.1/x%0A", "database"),
        (
            "postgresql://u:p@192.0.2.1/x?application_name=a&application_name=b%00",
            "option 'application_name'",
        ),
        ("postgresql://u:p@192.0.2.1/x?a%01=1", "option name"),
        ("postgresql://u:p%7F@192.0.2.1/x", "password"),
    ],
)
def test_decoded_controls_are_refused_in_each_part_by_name(url: str, part: str) -> None:
    with pytest.raises(
        InvalidDefinition, match=_exact(f"source URL: the {part} must not hold control characters")
    ):
        _check(url)


def test_a_password_given_apart_and_the_raw_text_are_checked_too() -> None:
    url = sa.make_url("postgresql://u@192.0.2.1/x")
    check_url_text(url, "connection", password="a b='c\\", raw="postgresql://u@192.0.2.1/x")
    with pytest.raises(
        InvalidDefinition,
        match=_exact("connection URL: the password must not hold control characters"),
    ):
        check_url_text(url, "connection", password="p\x01")
    with pytest.raises(
        InvalidDefinition, match=_exact("connection URL must not hold control characters")
    ):
        check_url_text(url, "connection", raw="postgresql://u@192.0.2.1/x\x7f")
    # A SQLite file name may hold what conninfo would treat specially.
    check_url_text(sa.make_url("sqlite:////tmp/a b='c'.db"), "connection")


def test_postgres_refusals_say_what_is_wrong() -> None:
    with pytest.raises(
        PathNotAllowed,
        match=_exact(
            "source URL 'postgresql://u:***@192.0.2.1/x?host=h': option 'host' is not allowed"
            " (allowed: application_name, connect_timeout, sslmode)"
        ),
    ):
        _check("postgresql://u:p@192.0.2.1/x?host=h")
    for url in ("postgresql://u@/x", "postgresql://u@%2ftmp/x", "postgresql://u@%2Ftmp/x"):
        answer = f"source URL {safe_url(url)!r} must name a host: unix sockets are not allowed"
        with pytest.raises(PathNotAllowed, match=_exact(answer)):
            _check(url)
    with pytest.raises(
        PathNotAllowed,
        match=_exact(
            "source URL 'postgresql://u@192.0.2.1,192.0.2.2/x' must name one host, not a list"
        ),
    ):
        _check("postgresql://u@192.0.2.1,192.0.2.2/x")
    with pytest.raises(
        InvalidDefinition,
        match=_exact("source URL 'postgresql://u@192.0.2.1' must name the database"),
    ):
        _check("postgresql://u@192.0.2.1")
    with pytest.raises(
        InvalidInput,
        match=_exact(
            "source URL 'postgresql://u@db.invalid/x': host 'db.invalid' does not resolve"
        ),
    ):
        _check("postgresql://u@db.invalid/x")


def test_the_checked_url_keeps_the_port_and_options_and_pins_the_address() -> None:
    checked = _check("postgresql://u:p@[2001:db8::1]:6000/x?sslmode=require&connect_timeout=3", ())
    assert checked.render_as_string(hide_password=False) == (
        "postgresql+psycopg://u:p@[2001:db8::1]:6000/x"
        "?connect_timeout=3&hostaddr=2001%3Adb8%3A%3A1&sslmode=require"
    )
    # A name resolving to several addresses: pinned to one of them, IPv4 first.
    pinned = _check("postgresql://u:p@localhost/other", ())
    assert pinned.query["hostaddr"] == "127.0.0.1"


@pytest.mark.parametrize(
    "forbidden",
    [
        "postgresql://u@localhost:5432/store",
        "postgresql://u@localhost/x?dbname=store",
        "postgresql://u@192.0.2.1/x?host=127.0.0.1&dbname=store",
        "postgresql://u@192.0.2.1:7/store?host=localhost&port=5432",
        "postgresql://store@localhost",
        "postgresql://u@/store",
        "postgresql://u@/store?host=/run/postgresql",
        "postgresql://u@LOCALHOST/store",
        "postgresql://u@[::1]/store",
        "postgresql://u@[::ffff:127.0.0.1]/store",
        "postgresql://u@[::1%25lo]/store",
        "postgresql://u@x.localhost/store",
    ],
)
def test_the_metadata_database_is_recognised_however_the_operator_wrote_it(forbidden: str) -> None:
    with pytest.raises(
        PathNotAllowed,
        match=_exact(
            "source URL 'postgresql://u:***@127.0.0.1/store' names Datamill's own database"
        ),
    ):
        _check("postgresql://u:p@127.0.0.1/store", ("not a url", "sqlite:///x.db", forbidden))


def test_a_default_database_is_the_user_name_then_postgres() -> None:
    with pytest.raises(PathNotAllowed, match="Datamill's own database"):
        _check("postgresql://u:p@127.0.0.1/postgres", ("postgresql://localhost",))
    _check("postgresql://u:p@127.0.0.1/postgres", ("postgresql://meta@localhost",))


@pytest.mark.parametrize(
    "forbidden",
    [
        "postgresql://u@localhost:5433/store",
        "postgresql://u@localhost/other",
        "postgresql://u@localhost/x?dbname=other",
        "postgresql://u@192.0.2.1/store",
        "postgresql://u@unresolvable.invalid/store",
        "sqlite:////tmp/store",
    ],
)
def test_another_database_passes(forbidden: str) -> None:
    _check("postgresql://u:p@127.0.0.1/store", (forbidden,))


def test_an_unresolvable_metadata_host_is_compared_by_name() -> None:
    assert _metadata_target(sa.make_url("postgresql://u@Meta.Invalid:6/db")) == (
        {"meta.invalid"},
        6,
        "db",
    )
    assert _metadata_target(sa.make_url("sqlite:///x.db")) is None


def test_a_glob_match_linking_out_is_refused_as_that_file(root: Path) -> None:
    (root / "linked.csv").symlink_to(root.parent / "rootless" / "c.csv")
    link = str(root / "linked.csv")
    with pytest.raises(
        PathNotAllowed,
        match=_exact(f"source file {link!r} is outside the allowed folders ({root})"),
    ):
        expand_source_paths(f"{root}/*.csv", (str(root),))


def _ip_command_addresses() -> set[str]:
    """This machine's interface addresses as `ip -o addr` lists them (another reader)."""
    ip = shutil.which("ip")
    if ip is None:
        pytest.skip("no ip command to compare with")
    listed = subprocess.run([ip, "-o", "addr"], check=True, capture_output=True, text=True)
    found = set()
    for line in listed.stdout.splitlines():
        words = line.split()
        kind = words.index("inet") if "inet" in words else words.index("inet6")
        found.add(words[kind + 1].split("/")[0])
    return found


def test_every_interface_address_is_this_machine() -> None:
    """/proc is read right: the same addresses as the ip command, no network or broadcast one."""
    listed = _ip_command_addresses()
    assert {str(ip) for ip in _interface_addresses()} == listed
    metadata = ("postgresql://u@127.0.0.1:5432/meta",)
    for address in listed - {"127.0.0.1", "::1"}:
        if address.startswith("fe80:"):
            continue  # link-local: not reachable without a zone
        host = f"[{address}]" if ":" in address else address
        with pytest.raises(PathNotAllowed, match=r"names Datamill's own database$"):
            _check(f"postgresql://u:p@{host}:5432/meta", metadata)


@pytest.mark.parametrize(
    "host",
    ["[::ffff:192.0.2.1]", "[64:ff9b::c000:201]", "[2002:c000:201::]", "[::c000:201]", "192.0.2.1"],
)
def test_another_machine_inside_ipv6_is_another_machine(host: str) -> None:
    checked = _check(f"postgresql://u:p@{host}/meta", ("postgresql://u@127.0.0.1/meta",))
    assert checked.query["hostaddr"] in ("192.0.2.1", host.strip("[]"))


def test_the_first_of_a_repeated_metadata_option_counts() -> None:
    # SQLAlchemy makes a repeated host a libpq host list, tried in order: the store is
    # where the first one leads.
    forbidden = "postgresql://u@192.0.2.1/x?host=localhost&host=192.0.2.9&dbname=store"
    with pytest.raises(PathNotAllowed, match=r"names Datamill's own database$"):
        _check("postgresql://u:p@127.0.0.1/store", (forbidden,))


def test_a_zone_names_an_interface_of_this_machine_not_another_one() -> None:
    # URLs reach is_local without a zone (_normal drops it); the zone is handled anyway.
    assert is_local(ipaddress.IPv6Address("::1%lo"))
    assert is_local(ipaddress.IPv6Address("::ffff:127.0.0.1%eth0"))
    assert not is_local(ipaddress.IPv6Address("2001:db8::1%eth0"))


def test_an_unresolved_connection_is_named() -> None:
    assert resolved_url("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(
        InvalidDefinition, match=_exact("the database connection was not resolved for this run")
    ):
        resolved_url(None)


def test_a_metadata_database_on_another_machine_is_refused_there() -> None:
    # The store may live on another host; the same host, port and database is refused.
    with pytest.raises(
        PathNotAllowed,
        match=_exact(
            "source URL 'postgresql://u:***@192.0.2.1/store' names Datamill's own database"
        ),
    ):
        _check("postgresql://u:p@192.0.2.1/store", ("postgresql://meta@192.0.2.1:5432/store",))
    _check("postgresql://u:p@192.0.2.3/store", ("postgresql://meta@192.0.2.1:5432/store",))


def test_sqlite_refusals_say_what_is_wrong(root: Path) -> None:
    def refused(url: str) -> str:
        with pytest.raises(InvalidInput) as error:
            check_database_url(url, (str(root),), (), "source", must_exist=True)
        return error.value.message

    assert refused("sqlite://") == "source SQLite URL 'sqlite://' must name a file"
    url = f"sqlite:///{root}/a.db?mode=ro"
    assert refused(url) == f"source SQLite URL {url!r} takes no options"
    dotted = f"{root}/sub/../a.db"
    assert (
        refused(f"sqlite:///{dotted}") == f"source database file {dotted!r} must not contain '..'"
    )
    outside = str(root.parent / "rootless" / "x.db")
    assert refused(f"sqlite:///{outside}") == (
        f"source database file {outside!r} is outside the allowed folders ({root})"
    )


def _glob_answer(pattern: str, root: Path) -> str:
    with pytest.raises((PathNotAllowed, InvalidInput)) as refused:
        expand_source_paths(pattern, (str(root),))
    return f"{type(refused.value).__name__}: {refused.value.message}"


@pytest.mark.parametrize("pattern", ["*.csv", "*/x.csv", "**/*.csv", "**"])
def test_a_glob_answers_alike_whatever_a_link_out_leads_to(root: Path, pattern: str) -> None:
    # Someone who may make links in a location learnt from the answer whether
    # a file (or folder) exists outside it: the match tested that before the
    # link. Among them a worker's /proc/<pid>/fd/<n>: whether a run of
    # another user holds a file there right now.
    outside = root.parent / "rootless"
    held = os.open(outside / "c.csv", os.O_RDONLY)
    unused = max(int(n) for n in os.listdir("/proc/self/fd")) + 100
    targets = {
        "a file": outside / "c.csv",
        "a folder": outside,
        "nothing": outside / "missing.csv",
        "a held file": Path(f"/proc/self/fd/{held}"),
        "no held file": Path(f"/proc/self/fd/{unused}"),
    }
    answers = {}
    try:
        for what, target in targets.items():
            link = root / "l.csv"
            link.symlink_to(target)
            answers[what] = _glob_answer(f"{root}/{pattern}", root)
            link.unlink()
    finally:
        os.close(held)
    assert len(set(answers.values())) == 1, answers
    assert answers["nothing"].startswith("PathNotAllowed: ")
    assert str(root / "l.csv") in answers["nothing"]
