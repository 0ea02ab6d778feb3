"""``"module:attribute"`` names: how a config names a user's own reward, advantage estimator or task, so that every
process of a run (``--resume``, ``evaluate``, ``export``) imports it on use. A name registered by a script is known
to that script alone."""

from __future__ import annotations

import importlib


def load(name: str, knob: str):
    """The object ``"module:attribute"`` names (``attribute`` may be dotted), its module imported; errors in one
    line naming ``knob``, where the name was given."""
    module, _, attr = name.partition(":")
    try:
        obj = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name != module and not module.startswith(f"{e.name}."):  # one it imports is missing
            raise ValueError(f"{knob}: the module of {name!r} imports {e.name!r}, which is not installed here; "
                             "install it") from None
        raise ValueError(f"{knob}: cannot import {name!r} ({e}); put its module on PYTHONPATH or fix "
                         "the name") from None
    except Exception as e:  # the module's own code failed: a SyntaxError, an error at import time
        raise ValueError(f"{knob}: importing {name!r} failed ({type(e).__name__}: {e}); fix its module") from None
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as e:
        raise ValueError(f"{knob}: cannot import {name!r} ({e}); put its module on PYTHONPATH or fix "
                         "the name") from None
    return obj


def lookup(table: dict, name: str, knob: str, unknown: str):
    """``table[name]``, else the object ``"module:attribute"`` names (``load``); ``unknown``: the line for a bare name
    the table lacks."""
    if name in table:
        return table[name]
    if ":" not in name:
        raise ValueError(unknown)
    return load(name, knob)


def user_module(fn) -> str | None:
    """The module that defines ``fn`` when it is not rlvjax's own (None for rlvjax's, or where unknown)."""
    module = getattr(fn, "__module__", None)
    return module if module and module.split(".")[0] != "rlvjax" else None


def check_replaceable(kind: str, name: str, own: set[str]) -> None:
    """A registry's rule for a name given twice: rlvjax's own names (``own``) are kept (a user's "math" silently
    became every run's math reward), a user's is replaced (a notebook cell run again after an edit)."""
    if name in own:
        raise ValueError(f"{kind} {name!r} is rlvjax's own; register yours under another name")


def registered_by(own: set[str], name: str, fn) -> str | None:
    """Who registered ``name`` when it is not rlvjax's own name: its function's module, or "your code" (rlvjax's
    function under a name of yours); None for rlvjax's names, ``module:function`` names and unknown ones."""
    if fn is None or name in own:
        return None
    return user_module(fn) or "your code"
