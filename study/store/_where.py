"""``where``: a safe subset of pandas' query language, compiled to a pyarrow expression."""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from study.store._files import _unknown

# ---------------------------------------------------------------------------- where


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}
_ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: pc.add,
    ast.Sub: pc.subtract,
    ast.Mult: pc.multiply,
    ast.Pow: pc.power,
}
__all__ = ["where_expression"]

_FUNCTIONS = ("isna", "isnull", "notna", "notnull", "abs")
_OPERATORS = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
}  # fmt: skip


class _WhereError(ValueError):
    pass


def _backticks(where: str) -> tuple[str, dict[str, str]]:
    """Replace each ```quoted name``` (outside string literals) by a placeholder identifier."""
    prefix = "_bq"
    while prefix in where:
        prefix += "_"
    out: list[str] = []
    names: dict[str, str] = {}
    quote: str | None = None
    i = 0
    while i < len(where):
        char = where[i]
        if quote is not None:
            out.append(char)
            if char == "\\" and i + 1 < len(where):
                out.append(where[i + 1])
                i += 1
            elif char == quote:
                quote = None
        elif char in "'\"":
            quote = char
            out.append(char)
        elif char == "`":
            end = where.find("`", i + 1)
            if end < 0:
                raise _WhereError(f"unclosed backtick at position {i + 1}")
            name = where[i + 1 : end]
            if not name:
                raise _WhereError(f"empty backticks at position {i + 1}")
            placeholder = f"{prefix}{len(names)}"
            names[placeholder] = name
            out.append(f" {placeholder} ")
            i = end
        else:
            out.append(" " if char in "\r\n\t" else char)
        i += 1
    return "".join(out).strip(), names


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


@dataclass
class _Column:
    name: str
    expr: pc.Expression


_Value = pc.Expression | _Column | str | int | float | bool | None | list[Any]


