r"""Answer extraction with the paper's protocol: the content of the last ``\boxed{}``.

A box is ``\boxed{...}`` or ``\fbox{...}``, with optional whitespace before the brace; nested
and escaped braces are handled. A box without braces, ``\boxed 5`` (as several models end an
answer), holds one token: the text up to the next whitespace, ``$``, ``\]``, ``\)``, ``\\``
or an unmatched ``}``, with braces inside it balanced and trailing ``,;:?`` dropped. Only the
last box counts, braced or not: if its braces never close (a truncated response) or nothing
follows a brace-less ``\boxed`` on its line, there is no answer. Ground truths stored boxed are
unboxed, and both sides lose ``$``, thin spaces and one trailing period (``_clean``).

    last_boxed(r"so \boxed{\frac{1}{2}}.")   # -> "\frac{1}{2}"
    last_boxed(r"\boxed{3}, then \boxed 5.")   # -> "5."  (answer_of cleans it to "5")
    answer_of(response)                      # -> (raw box content, cleaned answer | None)
"""
from __future__ import annotations

import re

_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.S)
_UNIT = re.compile(r"\\[a-zA-Z]+|\\.|.", re.S)   # a command, an escaped character, a character
_BARE_STOP = {"$", "\\]", "\\)", "\\\\", "}"}


def _closing_brace(text: str, open_idx: int) -> int | None:
    """Index of the ``}`` matching the ``{`` at ``open_idx``; None when it never closes."""
    depth = 0
    for m in _BRACE_TOKEN.finditer(text, open_idx):
        tok = m.group()
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0:
                return m.start()
    return None


def _bare_token(text: str, start: int) -> str | None:
    r"""The token of a brace-less box whose argument starts at ``start`` (``\boxed 5``)."""
    while start < len(text) and text[start] in " \t":
        start += 1
    i = start
    while i < len(text):
        unit = _UNIT.match(text, i).group()
        if unit.isspace() or unit in _BARE_STOP:
            break
        if unit == "{":
            close = _closing_brace(text, i)
            if close is None:
                return None
            i = close + 1
        else:
            i += len(unit)
    token = text[start:i].rstrip(",;:?")
    return token or None


def last_boxed(text: str) -> str | None:
    r"""Stripped content of the last box in ``text``: ``\boxed{...}``, ``\fbox{...}`` or the
    brace-less ``\boxed 5`` (one token, see the module docstring).

    None when there is no box or the last one is unbalanced or brace-less with nothing after
    it; ``""`` for an empty ``\boxed{}``. Non-strings give None.
    """
    if not isinstance(text, str):
        return None
    last = None
    for last in _BOX_COMMAND.finditer(text):
        pass
    if last is None:
        return None
    brace = last.end()
    while brace < len(text) and text[brace].isspace():
        brace += 1
    if brace < len(text) and text[brace] == "{":
        end = _closing_brace(text, brace)
        return None if end is None else text[brace + 1:end].strip()
    return _bare_token(text, last.end())


def unbox(ground_truth: str) -> str:
    r"""``\boxed{204}`` -> ``204``: strip whitespace, ``$`` and boxes wrapping the whole string."""
    s = str(ground_truth).strip()
    while True:
        s = s.strip().strip("$").strip()
        m = _BOX_START.match(s)
        end = _closing_brace(s, m.end() - 1) if m else None
        if end is None or s[end + 1:].strip(" .$"):
            return s
        s = s[m.end():end]


_THIN_SPACE = re.compile(r"(?<!\\)\\[,;:!]")


def _clean(s: str) -> str:
    r"""Drop ``$``, thin spaces (``\,`` ``\!`` ``\;`` ``\:``) and one trailing period."""
    s = _THIN_SPACE.sub("", s.strip().strip("$").strip())
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    return s


def answer_of(response: str) -> tuple[str | None, str | None]:
    """(raw extracted box content, cleaned answer or None for a format error)."""
    extracted = last_boxed(response)
    if extracted is None:
        return None, None
    return extracted, (_clean(unbox(extracted)) or None)


def reference_of(ground_truth: str) -> str:
    return _clean(unbox(ground_truth))
