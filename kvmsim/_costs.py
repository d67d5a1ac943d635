"""Costs: simulated host time per phase of the run loop, integer ns.

The phases and their defaults are declared once, in _spec.COSTS; docs/model.md ("Costs")
derives each default from a published figure or labels it an estimate.
"""

from __future__ import annotations

from pydantic import Field, create_model, field_validator

from . import _spec, catalogue
from ._limits import MAX_COST_NS
from ._validated import Validated


class _CostsBase(Validated):
    @field_validator("handlers", check_fields=False)
    @classmethod
    def _known_handlers(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [k for k in v if k not in catalogue.BY_NAME or k == "EVENT"]
        out_of_range = [k for k, ns in v.items() if not 0 <= ns <= MAX_COST_NS]
        problems = []
        if bad:
            problems.append(f"unknown request {', '.join(map(repr, bad))}; allowed: request "
                            "names from `kvmsim orders` other than EVENT (its cost is `event`)")
        if out_of_range:
            problems.append(f"cost out of range for {', '.join(out_of_range)}; costs are ns "
                            f"in 0..{MAX_COST_NS}")
        if problems:
            raise ValueError("; ".join(problems))
        return {**_spec.DEFAULT_HANDLER_NS, **{catalogue.canonical(k): ns for k, ns in v.items()}}

    def handler_ns(self, name: str) -> int:
        """What the handler of request `name` costs (EVENT: the `event` cost)."""
        return self.event if name == "EVENT" else self.handlers.get(name, self.handler)


Costs = create_model(
    "Costs", __base__=_CostsBase, __module__=__name__,
    __doc__="Simulated host time per phase of the run loop, integer ns "
            "(2.0 GHz: 1 ns = 2 cycles).",
    **{c.name: (int, Field(c.default_ns, ge=0, le=MAX_COST_NS, description=c.doc))
       for c in _spec.COSTS},
    handlers=(dict[str, int], Field(
        default_factory=dict, validate_default=True,
        description=f"per-request handler costs, merged over {_spec.DEFAULT_HANDLER_NS}")))
