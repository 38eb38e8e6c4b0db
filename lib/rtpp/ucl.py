"""Reader for the classic `--config` file format (UCL, the nginx-like subset).

What it reads: `key = value;` and `key value` pairs, `key { ... }` sections (also
`key "name" { ... }`, which nests), `[ ... ]` arrays, double- or single-quoted strings,
`<<TAG` here-documents, bare atoms up to the end of the line, JSON, `#` comments and
nested `/* */` comments. Pairs end at `;`, `,` or the end of the line. Macros
(`.include`, `.priority`, ...) are refused: the file never pulls in other files.

`parse(text)` gives the top-level object as a list of (key, value) pairs in file order
(a key may repeat); a section's value is such a list, an array's a Python list, every
other value its text. Any syntax error raises `UclError` with the line number.
"""

from __future__ import annotations

import re

Value = str | list

_BARE_KEY = re.compile(r"[A-Za-z0-9_./@$+*-]+")
_HEREDOC = re.compile(r"<<([A-Z]+)\n")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", '"': '"', "\\": "\\", "/": "/"}
_ATOM_END = ";,}]\n#"


class UclError(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # -- position and errors

    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def error(self, reason: str) -> UclError:
        return UclError(self.line, reason)

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def skip(self, newlines: bool = True) -> None:
        """Skip blanks and comments (and line ends when `newlines`)."""
        text = self.text
        blanks = " \t\r\n" if newlines else " \t\r"
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in blanks:
                self.pos += 1
            elif ch == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif text.startswith("/*", self.pos):
                self._skip_block_comment()
            else:
                return

    def _skip_block_comment(self) -> None:
        start_line, depth = self.line, 0
        while self.pos < len(self.text):
            if self.text.startswith("/*", self.pos):
                depth, self.pos = depth + 1, self.pos + 2
            elif self.text.startswith("*/", self.pos):
                depth, self.pos = depth - 1, self.pos + 2
                if depth == 0:
                    return
            else:
                self.pos += 1
        raise UclError(start_line, "unterminated comment")

    # -- objects

    def body(self, closing: str) -> list:
        """Pairs up to `closing` ("}" or "" for the end of the file), consumed."""
        pairs: list = []
        while True:
            self.skip()
            ch = self.peek()
            if ch == closing:
                self.pos += 1
                return pairs
            if not ch:
                raise self.error("missing '}'")
            if ch in ";,":
                self.pos += 1
                continue
            if ch == "}":
                raise self.error("unexpected '}'")
            pairs.append(self.pair())

    def pair(self) -> tuple[str, Value]:
        if self.peek() == ".":
            raise self.error("macros are not supported")
        key = self.key()
        self.skip(newlines=False)
        if self.peek() in ("=", ":"):
            self.pos += 1
            self.skip()
            return key, self.value()
        if self.peek() in ('"', "'") or _BARE_KEY.match(self.text, self.pos):
            named = self._named_section()
            if named is not None:  # `section "name" { ... }` nests one level
                return key, [named]
        if self.peek() and self.peek() not in _ATOM_END:  # `key value` on one line
            return key, self.value()
        missing = self.error(f"missing value for '{key}'")
        self.skip()
        if self.peek() == "{":
            return key, self.value()
        raise missing

    def _named_section(self) -> tuple[str, Value] | None:
        """`name { ... }` after a section's key, or None (and nothing consumed)."""
        start = self.pos
        name = self.key()
        self.skip()
        if self.peek() == "{":
            return name, self.value()
        self.pos = start
        return None

    def key(self) -> str:
        ch = self.peek()
        if ch in ('"', "'"):
            return self.quoted()
        m = _BARE_KEY.match(self.text, self.pos)
        if m is None:
            raise self.error(f"unexpected {ch!r}" if ch else "unexpected end of file")
        self.pos = m.end()
        return m.group()

    # -- values

    def value(self) -> Value:
        ch = self.peek()
        if ch == "{":
            self.pos += 1
            return self.body("}")
        if ch == "[":
            self.pos += 1
            return self.array()
        if ch in ('"', "'"):
            return self.quoted()
        m = _HEREDOC.match(self.text, self.pos)
        if m is not None:
            return self.heredoc(m)
        return self.atom()

    def array(self) -> list:
        items: list = []
        while True:
            self.skip()
            ch = self.peek()
            if ch == "]":
                self.pos += 1
                return items
            if not ch:
                raise self.error("missing ']'")
            if ch == ",":
                self.pos += 1
                continue
            items.append(self.value())

    def quoted(self) -> str:
        quote, start_line = self.peek(), self.line
        self.pos += 1
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            self.pos += 1
            if ch == quote:
                return "".join(out)
            if ch == "\\":
                out.append(self._escape(quote))
            elif ch == "\n" and quote == '"':
                raise UclError(start_line, "unterminated string")
            else:
                out.append(ch)
        raise UclError(start_line, "unterminated string")

    def _escape(self, quote: str) -> str:
        ch = self.peek()
        self.pos += 1
        if quote == "'":
            return "'" if ch == "'" else "\\" + ch
        if ch in _ESCAPES:
            return _ESCAPES[ch]
        if ch == "u":
            digits = self.text[self.pos : self.pos + 4]
            if not re.fullmatch(r"[0-9A-Fa-f]{4}", digits):
                raise self.error("bad \\u escape")
            self.pos += 4
            return chr(int(digits, 16))
        raise self.error(f"bad escape \\{ch}" if ch else "unterminated string")

    def heredoc(self, m: re.Match) -> str:
        start_line, tag = self.line, m.group(1)
        end = re.compile(rf"^{tag}$", re.M).search(self.text, m.end())
        if end is None:
            raise UclError(start_line, f"unterminated here-document <<{tag}")
        self.pos = end.end()
        return self.text[m.end() : end.start()].removesuffix("\n")

    def atom(self) -> str:
        start = self.pos
        text = self.text
        while self.pos < len(text) and text[self.pos] not in _ATOM_END:
            if text.startswith("/*", self.pos):
                break
            self.pos += 1
        atom = text[start : self.pos].strip()
        if not atom:
            raise self.error("missing value")
        return atom


def parse(text: str) -> list:
    """The top-level object of a UCL document: a list of (key, value) pairs."""
    reader = _Reader(text)
    reader.skip()
    if reader.peek() == "{":
        reader.pos += 1
        pairs = reader.body("}")
        reader.skip()
        if reader.peek():
            raise reader.error("text after the closing '}'")
        return pairs
    return reader.body("")


def section(pairs: list, name: str) -> list[list]:
    """The values of every `name` section (case-insensitive, as the classic)."""
    out = []
    for key, value in pairs:
        if key.lower() == name.lower():
            if not isinstance(value, list) or (value and not isinstance(value[0], tuple)):
                raise UclError(0, f"'{key}' is not a section")
            out.append(value)
    return out
