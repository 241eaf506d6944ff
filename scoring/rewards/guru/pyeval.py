"""What Python's `eval` gives for plain literals and arithmetic, without running anything else.

GURU's graders call `eval` on model answers (`float(eval("3 / 100"))`, `eval("2*3.14")`). We
evaluate the same text with Python's own parser but only numbers, strings, tuples, lists, signs
and the arithmetic operators; anything else (names, calls, attributes) raises NotLiteral, where
`eval` would have run it. Exponents are bounded so that `9**9**9` cannot hang a worker.
"""

from __future__ import annotations

import ast
import operator
import warnings
from collections.abc import Callable
from typing import Any

MAX_EXPONENT = 10_000
MAX_REPEAT = 1_000_000

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


class NotLiteral(ValueError):
    """The text is not plain arithmetic (eval would have run code, or failed)."""


def literal_eval(text: str) -> Any:
    """The value of `text` as `eval` computes it, for plain arithmetic only.

    Errors are those `eval` would raise (SyntaxError, ZeroDivisionError, TypeError, ...) or
    NotLiteral. Like `eval`, leading spaces and tabs are ignored."""
    with warnings.catch_warnings():  # `1x`: Python warns before it fails; eval's caller sees only the error
        warnings.simplefilter("ignore", SyntaxWarning)
        tree = ast.parse(text.lstrip(" \t"), mode="eval")
    return _value(tree.body)


def _value(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and not isinstance(node.value, bytes | type(...)):
        return node.value
    if isinstance(node, ast.Tuple):
        return tuple(_value(item) for item in node.elts)
    if isinstance(node, ast.List):
        return [_value(item) for item in node.elts]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp):
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow):
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise NotLiteral("exponent too large to evaluate")
            return operator.pow(left, right)
        if isinstance(node.op, ast.Mult) and _huge_repeat(left, right):
            raise NotLiteral("repetition too large to evaluate")
        if type(node.op) in _BINARY:
            return _BINARY[type(node.op)](left, right)
    raise NotLiteral(f"not plain arithmetic: {type(node).__name__}")


def _huge_repeat(left: Any, right: Any) -> bool:
    """`"ab" * 10**9`: a sequence repeated into gigabytes."""
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(count, int):
            return len(sequence) * abs(count) > MAX_REPEAT
    return False
