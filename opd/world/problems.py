"""Seeded generator of the tiny world's math problems.

Each problem is a short chain of additions and subtractions of small integers, evaluated left
to right, with a unique integer answer and a step-by-step reference solution::

    question:  "Compute 7 + 5 - 3."
    solution:  "7 + 5 = 12. 12 - 3 = 9. The answer is \\boxed{9}."

Splits (train, eval, heldout, and the pretraining pool) are disjoint sets of expressions drawn
from one seeded stream, so the same config always yields the same files.

    >>> gen = ProblemSpec(min_ops=1, max_ops=3, max_operand=9)
    >>> splits = make_splits(gen, {"train": 100, "eval": 50}, seed=0)
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import pandas as pd

from opd.io import make_row

INSTRUCTION = "Put your final answer within \\boxed{}."
TEMPLATES = ("Compute {expr}.", "What is {expr}?", "Evaluate {expr}.", "Find the value of {expr}.")


@dataclass(frozen=True)
class ProblemSpec:
    """Shape of the problems: how many operations and how large the operands are."""

    min_ops: int = 1
    max_ops: int = 3
    max_operand: int = 9

    def __post_init__(self):
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"need 1 <= min_ops <= max_ops, got {self.min_ops}, {self.max_ops}")
        if self.max_operand < 2:
            raise ValueError(f"max_operand must be >= 2, got {self.max_operand}")


@dataclass(frozen=True)
class Problem:
    operands: tuple[int, ...]
    ops: tuple[str, ...]
    template: int

    @property
    def expr(self) -> str:
        parts = [str(self.operands[0])]
        for op, x in zip(self.ops, self.operands[1:]):
            parts += [op, str(x)]
        return " ".join(parts)

    @property
    def question(self) -> str:
        return TEMPLATES[self.template].format(expr=self.expr)

    @property
    def prompt(self) -> str:
        return f"{self.question} {INSTRUCTION}"

    @property
    def answer(self) -> int:
        return evaluate(self.operands, self.ops)[-1]

    @property
    def solution(self) -> str:
        values = evaluate(self.operands, self.ops)
        steps = []
        for i, (op, x) in enumerate(zip(self.ops, self.operands[1:])):
            steps.append(f"{values[i]} {op} {x} = {values[i + 1]}.")
        return " ".join(steps + [f"The answer is \\boxed{{{values[-1]}}}."])


def evaluate(operands, ops) -> list[int]:
    """Running values of a left-to-right chain: ``[a0, a0 op a1, ...]``."""
    values = [operands[0]]
    for op, x in zip(ops, operands[1:]):
        values.append(values[-1] + x if op == "+" else values[-1] - x)
    return values


def sample_problem(rng: random.Random, spec: ProblemSpec) -> Problem:
    """Draw one problem whose running values never go negative."""
    n_ops = rng.randint(spec.min_ops, spec.max_ops)
    operands = [rng.randint(1, spec.max_operand)]
    ops = []
    value = operands[0]
    for _ in range(n_ops):
        op = rng.choice("+-")
        x = rng.randint(1, spec.max_operand)
        if op == "-" and x > value:
            op = "+"
        value = value + x if op == "+" else value - x
        ops.append(op)
        operands.append(x)
    return Problem(tuple(operands), tuple(ops), rng.randrange(len(TEMPLATES)))


def make_splits(spec: ProblemSpec, sizes: dict[str, int], seed: int) -> dict[str, list[Problem]]:
    """Disjoint splits of unique expressions, filled in the order of ``sizes``."""
    rng = random.Random(seed)
    seen: set[tuple] = set()
    out: dict[str, list[Problem]] = {}
    budget = 200 * sum(sizes.values()) + 1000
    for name, size in sizes.items():
        items: list[Problem] = []
        while len(items) < size:
            budget -= 1
            if budget < 0:
                raise ValueError(f"cannot draw {sum(sizes.values())} distinct problems from {spec}; "
                                 "raise max_ops or max_operand, or ask for fewer problems")
            p = sample_problem(rng, spec)
            key = (p.operands, p.ops)
            if key in seen:
                continue
            seen.add(key)
            items.append(p)
        out[name] = items
    return out


def to_frame(problems: list[Problem], split: str, data_source: str = "tiny_arith") -> pd.DataFrame:
    """Problems as a dataset in the project's (verl) row format."""
    rows = [make_row(data_source, f"{data_source}-{split}-{i}", p.question, p.prompt,
                     str(p.answer), i, split, solution=p.solution) for i, p in enumerate(problems)]
    return pd.DataFrame(rows)
