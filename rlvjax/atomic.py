"""Small text files written whole or not at all: a reader sees the old file or the new one, never a part."""

from __future__ import annotations

from pathlib import Path


def write_text(path, text: str) -> None:
    """``text`` into ``path`` through a hidden temporary beside it, renamed into place; a failed write (a full disk)
    removes the temporary, which would otherwise hold the disk full."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
