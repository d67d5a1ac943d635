"""Config: which kernel order, which workload, which machine, which engine."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from . import catalogue, graph, profiles
from ._costs import Costs
from ._errors import ConfigError
from ._validated import Validated
from ._workload import Workload, ipi_target, preset

ORDER_HELP = (f"a kernel profile ({', '.join(profiles.PROFILES)}) or a list of request "
              "names from `kvmsim orders`, ending with EVENT")


def resolve_order(order: str | list[str]) -> tuple[str, ...]:
    """Canonical request names of an order, checked for unknown names and duplicates."""
    if isinstance(order, str):
        if order not in profiles.PROFILES:
            raise ValueError(f"unknown order {order!r}; allowed: {ORDER_HELP}")
        return profiles.PROFILES[order].order
    problems = []
    unknown = [n for n in order if n not in catalogue.BY_NAME]
    if unknown:
        problems.append(f"unknown request {', '.join(map(repr, unknown))}")
    names = [n for n in order if n in catalogue.BY_NAME]
    bits = [catalogue.bit_of(n) for n in names]
    dups = sorted({n for n in names if bits.count(catalogue.bit_of(n)) > 1})
    if dups:
        problems.append(f"duplicate request {', '.join(dups)} (one bit, one check)")
    if not names or names[-1] != "EVENT":
        problems.append("EVENT must be last: vcpu_enter_guest() checks it after the "
                        "request block")
    if problems:
        raise ValueError("; ".join(problems) + f"; allowed: {ORDER_HELP}")
    return tuple(names)


class Host(Validated):
    """The host: what its CPU offers and what KVM's module parameters enable. None means what
    the profile's kernel does by default on that vendor's current hardware (Intel Sapphire
    Rapids, AMD Zen 4; docs/profiles.md)."""

    apicv: bool | None = Field(None, description="Intel APICv (kvm_intel enable_apicv) or "
                                                 "AMD AVIC (kvm_amd avic): fixed interrupts "
                                                 "are posted, not injected")
    ipiv: bool | None = Field(None, description="IPI virtualisation (kvm_intel enable_ipiv; "
                                                "AVIC on AMD): a guest's IPI does not exit")
    vnmi: bool | None = Field(None, description="AMD virtual NMI (kvm_amd vnmi)")
    idle_hlt: bool | None = Field(None, description="AMD Idle HLT intercept: HLT with a "
                                                    "pending interrupt does not exit")
    preemption_timer: bool | None = Field(None, description="Intel VMX preemption timer "
                                                            "(kvm_intel preemption_timer) "
                                                            "for the guest's LAPIC timer")


def resolve_host(host: Host, vendor: str,
                 switches: dict) -> tuple[dict[str, bool], list[tuple[str, str]]]:
    """The host's features as this kernel and vendor give them, and (field, problem) for
    what cannot be."""
    problems = []
    intel = vendor == "intel"
    avic = not intel and switches["avic_default"] == "auto"
    given = {k: v for k, v in host.model_dump().items() if v is not None}
    apicv = given.get("apicv", intel or avic)
    # IPI virtualisation rides on APICv / AVIC: without them it is off unless asked for.
    # (AVIC accelerates IPIs whenever it is on)
    defaults = dict(apicv=apicv, ipiv=apicv and (switches["ipiv"] if intel else True),
                    vnmi=not intel and switches["vnmi"], idle_hlt=False,
                    preemption_timer=intel)
    out = {**defaults, **given}
    for feature, needs in (("vnmi", "amd"), ("idle_hlt", "amd"),
                           ("preemption_timer", "intel")):
        if out[feature] and vendor != needs:
            problems.append((f"host.{feature}", f"an {needs.upper()} feature; the vendor "
                                                f"is {vendor}"))
    for feature in ("vnmi", "idle_hlt") + (("ipiv",) if intel else ()):
        if out[feature] and not switches[feature]:
            problems.append((f"host.{feature}", "this kernel does not support it (behaviour "
                                                f"{feature} = False; docs/profiles.md)"))
    if out["ipiv"] and not out["apicv"]:
        problems.append(("host.ipiv", "needs host.apicv (IPI virtualisation posts to the "
                                      "target's posted-interrupt descriptor)"))
    return out, problems


class Config(Validated):
    """A simulated VM: the kernel (check order and behaviour), the workload, the host, the
    costs. `order` names a profile (kvmsim.profiles) or lists request names; a list keeps the
    newest profile's behaviour. `behaviour` overrides single switches."""

    order: str | list[str] = Field(profiles.NEWEST, description=ORDER_HELP)
    workload: Workload = Field("spec2017-vtune", validate_default=True,
                               description="a preset name or a Workload")
    seed: int = Field(0, ge=0)
    engine: Literal["cython", "python"] = "cython"
    threads: int | None = Field(None, ge=1, le=1024,
                                description="threads the compiled engine runs independent "
                                            "vCPUs in (the counts do not change); None: one "
                                            "per core")
    vendor: Literal["intel", "amd"] = Field(
        "intel", description="host (VMX or SVM without vNMI) and guest CPUID vendor")
    costs: Costs = Field(default_factory=Costs)
    host: Host = Field(default_factory=Host)
    behaviour: dict[str, bool | str] = Field(
        default_factory=dict, description="switches of the profile to override "
                                          "(kvmsim.profiles.SWITCH)")

    @field_validator("behaviour")
    @classmethod
    def _switches(cls, v: dict) -> dict:
        problems = []
        for name, value in v.items():
            switch = profiles.SWITCH.get(name)
            if switch is None:
                problems.append(f"unknown switch {name!r}; allowed: "
                                f"{', '.join(profiles.SWITCH)}")
            elif value not in switch.values or type(value) is not type(switch.values[0]):
                problems.append(f"{name} = {value!r}; allowed: "
                                f"{', '.join(map(repr, switch.values))}")
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @field_validator("order")
    @classmethod
    def _order(cls, v):
        resolve_order(v)
        return v

    @field_validator("workload", mode="before")
    @classmethod
    def _workload(cls, v):
        return preset(v) if isinstance(v, str) else v

    def unchecked(self, requests: set[str]) -> list[str]:
        """The requests, and what their handlers raise in turn (graph.py), that this order
        never checks: posting any of them would cancel every VM-Enter. cancel_injection and
        the window exits raise EVENT, which every order has."""
        checked = {catalogue.bit_of(n) for n in self.check_order}
        raises = graph.raises(graph.Context.of(self))
        todo, seen = list(requests), set()
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(raises.get(n, ()))
        return sorted(n for n in seen if catalogue.bit_of(n) not in checked)

    @model_validator(mode="after")
    def _order_covers_workload(self) -> Config:
        checked = {catalogue.bit_of(n) for n in self.check_order}
        missing = self.unchecked(self.workload.raised_requests())
        problems = []
        if missing:
            problems.append(("order", f"never checks {', '.join(missing)}, which this "
                                      "workload raises: every VM-Enter would be cancelled; "
                                      "add them to the order"))
        if any(s.kind == "request:noop" for s in self.workload.sources) and \
                not checked & {catalogue.bit_of(n) for n in graph.NOOP_NAMES}:
            problems.append(("order", "the workload posts request:noop but the order checks "
                                      "none of the no-op requests "
                                      f"({', '.join(graph.NOOP_NAMES)})"))
        problems += resolve_host(self.host, self.vendor, self.switches)[1]
        if any(s.kind == "emulated-pmi" for s in self.workload.sources) and \
                profiles.version(self.profile.release) < (5, 16):
            problems.append(("workload", f"{self.profile.name} does not count emulated "
                                         "instructions (kvm_pmu_trigger_event first appears "
                                         "between v5.16 and v6.1): drop the emulated-pmi "
                                         "source or pick linux-6.1 or later"))
        if self.costs.ipi == 0 and any(ipi_target(s.kind) for s in self.workload.sources):
            problems.append(("costs.ipi", "0 ns; IPIs between vCPUs take at least 1 ns to "
                                          "arrive: the vCPUs run in one time order by it"))
        pmu = self.workload.guest_pmu
        if pmu is not None and (pmu == "intel") != (self.vendor == "intel"):
            problems.append(("workload.guest_pmu", f"{pmu!r} runs on "
                             f"{pmu.split('-')[0].upper()} guests; the vendor is "
                             f"{self.vendor}"))
        if problems:
            raise ConfigError(problems)
        return self

    @property
    def profile(self) -> profiles.Profile:
        """The kernel profile the behaviour comes from (for a list: the newest)."""
        name = self.order if isinstance(self.order, str) else profiles.NEWEST
        return profiles.PROFILES[name]

    @property
    def switches(self) -> dict:
        """The behaviour switches in force: the profile's, with `behaviour` over them."""
        return {**self.profile.behaviour, **self.behaviour}

    @property
    def machine(self) -> dict[str, bool]:
        """Host features in force (Host with its None fields resolved)."""
        return resolve_host(self.host, self.vendor, self.switches)[0]

    @property
    def guest_pmu(self) -> str:
        return self.workload.guest_pmu or ("intel" if self.vendor == "intel" else "amd-legacy")

    @property
    def check_order(self) -> tuple[str, ...]:
        return resolve_order(self.order)

    @property
    def order_name(self) -> str:
        return self.order if isinstance(self.order, str) else "custom"
