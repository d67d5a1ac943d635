"""What happens to the vCPUs: arrival sources, guest behaviour, and named workload presets."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, ValidationError, field_validator, model_validator

import numpy as np

from . import _spec, catalogue
from ._errors import ConfigError
from ._limits import MAX_RATE, MAX_SECONDS, Seconds, SecondsOrZero, times_to_ns
from ._validated import Validated

def ipi_target(kind: str) -> tuple[int, int] | None:
    """(Src, target) of "ipi:N", "ipi:any", "ipi-nmi:all", ...; None for another kind."""
    prefix, _, target = kind.partition(":")
    if prefix not in _spec.IPI_KINDS or target == "self" or not target:
        return None
    special = {"any": _spec.IPI_ANY, "all": _spec.IPI_ALL}
    if target in special:
        return _spec.IPI_KINDS[prefix], special[target]
    if not target.isdigit():
        raise ValueError(f"IPI target {target!r} in kind {kind!r}; allowed: a vCPU number, "
                         "any, all (or ipi:self)")
    return _spec.IPI_KINDS[prefix], int(target)


_REQUEST_PREFIXES = tuple(f"{name}:" for name, k in _spec.FAMILY_OF.items()
                          if k.family == "request")


def _check_kind(kind: str) -> str:
    if kind in _spec.SRC_OF_KIND:
        return kind
    if ipi_target(kind) is not None:
        return kind
    if kind.startswith(_REQUEST_PREFIXES):
        prefix, _, name = kind.partition(":")
        if name in catalogue.NOT_CHECKED:
            raise ValueError(f"request {name!r} is never consumed by vcpu_enter_guest(), so "
                             "every VM-Enter would be cancelled; post a checked request")
        if name in catalogue.BY_NAME:
            return f"{prefix}:{catalogue.canonical(name)}"
        raise ValueError(f"unknown request {name!r} in kind {kind!r}; "
                         f"allowed: {_spec.KIND_HELP}")
    raise ValueError(f"unknown source kind {kind!r}; allowed: {_spec.KIND_HELP}")


class _Source(Validated):
    kind: str
    vcpu: int | None = Field(None, ge=0, description="target vCPU; None: every vCPU, each "
                                                       "with its own independent stream")
    _check = field_validator("kind")(_check_kind)

    def __init__(self, kind: str | None = None, /, **data):
        if kind is not None:
            data["kind"] = kind
        super().__init__(**data)


class Trace(_Source):
    """Arrivals at scripted times (seconds)."""
    type: Literal["trace"] = "trace"
    times: list[float]

    @field_validator("times")
    @classmethod
    def _ordered(cls, v: list[float]) -> list[float]:
        # Vectorised: a trace may hold millions of times.
        t = np.asarray(v, dtype=np.float64)
        outside = np.flatnonzero(~((t >= 0) & (t <= MAX_SECONDS)))[:5]
        before = np.flatnonzero(t[1:] < t[:-1])[:5] + 1
        problems = [f"times[{i}] = {v[i]!r} is outside 0..{MAX_SECONDS:g}" for i in outside]
        problems += [f"times[{i}] = {v[i]!r} comes before times[{i - 1}] = {v[i - 1]!r}"
                     for i in before]
        if not problems:
            try:
                times_to_ns(v)
            except ValueError as e:
                problems.append(str(e))
        if problems:
            raise ValueError("; ".join(problems) + "; times must be seconds in "
                             f"0..{MAX_SECONDS:g}, whole nanoseconds, non-decreasing")
        return v


class Poisson(_Source):
    """Arrivals with exponential gaps of mean 1/rate (rate per second, per vCPU)."""
    type: Literal["poisson"] = "poisson"
    rate: float = Field(gt=0, le=MAX_RATE)


class Periodic(_Source):
    """Arrivals at start + k * period, k = 1, 2, ... (seconds)."""
    type: Literal["periodic"] = "periodic"
    period: Seconds
    start: SecondsOrZero = 0.0


Source = Annotated[Union[Trace, Poisson, Periodic], Field(discriminator="type")]


class Workload(Validated):
    """The guest and the traffic aimed at it. Rates are per vCPU."""

    vcpus: int = Field(1, ge=1, le=4096)
    guest_exit_rate: float = Field(0.0, ge=0, le=MAX_RATE,
                                   description="guest-initiated exits per second; guest runs "
                                               "are exponential")
    sources: list[Source] = Field(default_factory=list)
    lvtpc: Literal[tuple(_spec.LVTPC_OF)] = Field(  # type: ignore[valid-type]
        "nmi", description="LVTPC delivery mode the guest programs (VTune, perf: nmi)")
    nmi_handler: SecondsOrZero = Field(5e-6, le=1.0,
                                       description="guest NMI handler time until IRET, s")
    irq_handler: SecondsOrZero = Field(2e-6, le=1.0, description="guest IRQ handler time, s")
    guest_pmu: Literal[tuple(_spec.GUEST_PMU_OF)] | None = Field(  # type: ignore[valid-type]
        None, description="the guest's perf PMI handler (arch/x86/events): how it treats "
                          "LVTPC and which PMU accesses exit; None: the vendor's (intel, or "
                          "amd-legacy)")
    pmi_skid: SecondsOrZero = Field(0.0, le=1e-3,
                                    description="from a guest counter overflow to the host's "
                                                "NMI, s: an exit in between leaves that NMI "
                                                "to land in host context")

    @model_validator(mode="wrap")
    @classmethod
    def _vcpu_in_range(cls, data, handler) -> Workload:
        # The vCPU targets are checked on the raw fields that are valid on their own, so a
        # file with other errors too reports them all at once.
        try:
            workload = handler(data)
        except ValidationError as e:
            errors = e.errors(include_url=False)
            inner = errors[0].get("ctx", {}).get("error") if len(errors) == 1 else None
            if not errors[0]["loc"] and isinstance(inner, ConfigError):
                raise inner from None             # pydantic nests this validator: once only
            problems = ConfigError.from_pydantic(e, unknown=cls._unknown).problems
            if isinstance(data, dict):
                problems += _vcpu_problems(data.get("vcpus", 1), data.get("sources", []))
            raise ConfigError(problems) from None
        if isinstance(data, Workload):
            return workload
        if bad := _vcpu_problems(workload.vcpus, workload.sources):
            raise ConfigError(bad)
        return workload

    def raised_requests(self) -> set[str]:
        """Requests the workload's sources post directly (handlers add more: see plan)."""
        return set().union(*(raised_by(s.kind) for s in self.sources))


