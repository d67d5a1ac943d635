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
C_ENUMS = {"km_kind": ["EXIT", "PMI", "EMUL_PMI", "NMI", "IRQ", "REQUEST", "REQUEST_NOOP"],
           "km_dist": ["POISSON", "PERIODIC", "TRACE"],
           "km_lvtpc": ["NMI", "FIXED", "SMI", "MASKED"]}
assert C_ENUMS["km_kind"] == [m.name for m in _spec.Src]
assert C_ENUMS["km_dist"] == [m.name for m in _spec.Dist]
assert C_ENUMS["km_lvtpc"] == [m.name for m in _spec.Lvtpc]


class Params(ctypes.Structure):
    _fields_ = [("n_checks", ctypes.c_int32),
                ("order", ctypes.c_uint8 * 64), ("rank", ctypes.c_uint8 * 64),
                ("handler_ns", ctypes.c_int64 * 64), ("raises", ctypes.c_uint64 * 64),
                ("noop_bits", ctypes.c_uint8 * 64), ("n_noop", ctypes.c_int32)] + [
                (f"{k}_ns", ctypes.c_int64) for k in
                ("vmexit", "vmenter", "check", "event", "state_load", "cancel")] + [
                ("intel", ctypes.c_int32), ("lvtpc", ctypes.c_int32),
                ("nmi_handler_ns", ctypes.c_int64), ("irq_handler_ns", ctypes.c_int64),
                ("guest_exit_mean_ns", ctypes.c_double)]


class Source(ctypes.Structure):
    _fields_ = [("vcpu", ctypes.c_int32), ("kind", ctypes.c_int32), ("dist", ctypes.c_int32),
                ("bit", ctypes.c_int32), ("mean_ns", ctypes.c_double),
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
                                ctypes.c_int32, ctypes.c_int64, ctypes.c_int64,
                                ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64)]
    lib.named = ctypes.c_int32.in_dll(lib, "km_named").value
    lib.columns = ctypes.c_int32.in_dll(lib, "km_columns").value
    names = (ctypes.c_char_p * lib.named).in_dll(lib, "km_column_names")
    lib.column_names = tuple(n.decode() for n in names)
    return lib


def _params(plan: Plan) -> Params:
    q = plan.params
    out = Params(n_checks=q["n_checks"], n_noop=q["n_noop"], intel=q["intel"],
                 lvtpc=q["lvtpc"], nmi_handler_ns=q["nmi_handler_ns"],
                 irq_handler_ns=q["irq_handler_ns"], guest_exit_mean_ns=q["guest_exit_mean_ns"],
                 **{f"{k}_ns": q[f"cost_{k}"] for k in
                    ("vmexit", "vmenter", "check", "event", "state_load", "cancel")})
    for field in ("order", "rank", "handler_ns", "raises", "noop_bits"):
        getattr(out, field)[:] = q[field]
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
            s.vcpu, s.kind, s.dist, s.bit = sp.vcpu, sp.kind, sp.dist, sp.bit
            s.mean_ns, s.period_ns, s.start_ns = sp.mean_ns, sp.period_ns, sp.start_ns
            s.times = times.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
            s.n_times = len(times)
            s.rng = bg.ctypes.bit_generator.value
        self.n_sources = len(p.sources)
        intervals = -(-self.until // self.interval)
        self.counts = np.zeros((p.vcpus, intervals, lib.columns), dtype=np.int64)
        self.nmis_outstanding = np.zeros(p.vcpus, dtype=np.int64)

    def __call__(self) -> None:
        i64 = ctypes.POINTER(ctypes.c_int64)
        if self.lib.km_simulate(ctypes.byref(self.params), self.vcpus, self.exit_rngs,
                                self.sources, self.n_sources, self.until, self.interval,
                                self.counts.ctypes.data_as(i64),
                                self.nmis_outstanding.ctypes.data_as(i64)):
            raise MemoryError("km_simulate")

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
