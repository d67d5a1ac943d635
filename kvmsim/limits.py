"""Bounds on inputs that keep simulated time inside int64 nanoseconds and every run finite."""

MAX_SECONDS = 1e9          # simulated seconds (int64 ns holds 9.2e9 s)
MIN_SECONDS = 1e-9         # durations and intervals are whole nanoseconds
MAX_COUNTS_BYTES = 2**32   # the per-vCPU, per-interval counts array
MAX_RATE = 1e9             # arrivals per second: a mean gap of at least 1 ns
MAX_COST_NS = 1_000_000_000  # one phase of the run loop: at most a simulated second
