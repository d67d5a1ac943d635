"""The C contender: benchmarks/c_model/kvmsim_model.c, compiled with the system's C compiler
at -O2 and run through ctypes.

    lib = build(tmp_dir)                 # gcc -O2 -std=c11 ... -lnpyrandom
    run = CRun(lib, config, duration)    # flattens the config, makes its bit generators
    run()                                # the simulation (what the benchmarks time)
    run.totals()                         # the keys and values of kvmsim's Result.totals

The C code reads the same flattened configuration as kvmsim's engines (kvmsim/_plan.py) and
draws from the same streams (numpy PCG64 bit generators, passed by address), with numpy's
ziggurat exponential linked from its static npyrandom library as setup.py links it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import numpy as np

from kvmsim import _spec, catalogue
from kvmsim._limits import to_ns
from kvmsim._plan import Plan, bit_generator
from kvmsim._plan import build as build_plan

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "kvmsim_model.c")
CFLAGS = ("-O2", "-std=c11", "-Wall", "-Wextra", "-shared", "-fPIC")
# numpy ships its random distributions (the ziggurat exponential) as a static library.
NPYRANDOM = os.path.join(os.path.dirname(np.__file__), "random", "lib")

BIT_GROUPS = tuple(_spec.BIT_GROUPS)          # 64 columns each, by bit
# The C code writes its own enums in the order of kvmsim's codes (a hand-written contender
# keeps its own names); these are the values it assumes.
C_ENUMS = {"km_kind": ["EXIT", "PMI", "EMUL_PMI", "NMI", "IRQ", "REQUEST", "REQUEST_NOOP",
                       "TIMER", "HLT", "IPI_SELF", "TASK_WORK", "IPI", "IPI_NMI"],
           "km_dist": ["POISSON", "PERIODIC", "TRACE"],
           "km_lvtpc": ["NMI", "FIXED", "SMI", "MASKED"],
           "km_stop": {"DONE": 0, "UNCONSUMABLE": 2, "NOMEM": 3}}
assert C_ENUMS["km_kind"] == [m.name for m in _spec.Src]
assert C_ENUMS["km_dist"] == [m.name for m in _spec.Dist]
assert C_ENUMS["km_lvtpc"] == [m.name for m in _spec.Lvtpc]
assert all(_spec.Stop[k] == v for k, v in C_ENUMS["km_stop"].items())
assert {m.name for m in _spec.Stop} - set(C_ENUMS["km_stop"]) == {"INTERRUPTED"}, \
    "a stop code the C model does not know (it has no Ctrl-C or trace hook to interrupt it)"
# The request bits kvmsim_model.c gives a meaning (km_special_bits, checked in build()).
SPECIAL_BITS = (*(_spec.SPECIAL_BITS[n] for n in ("EVENT", "NMI", "PMU", "PMI", "SMI")),
                _spec.UNBLOCK_BIT)

_CTYPES = {"int32_t": ctypes.c_int32, "int64_t": ctypes.c_int64, "uint8_t": ctypes.c_uint8,
           "uint32_t": ctypes.c_uint32, "uint64_t": ctypes.c_uint64, "double": ctypes.c_double}


def _ctype(decl: str):
    """The ctypes type of a _spec.Param ctype such as "int64_t" or "uint8_t[64]"."""
    base, _, n = decl.partition("[")
    return _CTYPES[base] * int(n.rstrip("]")) if n else _CTYPES[base]


_SPEC_PARAMS = {p.name: p.ctype for p in _spec.PARAMS}
# What struct km_params (kvmsim_model.h) holds, in its order: the Plan.params the C model
# reads, with _spec.PARAMS' names and C types.
PARAM_FIELDS = (
    "n_checks", "order", "rank", "handler_ns", "raises", "unconsumable", "n_noop", "noop_bits",
    "cost_vmexit", "cost_vmenter", "cost_check", "cost_state_load", "cost_cancel",
    "cost_task_work", "cost_ipi", "lvtpc", "automask", "pmi_irq_work", "pmu_request",
    "nmi_event_always", "apicv", "ipiv", "vnmi", "iret_exits", "idle_hlt", "fastpath_reenter",
    "coupled", "pmi_ops_n", "pmi_ops_pmu", "pmi_ops_lvtpc", "amd_nmi_window_ns", "pmi_skid_ns",
    "nmi_handler_ns", "irq_handler_ns", "guest_exit_mean_ns")
# The Plan.params the C model does without, and why.
NOT_READ = {
    "handler": "kvmsim_model.c switches on the request bit (km_special_bits)",
    "cost_event": "handler_ns holds EVENT's cost too",
    "intel": "no rule reads the vendor itself: iret_exits, automask, pmi_ops_* carry it",
    "soft_timer": "_plan.build already made the timer a host- or guest-side source",
    "interval_ns": "km_simulate takes it as an argument",
}
assert set(PARAM_FIELDS) | set(NOT_READ) == set(_SPEC_PARAMS), \
    set(_SPEC_PARAMS) ^ (set(PARAM_FIELDS) | set(NOT_READ))
assert not set(PARAM_FIELDS) & set(NOT_READ)


class Params(ctypes.Structure):
    _fields_ = [(name, _ctype(_SPEC_PARAMS[name])) for name in PARAM_FIELDS]


class Source(ctypes.Structure):
    """struct km_source: one SourcePlan (its stream passed as a bitgen_t pointer)."""
    _fields_ = [("vcpu", ctypes.c_int32), ("guest", ctypes.c_int32), ("kind", ctypes.c_int32),
                ("dist", ctypes.c_int32), ("bit", ctypes.c_int32), ("target", ctypes.c_int32),
                ("mean_ns", ctypes.c_double),
                ("period_ns", ctypes.c_int64), ("start_ns", ctypes.c_int64),
                ("times", ctypes.POINTER(ctypes.c_int64)), ("n_times", ctypes.c_int64),
                ("rng", ctypes.c_void_p)]


def compiler() -> str | None:
    """The C compiler: $CC, else cc or gcc on PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def build(out_dir: str) -> ctypes.CDLL:
    """Compile kvmsim_model.c into out_dir and load it; CalledProcessError on a failure."""
    out = os.path.join(out_dir, "kvmsim_model.so")
    subprocess.run([compiler(), *CFLAGS, "-I", np.get_include(), SOURCE, "-L", NPYRANDOM,
                    "-lnpyrandom", "-lm", "-o", out], check=True, capture_output=True,
                   text=True)
    lib = ctypes.CDLL(out)
    lib.km_simulate.restype = ctypes.c_int
    lib.km_simulate.argtypes = [ctypes.POINTER(Params), ctypes.c_int32,
                                ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(Source),
                                ctypes.c_int32, ctypes.POINTER(ctypes.c_int64), ctypes.c_int32,
                                ctypes.c_int64, ctypes.POINTER(ctypes.c_int64),
                                ctypes.POINTER(ctypes.c_int64)]
    lib.named = ctypes.c_int32.in_dll(lib, "km_named").value
    lib.columns = ctypes.c_int32.in_dll(lib, "km_columns").value
    names = (ctypes.c_char_p * lib.named).in_dll(lib, "km_column_names")
    lib.column_names = tuple(n.decode() for n in names)
    # The C side's layout and codes are kvmsim's: counters, bits, the parameter block.
    assert lib.column_names == tuple(c.name for c in _spec.COUNTERS), lib.column_names
    assert lib.named == _spec.REQ_BASE and lib.columns == _spec.N_COLUMNS
    assert tuple((ctypes.c_int32 * 6).in_dll(lib, "km_special_bits")) == SPECIAL_BITS
    offsets = (ctypes.c_int64 * len(PARAM_FIELDS)).in_dll(lib, "km_param_offsets")
    assert ctypes.c_int64.in_dll(lib, "km_params_size").value == ctypes.sizeof(Params)
    assert list(offsets) == [getattr(Params, f).offset for f in PARAM_FIELDS]
    fields = [f for f, _ in Source._fields_]
    offsets = (ctypes.c_int64 * len(fields)).in_dll(lib, "km_source_offsets")
    assert ctypes.c_int64.in_dll(lib, "km_source_size").value == ctypes.sizeof(Source)
    assert list(offsets) == [getattr(Source, f).offset for f in fields]
    assert ctypes.c_int32.in_dll(lib, "km_ipi_any").value == _spec.IPI_ANY
    assert ctypes.c_int32.in_dll(lib, "km_ipi_all").value == _spec.IPI_ALL
    return lib


