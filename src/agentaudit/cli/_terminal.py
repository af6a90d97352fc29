"""Recorded text made safe to print on a terminal.

Everything in an audit database is untrusted: a tool result, a prompt or a run name
may hold escape sequences that erase lines, retitle the window or plant hyperlinks,
carriage returns that overwrite a line, bidi overrides that reorder it. Every place
the command prints recorded text as text (not as JSON) passes it through `visible`,
which writes each such character as a Python-style escape, in plain sight:

========================================  =============================================
character                                 printed as
========================================  =============================================
tab, newline (in text blocks)             themselves; CR LF as a newline
tab, newline, CR (in one-line fields)     ``\\t``, ``\\n``, ``\\r``
other C0 controls, DEL, C1 controls       ``\\x1b``, ``\\x07``, ``\\x7f``, ``\\x9b``
format characters (bidi controls such as  ``\\u202e``, ``\\u200b``, ``\\ufeff``,
U+202E, zero-width space, BOM, tags),     ``\\U000e0041``
line and paragraph separators
========================================  =============================================

Zero-width joiner and non-joiner (U+200D, U+200C) are kept: emoji sequences and
several scripts need them, and they move nothing on a terminal. Backslashes are not
doubled, so a recorded ``\\x1b`` typed as four characters prints the same as a real
ESC: the terminal view is for reading; ``--json`` gives the exact text.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = ["json_safe", "visible"]

# Anything that is not printable ASCII is looked at; runs of it that Python calls
# printable (ordinary non-ASCII text) are passed through at C speed.
_SUSPECT = re.compile(r"[^\x20-\x7e]+")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
_KEPT_FORMAT = frozenset({"\u200c", "\u200d"})  # ZWNJ, ZWJ
_CRLF = re.compile(r"\r\n")


@lru_cache(maxsize=1024)
def _escape(char: str) -> str:
    """``char`` as printed in a one-line field."""
    if char in _NAMED:
        return _NAMED[char]
    if unicodedata.category(char) not in _HIDDEN_CATEGORIES or char in _KEPT_FORMAT:
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _one_line(match: re.Match[str]) -> str:
    run = match.group()
    return run if run.isprintable() else "".join(map(_escape, run))


def _block(match: re.Match[str]) -> str:
    run = match.group()
    if run.isprintable():
        return run
    return "".join(char if char in "\n\t" else _escape(char) for char in run)


def visible(text: object, *, multiline: bool = False) -> str:
    """``text`` (anything: it is ``str()``-ed) with every control, format and
    separator character written as a visible escape (see the module's table).

    ``multiline=True`` is for fields shown as a block of text (a run's input,
    output and error, a step's narration, a tool's result): newlines and tabs are
    kept, and a CR right before a newline is dropped. Otherwise the result is one
    line. Rich markup is not this function's concern: print the result as a
    `rich.text.Text`, never as a markup string."""
    text = str(text)
    if text.isprintable():
        return text
    if multiline:
        return _SUSPECT.sub(_block, _CRLF.sub("\n", text))
    return _SUSPECT.sub(_one_line, text)


def _json_escape(match: re.Match[str]) -> str:
    run = match.group()
    if run.isprintable():
        return run
    out = []
    for char in run:
        if char == "\n" or _escape(char) == char:  # a newline here is the layout's own
            out.append(char)
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:  # as JSON writes a character beyond the BMP: a surrogate pair
            high, low = divmod(ord(char) - 0x10000, 0x400)
            out.append(f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}")
    return "".join(out)


def json_safe(text: str) -> str:
    """JSON text (as `json.dumps` writes it, ASCII or not) with every character a
    terminal would act on or hide written as a ``\\uXXXX`` escape: C1 controls, DEL,
    bidi controls such as U+202E, other format characters, U+2028 and U+2029 (JSON
    itself escapes only those below U+0020). The value it encodes is unchanged:
    such characters occur only inside strings, where the escape means the same."""
    return _SUSPECT.sub(_json_escape, text)
