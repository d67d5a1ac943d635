# cython: language_level=3
"""Another simulator posting to kvmsim's vCPUs through the C API of kvmsim/_core.pxd.

Build: python setup.py build_ext --inplace (in this folder, with kvmsim installed).
"""

from kvmsim._core cimport Engine, ks_engine, ks_post, ks_requests


def post(Engine engine, int vcpu, int bit):
    """What another CPU does: kvm_make_request(), then kvm_vcpu_kick(). No GIL needed; the
    engine's lock makes it safe while another thread runs the engine.

    Returns (kicked, pending): whether the vCPU was in guest mode and got the kick, and
    whether any request is now pending on it.
    """
    cdef ks_engine *e = &engine.c
    cdef int kicked
    cdef bint pending
    with nogil:                     # another thread's run may hold the lock (and need the GIL)
        kicked = ks_post(e, vcpu, bit, 1)
        pending = ks_requests(e, vcpu) != 0
    if kicked < 0:
        raise ValueError(f"vcpu {vcpu} or bit {bit} out of range")
    return bool(kicked), bool(pending)
