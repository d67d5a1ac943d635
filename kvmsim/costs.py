"""Per-phase costs in nanoseconds. docs/model.md derives each default from figures.md."""

from __future__ import annotations

from pydantic import Field, field_validator

from . import catalogue
from .limits import MAX_COST_NS
from .validated import Validated


# Handler costs for the requests with their own handler; everything else costs `handler`.
DEFAULT_HANDLERS = {"NMI": 30, "PMU": 500, "PMI": 150, "SMI": 30}


def _ns(default: int, description: str):
    return Field(default, ge=0, le=MAX_COST_NS, description=description)


class Costs(Validated):
    """Simulated host time per phase of the run loop, integer ns (2.0 GHz: 1 ns = 2 cycles)."""

    vmexit: int = _ns(340, "VM-exit: half the hardware round trip")
    vmenter: int = _ns(340, "VM-Enter: the other half")
    check: int = _ns(1, "one kvm_check_request() test_bit")
    handler: int = _ns(100, "a no-op request's handler")
    handlers: dict[str, int] = Field(default_factory=dict, validate_default=True,
                                     description="per-request handler costs, merged over "
                                                 f"{DEFAULT_HANDLERS}")
    event: int = _ns(470, "the EVENT block: kvm_check_and_inject_events")
    state_load: int = _ns(90, "kvm_mmu_reload .. kvm_vcpu_exit_request")
    cancel: int = _ns(90, "the cancel path and the next vcpu_run iteration")

    @field_validator("handlers")
    @classmethod
    def _known_handlers(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [k for k in v if k not in catalogue.BY_NAME or k == "EVENT"]
        neg = [k for k, ns in v.items() if not 0 <= ns <= MAX_COST_NS]
        if bad:
            raise ValueError(f"unknown request {', '.join(map(repr, bad))}; allowed: request "
                             "names from `kvmsim orders` other than EVENT (its cost is `event`)")
        if neg:
            raise ValueError(f"cost out of range for {', '.join(neg)}; costs are ns in "
                             f"0..{MAX_COST_NS}")
        return {**DEFAULT_HANDLERS, **{catalogue.canonical(k): ns for k, ns in v.items()}}

    def handler_ns(self, name: str) -> int:
        return self.handlers.get(name, self.handler)
