"""Where the cancelled VM-Enters of spec2017-vtune come from: each source alone, then all.

    python examples/residual_breakdown.py [--order linux-6.7] [--seconds 600]
"""

import argparse

import kvmsim
from kvmsim.workload import preset

args = argparse.ArgumentParser()
args.add_argument("--order", default="linux-6.7")
args.add_argument("--seconds", type=float, default=600.0)
args.add_argument("--seed", type=int, default=1)
a = args.parse_args()

base = preset("spec2017-vtune")
runs = [(f"{s.kind} ({s.type})", base.model_copy(update={"sources": [s]})) for s in base.sources]
runs.append(("all together", base))
print(f"# {a.order}, {a.seconds:g} s, seed {a.seed}: cancelled VM-Enters per 10 s (8 vCPUs)")
for label, wl in runs:
    r = kvmsim.simulate(kvmsim.Config(order=a.order, workload=wl, seed=a.seed), a.seconds)
    t = r.totals
    print(f"{label:<28} {t['canceled_vmenters'] * 10 / a.seconds:10.1f}"
          f"   pmis_delivered/10s {t['pmis_delivered'] * 10 / a.seconds:9.1f}"
          f"   pmis_dropped/10s {t['pmis_dropped'] * 10 / a.seconds:6.1f}")
