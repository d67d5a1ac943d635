"""Order analysis: back edges in a check order, the nearest order without them, where
a workload's cancelled VM-Enters come from, and the order a kernel's x86.c checks
(order_from_source). docs/analysis.md explains the method.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from . import catalogue
from .graph import EDGES, MUST_PRECEDE, Context, Edge
from ._result import Result
from ._source_order import Check, SourceOrder, order_from_source


@dataclass(frozen=True)
class BackEdge:
    """An edge of the "may raise" graph whose target is checked at or before its source in an
    order: src_pos and dst_pos are their check positions, `active` whether it fires."""
    edge: Edge
    src_pos: int
    dst_pos: int
    active: bool           # fires in the context linted

    @property
    def cost(self) -> str:
        return f"one cancelled VM-Enter per {self.edge.per}"


def back_edges(order: tuple[str, ...], ctx: Context) -> list[BackEdge]:
    """Edges whose target is checked at or before their source: the raised request
    survives to kvm_vcpu_exit_request() and cancels the entry. Self re-raises included."""
    pos = {catalogue.bit_of(n): i for i, n in enumerate(order)}
    out = []
    for e in EDGES:
        s, d = pos.get(catalogue.bit_of(e.src)), pos.get(catalogue.bit_of(e.dst))
        if s is not None and d is not None and d <= s:
            out.append(BackEdge(e, s, d, ctx.active(e)))
    return sorted(out, key=lambda b: (not b.active, b.src_pos, b.dst_pos))


def gates() -> list[str]:
    """Requests that exist but that no check in vcpu_enter_guest() consumes."""
    return [f"{n} (bit {b}) is never consumed by vcpu_enter_guest(): it {effect}"
            for n, (b, effect) in catalogue.NOT_CHECKED.items()]


@dataclass(frozen=True)
class Move:
    """One check the optimizer moves: from position old_pos to new_pos, after `after`."""
    name: str
    old_pos: int
    new_pos: int
    after: str             # the request it now follows


def _must_before(order: tuple[str, ...], ctx: Context) -> set[tuple[str, str]]:
    """(a, b): a must be checked before b. Active non-self edges, plus MUST_PRECEDE."""
    bit = {n: catalogue.bit_of(n) for n in order}
    by_bit = {b: n for n, b in bit.items()}
    pairs = set()
    for e in EDGES:
        s, d = by_bit.get(catalogue.bit_of(e.src)), by_bit.get(catalogue.bit_of(e.dst))
        if s and d and s != d and ctx.active(e):
            pairs.add((s, d))
    for a, b, _ in MUST_PRECEDE:
        if a is None and b in bit:
            pairs |= {(b, n) for n in order if n != b}
        elif b is None and a in bit:
            pairs |= {(n, a) for n in order if n != a}
        elif a in bit and b in bit:
            pairs.add((a, b))
    # Transitive closure: a kept subsequence must respect implied constraints too.
    changed = True
    while changed:
        extra = {(a, d) for a, b in pairs for c, d in pairs if b == c and a != d} - pairs
        pairs |= extra
        changed = bool(extra)
    if any((b, a) in pairs for a, b in pairs):
        cycle = sorted({a for a, b in pairs if (b, a) in pairs})
        raise ValueError(f"the constraints on {', '.join(cycle)} form a cycle: no order "
                         "avoids every back edge")
    return pairs


def optimize(order: tuple[str, ...], ctx: Context) -> tuple[tuple[str, ...], list[Move]]:
    """The order with no avoidable back edge that moves the fewest checks from `order`,
    then keeps each moved check as close to its old place as the constraints allow."""
    must = _must_before(order, ctx)
    violated = {(a, b) for a, b in must if order.index(a) > order.index(b)}
    if not violated:
        return order, []
    # The checks that stay keep their relative order, so the moved ones must cover every
    # violated pair: the smallest such cover is the fewest moves.
    candidates = sorted({n for pair in violated for n in pair}, key=order.index)
    for k in range(1, len(candidates) + 1):
        for moved in itertools.combinations(candidates, k):
            if all(a in moved or b in moved for a, b in violated):
                kept = [n for n in order if n not in moved]
                return _reinsert(order, kept, list(moved), must)
    raise AssertionError("unreachable: moving every violating check always works")


def _reinsert(order, kept, moved, must):
    new = list(kept)
    moves = []
    while moved:
        # A moved check whose moved predecessors are placed already.
        name = next(m for m in moved if not any((p, m) in must for p in moved if p != m))
        moved.remove(name)
        lo = max((new.index(a) + 1 for a, b in must if b == name and a in new), default=0)
        hi = min((new.index(b) for a, b in must if a == name and b in new), default=len(new))
        old = order.index(name)
        # The slot in [lo, hi] nearest the check's old place among its old neighbours.
        want = sum(1 for n in new if order.index(n) < old)
        slot = min(max(want, lo), hi)
        new.insert(slot, name)
        moves.append(Move(name, old, slot, new[slot - 1] if slot else "(start)"))
    return tuple(new), sorted(moves, key=lambda m: m.new_pos)


@dataclass(frozen=True)
class WhatIf:
    """One row of what_if(): the cancelled VM-Enters per second with `request` pending at
    kvm_vcpu_exit_request(), by path, and the handlers whose firing back edges raise it."""
    request: str
    async_per_s: float      # arrived from another CPU after its check
    backedge_per_s: float   # raised by a handler checked after it
    raised_by: tuple[str, ...]


def what_if(result: Result) -> list[WhatIf]:
    """Cancelled VM-Enters per second by the request pending at the late check, and path."""
    order = result.config.check_order
    ctx = Context.of(result.config)
    t = result.totals
    rows = []
    for n in order:
        a, b = t[f"cancels.async.{n}"], t[f"cancels.backedge.{n}"]
        if a or b:
            raisers = tuple(be.edge.src for be in back_edges(order, ctx)
                            if be.active and be.edge.dst == n)
            rows.append(WhatIf(n, a / result.duration, b / result.duration, raisers))
    return sorted(rows, key=lambda r: -(r.async_per_s + r.backedge_per_s))


__all__ = ["BackEdge", "Check", "Move", "SourceOrder", "WhatIf", "back_edges", "gates",
           "optimize", "order_from_source", "what_if"]
