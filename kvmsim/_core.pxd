# The C-level state of the Cython engine, published for other Cython extensions:
#   from kvmsim._core cimport ks_vcpu, ks_make_request, ks_check_request, ...
# Request-bit operations follow include/linux/kvm_host.h (docs/model.md, "Request bits").

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from numpy.random cimport bitgen_t

cdef extern from *:
    """
    #include <stdint.h>
    /* __kvm_make_request: smp_wmb() then set_bit() -> a release RMW. */
    static inline void ks_make_requests(uint64_t *requests, uint64_t mask) {
        __atomic_fetch_or(requests, mask, __ATOMIC_RELEASE);
    }
    static inline void ks_make_request(uint64_t *requests, int bit) {
        ks_make_requests(requests, (uint64_t)1 << bit);
    }
    /* kvm_test_request: test_bit, no atomic RMW. */
    static inline int ks_test_request(const uint64_t *requests, int bit) {
        return (int)((__atomic_load_n(requests, __ATOMIC_RELAXED) >> bit) & 1);
    }
    /* kvm_check_request: test, and only when set clear_bit + smp_mb__after_atomic(), so a
       clear bit costs no atomic operation. */
    static inline int ks_check_request(uint64_t *requests, int bit) {
        if (!ks_test_request(requests, bit))
            return 0;
        __atomic_fetch_and(requests, ~((uint64_t)1 << bit), __ATOMIC_SEQ_CST);
        return 1;
    }
    /* kvm_request_pending: READ_ONCE(vcpu->requests) != 0. */
    static inline int ks_request_pending(const uint64_t *requests) {
        return __atomic_load_n(requests, __ATOMIC_RELAXED) != 0;
    }
    /* kvm_arch_vcpu_should_kick: cmpxchg(mode, IN_GUEST_MODE, EXITING_GUEST_MODE). */
    static inline int ks_kick(int32_t *mode) {
        int32_t expected = 1;
        return __atomic_compare_exchange_n(mode, &expected, 2, 0, __ATOMIC_SEQ_CST,
                                           __ATOMIC_SEQ_CST);
    }
    """
    void ks_make_requests(uint64_t *requests, uint64_t mask) noexcept nogil
    void ks_make_request(uint64_t *requests, int bit) noexcept nogil
    int ks_test_request(const uint64_t *requests, int bit) noexcept nogil
    int ks_check_request(uint64_t *requests, int bit) noexcept nogil
    int ks_request_pending(const uint64_t *requests) noexcept nogil
    int ks_kick(int32_t *mode) noexcept nogil

# vcpu->mode (include/linux/kvm_host.h)
cdef enum:
    OUTSIDE_GUEST_MODE = 0
    IN_GUEST_MODE = 1
    EXITING_GUEST_MODE = 2

# Columns of the counts array: kvmsim/counters.py, in the same order.
cdef enum:
    C_VMEXITS
    C_VMENTER_ATTEMPTS
    C_VMENTERS
    C_CANCELED_VMENTERS
    C_IMMEDIATE_EXITS
    C_NMI_WINDOW_EXITS
    C_IRQ_WINDOW_EXITS
    C_NMIS_QUEUED
    C_NMIS_INJECTED
    C_NMIS_DROPPED
    C_PMIS_RAISED
    C_PMIS_COALESCED
    C_PMIS_DELIVERED
    C_PMIS_DROPPED
    C_IRQS_RAISED
    C_IRQS_COALESCED
    C_IRQS_INJECTED
    C_SMIS_INJECTED
    C_NS_GUEST
    C_NS_VMEXIT
    C_NS_REQUESTS
    C_NS_EVENT
    C_NS_STATE_LOAD
    C_NS_VMENTER
    C_NS_CANCEL
    C_REQ_BASE
    C_CANCEL_ASYNC_BASE = C_REQ_BASE + 64
    C_CANCEL_BACKEDGE_BASE = C_REQ_BASE + 128
    C_COLUMNS = C_REQ_BASE + 192

ctypedef struct ks_source:
    int64_t next_t
    int32_t kind          # kvmsim.plan.SRC_*
    int32_t dist          # kvmsim.plan.DIST_*
    int32_t bit
    double mean_ns
    int64_t period_ns
    const int64_t *times
    int64_t ntimes
    int64_t idx
    bitgen_t *rng

ctypedef struct ks_params:
    int32_t n_checks
    uint8_t order[64]
    uint8_t rank[64]
    uint8_t handler[64]
    int64_t handler_ns[64]
    uint64_t raises[64]
    uint8_t noop_bits[64]
    int32_t n_noop
    int64_t cost_vmexit, cost_vmenter, cost_check, cost_event, cost_state_load, cost_cancel
    uint8_t intel
    int32_t lvtpc
    int64_t nmi_handler_ns, irq_handler_ns
    double guest_exit_mean_ns
    int64_t interval_ns

ctypedef struct ks_vcpu:
    uint64_t requests     # vcpu->requests
    int32_t mode          # vcpu->mode
    int64_t nmi_queued    # vcpu->arch.nmi_queued
    int64_t nmi_pending   # vcpu->arch.nmi_pending
    uint8_t nmi_injected  # vcpu->arch.nmi_injected
    uint8_t irq_pending
    uint8_t irq_injected  # vcpu->arch.interrupt.injected
    uint8_t smi_pending   # vcpu->arch.smi_pending
    uint8_t entry_event   # VM-entry interruption info: 0 none, 1 NMI, 2 IRQ
    uint8_t nmi_window
    uint8_t irq_window
    uint8_t req_immediate_exit
    uint8_t immediate_exit
    uint8_t lvtpc_masked
    uint8_t pmu_reprogram
    uint8_t emul_overflow
    uint8_t nmi_blocked
    uint8_t irq_blocked
    uint8_t in_host       # between a VM-exit (or KVM_RUN) and the VM-Enter that ends it
    int64_t pass_at       # when in_host: the time the next pass starts
    int64_t now           # simulated time this vCPU has been run to (the last `until`)
    int64_t nmi_end, irq_end
    int64_t entry_t, guest_since, guest_exit_at
    ks_source *host
    int32_t n_host
    int64_t next_host     # min(host[i].next_t)
    ks_source *guest
    int32_t n_guest
    bitgen_t *exit_rng

# Advance one vCPU to `until` (ns), adding into counts[interval * C_COLUMNS + column].
# Between runs another thread may post requests with ks_make_request() and kick the vCPU
# with ks_kick(&v.mode): a kicked vCPU in guest mode exits at `now`, as an IPI makes it.
cdef void ks_vcpu_run(ks_vcpu *v, const ks_params *p, int64_t until,
                      int64_t *counts) noexcept nogil

# The engine behind kvmsim.Simulation (sim._engine); vcpus[i] is vCPU i's state.
cdef class Engine:
    cdef ks_params params
    cdef ks_vcpu *vcpus
    cdef ks_source *sources
    cdef int n_vcpus
    cdef list _keep          # bit generators and trace arrays the C state points into