def raised_by(kind: str) -> set[str]:
    """Requests one arrival of `kind` posts (kvm_perf_overflow, kvm_inject_nmi, ...)."""
    prefix, _, name = kind.partition(":")
    declared = _spec.KIND_OF.get(kind) or _spec.FAMILY_OF[prefix]
    return set(declared.raises) if declared.raises is not None else {name}


def _vcpu_problems(vcpus, sources) -> list[tuple[str, str]]:
    """Sources aimed at vCPUs the workload does not have; `vcpus` and `sources` may be raw
    (fields that fail their own checks are left to those)."""
    if isinstance(vcpus, bool) or not isinstance(vcpus, int) or not 1 <= vcpus <= 4096 or \
            not isinstance(sources, (list, tuple)):
        return []
    bad = []
    for i, s in enumerate(sources):
        field = (lambda k: getattr(s, k, None)) if isinstance(s, _Source) else \
            (s.get if isinstance(s, dict) else lambda k: None)
        vcpu, kind = field("vcpu"), field("kind")
        if isinstance(vcpu, bool) or not isinstance(vcpu, int) or vcpu < 0:
            vcpu = None
        if vcpu is not None and vcpu >= vcpus:
            bad.append((f"sources.{i}.vcpu", f"vCPU {vcpu} does not exist; allowed: "
                                             f"0..{vcpus - 1}"))
        if not isinstance(kind, str):
            continue
        if kind.startswith("request-all:") and vcpu is not None:
            bad.append((f"sources.{i}.vcpu", f"{vcpu}; {kind!r} goes to every vCPU at "
                                             "once: leave vcpu unset"))
        try:
            target = ipi_target(kind)
        except ValueError:
            continue                              # a bad kind: its own check says so
        if target is None:
            continue
        where = f"sources.{i}.kind"
        if target[1] >= vcpus:
            bad.append((where, f"{kind!r} targets vCPU {target[1]}, which does not "
                               f"exist; allowed: 0..{vcpus - 1}"))
        elif target[1] == vcpu:
            bad.append((where, f"{kind!r} on vCPU {vcpu} sends to itself; use "
                               "'ipi:self'" + (" (an NMI to itself is not modelled)"
                                               if target[0] == _spec.Src.IPI_NMI else "")))
        elif vcpus == 1:
            bad.append((where, f"{kind!r} needs another vCPU; the workload has 1"))
    return bad


def _spec2017_vtune(vcpus: int = 8, scale: float = 1.0) -> Workload:
    # docs/calibration.md explains every number here; pmi and pmi_skid are calibrated.
    return Workload(
        vcpus=vcpus,
        guest_exit_rate=10_000.0 * scale,
        sources=[
            Poisson("pmi", rate=187.0 * scale),          # VTune sampling, PMIs as NMIs
            Periodic("timer", period=0.004 / scale),     # guest tick, HZ=250
            Poisson("irq", rate=60.0 * scale),           # IPIs from the other vCPUs
        ],
        pmi_skid=1.2e-6,                                 # overflow -> host NMI
    )


def _anchor() -> Workload:
    # The benchmarks' small loop (README, "Speed"): one vCPU, fast PMIs and other-CPU requests.
    return Workload(
        vcpus=1,
        guest_exit_rate=100_000.0,
        sources=[Poisson("pmi", rate=2_000.0), Poisson("request:noop", rate=50_000.0)],
    )


PRESETS = {
    "spec2017-vtune": _spec2017_vtune,
    # The benchmarks' large scenario: 64 vCPUs, every rate of spec2017-vtune times 10.
    "spec2017-vtune-large": lambda: _spec2017_vtune(vcpus=64, scale=10.0),
    "anchor": _anchor,
}


def preset(name: str) -> Workload:
    if name not in PRESETS:
        raise ValueError(f"unknown workload {name!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[name]()
