"""Band math: small arithmetic expressions over bands, such as ``(b5 - b4) / (b5 + b4)``.

Expressions are parsed with :mod:`ast` and only a whitelist is evaluated: numbers,
band names (``b`` then the band, e.g. ``b4``, ``b10``, ``b8a``), ``+ - * / **``,
unary minus, parentheses and the functions in :data:`FUNCTIONS`. Nothing else (no
attributes, no calls of other names, no comprehensions) is accepted, so a pipeline's
expression cannot run code. Arithmetic is in float32; a division by zero gives NaN,
which the composite makes transparent.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pixelfleet.errors import ConfigError

#: Functions an expression may call.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": np.abs,
    "sqrt": np.sqrt,
    "log": np.log,
    "exp": np.exp,
    "min": np.minimum,
    "max": np.maximum,
    "clip": np.clip,
}

_BAND_NAME = re.compile(r"^b([0-9a-z]+)$", re.IGNORECASE)
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}


class Expression:
    """A parsed band-math expression; :attr:`bands` lists the bands it reads."""

    def __init__(self, text: str):
        self.text = text
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ConfigError(
                f"band expression {text!r} is not valid ({exc.msg}); write e.g. "
                "'(b5 - b4) / (b5 + b4)'"
            ) from None
        self._tree = tree.body
        self.bands: list[str] = []
        self._check(self._tree)

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return
        if isinstance(node, ast.Name):
            m = _BAND_NAME.match(node.id)
            if m is None:
                raise ConfigError(
                    f"band expression {self.text!r}: unknown name {node.id!r}; bands are "
                    "written b<band>, e.g. b4"
                )
            band = m.group(1).lstrip("0") or "0"
            if band.upper() not in self.bands:
                self.bands.append(band.upper())
            return
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            self._check(node.left)
            self._check(node.right)
            return
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            self._check(node.operand)
            return
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FUNCTIONS
            and not node.keywords
        ):
            for arg in node.args:
                self._check(arg)
            return
        raise ConfigError(
            f"band expression {self.text!r}: {ast.unparse(node)!r} is not allowed; use "
            f"numbers, bands (b4), + - * / ** and {', '.join(FUNCTIONS)}"
        )

    def evaluate(self, bands: Mapping[str, np.ndarray]) -> np.ndarray:
        """Compute the expression on arrays keyed by band name (``"4"``), in float32."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            result = self._eval(self._tree, bands)
        return np.asarray(result, dtype=np.float32)

    def _eval(self, node: ast.AST, bands: Mapping[str, np.ndarray]) -> Any:
        if isinstance(node, ast.Constant):
            return np.float32(float(node.value))  # type: ignore[arg-type]
        if isinstance(node, ast.Name):
            m = _BAND_NAME.match(node.id)
            assert m is not None  # checked on parse
            band = (m.group(1).lstrip("0") or "0").upper()
            return bands[band].astype(np.float32, copy=False)
        if isinstance(node, ast.BinOp):
            op = _BINARY[type(node.op)]
            return op(self._eval(node.left, bands), self._eval(node.right, bands))
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, bands)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [self._eval(a, bands) for a in node.args]
            return FUNCTIONS[node.func.id](*args)
        raise ConfigError(f"band expression {self.text!r} cannot be evaluated")  # unreachable


def is_expression(text: str) -> bool:
    """Tell a band expression (``b5 - b4``) from a plain band name (``4``, ``8A``)."""
    return not re.fullmatch(r"[0-9A-Za-z]+", text.strip()) or bool(_BAND_NAME.match(text))
