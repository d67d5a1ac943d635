"""Where the cancelled VM-Enters of spec2017-vtune come from: each source alone, then all,
on the default host (APICv, IPIv, VMX preemption timer) and on one without APICv.

    python examples/residual_breakdown.py [--order linux-6.7] [--seconds 600]
"""

import argparse

import kvmsim

args = argparse.ArgumentParser()
args.add_argument("--order", default="linux-6.7")
args.add_argument("--seconds", type=float, default=600.0)
args.add_argument("--seed", type=int, default=1)
a = args.parse_args()

base = kvmsim.Config(workload="spec2017-vtune").workload
runs = [(f"{s.kind} ({s.type})", base.model_copy(update={"sources": [s]})) for s in base.sources]
runs.append(("all together", base))
print(f"# {a.order}, {a.seconds:g} s, seed {a.seed}: cancelled VM-Enters per 10 s (8 vCPUs)")
print(f"{'source':<22} {'host':<9} {'cancels':>9} {'pmis_delivered':>15} {'pmis_dropped':>13}")
for host_name, host in (("default", kvmsim.Host()), ("no-apicv", kvmsim.Host(apicv=False))):
    for label, wl in runs:
        cfg = kvmsim.Config(order=a.order, workload=wl, seed=a.seed, host=host)
        t = kvmsim.simulate(cfg, a.seconds).totals
        print(f"{label:<22} {host_name:<9} {t['canceled_vmenters'] * 10 / a.seconds:9.1f}"
              f" {t['pmis_delivered'] * 10 / a.seconds:15.1f}"
              f" {t['pmis_dropped'] * 10 / a.seconds:13.1f}")
