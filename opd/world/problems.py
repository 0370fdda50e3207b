"""Seeded generator of the tiny world's math problems, in separable families (skills).

A problem is a short chain evaluated left to right, with a unique integer answer. Its first
operation names its family; the rest are additions and subtractions of small integers:

* ``add``: ``7 + 5 - 3`` (every operation is + or -);
* ``mul``: ``7 * 6 + 3`` (a single-digit product first: a multiplication table to learn);
* ``mod``: ``47 mod 6 + 3`` (a remainder first).

Each family has its own question templates, as problems from different sources do, so an
embedding model can tell them apart (teacher-aligned prompt selection). A model knows a family
when its pretraining corpus has it (``models.<name>.world.families``), so a teacher can bring
knowledge the student lacks. Solutions are written in a style (``opd.world.styles``).

Splits (pretrain, train, eval, heldout) are disjoint sets of chains drawn from one seeded
stream, each from its own list of families, so the same config always yields the same files.

    >>> spec = ProblemSpec(min_ops=1, max_ops=4, max_operand=9)
    >>> splits = make_splits(spec, {"train": 100, "eval": 50}, seed=0,
    ...                      families={"train": ["add", "mul", "mod"], "eval": ["add", "mul"]})
"""
from __future__ import annotations

import random
from dataclasses import dataclass

INSTRUCTION = "Put your final answer within \\boxed{}."
FAMILIES = ("add", "mul", "mod")
TEMPLATES = {
    "add": ("Compute {expr}.", "What is {expr}?", "Evaluate {expr}.", "Find the value of {expr}."),
    "mul": ("Multiply first, then add up: {expr}.", "Work out the product chain {expr}.",
            "Calculate {expr}, starting with the product."),
    "mod": ("Take the remainder first: {expr}.", "Remainder arithmetic: what is {expr}?",
            "Find {expr}, where mod gives the remainder."),
}
FIRST_OP = {"add": None, "mul": "*", "mod": "mod"}


@dataclass(frozen=True)
class ProblemSpec:
    """Shape of the problems: how many operations and how large the operands are."""

    min_ops: int = 1
    max_ops: int = 3
    max_operand: int = 9

    def __post_init__(self):
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"need 1 <= min_ops <= max_ops, got {self.min_ops}, {self.max_ops}")
        if self.max_operand < 3:
            raise ValueError(f"max_operand must be >= 3, got {self.max_operand}")


@dataclass(frozen=True)
class Problem:
    operands: tuple[int, ...]
    ops: tuple[str, ...]
    template: int
    family: str = "add"

    @property
    def expr(self) -> str:
        parts = [str(self.operands[0])]
        for op, x in zip(self.ops, self.operands[1:]):
            parts += [op, str(x)]
        return " ".join(parts)

    @property
    def question(self) -> str:
        return TEMPLATES[self.family][self.template].format(expr=self.expr)

    @property
    def prompt(self) -> str:
        return f"{self.question} {INSTRUCTION}"

    @property
    def values(self) -> list[int]:
        return evaluate(self.operands, self.ops)

    @property
    def answer(self) -> int:
        return self.values[-1]

    @property
    def solution(self) -> str:
        """The canonical (terse, first-variant) reference solution."""
        from opd.world.styles import render
        return render(self, "terse", None)


def apply(op: str, a: int, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b, "mod": a % b}[op]


def evaluate(operands, ops) -> list[int]:
    """Running values of a left-to-right chain: ``[a0, a0 op a1, ...]``."""
    values = [operands[0]]
    for op, x in zip(ops, operands[1:]):
        values.append(apply(op, values[-1], x))
    return values


def sample_problem(rng: random.Random, spec: ProblemSpec, family: str = "add") -> Problem:
    """Draw one ``family`` problem whose running values never go negative."""
    if family not in FAMILIES:
        raise ValueError(f"unknown problem family {family!r}; known: {', '.join(FAMILIES)}")
    n_ops = rng.randint(spec.min_ops, spec.max_ops)
    m = spec.max_operand
    if family == "add":
        operands, ops = [rng.randint(1, m)], []
    elif family == "mul":
        operands, ops = [rng.randint(2, m), rng.randint(2, m)], ["*"]
    else:
        operands, ops = [rng.randint(m + 1, 10 * m), rng.randint(2, m)], ["mod"]
    value = evaluate(operands, ops)[-1]
    while len(ops) < n_ops:
        op = rng.choice("+-")
        x = rng.randint(1, m)
        if op == "-" and x > value:
            op = "+"
        value = apply(op, value, x)
        ops.append(op)
        operands.append(x)
    return Problem(tuple(operands), tuple(ops), rng.randrange(len(TEMPLATES[family])), family)


def make_splits(spec: ProblemSpec, sizes: dict[str, int], seed: int,
                families: dict[str, list[str]] | None = None) -> dict[str, list[Problem]]:
    """Disjoint splits of unique chains, filled in the order of ``sizes``; each problem's family
    is drawn uniformly from its split's ``families`` (default: ``add`` only)."""
    rng = random.Random(seed)
    seen: set[tuple] = set()
    out: dict[str, list[Problem]] = {}
    budget = 200 * sum(sizes.values()) + 1000
    for name, size in sizes.items():
        fams = list((families or {}).get(name) or ["add"])
        items: list[Problem] = []
        family = rng.choice(fams)                # drawn per slot, kept until the slot is filled
        while len(items) < size:
            budget -= 1
            if budget < 0:
                raise ValueError(f"cannot draw {sum(sizes.values())} distinct problems from {spec}; "
                                 "raise max_ops or max_operand, or ask for fewer problems")
            p = sample_problem(rng, spec, family)
            key = (p.operands, p.ops)
            if key in seen:
                continue
            seen.add(key)
            items.append(p)
            family = rng.choice(fams)
        out[name] = items
    return out


def to_frame(problems: list[Problem], split: str, data_source: str = "tiny_arith") -> pd.DataFrame:
    """Problems as a dataset in the project's (verl) row format; ``extra_info`` keeps the chain
    (``family``, ``operands``, ``ops``) so that any style's solution can be rendered from it."""
    import pandas as pd   # imported here: the DAG build reads FAMILIES and stays light

    from opd.io import make_row

    rows = [make_row(data_source, f"{data_source}-{split}-{i}", p.question, p.prompt,
                     str(p.answer), i, split, solution=p.solution, family=p.family,
                     operands=list(p.operands), ops=list(p.ops))
            for i, p in enumerate(problems)]
    return pd.DataFrame(rows)


def from_info(info: dict) -> Problem:
    """The problem of a row's ``extra_info`` (written by ``to_frame``)."""
    return Problem(tuple(int(x) for x in info["operands"]), tuple(str(o) for o in info["ops"]), 0,
                   str(info.get("family", "add")))
