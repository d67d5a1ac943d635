"""Markdown tables from a pytest-benchmark JSON file: kvmsim's rate beside its contenders'.

    pytest benchmarks --benchmark-json=bench.json && python benchmarks/report.py bench.json

`pytest benchmarks` prints the same speed table at its end (conftest.py).
"""

import json
import sys

CONTENDERS = ("c", "python", "simpy")
# Why a cell shows '-' (benchmarks/conftest.py RUNS says who runs what).
NOT_RUN = ("'-': not run. SimPy does not model IPIs between vCPUs (vm-64, vm-256); the "
           "Python reference would take ~40 s for vm-256.")


def speed_table(rates: dict[tuple[str, str], dict[str, float]]) -> list[str]:
    """Rows of rates[(scenario, order)][contender] (attempts/s), with Cython's ratio to each
    contender; a contender that did not run shows as '-' (NOT_RUN says why, after the
    table)."""
    def mps(rate, digits):
        return f"{rate / 1e6:.{digits}f} M/s" if rate else "-"

    def ratio(cy, other, digits):
        return f"{cy / other:.{digits}f}x" if cy and other else "-"
    lines = ["| scenario | order | Cython | C | Python reference | SimPy | Cython / C "
             "| Cython / Python | Cython / SimPy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (scenario, order), rate in rates.items():
        cy, c, py, sp = (rate.get(k) for k in ("cython",) + CONTENDERS)
        lines.append(f"| {scenario} | {order} | {mps(cy, 1)} | {mps(c, 1)} | {mps(py, 3)} | "
                     f"{mps(sp, 3)} | {ratio(cy, c, 2)} | {ratio(cy, py, 0)} | "
                     f"{ratio(cy, sp, 0)} |")
    if any(k not in rate for rate in rates.values() for k in ("cython",) + CONTENDERS):
        lines += ["", NOT_RUN]
    return lines


def main(path):
    data = json.load(open(path))
    rates, timers = {}, set()
    for b in data["benchmarks"]:
        if b["name"].startswith("test_speed"):
            timers.add(b["options"]["timer"])
            p = b["params"]
            rates.setdefault((p["scenario"], p["order"]), {})[p["contender"]] = \
                b["extra_info"]["attempts_per_second"]
    print("\n".join(speed_table(rates)))
    print(f"\nSpeed rounds timed with {', '.join(sorted(timers))}.")
    print()
    print("| scaling measurement | value |")
    print("|---|---|")
    for b in data["benchmarks"]:
        if not b["name"].startswith("test_speed"):
            for k, v in b["extra_info"].items():
                print(f"| {k} | {v:.3g} |" if isinstance(v, float) else f"| {k} | {v} |")
    m = data["machine_info"]
    print(f"\nMachine: {m.get('cpu', {}).get('brand_raw', '?')}, "
          f"{m.get('cpu', {}).get('count', '?')} cores, Python {m['python_version']}; "
          f"run {data['datetime']}.")


if __name__ == "__main__":
    main(sys.argv[1])
