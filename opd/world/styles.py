r"""Two ways of writing the tiny world's solutions, each with real uncertainty.

* ``terse``: a forward chain of equations, as a non-thinking model answers::

      First, 7 * 6 = 42. Then 42 + 3 gives 45. The answer is \boxed{45}.

* ``think``: a thinking trace in words inside ``<think>`` markers, then the answer (the tiny
  chat template's thinking mode, like Qwen3's)::

      <think>
      Start with 7. 7 times 6 is 42. So 42 and 3 makes 45. Done.
      </think>

      The answer is \boxed{45}.

Both write the same running values, each step restating the value it starts from (a trace that
does not restate it, ``Times 6: 42``, proved much harder for a tiny model to learn: 0.72 against
the terse teacher's 0.94 at more steps). They share digits and the final sentence but little
else, so a teacher of one style scores the other style's tokens poorly (the paper's
thinking-pattern mismatch). Each sentence has several
phrasings and some remarks are optional, drawn from ``rng``: at many positions more than one
continuation is valid, so top-k sets, their overlap and their shared mass mean what they mean
for real models. ``rng=None`` gives the first phrasing everywhere (the canonical solution).

    >>> render(problem, "think", random.Random(0))
"""
from __future__ import annotations

import random

STYLES = ("terse", "think")

_TERSE_FIRST = ("{a} {op} {b} = {c}.", "First, {a} {op} {b} = {c}.", "{a} {op} {b} gives {c}.")
_TERSE_NEXT = ("{a} {op} {b} = {c}.", "Then {a} {op} {b} = {c}.", "{a} {op} {b} gives {c}.")
_TERSE_OPEN = ("", "Step by step. ", "Left to right. ")
_ENDINGS = ("The answer is \\boxed{{{c}}}.", "So the answer is \\boxed{{{c}}}.",
            "Final answer: \\boxed{{{c}}}.")
_WORDS = {"+": ("plus", "and"), "-": ("minus", "less"), "*": ("times", "multiplied by"),
          "mod": ("mod", "modulo")}
_THINK_STEP = ("{a} {w} {b} is {c}.", "{a} {w} {b} makes {c}.", "So {a} {w} {b} is {c}.")
_THINK_CLOSE = ("Done.", "That is all.", "")


def _pick(rng: random.Random | None, options):
    return options[0] if rng is None else rng.choice(options)


def render(problem, style: str, rng: random.Random | None) -> str:
    """The solution of ``problem`` (``opd.world.problems.Problem``) in ``style``."""
    if style not in STYLES:
        raise ValueError(f"unknown solution style {style!r}; known: {', '.join(STYLES)}")
    values = problem.values
    steps = list(zip(problem.ops, problem.operands[1:], values, values[1:]))
    end = _pick(rng, _ENDINGS).format(c=values[-1])
    if style == "terse":
        parts = [_pick(rng, _TERSE_OPEN)]
        for i, (op, b, a, c) in enumerate(steps):
            parts.append(_pick(rng, _TERSE_NEXT if i else _TERSE_FIRST).format(a=a, op=op, b=b, c=c) + " ")
        return "".join(parts) + end
    parts = [f"Start with {values[0]}."]
    for op, b, a, c in steps:
        parts.append(_pick(rng, _THINK_STEP).format(a=a, w=_pick(rng, _WORDS[op]), b=b, c=c))
    close = _pick(rng, _THINK_CLOSE)
    trace = " ".join(parts + ([close] if close else []))
    return f"<think>\n{trace}\n</think>\n\n{end}"