def _params(plan: Plan) -> Params:
    out = Params()
    for name, ctype in Params._fields_:
        value = plan.params[name]
        if hasattr(ctype, "_length_"):
            getattr(out, name)[:] = [int(x) for x in value]
        else:
            setattr(out, name, value)
    return out


class CRun:
    """One simulation of `config` for `duration` seconds by the C model, ready to run."""

    def __init__(self, lib: ctypes.CDLL, config, duration: float,
                 interval: float | None = None):
        self.lib, self.config = lib, config
        self.until = to_ns(duration)
        self.interval = to_ns(duration if interval is None else interval)
        p = build_plan(config, self.interval)
        self.params = _params(p)
        self.vcpus = p.vcpus
        # The streams kvmsim's engines use (docs/model.md, "Random streams").
        self._keep = [bit_generator(p.seed, (i, 0)) for i in range(p.vcpus)]
        self.exit_rngs = (ctypes.c_void_p * p.vcpus)(
            *[bg.ctypes.bit_generator.value for bg in self._keep])
        self.sources = (Source * max(1, len(p.sources)))()
        for s, sp in zip(self.sources, p.sources):
            bg = bit_generator(p.seed, sp.spawn_key)
            times = np.ascontiguousarray(sp.times_ns, dtype=np.int64)
            self._keep += [bg, times]
            s.vcpu, s.guest, s.kind, s.dist, s.bit = sp.vcpu, sp.guest, sp.kind, sp.dist, sp.bit
            s.target = sp.target
            s.mean_ns, s.period_ns, s.start_ns = sp.mean_ns, sp.period_ns, sp.start_ns
            s.times = times.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
            s.n_times = len(times)
            s.rng = bg.ctypes.bit_generator.value
        self.n_sources = len(p.sources)
        intervals = -(-self.until // self.interval)
        self.counts = np.zeros((p.vcpus, intervals, lib.columns), dtype=np.int64)
        self.nmis_outstanding = np.zeros(p.vcpus, dtype=np.int64)

    def __call__(self, slices: list[int] | None = None) -> None:
        """Run to the duration in one go (what the benchmarks time), or in slices, as a
        kvmsim Simulation runs its engine: to each of the ends (ns, increasing, the last the
        duration's) in turn. Once per CRun: its streams have moved on."""
        ends = np.array([self.until] if slices is None else slices, dtype=np.int64)
        assert ends[-1] == self.until and (np.diff(ends) > 0).all(), ends
        i64 = ctypes.POINTER(ctypes.c_int64)
        stop = self.lib.km_simulate(ctypes.byref(self.params), self.vcpus, self.exit_rngs,
                                    self.sources, self.n_sources, ends.ctypes.data_as(i64),
                                    len(ends), self.interval, self.counts.ctypes.data_as(i64),
                                    self.nmis_outstanding.ctypes.data_as(i64))
        if stop == _spec.Stop.NOMEM:
            raise MemoryError("km_simulate: no memory for the IPIs in flight")
        if stop:
            raise RuntimeError(f"km_simulate stopped: {_spec.Stop(stop).name}")

    def column(self, name: str) -> int:
        group, _, request = name.rpartition(".")
        if group in BIT_GROUPS and request in catalogue.BY_NAME:
            return self.lib.named + 64 * BIT_GROUPS.index(group) + catalogue.bit_of(request)
        return self.lib.column_names.index(name)

    def names(self) -> tuple[str, ...]:
        """kvmsim's counter names for this config (Result.names)."""
        return self.lib.column_names + tuple(f"{g}.{n}" for g in BIT_GROUPS
                                             for n in self.config.check_order)

    def totals(self) -> dict[str, int]:
        total = self.counts.sum(axis=(0, 1))
        out = {n: int(total[self.column(n)]) for n in self.names()}
        out["nmis_outstanding"] = int(self.nmis_outstanding.sum())
        return out

    def intervals(self) -> dict[str, np.ndarray]:
        by_interval = self.counts.sum(axis=0)
        return {n: by_interval[:, self.column(n)] for n in self.names()}

    def per_vcpu(self) -> dict[str, np.ndarray]:
        by_vcpu = self.counts.sum(axis=1)
        out = {n: by_vcpu[:, self.column(n)] for n in self.names()}
        out["nmis_outstanding"] = self.nmis_outstanding
        return out
