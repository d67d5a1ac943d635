# The C-level state of the Cython engine, published for other Cython extensions:
#   from kvmsim._core cimport Engine, ks_vcpu, ks_make_request, ks_kick, ...
#   from kvmsim._spec cimport ks_params, C_CANCELED_VMENTERS, BIT_NMI, ...
# Request-bit operations follow include/linux/kvm_host.h (docs/model.md, "Request bits").

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from numpy.random cimport bitgen_t

from kvmsim._spec cimport ks_params

cdef extern from *:
    """
    #include <stdint.h>
    /* __kvm_make_request: smp_wmb() then set_bit() -> a release RMW. */
    static inline void ks_make_requests(uint64_t *requests, uint64_t mask) {
        __atomic_fetch_or(requests, mask, __ATOMIC_RELEASE);
    }
    /* Bits outside the u64 are refused (returns 0), as BUILD_BUG_ON refuses them in KVM. */
    static inline int ks_make_request(uint64_t *requests, int bit) {
        if (bit < 0 || bit > 63)
            return 0;
        ks_make_requests(requests, (uint64_t)1 << bit);
        return 1;
    }
    /* kvm_test_request: test_bit, no atomic RMW. */
    static inline int ks_test_request(const uint64_t *requests, int bit) {
        return (int)((__atomic_load_n(requests, __ATOMIC_RELAXED) >> (bit & 63)) & 1);
    }
    /* kvm_check_request: test, and only when set clear_bit + smp_mb__after_atomic(), so a
       clear bit costs no atomic operation. */
    static inline int ks_check_request(uint64_t *requests, int bit) {
        if (!ks_test_request(requests, bit))
            return 0;
        __atomic_fetch_and(requests, ~((uint64_t)1 << (bit & 63)), __ATOMIC_SEQ_CST);
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
    int ks_make_request(uint64_t *requests, int bit) noexcept nogil
    int ks_test_request(const uint64_t *requests, int bit) noexcept nogil
    int ks_check_request(uint64_t *requests, int bit) noexcept nogil
    int ks_request_pending(const uint64_t *requests) noexcept nogil
    int ks_kick(int32_t *mode) noexcept nogil

# hook(ctx, t_ns, vcpu, event, a, b) for each kvmsim._spec.TraceEvent (T_* codes).
ctypedef void (*ks_hook)(void *ctx, int64_t t, int32_t vcpu, int32_t event, int64_t a,
                         int64_t b) noexcept nogil
# poll(ctx) -> a Stop code (STOP_DONE: carry on); called every POLL_EVERY loop steps.
ctypedef int32_t (*ks_poll)(void *ctx) noexcept nogil

ctypedef struct ks_source:
    int64_t next_t
    int32_t kind          # SRC_*
    int32_t dist          # DIST_*
    int32_t bit
    int32_t target        # SRC_IPI, SRC_IPI_NMI: a vCPU, IPI_ANY or IPI_ALL
    uint8_t posted        # a posted interrupt (APICv): no kick, no VM-exit
    double mean_ns
    int64_t period_ns
    const int64_t *times
    int64_t ntimes
    int64_t idx
    bitgen_t *rng

# An IPI from another vCPU in flight: it arrives at t (ties in the order seq was sent).
ctypedef struct ks_ipi:
    int64_t t
    int64_t seq
    int32_t kind          # SRC_NMI or SRC_IRQ

# A min-heap of IPIs in flight, by (t, seq).
ctypedef struct ks_heap:
    ks_ipi *items
    int64_t n, cap

# What one Engine.run call shares with every vCPU: when to look for a stop, and why it
# stopped; and the whole VM, for IPIs between vCPUs.
ctypedef struct ks_ctx:
    ks_poll poll          # NULL: never stop early
    void *poll_ctx
    int32_t stop          # STOP_*
    void *vcpus           # ks_vcpu[n_vcpus]
    int32_t n_vcpus
    int64_t ipi_seq       # IPIs sent so far

ctypedef struct ks_vcpu:
    uint64_t requests     # vcpu->requests
    int32_t mode          # vcpu->mode
    int32_t index
    int64_t nmi_queued    # vcpu->arch.nmi_queued
    int64_t nmi_pending   # vcpu->arch.nmi_pending
    uint8_t nmi_injected  # vcpu->arch.nmi_injected
    uint8_t vnmi_pending  # V_NMI_PENDING (AMD vNMI)
    uint8_t irq_pending   # the IRR (or PIR) bit of the device vector
    uint8_t irq_injected  # vcpu->arch.interrupt.injected
    uint8_t smi_pending   # vcpu->arch.smi_pending
    uint8_t entry_event   # ENTRY_*: VM-entry interruption info
    uint8_t nmi_window
    uint8_t irq_window
    uint8_t req_immediate_exit
    uint8_t immediate_exit
    uint8_t lvtpc_masked
    uint8_t pmu_reprogram
    uint8_t emul_overflow
    uint8_t pmi_status    # GLOBAL_STATUS has an overflow bit the guest will see
    uint8_t nmi_blocked
    uint8_t irq_blocked
    uint8_t timer_pending # apic->lapic_timer.pending
    uint8_t xfer          # xfer_to_guest_mode work: need_resched, a signal
    uint8_t if_off        # the guest runs with IF = 0 until its STI;HLT
    uint8_t hlt_due       # ... which runs at the next guest instant
    uint8_t hlt_exit      # this VM-exit is a HLT's
    uint8_t halted        # blocked in kvm_vcpu_block() (or HLT, not yet decided)
    uint8_t halt_checked  # ... kvm_vcpu_check_block said so
    uint8_t exit_fast, exit_slow   # what the VM-exit being handled carries
    uint8_t in_host       # between a VM-exit (or KVM_RUN) and the VM-Enter that ends it
    uint8_t ps_active     # a pass stopped at a coupled run's horizon goes on from here
    uint8_t ps_late       # ... after its checks
    int32_t ps_pos
    uint64_t ps_raised
    int64_t ps_t0, ps_event_ns
    int32_t op_seq, op_next, op_n  # the perf NMI handler's accesses (PMI_HANDLER_OPS)
    int64_t op_at
    int64_t pmi_nmi_at    # a host PMI (NMI) in flight lands then
    int64_t pmi_nmi_n     # ... for this many overflows
    int64_t nmi_credit    # NMI IPIs a guest handler will claim
    int64_t last_pmi_t    # the guest last handled a PMI then
    int64_t halt_since
    int64_t pass_at       # when in_host: the time the next pass starts
    int64_t now           # simulated time this vCPU has been run to
    int64_t nmi_end, irq_end
    int64_t entry_t, exit_t, guest_since, guest_exit_at
    int64_t ext_nmi_at, ext_nmi, ext_irq_at, ext_irq   # Engine.inject: due then
    int64_t budget        # loop steps left before the next poll
    ks_source *host
    int32_t n_host
    ks_heap in_kick       # IPIs from other vCPUs that kick (NMI; fixed without APICv)
    ks_heap in_posted     # ... that are posted (fixed, APICv)
    int64_t next_kick     # the next host-side arrival that kicks the vCPU (cached)
    int64_t next_posted   # the next posted interrupt (cached)
    ks_source *guest
    int32_t n_guest
    bitgen_t *exit_rng
    int64_t *counts       # this run's counts: [interval - first][C_COLUMNS]
    int64_t first         # the interval counts[0] holds
    int64_t *row          # the row of the interval ending at row_end (a cursor)
    int64_t row_end
    ks_hook hook          # NULL: no trace
    void *hook_ctx
    ks_ctx *ctx

# Advance one vCPU to `until` (ns), adding into v.counts. Between runs another thread
# may post requests with ks_make_request() and kick the vCPU with ks_kick(&v.mode): a kicked
# vCPU in guest mode exits at `now`, as an IPI makes it.
cdef void ks_vcpu_run(ks_vcpu *v, const ks_params *p, int64_t until) noexcept nogil

# The engine behind kvmsim.Simulation (sim.engine); vcpus[i] is vCPU i's state.
cdef class Engine:
    cdef ks_params params
    cdef ks_vcpu *vcpus
    cdef ks_source *sources
    cdef ks_ctx ctx
    cdef readonly int n_vcpus
    cdef list _keep          # bit generators and trace arrays the C state points into
    cdef object _plan, _hook, _hook_error, _stop_event
