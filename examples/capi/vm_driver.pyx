# cython: language_level=3
"""A simulator with its own event loop driving a kvmsim VM through the C API: it runs the
VM from one of its events to the next, injects NMIs into the vCPUs it picks, and reads the
counters from its own buffer. Nothing here holds the GIL while kvmsim runs.

Build: python setup.py build_ext --inplace (in this folder, with kvmsim installed).
"""

import numpy as np

from libc.stdint cimport int64_t
from kvmsim._core cimport Engine, ks_engine, ks_inject, ks_next_event, ks_run
from kvmsim._spec cimport C_COLUMNS, NEVER, SRC_NMI, STOP_DONE


def drive(Engine engine, int64_t[:] times, int[:] targets, int64_t until):
    """At times[k] (ns) inject an NMI into vCPU targets[k]; then run to `until`. Returns
    the counts, int64[vcpus, C_COLUMNS] (columns: kvmsim.spec.COLUMN), and how many of
    kvmsim's own events the loop stepped through on the way."""
    cdef ks_engine *e = &engine.c
    cdef int64_t[:, :, ::1] counts = np.zeros((e.n_vcpus, 1, C_COLUMNS), dtype=np.int64)
    cdef Py_ssize_t k = 0, n = times.shape[0]
    cdef int64_t t, mine, steps = 0
    cdef int v
    with nogil:
        while True:
            # the loop's next event: its own injection, or kvmsim's next one
            mine = times[k] if k < n else until
            t = NEVER
            for v in range(e.n_vcpus):
                t = min(t, ks_next_event(e, v))
            if t < mine:                      # step kvmsim through its own event
                if ks_run(e, t + 1, &counts[0, 0, 0], 0, 1) != STOP_DONE:
                    break
                steps += 1
                continue
            if ks_run(e, mine, &counts[0, 0, 0], 0, 1) != STOP_DONE or k == n:
                break
            ks_inject(e, targets[k], SRC_NMI, 1)  # kvm_inject_nmi + kick
            k += 1
    return np.asarray(counts)[:, 0], steps
