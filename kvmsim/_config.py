"""Config: which kernel order, which workload, which machine, which engine."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from . import _orders as orders
from . import catalogue, graph
from ._costs import Costs
from ._validated import Validated
from ._workload import Workload, preset

ORDER_HELP = (f"a preset ({', '.join(orders.PRESETS)}) or a list of request names "
              "from `kvmsim orders`, ending with EVENT")


def resolve_order(order: str | list[str]) -> tuple[str, ...]:
    """Canonical request names of an order, checked for unknown names and duplicates."""
    if isinstance(order, str):
        if order not in orders.PRESETS:
            raise ValueError(f"unknown order {order!r}; allowed: {ORDER_HELP}")
        return orders.PRESETS[order]
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


class Config(Validated):
    """A simulated VM: the kernel's check order, the workload, the host vendor, the costs."""

    order: str | list[str] = Field("linux-6.7", description=ORDER_HELP)
    workload: Workload = Field("spec2017-vtune", validate_default=True,
                               description="a preset name or a Workload")
    seed: int = Field(0, ge=0)
    engine: Literal["cython", "python"] = "cython"
    vendor: Literal["intel", "amd"] = Field(
        "intel", description="host (VMX or SVM without vNMI) and guest CPUID vendor")
    costs: Costs = Field(default_factory=Costs)

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
            problems.append(f"order never checks {', '.join(missing)}, which this workload "
                            "raises: every VM-Enter would be cancelled; add them to the order")
        if any(s.kind == "request:noop" for s in self.workload.sources) and \
                not checked & {catalogue.bit_of(n) for n in graph.NOOP_NAMES}:
            problems.append("the workload posts request:noop but the order checks none of "
                            f"the no-op requests ({', '.join(graph.NOOP_NAMES)})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def check_order(self) -> tuple[str, ...]:
        return resolve_order(self.order)

    @property
    def order_name(self) -> str:
        return self.order if isinstance(self.order, str) else "custom"
