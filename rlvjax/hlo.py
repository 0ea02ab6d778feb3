"""Reading XLA's compiled HLO text: the buffer copies a ``while`` loop makes each iteration.

A decode loop that updates its KV cache in place has no cache-sized copy in its body; one per layer and step means
XLA could not alias the cache (e.g. a layout that splits a size-1 head dimension), moving the whole cache every
token. ``loop_copies`` finds them so the memory plan's check (``--dry_run``) and the tests can count them.
"""

from __future__ import annotations

import math
import re

_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_COPY = re.compile(r"=\s*(\w+)\[([\d,]*)\]\S*\s+copy(?:-start)?\(\s*%?([\w.\-]*)")
_CALLEES = re.compile(r"(?:body|condition|to_apply)=%?([\w.\-]+)|branch_computations=\{([^}]*)\}")


def computations(hlo: str) -> dict[str, list[str]]:
    """Instruction lines of each computation of an HLO module's text, by name."""
    out, current = {}, None
    for line in hlo.splitlines():
        if current is None:
            m = _COMPUTATION.match(line)
            if m:
                current = out.setdefault(m.group(1), [])
        elif line.startswith("}"):
            current = None
        else:
            current.append(line)
    return out


def _reachable(comps: dict[str, list[str]], root: str) -> set[str]:
    """``root`` and what it runs: loop bodies and conditions, calls, branches (not fusions: a copy fused into a
    kernel is not a buffer copy)."""
    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in seen or name not in comps:
            continue
        seen.add(name)
        for line in comps[name]:
            for single, branches in _CALLEES.findall(line):
                todo += [single] if single else [b.strip().lstrip("%") for b in branches.split(",")]
    return seen


def loop_copies(hlo: str, min_elements: int) -> list[str]:
    """Shapes (``f32[256,2,2068,128]``) of the copies of at least ``min_elements`` elements that run inside a while
    loop's body, once per iteration, in a compiled module's HLO text (not those of a broadcast: a new buffer filled,
    not one moved)."""
    comps = computations(hlo)
    bodies = {m for lines in comps.values() for line in lines for m in re.findall(r"\bbody=%?([\w.\-]+)", line)}
    inside = set().union(*(_reachable(comps, b) for b in bodies)) if bodies else set()
    found = []
    for name in sorted(inside):
        for line in comps[name]:
            m = _COPY.search(line)
            # a copy of a broadcast fills a new buffer (a prefill chunk's empty cache under ``lax.map``): it moves
            # no cache
            if m and "broadcast" not in m.group(3) and math.prod(int(d) for d in m.group(2).split(",") if d) >= \
                    min_elements:
                found.append(f"{m.group(1)}[{m.group(2)}]")
    return found
