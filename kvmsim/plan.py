"""A Config flattened to integers and arrays: what both engines run from.

Everything a rule of the model needs is decided here once, so the two engines share one
reading of the configuration and differ only in how they execute it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import catalogue, graph
from .config import Config
from .workload import Periodic, Poisson, Trace

NS = 1_000_000_000
NEVER = np.iinfo(np.int64).max
UNCHECKED = 255  # rank of a bit that no check in the order consumes

# Source kinds. Guest-side kinds (< SRC_NMI) happen only while the guest runs.
SRC_EXIT, SRC_PMI, SRC_EMUL_PMI, SRC_NMI, SRC_IRQ, SRC_REQUEST, SRC_REQUEST_NOOP = range(7)
KIND_CODE = {"exit": SRC_EXIT, "pmi": SRC_PMI, "emulated-pmi": SRC_EMUL_PMI,
             "nmi": SRC_NMI, "irq": SRC_IRQ}
DIST_POISSON, DIST_PERIODIC, DIST_TRACE = range(3)
LVTPC_CODE = {"nmi": 0, "fixed": 1, "smi": 2, "masked": 3}
# Handler selector per bit; everything else is HANDLER_NOOP.
HANDLER_NOOP, HANDLER_NMI, HANDLER_PMU, HANDLER_PMI, HANDLER_SMI, HANDLER_EVENT = range(6)


def ns(seconds: float) -> int:
    return int(round(seconds * NS))


@dataclass(frozen=True)
class SourcePlan:
    vcpu: int
    kind: int
    bit: int            # request bit for SRC_REQUEST, else 0
    dist: int
    mean_ns: float      # Poisson: mean gap
    period_ns: int      # Periodic
    start_ns: int       # Periodic
    times_ns: np.ndarray  # Trace (int64)
    spawn_key: tuple[int, int]


@dataclass(frozen=True)
class Plan:
    vcpus: int
    seed: int
    order_bits: np.ndarray     # uint8[n_checks], check order, EVENT last
    rank: np.ndarray           # uint8[64]: position of each bit in the order, or UNCHECKED
    handler: np.ndarray        # uint8[64]: HANDLER_* per bit
    handler_ns: np.ndarray     # int64[64]
    raises: np.ndarray         # uint64[64]: requests a no-op handler always raises
    noop_bits: np.ndarray      # uint8[]: what request:noop picks from: no-op requests the
    #                            order checks, in catalogue order
    cost_vmexit: int
    cost_vmenter: int
    cost_check: int
    cost_event: int
    cost_state_load: int
    cost_cancel: int
    intel: bool
    lvtpc: int
    nmi_handler_ns: int
    irq_handler_ns: int
    guest_exit_mean_ns: float  # 0: no guest-initiated exits
    sources: tuple[SourcePlan, ...]


def _source_plans(cfg: Config) -> list[SourcePlan]:
    wl = cfg.workload
    out = []
    for idx, s in enumerate(wl.sources):
        if s.kind == "request:noop":
            kind, bit = SRC_REQUEST_NOOP, 0
        elif s.kind.startswith("request:"):
            kind, bit = SRC_REQUEST, catalogue.bit_of(s.kind.removeprefix("request:"))
        else:
            kind, bit = KIND_CODE[s.kind], 0
        targets = range(wl.vcpus) if s.vcpu is None else (s.vcpu,)
        for v in targets:
            common = dict(vcpu=v, kind=kind, bit=bit, spawn_key=(v, idx + 1), mean_ns=0.0,
                          period_ns=0, start_ns=0, times_ns=np.zeros(0, np.int64))
            if isinstance(s, Poisson):
                out.append(SourcePlan(dist=DIST_POISSON, **{**common, "mean_ns": NS / s.rate}))
            elif isinstance(s, Periodic):
                out.append(SourcePlan(dist=DIST_PERIODIC, **{**common,
                                      "period_ns": max(1, ns(s.period)),
                                      "start_ns": ns(s.start)}))
            else:
                assert isinstance(s, Trace)
                times = np.array([ns(t) for t in s.times], dtype=np.int64)
                out.append(SourcePlan(dist=DIST_TRACE, **{**common, "times_ns": times}))
    return out


def noop_bits(cfg: Config) -> np.ndarray:
    checked = {catalogue.bit_of(n) for n in cfg.check_order}
    return np.array([b for b in (catalogue.bit_of(n) for n in graph.NOOP_NAMES) if b in checked],
                    dtype=np.uint8)


def build(cfg: Config) -> Plan:
    order = cfg.check_order
    order_bits = np.array([catalogue.bit_of(n) for n in order], dtype=np.uint8)
    rank = np.full(64, UNCHECKED, dtype=np.uint8)
    rank[order_bits] = np.arange(len(order_bits), dtype=np.uint8)
    handler = np.full(64, HANDLER_NOOP, dtype=np.uint8)
    for name, h in (("NMI", HANDLER_NMI), ("PMU", HANDLER_PMU), ("PMI", HANDLER_PMI),
                    ("SMI", HANDLER_SMI), ("EVENT", HANDLER_EVENT)):
        handler[catalogue.bit_of(name)] = h
    handler_ns = np.zeros(64, dtype=np.int64)
    raises = np.zeros(64, dtype=np.uint64)
    for r in catalogue.CATALOGUE:
        handler_ns[r.bit] = cfg.costs.handler_ns(r.name)
    for src, dsts in graph.noop_raises().items():
        raises[catalogue.bit_of(src)] = sum(1 << catalogue.bit_of(x) for x in dsts)
    wl = cfg.workload
    c = cfg.costs
    return Plan(
        vcpus=wl.vcpus, seed=cfg.seed, order_bits=order_bits, rank=rank, handler=handler,
        handler_ns=handler_ns, raises=raises,
        noop_bits=noop_bits(cfg),
        cost_vmexit=c.vmexit, cost_vmenter=c.vmenter, cost_check=c.check,
        cost_event=c.event, cost_state_load=c.state_load, cost_cancel=c.cancel,
        intel=cfg.vendor == "intel", lvtpc=LVTPC_CODE[wl.lvtpc],
        nmi_handler_ns=ns(wl.nmi_handler), irq_handler_ns=ns(wl.irq_handler),
        guest_exit_mean_ns=NS / wl.guest_exit_rate if wl.guest_exit_rate > 0 else 0.0,
        sources=tuple(_source_plans(cfg)),
    )


def bit_generator(seed: int, spawn_key: tuple[int, int]) -> np.random.PCG64:
    """The independent stream of one (vCPU, source): key 0 is the guest's own exits."""
    return np.random.PCG64(np.random.SeedSequence(seed, spawn_key=spawn_key))
