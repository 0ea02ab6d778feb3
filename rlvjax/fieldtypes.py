"""Type checks of a config dataclass's field values against its annotations, shared by every config section.

A gin binding is a Python literal, so ``RunConfig.num_steps = 2.0`` binds a float, ``MeshConfig.data = "1"`` a string
and ``TaskSpec.name = arithmetic`` (no quotes) an unparsed name; each is refused here, in one line, when the section
is built — before a run writes anything — rather than as a TypeError (or not at all) minutes later.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import types
import typing

_SCALARS = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
            float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            str: lambda v: isinstance(v, str), bool: lambda v: isinstance(v, bool), type(None): lambda v: v is None}


def matches(value, kind) -> bool:
    """Whether ``value`` is of the annotated ``kind``: int, float (an int too), str, bool, None, unions of them and
    ``tuple[X, ...]``; any other annotation accepts anything."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, k) for k in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return len(args) == len(value) and all(matches(v, k) for v, k in zip(value, args))
    return _SCALARS.get(kind, lambda v: True)(value)


def describe(kind) -> str:
    """``int | None`` -> "an int or None"; ``tuple[int, ...]`` -> "a tuple of int"."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(k) for k in args)
    if origin is tuple:
        return f"a tuple of {args[0].__name__}" if len(args) == 2 and args[1] is Ellipsis else "a tuple"
    if kind is type(None):
        return "None"
    return f"{'an' if kind is int else 'a'} {kind.__name__}"


def _plain(value):
    """A numpy scalar (in a tuple too) as the Python value it holds: ``np.float64`` passes for a float, but the run's
    config.gin would say ``np.float64(0.5)``, which gin cannot read back."""
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value.item() if type(value).__module__ == "numpy" and getattr(value, "shape", None) == () else value


def check_field_types(config) -> None:
    """Raises a one-line ValueError naming the first field whose value does not match its annotation, or is (or
    holds) a float that is not finite (nan compares false with every bound, and inf cannot be written back to gin).
    numpy scalars (a sweep's ``np.linspace``) are stored as plain Python values."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value, kind = _plain(getattr(config, field.name)), hints[field.name]
        if value is not getattr(config, field.name):
            object.__setattr__(config, field.name, value)  # frozen dataclasses too: this runs in __post_init__
        name = f"{type(config).__name__}.{field.name}"
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, float) and not math.isfinite(item):
                what = "be a finite number" if item is value else "hold finite numbers only"
                hint = "" if math.isnan(item) else " (where inf means no bound, give a large number, e.g. 1e9)"
                raise ValueError(f"{name}={value} must {what}{hint}")  # a rate given 1e9 is refused next
        if matches(value, kind):
            continue
        if isinstance(value, ast.AST):  # gin keeps a bare word it cannot resolve as its syntax tree
            text = ast.unparse(value)
            raise ValueError(f"{name} = {text} is not a value: text needs quotes, e.g. {name} = {text!r}")
        kind_name = type(value).__name__
        raise ValueError(f"{name}={value!r} must be {describe(kind)}, not {'an' if kind_name[0] in 'aeiou' else 'a'} "
                         f"{kind_name}; fix the binding's value")
