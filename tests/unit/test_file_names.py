"""store/files.py's reading of references, paths and names: the exact answers clients get.

Written for the mutation run of store/files.py (docs/testing.md): the API
tests reach these functions, but only with ordinary names, so the bounds
(the largest id, the longest name and path) and the wording of each refusal
were never pinned.
"""

from __future__ import annotations

import pytest

from datamill.errors import InvalidInput
from datamill.store.files import (
    MAX_NAME,
    MAX_PATH,
    check_name,
    is_home_folder,
    is_path_reference,
    normalize_path,
    reference_key,
)

UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    ("reference", "key"),
    [
        ("42", ("id", 42)),
        ("2147483647", ("id", 2147483647)),  # the largest id the store holds
        ("0000000042", ("id", 42)),  # ten digits, however many are zeros
        ("2147483648", None),
        ("00000000042", None),  # eleven digits: longer than any id
        ("a\x00b", None),
        ("/Data/a\x00.imp", None),
        (UUID.upper(), ("uuid", UUID)),
        (UUID, ("uuid", UUID)),
        ("Data/ImportJobs/a.imp", ("path", "/Data/ImportJobs/a.imp")),
        ("//Data//a.imp/", ("path", "/Data/a.imp")),
        (" Data/a.imp", ("path", "/ Data/a.imp")),  # a blank is part of the name
        ("Data/BoX", ("path", "/Data/BoX")),
        ("/Data/../a.imp", None),
        ("٤٢", ("path", "/٤٢")),  # digits, but not ASCII ones: a name
    ],
)
def test_a_reference_names_an_id_a_uuid_or_a_path(
    reference: str, key: tuple[str, object] | None
) -> None:
    assert reference_key(reference) == key


@pytest.mark.parametrize(
    ("reference", "is_path"),
    [("42", False), (UUID, False), (UUID.upper(), False), ("/a", True), ("٤٢", True), ("4a", True)],
)
def test_a_path_reference_is_neither_a_decimal_id_nor_a_uuid(reference: str, is_path: bool) -> None:
    assert is_path_reference(reference) is is_path


@pytest.mark.parametrize(
    ("path", "clean"),
    [
        ("/", "/"),
        ("/x ", "/x "),
        ("/boX/", "/boX"),
        ("/a/b/", "/a/b"),
        ("//a//b", "/a/b"),
        ("/a b/%_c", "/a b/%_c"),
        ("/\ue000", "/\ue000"),
    ],
)
def test_paths_are_cleaned(path: str, clean: str) -> None:
    assert normalize_path(path) == clean


def test_the_longest_path_and_name_are_taken_and_one_more_is_refused() -> None:
    name = "n" * MAX_NAME
    assert normalize_path("/" + name) == "/" + name
    # 16 names of 255 and their slashes: 4096 characters exactly.
    longest = ("/" + name) * 16
    assert len(longest) == MAX_PATH
    assert normalize_path(longest) == longest
    with pytest.raises(InvalidInput) as long_name:
        normalize_path("/" + name + "n")
    assert long_name.value.message == "each name in a path must be at most 255 characters long"
    with pytest.raises(InvalidInput) as long_path:
        normalize_path(longest + "/x")
    assert long_path.value.message == "the path must be at most 4096 characters long"
    with pytest.raises(InvalidInput) as huge:
        normalize_path("/" + "x" * (MAX_PATH * 4))  # refused before it is walked
    assert huge.value.message == "the path must be at most 4096 characters long"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("a/b", "path 'a/b' must start with '/'"),
        ("/a/./b", "path '/a/./b' must not contain '.' or '..'"),
        ("/a/..", "path '/a/..' must not contain '.' or '..'"),
        ("/a\x1fb", "the path '/a\\x1fb' must not contain control characters"),
        ("/a\x00", "the path '/a\\x00' must not contain control characters"),
        ("/a\x7f", "the path '/a\\x7f' must not contain control characters"),
        ("/a\ud800", "the path '/a\\ud800' is not valid Unicode (a lone surrogate)"),
        ("/a\udfff", "the path '/a\\udfff' is not valid Unicode (a lone surrogate)"),
        (
            "/" + "\x01" * 150,
            "the path " + repr("/" + "\x01" * 99) + " must not contain control characters",
        ),
        (
            "/" + "\udc00" * 150,
            "the path " + repr("/" + "\udc00" * 99) + " is not valid Unicode (a lone surrogate)",
        ),
    ],
)
def test_bad_paths_are_refused_by_what_is_wrong(path: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalize_path(path)
    assert refused.value.message == message


@pytest.mark.parametrize("path", ["/a b", "/a\x80", "/a\ud7ff", "/a\ue000", "/~!"])
def test_blanks_and_characters_next_to_the_refused_ones_are_taken(path: str) -> None:
    assert normalize_path(path) == path


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "the name must not be empty"),
        ("   ", "the name must not be empty"),
        (" a", "the name ' a' must not start or end with spaces"),
        ("a ", "the name 'a ' must not start or end with spaces"),
        ("a/b", "the name 'a/b' must not contain '/'"),
        (".", "the name '.' is not allowed"),
        ("..", "the name '..' is not allowed"),
        ("a\x01", "the name 'a\\x01' must not contain control characters"),
        ("a\udc80", "the name 'a\\udc80' is not valid Unicode (a lone surrogate)"),
        ("n" * (MAX_NAME + 1), "the name must be at most 255 characters long"),
        # Not the 4096 of a path, however long (it said so beyond 16,384 characters).
        ("n" * (MAX_PATH * 4 + 1), "the name must be at most 255 characters long"),
    ],
)
def test_bad_names_are_refused_by_what_is_wrong(name: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_name(name)
    assert refused.value.message == message


@pytest.mark.parametrize("name", ["a b", "...", ".a", "n" * MAX_NAME, "%_"])
def test_good_names_are_taken_as_they_are(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("path", "home"),
    [("/Users/eve", True), ("/Users", False), ("/Users/eve/a", False), ("/Data/eve", False)],
)
def test_only_a_folder_directly_in_users_is_a_home(path: str, home: bool) -> None:
    assert is_home_folder(path) is home
