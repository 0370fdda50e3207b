r"""Answer extraction with the paper's protocol: the content of the last ``\boxed{}``.

A box is ``\boxed{...}`` or ``\fbox{...}``, with optional whitespace before the brace; nested
and escaped braces are handled. Only the last box counts: if its braces never close (a
truncated response) there is no answer. Ground truths stored boxed are unboxed, and both sides
lose ``$``, thin spaces and one trailing period (``_clean``).

    last_boxed(r"so \boxed{\frac{1}{2}}.")   # -> "\frac{1}{2}"
    answer_of(response)                      # -> (raw box content, cleaned answer | None)
"""
from __future__ import annotations

import re

_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.S)


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


def last_boxed(text: str) -> str | None:
    r"""Stripped content of the last ``\boxed{...}``/``\fbox{...}`` in ``text``.

    None when there is no box or the last one is unbalanced; ``""`` for an empty box.
    """
    if not isinstance(text, str):
        return None
    last = None
    for last in _BOX_START.finditer(text):
        pass
    if last is None:
        return None
    end = _closing_brace(text, last.end() - 1)
    return None if end is None else text[last.end():end].strip()


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
