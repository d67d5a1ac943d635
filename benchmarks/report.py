"""Markdown tables from a pytest-benchmark JSON file.

    pytest benchmarks --benchmark-json=bench.json && python benchmarks/report.py bench.json
"""

import json
import sys


def main(path):
    data = json.load(open(path))
    speed = {}
    for b in data["benchmarks"]:
        if b["name"].startswith("test_speed"):
            p = b["params"]
            speed.setdefault((p["scenario"], p["order"]), {})[p["contender"]] = \
                b["extra_info"]["attempts_per_second"]
    print("| scenario | order | Cython | Python reference | SimPy | Cython / Python "
          "| Cython / SimPy |")
    print("|---|---|---|---|---|---|---|")
    for (scenario, order), rate in speed.items():
        cy, py, sp = rate["cython"], rate["python"], rate["simpy"]
        print(f"| {scenario} | {order} | {cy / 1e6:.1f} M/s | {py / 1e6:.3f} M/s | "
              f"{sp / 1e6:.3f} M/s | {cy / py:.0f}x | {cy / sp:.0f}x |")
    print()
    print("| scaling measurement | value |")
    print("|---|---|")
    for b in data["benchmarks"]:
        if not b["name"].startswith("test_speed"):
            for k, v in b["extra_info"].items():
                print(f"| {k} | {v:.3g} |" if isinstance(v, float) else f"| {k} | {v} |")
    m = data["machine_info"]
    print(f"\nMachine: {m.get('cpu', {}).get('brand_raw', '?')}, "
          f"{m.get('cpu', {}).get('count', '?')} cores, Python {m['python_version']}.")


if __name__ == "__main__":
    main(sys.argv[1])
