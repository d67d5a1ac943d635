# cython: language_level=3
"""Another simulator driving kvmsim's vCPUs through the C-level API of kvmsim/_core.pxd.

Build: python setup.py build_ext --inplace (in this folder, with kvmsim installed).
"""

from kvmsim._core cimport (Engine, ks_check_request, ks_kick, ks_make_request,
                           ks_request_pending, ks_vcpu)


def post(Engine engine, int vcpu, int bit):
    """What another CPU does: kvm_make_request(), then kvm_vcpu_kick(). No GIL needed.

    Returns (kicked, pending): whether the vCPU was in guest mode and got the kick, and
    whether any request is now pending on it.
    """
    if not 0 <= vcpu < engine.n_vcpus:
        raise IndexError(f"vcpu {vcpu} out of range")
    cdef ks_vcpu *v = &engine.vcpus[vcpu]
    cdef int kicked
    with nogil:
        ks_make_request(&v.requests, bit)
        kicked = ks_kick(&v.mode)
    return bool(kicked), bool(ks_request_pending(&v.requests))


def withdraw(Engine engine, int vcpu, int bit):
    """Test-and-clear a request before the vCPU sees it (kvm_check_request)."""
    return bool(ks_check_request(&engine.vcpus[vcpu].requests, bit))
