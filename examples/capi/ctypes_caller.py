"""A C-level caller without Cython: kvmsim's C API through the engine's capsule and ctypes.

The capsule ("kvmsim.ks_api", Engine.capsule) holds a ks_api (kvmsim/_core.pxd): the ABI
version, the engine and the functions. ctypes releases the GIL around each call.
"""

import ctypes

import numpy as np

import kvmsim
from kvmsim import spec

i32, i64, u64, vp = ctypes.c_int32, ctypes.c_int64, ctypes.c_uint64, ctypes.c_void_p


class KsApi(ctypes.Structure):
    _fields_ = [("abi_version", i32), ("n_vcpus", i32), ("n_columns", i32),
                ("interval_ns", i64), ("engine", vp),
                ("post", ctypes.CFUNCTYPE(ctypes.c_int, vp, i32, i32, i32)),
                ("inject", ctypes.CFUNCTYPE(ctypes.c_int, vp, i32, i32, i64)),
                ("next_event", ctypes.CFUNCTYPE(i64, vp, i32)),
                ("run", ctypes.CFUNCTYPE(ctypes.c_int, vp, i64, ctypes.POINTER(i64), i64,
                                         i64)),
                ("mode", ctypes.CFUNCTYPE(ctypes.c_int, vp, i32)),
                ("requests", ctypes.CFUNCTYPE(u64, vp, i32)),
                ("now", ctypes.CFUNCTYPE(i64, vp, i32)),
                ("set_hook", vp)]


def api(engine) -> KsApi:
    """The ks_api inside an engine's capsule (keep the engine alive while using it)."""
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = vp, [ctypes.py_object, ctypes.c_char_p]
    ks = KsApi.from_address(get(engine.capsule, b"kvmsim.ks_api"))
    if ks.abi_version != spec.ABI_VERSION:
        raise RuntimeError(f"kvmsim C API version {ks.abi_version}, expected "
                           f"{spec.ABI_VERSION}")
    return ks


def main(until_ns: int = 2_000_000) -> np.ndarray:
    """Inject 3 NMIs into vCPU 1 at 1 ms, run to `until_ns`; return the counts per vCPU."""
    sim = kvmsim.Simulation(kvmsim.Config(workload=kvmsim.Workload(vcpus=2)), interval=1.0)
    ks = api(sim.engine)
    counts = np.zeros((ks.n_vcpus, 1, ks.n_columns), dtype=np.int64)
    buf = counts.ctypes.data_as(ctypes.POINTER(i64))
    assert ks.run(ks.engine, 1_000_000, buf, 0, 1) == spec.Stop.DONE
    kicked = ks.inject(ks.engine, 1, spec.Src.NMI, 3)
    assert ks.run(ks.engine, until_ns, buf, 0, 1) == spec.Stop.DONE
    print(f"kicked {kicked}; NMIs injected per vCPU "
          f"{counts[:, 0, spec.COLUMN['nmis_injected']].tolist()}")
    return counts[:, 0]


if __name__ == "__main__":
    main()
