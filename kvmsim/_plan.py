"""A Config flattened to integers and arrays: what both engines run from.

Everything a rule of the model needs is decided here once, so the two engines share one
reading of the configuration and differ only in how they execute it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _spec, catalogue, graph
from ._config import Config
from ._limits import NS, times_to_ns, to_ns
from ._spec import Dist, Handler, Lvtpc, Src
from ._workload import Periodic, Poisson


@dataclass(frozen=True)
class SourcePlan:
    vcpu: int
    kind: int             # Src
    bit: int              # request bit for Src.REQUEST, else 0
    dist: int             # Dist
    mean_ns: float        # Poisson: mean gap
    period_ns: int        # Periodic
    start_ns: int         # Periodic
    times_ns: np.ndarray  # Trace (int64); one array shared by every vCPU of the source
    spawn_key: tuple[int, int]


@dataclass(frozen=True)
class Plan:
    vcpus: int
    seed: int
    params: dict          # exactly the keys of _spec.PARAMS
    sources: tuple[SourcePlan, ...]


_NO_TIMES = np.zeros(0, np.int64)


def _source_plans(cfg: Config) -> list[SourcePlan]:
    wl = cfg.workload
    out = []
    for idx, s in enumerate(wl.sources):
        bit = 0
        if s.kind in _spec.SRC_OF_KIND:
            kind = _spec.SRC_OF_KIND[s.kind]
        else:
            kind, bit = Src.REQUEST, catalogue.bit_of(s.kind.removeprefix("request:"))
        shape = dict(kind=kind, bit=bit, mean_ns=0.0, period_ns=0, start_ns=0,
                     times_ns=_NO_TIMES)
        if isinstance(s, Poisson):
            shape.update(dist=Dist.POISSON, mean_ns=NS / s.rate)
        elif isinstance(s, Periodic):
            shape.update(dist=Dist.PERIODIC, period_ns=to_ns(s.period),
                         start_ns=to_ns(s.start, 0))
        else:
            shape.update(dist=Dist.TRACE, times_ns=times_to_ns(s.times))
        targets = range(wl.vcpus) if s.vcpu is None else (s.vcpu,)
        out += [SourcePlan(vcpu=v, spawn_key=(v, idx + 1), **shape) for v in targets]
    return out


def _fixed(values, n: int = _spec.N_BITS) -> list[int]:
    """A C array member of ks_params: exactly n ints."""
    values = [int(x) for x in values]
    return values + [0] * (n - len(values))


def build(cfg: Config, interval_ns: int) -> Plan:
    order = [catalogue.bit_of(n) for n in cfg.check_order]
    rank = [_spec.UNCHECKED] * _spec.N_BITS
    for r, bit in enumerate(order):
        rank[bit] = r
    handler = [Handler.NOOP] * _spec.N_BITS
    for name, h in _spec.HANDLER_OF.items():
        handler[catalogue.bit_of(name)] = h
    handler_ns = [0] * _spec.N_BITS
    for r in catalogue.CATALOGUE:
        handler_ns[r.bit] = cfg.costs.handler_ns(r.name)
    raises = [0] * _spec.N_BITS
    for src, dsts in graph.noop_raises().items():
        raises[catalogue.bit_of(src)] = sum(1 << catalogue.bit_of(x) for x in dsts)
    noop = [b for b in (catalogue.bit_of(n) for n in graph.NOOP_NAMES) if b in order]
    wl, costs = cfg.workload, cfg.costs
    params = dict(
        n_checks=len(order), order=_fixed(order), rank=rank, handler=_fixed(handler),
        handler_ns=handler_ns, raises=raises,
        unconsumable=sum(1 << b for b in range(_spec.N_BITS) if rank[b] == _spec.UNCHECKED),
        n_noop=len(noop), noop_bits=_fixed(noop),
        **{f"cost_{c.name}": getattr(costs, c.name) for c in _spec.COSTS if c.name != "handler"},
        intel=int(cfg.vendor == "intel"), lvtpc=Lvtpc[wl.lvtpc.upper()],
        nmi_handler_ns=to_ns(wl.nmi_handler, 0), irq_handler_ns=to_ns(wl.irq_handler, 0),
        guest_exit_mean_ns=NS / wl.guest_exit_rate if wl.guest_exit_rate > 0 else 0.0,
        interval_ns=interval_ns,
    )
    assert list(params) == [p.name for p in _spec.PARAMS]
    return Plan(vcpus=wl.vcpus, seed=cfg.seed, params=params,
                sources=tuple(_source_plans(cfg)))


def bit_generator(seed: int, spawn_key: tuple[int, int]) -> np.random.PCG64:
    """The independent stream of one (vCPU, source): key 0 is the guest's own exits."""
    return np.random.PCG64(np.random.SeedSequence(seed, spawn_key=spawn_key))
