r"""A scale-aware second opinion on math-verify's numeric equality.

math-verify (0.9) compares numbers with an *absolute* tolerance: floats are rounded to 6 decimal
places and other expressions pass when ``(a - b).evalf(chop=True)`` is 0. Distinct small numbers
are then equal: ``0.0000012`` and ``0.000001``, or ``\frac{1}{2^{98}}`` and
``\frac{1}{2^{99}}``. ``numbers_agree(a, b)`` decides the same pair by value and scale:

* exact rationals on both sides (``\frac{1}{2^{98}}``, ``204``): exactly equal;
* plain decimals on both sides (``0.0000012``, ``204.0``): exactly equal as decimals;
* a decimal against anything else (``0.333333`` vs ``\frac13``, ``1.414214`` vs ``\sqrt2``):
  the decimal is the value itself, or the value correctly rounded at its last written digit
  with at least ``MIN_SIGNIFICANT_DIGITS`` significant digits (so ``0.000333`` is not
  ``\frac{1}{3000}``, as ``0.33`` is not ``\frac13`` for math-verify);
* other numeric expressions: relative difference at most ``EXACT_REL_TOL`` at ``DIGITS`` digits
  (effectively exact), or ``FLOAT_REL_TOL`` when either side holds a float; free symbols are
  given fixed irrational values first.

A percentage ``p\%`` may stand for ``p`` or ``p/100``, as math-verify allows. Where a value
cannot be computed (nan, infinity, evaluation errors) the check defers to math-verify.

``install()`` wraps ``math_verify.grader.sympy_numeric_eq`` so that each True it returns must
also pass ``numbers_agree``. Every numeric comparison of math-verify goes through that function
(plain numbers, tuple, set and matrix elements, interval endpoints, both sides of relations),
so the check applies to all of them. It changes the ``math_verify`` module of the calling
process; the grading workers (``opd.grading.pool``) are the only callers.
"""
from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

DIGITS = 50                  # working precision of the value comparisons
EXACT_REL_TOL = 1e-40        # two exact expressions must agree to this relative difference
FLOAT_REL_TOL = 5e-6         # half a unit in the 6th significant digit (1.00000x)
MIN_SIGNIFICANT_DIGITS = 6   # a rounded decimal must carry at least this many


def _percent_forms(expr) -> list:
    r"""``[expr]``, plus ``p`` when ``expr`` is math-verify's ``p\%``, i.e.
    ``p*UnevaluatedExpr(1/100)``."""
    from sympy import Mul, Rational, UnevaluatedExpr

    if isinstance(expr, Mul) and UnevaluatedExpr(Rational(1, 100)) in expr.args:
        rest = [a for a in expr.args if a != UnevaluatedExpr(Rational(1, 100))]
        return [expr, Mul(*rest)]
    return [expr]


def _doit(expr):
    try:
        return expr.doit()
    except Exception:  # noqa: BLE001 - as math-verify: keep the unevaluated form
        return expr


def _generic(expr):
    """``expr`` with each free symbol replaced by a fixed irrational value (sorted by name)."""
    from sympy import Rational, sqrt

    symbols = sorted(expr.free_symbols, key=str)
    primes = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    return expr.subs({s: sqrt(primes[i % len(primes)]) + Rational(i + 1, 7)
                      for i, s in enumerate(symbols)})


def _decimal(value) -> Decimal:
    """A sympy Float as the decimal it prints as (at its own precision), trailing zeros dropped."""
    return Decimal(str(value)).normalize()


def _decimal_matches(d: Decimal, value) -> bool | None:
    """A written decimal ``d`` against an exact or evaluated ``value``; None when unknown."""
    from sympy import Rational

    if isinstance(value, Rational):
        exact = Fraction(int(value.p), int(value.q))
        if Fraction(d) == exact:
            return True
        distance = abs(Fraction(d) - exact)
    else:
        v = value.evalf(DIGITS)
        if not v.is_real or not v.is_finite:
            return None
        distance = abs(Fraction(d) - Fraction(str(v)))
    _, digits, exponent = d.as_tuple()
    significant = len(digits) if d != 0 else 0
    half_unit = Fraction(1, 2) * Fraction(10) ** exponent
    return significant >= MIN_SIGNIFICANT_DIGITS and distance <= half_unit


def _relatively_close(x, y, rel_tol: float) -> bool | None:
    """``|x - y| <= rel_tol * max(|x|, |y|)`` at ``DIGITS`` digits; None when not computable."""
    diff = abs((x - y).evalf(DIGITS))
    scale = max(abs(x.evalf(DIGITS)), abs(y.evalf(DIGITS)))
    if not (diff.is_finite and scale.is_finite) or diff.is_real is not True:
        return None
    return bool(diff <= rel_tol * scale)


def _pair_agrees(x, y) -> bool | None:
    from sympy import Basic, Float, Rational

    if not isinstance(x, Basic) or not isinstance(y, Basic):
        return None
    if x == y:
        return True
    x, y = _doit(x), _doit(y)
    if isinstance(x, Float) and isinstance(y, Float):
        return _decimal(x) == _decimal(y)
    if isinstance(x, Rational) and isinstance(y, Rational):
        return x == y
    if isinstance(y, Float):
        x, y = y, x
    if isinstance(x, Float):
        return _decimal_matches(_decimal(x), _generic(y) if y.free_symbols else y)
    x, y = _generic(x), _generic(y)
    if not (x.is_number and y.is_number):
        return None
    return _relatively_close(x, y, FLOAT_REL_TOL if x.has(Float) or y.has(Float)
                             else EXACT_REL_TOL)


def numbers_agree(a, b) -> bool:
    """True unless ``a`` and ``b`` (sympy expressions) are numerically distinct at their scale.

    See the module docstring for the rules. Matrices answer True: math-verify compares their
    elements one by one, each through the wrapped function again. Never raises.
    """
    from sympy import MatrixBase
    from sympy.matrices.expressions import MatrixExpr

    if isinstance(a, (MatrixBase, MatrixExpr)) or isinstance(b, (MatrixBase, MatrixExpr)):
        return True
    verdicts = []
    for x in _percent_forms(a):
        for y in _percent_forms(b):
            try:
                verdicts.append(_pair_agrees(x, y))
            except Exception:  # noqa: BLE001 - not computable here: math-verify decides
                verdicts.append(None)
    if any(v is True for v in verdicts):
        return True
    return not any(v is False for v in verdicts)


def install() -> None:
    """Make ``math_verify.grader.sympy_numeric_eq`` also require ``numbers_agree`` (idempotent).

    Raises ``RuntimeError`` when the installed math-verify has no such function (the grading
    would otherwise silently keep the absolute tolerance).
    """
    from math_verify import grader

    original = getattr(grader, "sympy_numeric_eq", None)
    if original is None:
        raise RuntimeError("math_verify.grader.sympy_numeric_eq not found: opd.grading.numeric "
                           "supports math-verify 0.9 (pinned in envs/core.yaml)")
    if getattr(original, "_opd_relative", False):
        return

    def checked(a, b, float_rounding, numeric_precision):
        return bool(original(a, b, float_rounding, numeric_precision)) and numbers_agree(a, b)

    checked._opd_relative = True
    grader.sympy_numeric_eq = checked
