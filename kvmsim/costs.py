"""Per-phase costs in nanoseconds. docs/model.md derives each default from figures.md."""

from __future__ import annotations

from pydantic import Field, field_validator

from . import catalogue
from .validated import Validated


# Handler costs for the requests with their own handler; everything else costs `handler`.
DEFAULT_HANDLERS = {"NMI": 30, "PMU": 500, "PMI": 150, "SMI": 30}


class Costs(Validated):
    """Simulated host time per phase of the run loop, integer ns (2.0 GHz: 1 ns = 2 cycles)."""

    vmexit: int = Field(340, ge=0, description="VM-exit: half the hardware round trip")
    vmenter: int = Field(340, ge=0, description="VM-Enter: the other half")
    check: int = Field(1, ge=0, description="one kvm_check_request() test_bit")
    handler: int = Field(100, ge=0, description="a no-op request's handler")
    handlers: dict[str, int] = Field(default_factory=dict, validate_default=True,
                                     description="per-request handler costs, merged over "
                                                 f"{DEFAULT_HANDLERS}")
    event: int = Field(470, ge=0, description="the EVENT block: kvm_check_and_inject_events")
    state_load: int = Field(90, ge=0, description="kvm_mmu_reload .. kvm_vcpu_exit_request")
    cancel: int = Field(90, ge=0, description="the cancel path and the next vcpu_run iteration")

    @field_validator("handlers")
    @classmethod
    def _known_handlers(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [k for k in v if k not in catalogue.BY_NAME or k == "EVENT"]
        neg = [k for k, ns in v.items() if ns < 0]
        if bad:
            raise ValueError(f"unknown request {', '.join(map(repr, bad))}; allowed: request "
                             "names from `kvmsim orders` other than EVENT (its cost is `event`)")
        if neg:
            raise ValueError(f"negative cost for {', '.join(neg)}; costs are ns >= 0")
        return {**DEFAULT_HANDLERS, **{catalogue.canonical(k): ns for k, ns in v.items()}}

    def handler_ns(self, name: str) -> int:
        return self.handlers.get(name, self.handler)
