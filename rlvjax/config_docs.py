"""docs/config.md from the config dataclasses: every field with its gin name, type, default and meaning.

The meaning of a field is its comment in the source (the lines above it, or the one after it), so the docs cannot
drift from the code: ``python -m rlvjax.config_docs`` rewrites the file and ``tests/test_config.py`` fails when it is
stale or a field has no comment.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path

from rlvjax.config import SECTIONS
from rlvjax.fieldtypes import describe

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"
_FIELD = re.compile(r"^\s{4}(\w+):")


def field_comments(section: type) -> dict[str, str]:
    """``{field: comment}`` from the class source: the comment lines right above a field, else its trailing
    comment."""
    source = inspect.getsource(section)
    first = ast.parse(source).body[0].body[0]
    has_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    lines = source.splitlines()[first.end_lineno if has_docstring else 0:]  # fields follow the docstring
    comments, above = {}, []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
            continue
        found = _FIELD.match(line)
        if found:
            trailing = line.split("  # ", 1)[1] if "  # " in line else ""
            comments[found.group(1)] = " ".join(above) if above else trailing
        above = []
    return comments


def _docstring(section: type) -> str:
    doc = inspect.getdoc(section) or ""
    return "" if doc.startswith(f"{section.__name__}(") else doc  # dataclasses' generated signature is no doc


def render() -> str:
    parts = ["# Configuration reference", "",
             "Generated from the dataclasses by `python -m rlvjax.config_docs`; a test fails when it is stale. A run "
             "is one `rlvjax.config.Config` value with the sections below. On the command line each field is a gin "
             "binding, `--gin_param 'Section.field = value'` (values are Python literals: strings in quotes); in "
             "Python, `dataclasses.replace(config.section, field=value)` or `rlvjax.RLVConfig(..., config=...)`. "
             "Every run writes its resolved config as `WORKDIR/config.gin` (which `--gin_file` reads back) and "
             "`config.json`; `python -m rlvjax.train --print_config` prints it.", "",
             "The *default* column is the dataclass's. The command line with no `--gin_file` runs "
             "`configs/default.gin` (the embedded CPU default, which binds many of these fields otherwise); any "
             "`--gin_file` replaces it, so a file that sets only some fields (`configs/hardware/*.gin`) goes after "
             "an experiment or `default.gin`: `--gin_file configs/default.gin --gin_file configs/hardware/cpu.gin`.",
             ""]
    for name, section in SECTIONS.items():
        hints, comments = typing.get_type_hints(section), field_comments(section)
        parts += [f"## `{section.__name__}` (`Config.{name}`)", ""]
        if _docstring(section):
            parts += [_docstring(section), ""]
        parts += ["| field | type | default | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(section):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            meaning = comments.get(f.name, "").replace("|", "\\|")
            parts.append(f"| `{f.name}` | {describe(hints[f.name])} | `{default!r}` | {meaning} |")
        parts.append("")
    return "\n".join(parts)


def undocumented() -> list[str]:
    """``Section.field`` names without a comment to document them."""
    return [f"{section.__name__}.{f.name}" for section in SECTIONS.values()
            for f in dataclasses.fields(section) if not field_comments(section).get(f.name)]


if __name__ == "__main__":
    usage = "usage: python -m rlvjax.config_docs  (rewrites docs/config.md in a source checkout; takes no arguments)"
    if sys.argv[1:] in (["--help"], ["-h"]):
        print(usage)
        sys.exit(0)
    if sys.argv[1:] or not DOC.parent.is_dir():
        problem = (f"unexpected argument {sys.argv[1]!r}; {usage}" if sys.argv[1:] else f"{DOC.parent} does not "
                   "exist: this rlvjax is installed, not a source checkout; run it in a clone of the repository")
        print(f"rlvjax.config_docs: error: {problem}", file=sys.stderr)
        sys.exit(2)
    missing = undocumented()
    if missing:
        sys.exit(f"rlvjax.config_docs: error: fields without a comment: {', '.join(missing)}; comment them")
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC}")
