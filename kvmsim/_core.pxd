# kvmsim's C API (docs/embedding.md), for other Cython extensions:
#   from kvmsim._core cimport Engine, ks_engine, ks_post, ks_inject, ks_run, ...
#   from kvmsim._spec cimport C_CANCELED_VMENTERS, BIT_NMI, SRC_NMI, KS_ABI_VERSION, ...
# and, through Engine.capsule (a ks_api), for C and ctypes callers. Every ks_* function
# below takes the engine's lock: safe from any thread, and from a trace hook during a run.
# The structs after them are the engine's state, to read; change it only through them.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from numpy.random cimport bitgen_t

from kvmsim._spec cimport ks_params

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
    bitgen_t gen          # a copy of its PCG64's bitgen_t, read here (threads of a team
                          # would share the PCG64 objects' cache lines)

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
    bitgen_t exit_gen     # the guest's own exits (a copy, as ks_source.gen)
    int64_t *counts       # this run's counts: [interval - first][C_COLUMNS]
    int64_t first         # the interval counts[0] holds
    int64_t *row          # the row of the interval ending at row_end (a cursor)
    int64_t row_end
    ks_hook hook          # NULL: no trace
    void *hook_ctx
    int64_t t_hook        # while a hook runs: its event's time (a post lands then)
    ks_ctx *ctx
    char pad[64]          # no cache line holds two vCPUs' fields (threads of a team)

# A lock a thread may take again while it holds it (a trace hook posting during a run).
ctypedef struct ks_rlock:
    void *lock            # PyThread_type_lock
    unsigned long owner   # the thread that holds it (PyThread_get_thread_ident), or 0
    int32_t depth
    int32_t waiting       # threads waiting for it (a run lets them in first)

# One simulated VM: what every ks_* function takes.
ctypedef struct ks_engine:
    ks_params *params
    ks_vcpu *vcpus        # vcpus[i] is vCPU i
    int32_t n_vcpus
    ks_ctx *ctx
    ks_rlock lock
    int32_t threads       # vCPUs that send no IPIs run in up to this many threads

# The C API. Times are simulated ns; each returns -1 (0 for ks_requests) on a bad argument.
# kvm_make_request(bit) from another CPU at the vCPU's `now`, and kvm_vcpu_kick if kick:
# returns whether a kick was sent (the vCPU was in guest mode).
cdef int ks_post(ks_engine *e, int32_t vcpu, int32_t bit, int32_t and_kick) noexcept nogil
# `count` NMIs (SRC_NMI: kvm_inject_nmi), fixed IRQs (SRC_IRQ: kvm_apic_set_irq) or guest
# counter overflows taken by the host (SRC_PMI: kvm_perf_overflow) at the vCPU's `now`, each
# with the kernel's kick: returns whether the vCPU was kicked.
cdef int ks_inject(ks_engine *e, int32_t vcpu, int32_t kind, int64_t count) noexcept nogil
# When the vCPU next does something of its own (an exit, a pass, a wake-up), >= its `now`;
# NEVER when nothing is due. Run past it (ks_run to it + 1) to see it happen.
cdef int64_t ks_next_event(ks_engine *e, int32_t vcpu) noexcept nogil
# Run every vCPU to `until`, adding into counts[vcpu][interval - first][C_COLUMNS] (ints of
# one run are params.interval_ns long; n_intervals of them from `first`); returns a STOP_*
# code. Between two runs, posts and injections land at each vCPU's `now`.
cdef int ks_run(ks_engine *e, int64_t until, int64_t *counts, int64_t first,
                int64_t n_intervals) noexcept nogil
cdef int ks_mode(ks_engine *e, int32_t vcpu) noexcept nogil          # vcpu->mode
cdef uint64_t ks_requests(ks_engine *e, int32_t vcpu) noexcept nogil # vcpu->requests
cdef int64_t ks_now(ks_engine *e, int32_t vcpu) noexcept nogil       # simulated ns reached
# Call hook(ctx, t, vcpu, event, a, b) for every _spec.TraceEvent (NULL: none). Set it
# between runs; with none the loop pays nothing for it.
cdef int ks_set_hook(ks_engine *e, ks_hook hook, void *ctx) noexcept nogil

# The capsule's contents ("kvmsim.ks_api"): the engine and the C API as pointers.
ctypedef struct ks_api:
    int32_t abi_version   # KS_ABI_VERSION
    int32_t n_vcpus
    int32_t n_columns     # C_COLUMNS
    int64_t interval_ns
    ks_engine *engine
    int (*post)(ks_engine *, int32_t, int32_t, int32_t) noexcept nogil
    int (*inject)(ks_engine *, int32_t, int32_t, int64_t) noexcept nogil
    int64_t (*next_event)(ks_engine *, int32_t) noexcept nogil
    int (*run)(ks_engine *, int64_t, int64_t *, int64_t, int64_t) noexcept nogil
    int (*mode)(ks_engine *, int32_t) noexcept nogil
    uint64_t (*requests)(ks_engine *, int32_t) noexcept nogil
    int64_t (*now)(ks_engine *, int32_t) noexcept nogil
    int (*set_hook)(ks_engine *, ks_hook, void *) noexcept nogil

# The engine behind kvmsim.Simulation (sim.engine): `c` is its ks_engine.
cdef class Engine:
    cdef ks_engine c
    cdef ks_api api
    cdef ks_params params
    cdef ks_vcpu *vcpus
    cdef ks_source *sources
    cdef ks_ctx ctx
    cdef readonly int n_vcpus
    cdef list _keep          # bit generators and trace arrays the C state points into
    cdef object _plan, _hook, _hook_error, _stop_event
