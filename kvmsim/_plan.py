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
from ._spec import Dist, Handler, Src
from ._workload import Periodic, Poisson, ipi_target

SHARED = 2**32 - 1        # spawn key of a stream every vCPU shares (request-all:NAME)


@dataclass(frozen=True)
class SourcePlan:
    vcpu: int
    guest: bool           # acts only while the guest runs (else: from another CPU, any mode)
    kind: int             # Src
    bit: int              # request bit for Src.REQUEST, else 0
    dist: int             # Dist
    mean_ns: float        # Poisson: mean gap
    period_ns: int        # Periodic
    start_ns: int         # Periodic
    times_ns: np.ndarray  # Trace (int64); one array shared by every vCPU of the source
    spawn_key: tuple[int, int]
    target: int = 0       # Src.IPI / IPI_NMI: the vCPU it goes to, or IPI_ANY, IPI_ALL


@dataclass(frozen=True)
class Plan:
    vcpus: int
    seed: int
    params: dict          # exactly the keys of _spec.PARAMS
    sources: tuple[SourcePlan, ...]


_NO_TIMES = np.zeros(0, np.int64)


def _source_plans(cfg: Config, soft_timer: bool) -> list[SourcePlan]:
    wl = cfg.workload
    out = []
    for idx, s in enumerate(wl.sources):
        bit, target, ipi = 0, 0, ipi_target(s.kind)
        if s.kind in _spec.SRC_OF_KIND:
            kind = _spec.SRC_OF_KIND[s.kind]
        elif ipi is not None:
            kind, target = ipi
        else:                                      # request:NAME, request-all:NAME
            prefix, _, name = s.kind.partition(":")
            kind, bit = _spec.FAMILY_OF[prefix].src, catalogue.bit_of(name)
        # The LAPIC timer on the VMX preemption timer fires in guest mode only; on a host
        # hrtimer it fires on the host CPU in any mode (apic_timer_expired).
        guest = kind in _spec.GUEST_SIDE or (kind == Src.TIMER and not soft_timer)
        shape = dict(kind=kind, bit=bit, guest=guest, mean_ns=0.0, period_ns=0, start_ns=0,
                     times_ns=_NO_TIMES, target=target)
        if isinstance(s, Poisson):
            shape.update(dist=Dist.POISSON, mean_ns=NS / s.rate)
        elif isinstance(s, Periodic):
            shape.update(dist=Dist.PERIODIC, period_ns=to_ns(s.period),
                         start_ns=to_ns(s.start, 0))
        else:
            shape.update(dist=Dist.TRACE, times_ns=times_to_ns(s.times))
        # ipi:N from every vCPU: every vCPU but N sends
        vcpus = [v for v in (range(wl.vcpus) if s.vcpu is None else (s.vcpu,))
                 if ipi is None or v != target]
        # request-all:NAME: one stream, the same arrivals on every vCPU
        shared = s.kind.startswith("request-all:")
        out += [SourcePlan(vcpu=v, spawn_key=(SHARED if shared else v, idx + 1), **shape)
                for v in vcpus]
    # STI;HLT runs after whatever else the guest does at the same instant (with IF = 0).
    return sorted(out, key=lambda sp: sp.kind == Src.HLT)


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
    for name, bit in zip(cfg.check_order, order):   # a bit's name in this release
        handler_ns[bit] = cfg.costs.handler_ns(name)
    raises = [0] * _spec.N_BITS
    for src, dsts in graph.noop_raises().items():
        raises[catalogue.bit_of(src)] = sum(1 << catalogue.bit_of(x) for x in dsts)
    noop = [b for b in (catalogue.bit_of(n) for n in graph.NOOP_NAMES) if b in order]
    wl, costs, sw, host = cfg.workload, cfg.costs, cfg.switches, cfg.machine
    intel = cfg.vendor == "intel"
    soft_timer = not host["preemption_timer"]
    pmu = _spec.GUEST_PMU_OF[cfg.guest_pmu]
    # The guest's perf NMI handler runs on every NMI when perf programs LVTPC for NMIs.
    ops = _spec.PMI_HANDLER_OPS[pmu] if wl.lvtpc == "nmi" else ((), ())
    params = dict(
        n_checks=len(order), order=_fixed(order), rank=rank, handler=_fixed(handler),
        handler_ns=handler_ns, raises=raises,
        unconsumable=sum(1 << b for b in range(_spec.N_BITS)
                         if rank[b] == _spec.UNCHECKED and b != _spec.UNBLOCK_BIT),
        n_noop=len(noop), noop_bits=_fixed(noop),
        **{f"cost_{c.name}": getattr(costs, c.name) for c in _spec.COSTS if c.name != "handler"},
        intel=int(intel), lvtpc=_spec.LVTPC_OF[wl.lvtpc],
        automask=int(sw["lvtpc_automask"] == "all"
                     or (sw["lvtpc_automask"] == "intel" and intel)),
        pmi_irq_work=int(sw["pmi_delivery"] == "irq_work"),
        pmu_request=int(sw["pmu_reprogram"] == "request"),
        nmi_event_always=int(sw["process_nmi_event"] == "always"),
        apicv=int(host["apicv"]), ipiv=int(host["ipiv"]), vnmi=int(host["vnmi"]),
        iret_exits=int(not intel and not host["vnmi"]), idle_hlt=int(host["idle_hlt"]),
        fastpath_reenter=int(sw["fastpath_reenter"] == "timer-icr-hlt"),
        soft_timer=int(soft_timer),
        coupled=int(any(ipi_target(s.kind) is not None for s in wl.sources)),
        pmi_ops_n=[len(seq) for seq in ops],
        pmi_ops_pmu=[sum(1 << i for i, op in enumerate(seq) if op == "PMU") for seq in ops],
        pmi_ops_lvtpc=[seq.index("LVTPC") if "LVTPC" in seq else -1 for seq in ops],
        amd_nmi_window_ns=0 if pmu == _spec.GuestPmu.INTEL else _spec.AMD_NMI_WINDOW_NS,
        pmi_skid_ns=to_ns(wl.pmi_skid, 0),
        nmi_handler_ns=to_ns(wl.nmi_handler, 0), irq_handler_ns=to_ns(wl.irq_handler, 0),
        guest_exit_mean_ns=NS / wl.guest_exit_rate if wl.guest_exit_rate > 0 else 0.0,
        interval_ns=interval_ns,
    )
    return Plan(vcpus=wl.vcpus, seed=cfg.seed, params=params,
                sources=tuple(_source_plans(cfg, soft_timer)))


def bit_generator(seed: int, spawn_key: tuple[int, int]) -> np.random.PCG64:
    """The independent stream of one (vCPU, source): key 0 is the guest's own exits."""
    return np.random.PCG64(np.random.SeedSequence(seed, spawn_key=spawn_key))
