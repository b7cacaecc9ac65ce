"""A forgiving JSON reader for request bodies, as Datameer accepted them.

Datameer's own documented body is `{ variables : { "foo": "fooValue" }, "fileIds" : [4, ]}`:
unquoted keys, a trailing comma. Clients also send single quotes, `=` for `:`
and unquoted string values. Strict JSON is a subset, so it reads the same.
"""

from __future__ import annotations

from typing import Any

from datamill.errors import InvalidInput

MAX_DEPTH = 64
_BARE_STOP = frozenset(" \t\r\n{}[],:=\"'")
_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def loads_lenient(text: str) -> Any:
    """Parse lenient JSON; InvalidInput says where it went wrong."""
    reader = _Reader(text)
    reader.skip_space()
    if reader.at_end():
        raise InvalidInput("the request body is empty; it must be JSON")
    value = reader.value(0)
    reader.skip_space()
    if not reader.at_end():
        reader.fail("unexpected text after the JSON value")
    return value


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, problem: str) -> None:
        raise InvalidInput(f"malformed JSON body at character {self.pos + 1}: {problem}")

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n\ufeff":
            self.pos += 1

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            self.fail(f"nested deeper than {MAX_DEPTH} levels")
        self.skip_space()
        char = self.peek()
        if char == "{":
            return self.object(depth)
        if char == "[":
            return self.array(depth)
        if char in ("'", '"'):
            return self.string()
        if char == "" or char in _BARE_STOP:
            self.fail("expected a value")
        return self.bare_value()

    def object(self, depth: int) -> dict[str, Any]:
        self.pos += 1
        result: dict[str, Any] = {}
        while True:
            self.skip_space()
            if self.peek() == "}":
                self.pos += 1
                return result
            if self.peek() == ",":  # tolerate stray commas, as in `{a: 1,,}`
                self.pos += 1
                continue
            key = self.key()
            self.skip_space()
            if self.peek() not in (":", "="):
                self.fail(f"expected ':' after {key!r}")
            self.pos += 1
            result[key] = self.value(depth + 1)
            self.skip_space()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "}":
                self.fail("expected ',' or '}'")

    def array(self, depth: int) -> list[Any]:
        self.pos += 1
        result: list[Any] = []
        while True:
            self.skip_space()
            if self.peek() == "]":
                self.pos += 1
                return result
            if self.peek() == ",":
                self.pos += 1
                continue
            result.append(self.value(depth + 1))
            self.skip_space()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "]":
                self.fail("expected ',' or ']'")

    def key(self) -> str:
        char = self.peek()
        if char in ("'", '"'):
            return self.string()
        if char == "" or char in _BARE_STOP:
            self.fail("expected a member name")
        return self.bare_word()

    def string(self) -> str:
        quote = self.peek()
        self.pos += 1
        parts: list[str] = []
        while True:
            if self.at_end():
                self.fail("unterminated string")
            char = self.text[self.pos]
            if char == quote:
                self.pos += 1
                return "".join(parts)
            if char == "\\":
                parts.append(self.escape())
                continue
            parts.append(char)
            self.pos += 1

    def escape(self) -> str:
        self.pos += 1
        char = self.peek()
        if char == "u":
            digits = self.text[self.pos + 1 : self.pos + 5]
            if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                self.fail("bad \\u escape")
            self.pos += 5
            code = int(digits, 16)
            low = self.text[self.pos + 2 : self.pos + 6]
            if (
                0xD800 <= code < 0xDC00
                and self.text[self.pos : self.pos + 2] == "\\u"
                and len(low) == 4
                and all(c in "0123456789abcdefABCDEF" for c in low)
                and 0xDC00 <= int(low, 16) < 0xE000
            ):
                # A UTF-16 surrogate pair is one character, as json.loads reads it.
                self.pos += 6
                return chr(0x10000 + ((code - 0xD800) << 10) + (int(low, 16) - 0xDC00))
            return chr(code)
        if char not in _ESCAPES:
            self.fail("bad escape")
        self.pos += 1
        return _ESCAPES[char]

    def bare_word(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _BARE_STOP:
            self.pos += 1
        return self.text[start : self.pos]

    def bare_value(self) -> Any:
        word = self.bare_word()
        literals: dict[str, Any] = {"true": True, "false": False, "null": None}
        if word in literals:
            return literals[word]
        try:
            return int(word)
        except ValueError:
            pass
        try:
            number = float(word)
        except ValueError:
            return word
        # 'nan', 'inf' and friends are names, not numbers, in a JSON body.
        return number if number == number and abs(number) != float("inf") else word
