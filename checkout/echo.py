"""Careful echoes: how a value someone sent is repeated back in a message, a detail or a log line.

Whatever came from outside (an order's ``account_id`` or ``vat_id``, an account file's fields, an
operator's ``--reason``) may hold line breaks that forge a second log line, a NUL, right-to-left
overrides that make a UI show other text than is stored, or simply megabytes. Anything that echoes
such a value goes through :func:`quote`: it comes back in double quotes, shortened, with control,
bidi and other invisible characters written as escapes (``\\n``, ``\\x00``, ``\\u202e``). Text put
together elsewhere (an exception's message) that only needs to stay one harmless line goes through
:func:`escape`.

Pure and deterministic: the workflow sandbox imports it.
"""

from __future__ import annotations

import re
import unicodedata

#: How many characters of a value an echo keeps by default.
LIMIT = 64
ELLIPSIS = "…"

_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Control (Cc), format (Cf: bidi embeddings and overrides, isolates, zero-width characters),
#: surrogates, private use, unassigned, and line/paragraph separators (which end a line in some
#: readers).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_QUOTING = frozenset({"\\", '"'})
_PLAIN = re.compile(r"[A-Za-z0-9_.:@+/-]+")


def _escaped(char: str, *, quoted: bool) -> str:
    short = _SHORT_ESCAPES.get(char)
    if short is not None and (quoted or char not in _QUOTING):
        return short
    if unicodedata.category(char) in _ESCAPED_CATEGORIES:
        code = ord(char)
        if code <= 0xFF:
            return f"\\x{code:02x}"
        if code <= 0xFFFF:
            return f"\\u{code:04x}"
        return f"\\U{code:08x}"
    return char


def _shortened(value: str, limit: int | None, *, quoted: bool) -> str:
    out: list[str] = []
    length = 0
    for char in value:
        piece = _escaped(char, quoted=quoted)
        if limit is not None and length + len(piece) > limit:
            return "".join(out) + ELLIPSIS
        out.append(piece)
        length += len(piece)
    return "".join(out)


def hidden_character(text: str) -> str | None:
    """The first control, bidi or other invisible character of ``text``, as its escape
    (``\\x00``, ``\\u202e``), or None: no name, address or token needs one."""
    for char in text:
        if unicodedata.category(char) in _ESCAPED_CATEGORIES:
            return _escaped(char, quoted=True)
    return None


def quote(value: object, limit: int = LIMIT) -> str:
    """``value`` as a double-quoted string safe to show anywhere: at most ``limit`` characters
    inside the quotes (then ``…``), control and bidi characters escaped, ``"`` and ``\\`` too.

    >>> quote("acc-42\\r\\nINFO forged")
    '"acc-42\\\\r\\\\nINFO forged"'
    """
    return (
        '"' + _shortened(value if isinstance(value, str) else str(value), limit, quoted=True) + '"'
    )


def escape(text: object, limit: int | None = None) -> str:
    """Text that is already a message (an exception's, a service's answer) as one harmless line:
    control and bidi characters escaped, shortened to ``limit`` characters when given; no quotes
    added, and quotes and backslashes left as they are."""
    return _shortened(text if isinstance(text, str) else str(text), limit, quoted=False)


def token(value: object, limit: int = LIMIT) -> str:
    """An identifier as it is when it is one (``acc-42``: letters, digits and ``_ . : @ + / -``,
    at most ``limit`` long), else :func:`quote` of it. For summaries and log lines that name an
    id which validation may not have seen yet."""
    text = value if isinstance(value, str) else str(value)
    if text and len(text) <= limit and _PLAIN.fullmatch(text):
        return text
    return quote(text, limit)