class _Compiler:
    """Turns a parsed ``where`` into a :class:`pyarrow.compute.Expression`."""

    def __init__(self, quoted: Mapping[str, str], types: Mapping[str, pa.DataType]) -> None:
        self.quoted = quoted
        self.types = types
        self.used: dict[str, None] = {}

    # -- helpers
    def _expr(self, value: _Value) -> pc.Expression:
        if isinstance(value, _Column):
            return value.expr
        if isinstance(value, pc.Expression):
            return value
        if isinstance(value, list):
            raise _WhereError("a list is only allowed after 'in' or 'not in'")
        if value is None:
            raise _WhereError("None is only allowed in '== None', '!= None', 'is None'")
        return pc.scalar(value)

    def _column(self, name: str) -> _Column:
        if name not in self.types:
            _unknown([name], list(self.types), "where: ")
        self.used[name] = None
        return _Column(name, pc.field(name))

    def _check_literal(self, column: _Column, literal: object, op: str) -> None:
        kind = self.types[column.name]
        if literal is None or isinstance(literal, pc.Expression | _Column):
            return
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        ok = (
            (pa.types.is_string(kind) or pa.types.is_large_string(kind))
            and isinstance(literal, str)
            or numeric
            and isinstance(literal, int | float)
            or pa.types.is_boolean(kind)
            and isinstance(literal, bool | int)
            or pa.types.is_null(kind)
        )
        if not ok:
            raise _WhereError(
                f"column {column.name!r} holds {kind}, compared ({op}) with {literal!r}"
            )

    def boolean(self, node: ast.expr, safe: bool) -> pc.Expression:
        """``safe``: a null result here counts as false (it is dropped by the filter, or
        the operand of and/or that is itself safe), so comparisons need no fill."""
        if isinstance(node, ast.BoolOp):
            parts = [self.boolean(v, safe) for v in node.values]
            combined = parts[0]
            for part in parts[1:]:
                combined = combined & part if isinstance(node.op, ast.And) else combined | part
            return combined
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd | ast.BitOr):
            left, right = self.boolean(node.left, safe), self.boolean(node.right, safe)
            return left & right if isinstance(node.op, ast.BitAnd) else left | right
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.Invert):
            return ~pc.coalesce(self.boolean(node.operand, False), pc.scalar(False))
        if isinstance(node, ast.Compare):
            return self.compare(node, safe)
        value = self.value(node)
        if isinstance(value, bool):
            return pc.scalar(value)
        if isinstance(value, _Column):
            kind = self.types[value.name]
            if not pa.types.is_boolean(kind):
                raise _WhereError(f"column {value.name!r} holds {kind}, not true/false")
        expr = self._expr(value)
        return expr if safe else pc.coalesce(expr, pc.scalar(False))

    def compare(self, node: ast.Compare, safe: bool) -> pc.Expression:
        result: pc.Expression | None = None
        left = self.value(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.value(right_node)
            part = self._compare_pair(left, type(op), right, safe)
            result = part if result is None else result & part
            left = right
        assert result is not None
        return result

    def _compare_pair(
        self, left: _Value, op: type[ast.cmpop], right: _Value, safe: bool
    ) -> pc.Expression:
        symbol = _OPERATORS.get(op, op.__name__)
        if op in (ast.In, ast.NotIn):
            if not isinstance(right, list):
                raise _WhereError(f"'{symbol}' needs a list or tuple of literals on its right")
            if isinstance(left, list) or left is None:
                raise _WhereError(f"'{symbol}' needs a column or expression on its left")
            values = [v for v in right if v is not None]
            if isinstance(left, _Column):
                for value in values:
                    self._check_literal(left, value, symbol)
            try:
                value_set = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise _WhereError(f"the list after '{symbol}' mixes types: {right!r}") from None
            expr = self._expr(left)
            never = not values or (
                isinstance(left, _Column) and pa.types.is_null(self.types[left.name])
            )  # nothing to match, or a column with no value in any file
            found = pc.scalar(False) if never else pc.is_in(expr, value_set=value_set)
            if len(values) < len(right):  # None in the list matches missing values
                found = found | expr.is_null()
            return ~found if op is ast.NotIn else found
        if left is None or right is None:
            if op not in (ast.Eq, ast.NotEq, ast.Is, ast.IsNot):
                raise _WhereError(
                    f"None can only be compared with ==, !=, is, is not; not {symbol}"
                )
            other = right if left is None else left
            if other is None:
                raise _WhereError("compare a column with None, not None with None")
            expr = self._expr(other)
            return expr.is_null() if op in (ast.Eq, ast.Is) else expr.is_valid()
        if op in (ast.Is, ast.IsNot):
            raise _WhereError(f"'{symbol}' only compares with None; use == or !=")
        if isinstance(left, list) or isinstance(right, list):
            raise _WhereError("a list is only allowed after 'in' or 'not in'")
        if isinstance(left, _Column):
            self._check_literal(left, right, symbol)
        if isinstance(right, _Column):
            self._check_literal(right, left, symbol)
        expr = _COMPARE[op](self._expr(left), self._expr(right))
        if op is ast.NotEq:
            return pc.coalesce(expr, pc.scalar(True))  # as pandas: missing != anything
        return expr if safe else pc.coalesce(expr, pc.scalar(False))

    def value(self, node: ast.expr) -> _Value:
        if isinstance(node, ast.Constant):
            if node.value is None or isinstance(node.value, bool | int | float | str):
                return node.value
            raise _WhereError(f"unsupported literal {node.value!r}")
        if isinstance(node, ast.Name):
            return self._column(self.quoted.get(node.id, node.id))
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            items = [self.value(v) for v in node.elts]
            if any(isinstance(v, pc.Expression | _Column | list) for v in items):
                raise _WhereError("a list after 'in' holds literals only")
            return items
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not | ast.Invert):
                return self.boolean(node, False)
            operand = self.value(node.operand)
            if isinstance(operand, int | float) and not isinstance(operand, bool):
                return -operand if isinstance(node.op, ast.USub) else operand
            expr = self._expr(operand)
            return pc.negate(expr) if isinstance(node.op, ast.USub) else expr
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.BitAnd | ast.BitOr):
                return self.boolean(node, False)
            left, right = self._expr(self.value(node.left)), self._expr(self.value(node.right))
            if isinstance(node.op, ast.Div | ast.FloorDiv):
                # True division, as in Python and pandas (Arrow divides ints as ints).
                quotient = pc.divide(left.cast(pa.float64()), right.cast(pa.float64()))
                return pc.floor(quotient) if isinstance(node.op, ast.FloorDiv) else quotient
            function = _ARITHMETIC.get(type(node.op))
            if function is None:
                raise _WhereError(f"unsupported operator {type(node.op).__name__}")
            return function(left, right)
        if isinstance(node, ast.BoolOp | ast.Compare):
            return self.boolean(node, False)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted is not None:
                known = "a column" if dotted in self.types else "not a column"
                raise _WhereError(
                    f"{dotted} ({known}): quote dotted column names in backticks: `{dotted}`"
                )
            raise _WhereError("attributes are not supported")
        raise _WhereError(f"unsupported syntax: {type(node).__name__}")

    def _call(self, node: ast.Call) -> pc.Expression:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in _FUNCTIONS or node.keywords or len(node.args) != 1:
            shown = name if name is not None else ast.unparse(node.func)
            raise _WhereError(
                f"function {shown}() is not allowed; allowed: "
                + ", ".join(f"{f}(column)" for f in _FUNCTIONS)
            )
        argument = self.value(node.args[0])
        expr = self._expr(argument)
        if name == "abs":
            return pc.abs(expr)
        return expr.is_null() if name in ("isna", "isnull") else expr.is_valid()


def _where_error(where: str, message: str) -> ValueError:
    return ValueError(f"where {where!r}: {message}")


def where_expression(
    where: str, types: Mapping[str, pa.DataType]
) -> tuple[pc.Expression, list[str]]:
    """Compile ``where`` against columns of the given types.

    Returns the filter and the columns it reads. Anything outside the language (a
    function call other than ``isna``/``notna``/``abs``, attributes, subscripts,
    comprehensions, …) is a one-line ``ValueError``; nothing is evaluated.
    """
    if not isinstance(where, str) or not where.strip():
        raise ValueError("where must be a non-empty expression")
    try:
        source, quoted = _backticks(where.strip())
        try:
            tree = ast.parse(source, mode="eval")
        except SyntaxError as err:
            raise _WhereError(f"invalid syntax ({err.msg})") from None
        compiler = _Compiler(quoted, types)
        expr = compiler.boolean(tree.body, True)
    except _WhereError as err:
        raise _where_error(where, str(err)) from None
    except (RecursionError, MemoryError):
        raise _where_error(where, "too deeply nested") from None
    except ValueError as err:  # an unknown column
        raise _where_error(where, str(err).removeprefix("where: ")) from None
    return expr, list(compiler.used)
