# cython: language_level=3
"""The Cython engine: kvmsim/_reference.py's rules in C, one nogil loop per vCPU.

Each function names the kernel function it mirrors; docs/model.md gives the citations. The
codes, bits and counter columns come from _spec.pxd, generated from kvmsim/_spec.py.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcpy
from numpy.random cimport bitgen_t
from numpy.random.c_distributions cimport random_standard_exponential

from kvmsim._spec cimport *

import numpy as np

from . import _spec
from ._plan import bit_generator

cdef extern from *:
    int ctz "__builtin_ctzll"(unsigned long long) noexcept nogil
    unsigned long atomic_load "__atomic_load_n"(unsigned long *, int) noexcept nogil
    void atomic_store "__atomic_store_n"(unsigned long *, unsigned long, int) noexcept nogil
    int32_t load32 "__atomic_load_n"(int32_t *, int) noexcept nogil
    void store32 "__atomic_store_n"(int32_t *, int32_t, int) noexcept nogil
    int32_t fetch_add32 "__atomic_fetch_add"(int32_t *, int32_t, int) noexcept nogil
    int RELAXED "__ATOMIC_RELAXED"

cdef extern from "pythread.h":
    void *PyThread_allocate_lock() noexcept nogil
    void PyThread_free_lock(void *) noexcept nogil
    int PyThread_acquire_lock(void *, int) noexcept nogil
    void PyThread_release_lock(void *) noexcept nogil
    unsigned long PyThread_get_thread_ident() noexcept nogil
    unsigned long PyThread_start_new_thread(void (*)(void *) noexcept nogil, void *) noexcept nogil

cdef extern from "<sched.h>":
    int sched_yield() noexcept nogil

# --- sources ------------------------------------------------------------------------------
cdef inline int64_t after(int64_t t, double gap) noexcept nogil:
    # t + gap, where a gap of KS_MAX_GAP_NS or more means NEVER (and cannot overflow int64)
    return NEVER if gap >= KS_MAX_GAP_NS else t + <int64_t>gap

cdef inline int64_t max64(int64_t a, int64_t b) noexcept nogil:
    return a if a > b else b

cdef inline int64_t min64(int64_t a, int64_t b) noexcept nogil:
    return a if a < b else b

# --- IPIs in flight: a min-heap by (t, seq) ---------------------------------------------------
cdef inline bint ipi_before(const ks_ipi *a, const ks_ipi *b) noexcept nogil:
    return a.t < b.t or (a.t == b.t and a.seq < b.seq)

cdef bint heap_push(ks_heap *h, int64_t t, int64_t seq, int32_t kind) noexcept nogil:
    # False when there is no memory for it
    cdef int64_t i, up, cap
    cdef ks_ipi *items
    cdef ks_ipi x
    if h.n == h.cap:
        cap = 16 if h.cap == 0 else 2 * h.cap
        items = <ks_ipi *> realloc(h.items, cap * sizeof(ks_ipi))
        if items == NULL:
            return 0
        h.items, h.cap = items, cap
    x.t, x.seq, x.kind = t, seq, kind
    i = h.n
    h.n += 1
    while i > 0:
        up = (i - 1) // 2
        if not ipi_before(&x, &h.items[up]):
            break
        h.items[i] = h.items[up]
        i = up
    h.items[i] = x
    return 1

cdef ks_ipi heap_pop(ks_heap *h) noexcept nogil:
    cdef ks_ipi top = h.items[0], last
    cdef int64_t i = 0, child
    h.n -= 1
    last = h.items[h.n]
    while True:
        child = 2 * i + 1
        if child >= h.n:
            break
        if child + 1 < h.n and ipi_before(&h.items[child + 1], &h.items[child]):
            child += 1
        if not ipi_before(&h.items[child], &last):
            break
        h.items[i] = h.items[child]
        i = child
    if h.n:
        h.items[i] = last
    return top

cdef inline int64_t heap_head(const ks_heap *h) noexcept nogil:
    return h.items[0].t if h.n else NEVER


cdef inline void source_step(ks_source *s) noexcept nogil:
    if s.dist == DIST_POISSON:
        s.next_t = after(s.next_t, random_standard_exponential(&s.gen) * s.mean_ns)
    elif s.dist == DIST_PERIODIC:
        s.next_t += s.period_ns
    else:
        s.idx += 1
        s.next_t = s.times[s.idx] if s.idx < s.ntimes else NEVER

cdef inline int64_t source_advance(ks_source *s, int64_t t) noexcept nogil:
    # Past every arrival at or before t; how many. A periodic source jumps in one step.
    cdef int64_t k = 0
    if s.dist == DIST_PERIODIC:
        k = (t - s.next_t) // s.period_ns + 1
        s.next_t += k * s.period_ns
        return k
    while s.next_t <= t:
        source_step(s)
        k += 1
    return k

cdef inline void update_next(ks_vcpu *v, const ks_params *p) noexcept nogil:
    # The next host-side arrivals, cached: the loop asks for them at every step.
    cdef int64_t k = min64(min64(v.ext_nmi_at, v.pmi_nmi_at), NEVER if p.apicv else v.ext_irq_at)
    cdef int64_t q = v.ext_irq_at if p.apicv else NEVER
    k = min64(k, heap_head(&v.in_kick))
    q = min64(q, heap_head(&v.in_posted))
    cdef int i
    for i in range(v.n_host):
        if v.host[i].posted:
            q = min64(q, v.host[i].next_t)
        else:
            k = min64(k, v.host[i].next_t)
    v.next_kick = k
    v.next_posted = q

cdef inline int64_t next_host(const ks_vcpu *v) noexcept nogil:
    return min64(v.next_kick, v.next_posted)


# --- bookkeeping --------------------------------------------------------------------------
cdef inline int64_t *row(ks_vcpu *v, const ks_params *p, int64_t t) noexcept nogil:
    # The counts row of the interval holding t: a cursor, so the division happens only when
    # t leaves the interval of the last row.
    cdef int64_t i
    if t >= v.row_end or t < v.row_end - p.interval_ns:
        i = t // p.interval_ns
        v.row = v.counts + (i - v.first) * C_COLUMNS
        v.row_end = (i + 1) * p.interval_ns
    return v.row

cdef inline void add_span(ks_vcpu *v, const ks_params *p, int col, int64_t t0,
                          int64_t t1) noexcept nogil:
    # Time from t0 to t1 into column col, split at interval boundaries.
    cdef int64_t end
    cdef int64_t *c
    while t0 < t1:
        c = row(v, p, t0)
        end = v.row_end if v.row_end < t1 else t1
        c[col] += end - t0
        t0 = end

cdef inline void add_guest_time(ks_vcpu *v, const ks_params *p, int64_t t1) noexcept nogil:
    add_span(v, p, C_NS_GUEST, v.guest_since, t1)
    if t1 > v.guest_since:
        v.guest_since = t1

# The vCPU's own requests: the engine's lock (ks_engine.lock) makes the thread that runs it
# the only one to touch them during a run, so plain bit operations suffice.
cdef inline void make_request(ks_vcpu *v, int bit) noexcept nogil:
    v.requests |= (<uint64_t>1) << bit

cdef inline bint test_request(const ks_vcpu *v, int bit) noexcept nogil:
    return (v.requests >> bit) & 1

cdef inline void hook(ks_vcpu *v, int64_t t, int32_t event, int64_t a,
                      int64_t b) noexcept nogil:
    # (a hook may remove itself); what it posts to this vCPU lands at t
    if v.hook != NULL:
        v.t_hook = t
        v.hook(v.hook_ctx, t, v.index, event, a, b)
        v.t_hook = 0

cdef inline int64_t poll(ks_vcpu *v, int64_t t, int64_t until) noexcept nogil:
    # Every POLL_EVERY steps: stop at t (as a run to `until` = t would) when asked.
    v.budget -= 1
    if v.budget > 0:
        return until
    v.budget = POLL_EVERY
    # (ctx.stop is atomic: vCPUs of one run may run in several threads)
    cdef int32_t stop = load32(&v.ctx.stop, RELAXED)
    if stop == STOP_DONE and v.ctx.poll != NULL:
        stop = v.ctx.poll(v.ctx.poll_ctx)
        if stop != STOP_DONE:
            store32(&v.ctx.stop, stop, RELAXED)
    return t if stop != STOP_DONE else until

cdef inline bint kick(ks_vcpu *v) noexcept nogil:
    # kvm_vcpu_kick: kvm_vcpu_exiting_guest_mode() cmpxchg IN_GUEST -> EXITING
    if v.mode == IN_GUEST_MODE:
        v.mode = EXITING_GUEST_MODE
        return 1
    return 0


# Each function that reports to a trace hook is compiled twice: `tracing` picks, at compile
# time, whether it calls the hook, so a run without one pays nothing for them.
ctypedef struct traced:
    char unused
ctypedef struct untraced:
    char unused
ctypedef fused tracing:
    traced
    untraced


# --- arrivals from other CPUs -------------------------------------------------------------
cdef inline void accept_irq(ks_vcpu *v, const ks_params *p, int64_t k,
                            int64_t *c) noexcept nogil:
    # kvm_lapic_set_irr + KVM_REQ_EVENT + kick (vmx_deliver_interrupt without APICv); with
    # APICv or AVIC the vector is posted (PIR) and no request is made
    c[C_IRQS_RAISED] += k
    c[C_IRQS_COALESCED] += k - 1 + v.irq_pending
    v.irq_pending = 1
    if not p.apicv:
        make_request(v, BIT_EVENT)
        kick(v)

cdef inline void arrive(ks_vcpu *v, const ks_params *p, int kind, int bit, int64_t k,
                        int64_t *c, int64_t t, tracing *tr) noexcept nogil:
    # k arrivals of one kind at once
    cdef int64_t j
    if k == 0:
        return
    if tracing is traced:
        for j in range(k):
            hook(v, t, T_MAKE_REQUEST, kind, bit if kind == SRC_REQUEST else -1)
    if kind == SRC_NMI:                 # kvm_inject_nmi, from an NMI IPI
        v.nmi_queued += k
        c[C_NMIS_QUEUED] += k
        v.nmi_credit += k               # the guest's handler for it claims it
        make_request(v, BIT_NMI)
        kick(v)
    elif kind == SRC_IRQ:               # __apic_accept_irq, APIC_DM_FIXED
        accept_irq(v, p, k, c)
    elif kind == SRC_TIMER:             # apic_timer_expired(from_timer_fn = true)
        v.timer_pending = 1
        make_request(v, BIT_UNBLOCK)
        kick(v)
    elif kind == SRC_TASK_WORK:         # TIF_NEED_RESCHED / a signal, and its IPI
        v.xfer = 1
        kick(v)
    else:                               # SRC_REQUEST: kvm_make_request + kick
        make_request(v, bit)
        kick(v)

cdef inline void apply_source(ks_vcpu *v, const ks_params *p, ks_source *s, int64_t t,
                              int64_t *c, tracing *tr) noexcept nogil:
    cdef int bit
    cdef int64_t at
    while s.next_t <= t:
        at = s.next_t
        if s.kind == SRC_REQUEST_NOOP:  # one of the no-op requests, uniformly
            bit = p.noop_bits[<int>(s.gen.next_double(s.gen.state) * p.n_noop)]
            source_step(s)
            arrive(v, p, SRC_REQUEST, bit, 1, c, at, tr)
        else:
            arrive(v, p, s.kind, s.bit,
                   source_advance(s, at if tracing is traced else t), c, at, tr)

cdef inline void perf_overflow(ks_vcpu *v, int64_t *c) noexcept nogil:
    # __kvm_perf_overflow: global_status, KVM_REQ_PMI
    v.pmi_status = 1
    if test_request(v, BIT_PMI):
        c[C_PMIS_COALESCED] += 1
    else:
        c[C_PMIS_RAISED] += 1
        make_request(v, BIT_PMI)

cdef inline void overflow(ks_vcpu *v, int64_t *c) noexcept nogil:
    # kvm_perf_overflow: ignored while the counter's reprogram bit is set
    if v.pmu_reprogram:
        c[C_PMIS_COALESCED] += 1
    else:
        v.pmu_reprogram = 1
        perf_overflow(v, c)
        make_request(v, BIT_PMU)

cdef void deliver_pmi(ks_vcpu *v, const ks_params *p, int64_t *c) noexcept nogil:
    # kvm_pmu_deliver_pmi -> kvm_apic_local_deliver(APIC_LVTPC)
    if p.lvtpc == LVTPC_MASKED or v.lvtpc_masked:
        c[C_PMIS_DROPPED] += 1
        return
    c[C_PMIS_DELIVERED] += 1
    if p.lvtpc == LVTPC_NMI:            # APIC_DM_NMI: kvm_inject_nmi
        v.nmi_queued += 1
        c[C_NMIS_QUEUED] += 1
        make_request(v, BIT_NMI)
        kick(v)
    elif p.lvtpc == LVTPC_FIXED:        # APIC_DM_FIXED
        accept_irq(v, p, 1, c)
    else:                               # APIC_DM_SMI: kvm_inject_smi
        make_request(v, BIT_SMI)
        kick(v)
    if p.automask:                      # a16eb25b09c0; 49ff3b4aec51: Intel guests only
        v.lvtpc_masked = 1

cdef void host_pmi(ks_vcpu *v, const ks_params *p, int64_t *c, bint in_guest) noexcept nogil:
    # The host's NMI for a guest counter overflow (kvm_perf_overflow, NMI context). Taken
    # while the guest ran, or in the request path: KVM_REQ_PMI. Before 73554b29bd70, outside
    # guest mode: irq_work (kvm_pmi_trigger_fn) calls kvm_pmu_deliver_pmi at once.
    cdef int64_t j, n = v.pmi_nmi_n
    v.pmi_nmi_n = 0
    v.pmi_nmi_at = NEVER
    for j in range(n):
        if in_guest or not p.pmi_irq_work:
            overflow(v, c)
        elif v.pmu_reprogram:
            c[C_PMIS_COALESCED] += 1
        else:
            v.pmu_reprogram = 1
            v.pmi_status = 1
            make_request(v, BIT_PMU)
            c[C_PMIS_IRQ_WORK] += 1
            deliver_pmi(v, p, c)

cdef inline void apply_ipis(ks_vcpu *v, const ks_params *p, ks_heap *h, int64_t t,
                            int64_t *c, tracing *tr) noexcept nogil:
    # Other vCPUs' IPIs that have arrived by t, in order (__apic_accept_irq)
    cdef ks_ipi x
    while h.n and h.items[0].t <= t:
        x = heap_pop(h)
        arrive(v, p, x.kind, 0, 1, c, x.t, tr)

cdef inline void apply_host(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c,
                            bint in_guest, tracing *tr) noexcept nogil:
    # Every host-side arrival at or before t. Arrivals of one source are applied together,
    # unless a trace hook wants each with its own time. in_guest: the VM-exit at t is theirs.
    cdef int i
    if next_host(v) > t:
        return
    for i in range(v.n_host):
        apply_source(v, p, &v.host[i], t, c, tr)
    if v.ext_nmi_at <= t:               # Engine.inject
        arrive(v, p, SRC_NMI, 0, v.ext_nmi, c, v.ext_nmi_at, tr)
        v.ext_nmi = 0
        v.ext_nmi_at = NEVER
    if v.ext_irq_at <= t:
        arrive(v, p, SRC_IRQ, 0, v.ext_irq, c, v.ext_irq_at, tr)
        v.ext_irq = 0
        v.ext_irq_at = NEVER
    apply_ipis(v, p, &v.in_kick, t, c, tr)
    apply_ipis(v, p, &v.in_posted, t, c, tr)
    if v.pmi_nmi_at <= t:
        host_pmi(v, p, c, in_guest)
    update_next(v, p)

cdef inline void apply_posted(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c,
                              tracing *tr) noexcept nogil:
    # Posted interrupts up to t, reaching a guest that runs.
    cdef int i
    for i in range(v.n_host):
        if v.host[i].posted:
            apply_source(v, p, &v.host[i], t, c, tr)
    if p.apicv and v.ext_irq_at <= t:
        arrive(v, p, SRC_IRQ, 0, v.ext_irq, c, v.ext_irq_at, tr)
        v.ext_irq = 0
        v.ext_irq_at = NEVER
    apply_ipis(v, p, &v.in_posted, t, c, tr)
    update_next(v, p)


# --- the guest ----------------------------------------------------------------------------
cdef inline bint allowed(const ks_vcpu *v) noexcept nogil:
    # interrupt_allowed: IF = 1 and no handler blocking interrupts
    return not (v.nmi_blocked or v.irq_blocked or v.if_off)

cdef inline bint hlt_exits(const ks_vcpu *v, const ks_params *p) noexcept nogil:
    # Whether the guest's STI;HLT exits: an open interrupt window takes the VM-exit instead;
    # AMD's Idle HLT intercept lets HLT with a pending interrupt run on.
    if v.irq_window and not (v.nmi_blocked or v.irq_blocked):
        return 1
    return not (p.idle_hlt and (v.irq_pending or v.vnmi_pending))

cdef inline bint event_exits(const ks_vcpu *v, const ks_params *p,
                             const ks_source *s) noexcept nogil:
    # Whether a guest-side event makes a VM-exit. STI;HLT never does by itself: it becomes
    # hlt_due, which decides once the rest of its instant has happened. An IPI with a
    # shorthand (ipi:all) is neither virtualised nor taken by the fastpath.
    cdef int kind = s.kind
    if kind == SRC_IPI:
        return not p.ipiv or s.target == IPI_ALL
    if kind == SRC_IPI_SELF:
        return not p.apicv
    return kind != SRC_HLT

cdef inline bint nmi_end_exits(const ks_vcpu *v, const ks_params *p) noexcept nogil:
    return (p.iret_exits or v.nmi_window
            or (v.irq_window and not v.irq_blocked and not v.if_off))

cdef inline bint irq_end_exits(const ks_vcpu *v, const ks_params *p) noexcept nogil:
    return ((v.irq_window and not v.nmi_blocked and not v.if_off)
            or (p.automask and p.lvtpc == LVTPC_FIXED and v.lvtpc_masked))

cdef inline int64_t earlier(int64_t t, bint *exits, int64_t when,
                            bint when_exits) noexcept nogil:
    # The earlier of two guest events; at a tie the guest exits if either makes it.
    if when < t:
        exits[0] = when_exits
        return when
    if when == t and when_exits:
        exits[0] = 1
    return t

cdef inline int64_t next_guest_event(const ks_vcpu *v, const ks_params *p,
                                     bint *exits) noexcept nogil:
    # (time, exits) of the guest's next event: not before the time the guest has reached (an
    # event that came due while the vCPU was in the host happens at once)
    cdef int64_t e = v.guest_since, t = NEVER, when
    cdef int i
    exits[0] = 1
    for i in range(v.n_guest):
        if v.guest[i].kind == SRC_PMI and v.guest[i].next_t != NEVER:
            # the host's NMI, a skid after the overflow (which needs the guest running)
            when = max64(max64(v.guest[i].next_t, v.entry_t) + p.pmi_skid_ns, e)
        else:
            when = max64(v.guest[i].next_t, e)
        t = earlier(t, exits, when, event_exits(v, p, &v.guest[i]))
    t = earlier(t, exits, max64(v.guest_exit_at, e), 1)
    if v.immediate_exit or (v.nmi_window and not v.nmi_blocked) or (
            v.irq_window and allowed(v)):
        t = earlier(t, exits, e, 1)
    if v.hlt_due:
        t = earlier(t, exits, e, hlt_exits(v, p))
    if v.nmi_blocked and v.op_next < v.op_n:
        t = earlier(t, exits, max64(v.op_at, e), 1)
    elif v.nmi_blocked:
        t = earlier(t, exits, max64(v.nmi_end, e), nmi_end_exits(v, p))
    if v.irq_blocked:
        t = earlier(t, exits, max64(v.irq_end, e), irq_end_exits(v, p))
    return t

cdef inline void irq_window_exit(ks_vcpu *v, int64_t *c) noexcept nogil:
    # handle_interrupt_window: the window is satisfied, KVM_REQ_EVENT
    v.irq_window = 0
    c[C_IRQ_WINDOW_EXITS] += 1
    make_request(v, BIT_EVENT)

cdef bint end_handlers(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c) noexcept nogil:
    # Guest handlers whose time is up: IRET unblocks NMIs (and IF), SVM without vNMI
    # intercepts that IRET; a satisfied window raises KVM_REQ_EVENT (handle_nmi_window, svm
    # IRET completion, interrupt window). True if one ended.
    cdef bint ended = 0
    if v.nmi_blocked and v.nmi_end <= t and v.op_next >= v.op_n:
        v.nmi_blocked = 0
        v.nmi_end = NEVER
        ended = 1
        if p.iret_exits:
            v.nmi_window = 0
            c[C_NMI_WINDOW_EXITS] += 1
            make_request(v, BIT_EVENT)
    if v.irq_blocked and v.irq_end <= t:
        v.irq_blocked = 0
        v.irq_end = NEVER
        ended = 1
        if p.lvtpc == LVTPC_FIXED:
            v.lvtpc_masked = 0
    if v.nmi_window and not v.nmi_blocked:
        v.nmi_window = 0
        c[C_NMI_WINDOW_EXITS] += 1
        make_request(v, BIT_EVENT)
        ended = 1
    if v.irq_window and allowed(v):
        irq_window_exit(v, c)
        ended = 1
    return ended

cdef void nmi_start(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c) noexcept nogil:
    # An NMI reaches the guest: default_do_nmi runs its handlers. Perf's finds the overflow
    # in GLOBAL_STATUS (a PMI), another claims an NMI IPI; an NMI none claims is "unknown"
    # (AMD perf claims those within 100 ms of a PMI: perf_nmi_window).
    cdef bint pmi = v.pmi_status, claimed
    v.nmi_blocked = 1
    v.nmi_end = t + p.nmi_handler_ns
    v.pmi_status = 0
    claimed = pmi
    if v.nmi_credit:
        v.nmi_credit -= 1
        claimed = 1
    if not claimed and t - v.last_pmi_t < p.amd_nmi_window_ns:
        claimed = 1
    if pmi:
        v.last_pmi_t = t
    if not claimed:
        c[C_NMIS_UNKNOWN] += 1
    # The perf NMI handler's intercepted accesses, evenly spaced in its guest time.
    v.op_seq = 0 if pmi else 1
    v.op_next = 0
    v.op_n = p.pmi_ops_n[v.op_seq]
    v.op_at = t + p.nmi_handler_ns // (v.op_n + 1) if v.op_n else NEVER

cdef inline void op(ks_vcpu *v, const ks_params *p, int64_t *c) noexcept nogil:
    # One access of the perf NMI handler (an exit): a write that makes KVM reprogram
    # counters raises KVM_REQ_PMU (reprogram_counters); the LVTPC write unmasks LVTPC.
    cdef int i = v.op_next
    if (p.pmi_ops_pmu[v.op_seq] >> i) & 1 and p.pmu_request:
        v.pmu_reprogram = 1             # (synchronous before 68fb4757e867)
        make_request(v, BIT_PMU)
    if p.pmi_ops_lvtpc[v.op_seq] == i:
        v.lvtpc_masked = 0
    v.op_next += 1
    v.op_at = v.op_at + p.nmi_handler_ns // (v.op_n + 1) if v.op_next < v.op_n else NEVER

cdef void hardware_deliver(ks_vcpu *v, const ks_params *p, int64_t t,
                           int64_t *c) noexcept nogil:
    # What the CPU delivers by itself in guest mode: the NMI in V_NMI_PENDING, and a posted
    # interrupt (APICv virtual-interrupt delivery, AVIC).
    if v.vnmi_pending and not v.nmi_blocked:
        v.vnmi_pending = 0
        c[C_NMIS_INJECTED] += 1
        nmi_start(v, p, t, c)
    elif p.apicv and v.irq_pending and allowed(v):
        v.irq_pending = 0
        c[C_IRQS_INJECTED] += 1
        v.irq_blocked = 1
        v.irq_end = t + p.irq_handler_ns

cdef inline void hlt(ks_vcpu *v, const ks_params *p, int64_t *c) noexcept nogil:
    # The guest's STI;HLT, due now. If anything else is handled at this exit it runs at the
    # next guest instant; else it is this exit's: an open interrupt window takes it, else
    # kvm_emulate_halt.
    if v.exit_fast or v.exit_slow:
        return
    v.hlt_due = 0
    v.if_off = 0
    if v.irq_window and not (v.nmi_blocked or v.irq_blocked):
        irq_window_exit(v, c)
        v.exit_slow = 1
    else:
        v.hlt_exit = 1
        if p.fastpath_reenter:
            v.exit_fast = 1
        else:
            v.exit_slow = 1

cdef void send_ipi(ks_vcpu *v, const ks_params *p, ks_source *s, int64_t t,
                   int64_t *c) noexcept nogil:
    # kvm_apic_send_ipi -> kvm_irq_delivery_to_apic: the IPI reaches each target cost_ipi
    # later; there __apic_accept_irq posts it (fixed, APICv), or sets the IRR and kicks, or
    # injects an NMI and kicks. A target of "any" is drawn from the source's stream.
    cdef int n = v.ctx.n_vcpus, i, j, lo, hi
    cdef int32_t kind = SRC_NMI if s.kind == SRC_IPI_NMI else SRC_IRQ
    cdef ks_vcpu *w
    cdef ks_heap *h
    if s.target == IPI_ALL:
        lo, hi = 0, n
    elif s.target == IPI_ANY:
        j = <int>(s.gen.next_double(s.gen.state) * (n - 1))
        lo = j + (j >= v.index)
        hi = lo + 1
    else:
        lo, hi = s.target, s.target + 1
    for i in range(lo, hi):
        if i == v.index:
            continue
        w = &(<ks_vcpu *>v.ctx.vcpus)[i]
        h = &w.in_posted if kind == SRC_IRQ and p.apicv else &w.in_kick
        if not heap_push(h, t + p.cost_ipi, v.ctx.ipi_seq, kind):
            v.ctx.stop = STOP_NOMEM
            return
        v.ctx.ipi_seq += 1
        c[C_IPIS_SENT] += 1
        update_next(w, p)

cdef inline int64_t next_send(const ks_vcpu *v) noexcept nogil:
    # The earliest time this vCPU can still send an IPI (NEVER: it sends none)
    cdef int64_t t = NEVER
    cdef int i
    for i in range(v.n_guest):
        if v.guest[i].kind == SRC_IPI or v.guest[i].kind == SRC_IPI_NMI:
            t = min64(t, max64(v.guest[i].next_t, v.now))
    return t

cdef inline void guest_event(ks_vcpu *v, const ks_params *p, ks_source *s, int64_t t,
                             int64_t *c) noexcept nogil:
    cdef int kind = s.kind
    if kind == SRC_EMUL_PMI:
        # kvm_pmu_trigger_event -> kvm_pmu_request_counter_reprogram; before 68fb4757e867
        # the counter is reprogrammed and overflows at once
        if p.pmu_request:
            v.pmu_reprogram = 1
            v.emul_overflow = 1
            make_request(v, BIT_PMU)
        else:
            perf_overflow(v, c)
        v.exit_slow = 1
    elif kind == SRC_TIMER:
        # VMX preemption timer: handle_fastpath_preemption_timer -> apic_timer_expired(false).
        # With APICv the interrupt is posted; without, lapic_timer.pending and
        # KVM_REQ_UNBLOCK, which ends the fastpath loop (vcpu_run injects the interrupt).
        if p.apicv:
            accept_irq(v, p, 1, c)
        else:
            v.timer_pending = 1
            make_request(v, BIT_UNBLOCK)
        v.exit_fast = 1
    elif kind == SRC_IPI_NMI:           # ICR write, APIC_DM_NMI: a full exit
        send_ipi(v, p, s, t, c)
        v.exit_slow = 1
    elif kind == SRC_IPI:               # x2APIC ICR write, APIC_DM_FIXED
        send_ipi(v, p, s, t, c)
        if event_exits(v, p, s):        # handle_fastpath_set_x2apic_icr_irqoff: no shorthand
            if p.fastpath_reenter and s.target != IPI_ALL:
                v.exit_fast = 1
            else:
                v.exit_slow = 1
    elif kind == SRC_IPI_SELF:          # x2APIC SELF IPI write (APICv: no exit)
        accept_irq(v, p, 1, c)
        v.exit_slow = 1
    elif kind == SRC_HLT:
        v.hlt_due = 1                   # runs once the rest of this instant has
        v.if_off = 1
    else:                               # SRC_EXIT: the guest's own exit
        v.exit_slow = 1

cdef void apply_guest(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c) noexcept nogil:
    # Guest-side events at or before t, at a VM-exit at t (one handler access at a time).
    cdef int i
    cdef int64_t eff
    cdef ks_source *s
    if v.nmi_blocked and v.op_next < v.op_n and v.op_at <= t:
        op(v, p, c)
        v.exit_slow = 1
    if end_handlers(v, p, t, c):
        v.exit_slow = 1
    for i in range(v.n_guest):
        s = &v.guest[i]
        if s.kind == SRC_PMI:
            while max64(s.next_t, v.entry_t) <= t:
                eff = max64(s.next_t, v.entry_t) + p.pmi_skid_ns
                if eff <= t:            # the NMI hit the guest: exit context
                    overflow(v, c)
                    v.exit_slow = 1
                else:                   # the exit came first: the NMI is in flight
                    v.pmi_nmi_at = min64(v.pmi_nmi_at, eff)
                    v.pmi_nmi_n += 1
                source_step(s)
            continue
        while s.next_t <= t:
            guest_event(v, p, s, t, c)
            source_step(s)
    if v.hlt_due:
        hlt(v, p, c)
    v.next_kick = min64(v.next_kick, v.pmi_nmi_at)   # a host NMI now in flight

cdef void apply_in_guest(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c,
                         tracing *tr) noexcept nogil:
    # Guest-side events at or before t that need no VM-exit (an IPI with IPIv; STI;HLT,
    # which becomes hlt_due), handler ends, posted interrupts; then what the CPU delivers.
    # An hlt_due still set here ran on without an exit (Idle HLT).
    cdef int i
    cdef ks_source *s
    end_handlers(v, p, t, c)
    apply_posted(v, p, t, c, tr)
    v.hlt_due = 0
    v.if_off = 0
    for i in range(v.n_guest):
        s = &v.guest[i]
        if s.kind != SRC_IPI_SELF and s.kind != SRC_HLT and s.kind != SRC_IPI:
            continue
        if event_exits(v, p, s):
            continue                    # (its exit takes it; never an HLT's)
        while s.next_t <= t:
            if s.kind == SRC_IPI_SELF:
                accept_irq(v, p, 1, c)
            elif s.kind == SRC_IPI:
                send_ipi(v, p, s, t, c)
            else:
                v.hlt_due = 1
                v.if_off = 1
            source_step(s)
    hardware_deliver(v, p, t, c)


# --- handlers of vcpu_enter_guest() -------------------------------------------------------
cdef inline void process_nmi(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c,
                             tracing *tr) noexcept nogil:
    # process_nmi: limit 2, or 1 if NMIs are masked or one is injected, one fewer while
    # V_NMI_PENDING holds one; excess dropped. With vNMI one goes to V_NMI_PENDING.
    # KVM_REQ_EVENT: always (before 2cb9317377ca) or only if an NMI is pending.
    cdef int64_t limit = 1 if (v.nmi_blocked or v.nmi_injected) else 2
    if v.vnmi_pending:
        limit -= 1
    v.nmi_pending += v.nmi_queued
    v.nmi_queued = 0
    if v.nmi_pending > limit:
        if tracing is traced:
            hook(v, t, T_NMI_DROP, v.nmi_pending - limit, limit)
        c[C_NMIS_DROPPED] += v.nmi_pending - limit
        v.nmi_pending = limit
    if v.nmi_pending and p.vnmi and not v.vnmi_pending:   # svm_set_vnmi_pending
        v.vnmi_pending = 1
        v.nmi_pending -= 1
    if v.nmi_pending or p.nmi_event_always:
        make_request(v, BIT_EVENT)

cdef void inject_events(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c,
                        tracing *tr) noexcept nogil:
    # kvm_check_and_inject_events: re-injection, then SMI > NMI > IRQ; -EBUSY sets
    # req_immediate_exit. Posted interrupts (APICv) are the CPU's to deliver; with vNMI no
    # NMI window is opened.
    cdef bint can_inject = 1
    if v.nmi_injected:
        v.entry_event = ENTRY_NMI
        can_inject = 0
    elif v.irq_injected:
        v.entry_event = ENTRY_IRQ
        can_inject = 0
    if v.smi_pending:
        if not can_inject:
            v.req_immediate_exit = 1
            return
        v.smi_pending = 0               # enter_smm
        c[C_SMIS_INJECTED] += 1
        can_inject = 0
    if v.nmi_pending:
        if not can_inject:
            v.req_immediate_exit = 1
            return
        if not v.nmi_blocked:           # nmi_allowed
            if tracing is traced:
                hook(v, t, T_INJ_NMI, 0, 0)
            v.nmi_pending -= 1
            v.nmi_injected = 1
            v.entry_event = ENTRY_NMI
            can_inject = 0
        if v.nmi_pending and not p.vnmi:
            v.nmi_window = 1            # enable_nmi_window
    if v.irq_pending and not p.apicv:
        if not can_inject:
            v.req_immediate_exit = 1
            return
        if allowed(v):                  # interrupt_allowed
            if tracing is traced:
                hook(v, t, T_INJ_VIRQ, 0, 0)
            v.irq_pending = 0
            v.irq_injected = 1
            v.entry_event = ENTRY_IRQ
        else:
            v.irq_window = 1            # enable_irq_window

cdef inline void handle(ks_vcpu *v, const ks_params *p, int bit, int64_t t, int64_t *c,
                        tracing *tr) noexcept nogil:
    cdef int h = p.handler[bit]
    if h == H_NOOP:
        if p.raises[bit]:
            v.requests |= p.raises[bit]
    elif h == H_NMI:
        process_nmi(v, p, t, c, tr)
    elif h == H_PMU:
        # kvm_pmu_handle_event: reprogram; an emulated wrap overflows the counter
        v.pmu_reprogram = 0
        if v.emul_overflow:
            v.emul_overflow = 0
            perf_overflow(v, c)
    elif h == H_PMI:
        deliver_pmi(v, p, c)
    elif h == H_SMI:
        v.smi_pending = 1               # process_smi
        make_request(v, BIT_EVENT)
    else:
        inject_events(v, p, t, c, tr)


# --- one pass of vcpu_enter_guest() -------------------------------------------------------
cdef inline uint64_t ranks_from(const ks_vcpu *v, const ks_params *p, int pos) noexcept nogil:
    # The pending requests as a mask over check positions >= pos.
    cdef uint64_t x = v.requests, rm = 0
    cdef int r
    while x:
        r = p.rank[ctz(x)]
        x &= x - 1
        if r >= pos and r < p.n_checks:
            rm |= (<uint64_t>1) << r
    return rm

cdef inline bint exit_request(const ks_vcpu *v) noexcept nogil:
    # kvm_vcpu_exit_request: kicked, any request, or xfer_to_guest_mode work
    return v.requests != 0 or v.xfer or v.mode == EXITING_GUEST_MODE

cdef inline int64_t vcpu_run_tail(ks_vcpu *v, const ks_params *p, int64_t t,
                                  int64_t *c) noexcept nogil:
    # vcpu_run() after vcpu_enter_guest() returned 1: clear KVM_REQ_UNBLOCK, inject the LAPIC
    # timer's interrupt (kvm_inject_pending_timer_irqs), handle task work
    # (xfer_to_guest_mode_handle_work). Returns when the next pass can start.
    v.requests &= ~((<uint64_t>1) << BIT_UNBLOCK)
    if v.timer_pending:
        v.timer_pending = 0
        accept_irq(v, p, 1, c)
    if v.xfer:
        v.xfer = 0
        c[C_TASK_WORK] += 1
        c[C_NS_TASK_WORK] += p.cost_task_work
        t += p.cost_task_work
    return t

cdef void enter(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c) noexcept nogil:
    # The guest runs from t: handlers the last VM-exit interrupted resume (their times are
    # guest time); the written event is delivered (its handler starts), then what the CPU
    # delivers by itself; the guest's next own exit is drawn.
    cdef int64_t paused = t - v.exit_t
    if v.nmi_blocked:
        v.nmi_end += paused
        if v.op_at != NEVER:
            v.op_at += paused
    if v.irq_blocked:
        v.irq_end += paused
    if v.entry_event == ENTRY_NMI:
        c[C_NMIS_INJECTED] += 1
        v.nmi_injected = 0
        nmi_start(v, p, t, c)
    elif v.entry_event == ENTRY_IRQ:
        c[C_IRQS_INJECTED] += 1
        v.irq_injected = 0
        v.irq_blocked = 1
        v.irq_end = t + p.irq_handler_ns
    v.entry_event = ENTRY_NONE
    hardware_deliver(v, p, t, c)
    if p.guest_exit_mean_ns > 0:
        v.guest_exit_at = after(t, random_standard_exponential(&v.exit_gen)
                                * p.guest_exit_mean_ns)
    v.entry_t = t
    v.guest_since = t

cdef enum:
    PASS_ENTERED, PASS_CANCELLED, PASS_SUSPENDED

cdef int64_t one_pass(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c, int *outcome,
                      int64_t horizon, tracing *tr) noexcept nogil:
    # One pass from t, or the rest of the suspended one (ps_*); it stops before anything at
    # or after `horizon` (a coupled run: an IPI may still arrive then).
    cdef int n = p.n_checks, pos, r, bit
    cdef int64_t t0, t_r, ta, passed, cost, event_ns
    cdef uint64_t rm, before, x, raised   # raised: bits this pass's handlers raised
    cdef bint late
    if v.ps_active:
        v.ps_active = 0
        pos, raised, t0, event_ns, late = v.ps_pos, v.ps_raised, v.ps_t0, v.ps_event_ns, v.ps_late
    else:
        apply_host(v, p, t, c, 0, tr)
        v.req_immediate_exit = 0
        # if (kvm_request_pending(vcpu)) { ... }; the EVENT check follows the block
        pos = 0 if v.requests else n - 1
        raised, t0, event_ns, late = 0, t, 0, 0
    while not late:
        rm = ranks_from(v, p, pos)
        r = ctz(rm) if rm else n
        t_r = t + (r - pos) * p.cost_check
        ta = next_host(v)
        if t >= horizon or min64(ta, t_r) >= horizon:
            v.ps_active, v.ps_late = 1, 0
            v.ps_pos, v.ps_raised, v.ps_t0, v.ps_event_ns = pos, raised, t0, event_ns
            outcome[0] = PASS_SUSPENDED
            return t
        if ta <= t_r:
            # arrivals land among the checks: those that started before them have run
            if ta > t and p.cost_check:
                passed = (ta - t + p.cost_check - 1) // p.cost_check
                pos += <int>passed
                t += passed * p.cost_check
            apply_host(v, p, t, c, 0, tr)
            continue
        if r == n:
            t = t_r
            c[C_NS_REQUESTS] += t - t0 - event_ns
            c[C_NS_EVENT] += event_ns
            late = 1
            break
        bit = p.order[r]
        if tracing is traced:
            hook(v, t_r, T_CHECK_REQUEST, bit, r)
        v.requests &= ~((<uint64_t>1) << bit)    # kvm_check_request: clear, then handle
        c[C_REQUESTS_BASE + bit] += 1
        cost = p.handler_ns[bit]
        if bit == BIT_EVENT:
            event_ns += cost
        t = t_r + p.cost_check + cost
        pos = r + 1
        before = v.requests
        handle(v, p, bit, t_r, c, tr)
        raised = (raised & ~((<uint64_t>1) << bit)) | (v.requests & ~before)
    # kvm_mmu_reload .. smp_store_release(mode, IN_GUEST_MODE) .. kvm_vcpu_exit_request()
    if t + p.cost_state_load >= horizon:
        v.ps_active, v.ps_late = 1, 1
        v.ps_pos, v.ps_raised, v.ps_t0, v.ps_event_ns = pos, raised, t0, event_ns
        outcome[0] = PASS_SUSPENDED
        return t
    t += p.cost_state_load
    c[C_NS_STATE_LOAD] += p.cost_state_load
    v.mode = IN_GUEST_MODE
    apply_host(v, p, t, c, 0, tr)
    c[C_VMENTER_ATTEMPTS] += 1
    if tracing is traced:
        hook(v, t, T_CANCEL if exit_request(v) else T_ENTRY, 0, <int64_t>v.requests)
    if exit_request(v):
        # cancel_injection: vmx_cancel_injection puts the written event back as injected
        v.mode = OUTSIDE_GUEST_MODE
        c[C_CANCELED_VMENTERS] += 1
        x = v.requests
        if not x:
            c[C_CANCELS_TASK_WORK] += 1
        while x:                        # what each pending bit cost, and how
            bit = ctz(x)
            x &= x - 1
            c[(C_CANCEL_BACKEDGE_BASE if (raised >> bit) & 1 else C_CANCEL_ASYNC_BASE)
              + bit] += 1
        t += p.cost_cancel
        c[C_NS_CANCEL] += p.cost_cancel
        if v.entry_event != ENTRY_NONE or v.req_immediate_exit:
            make_request(v, BIT_EVENT)
        v.entry_event = ENTRY_NONE
        outcome[0] = PASS_CANCELLED
        return vcpu_run_tail(v, p, t, c)
    if v.req_immediate_exit:            # raised after the late check: no cancel
        make_request(v, BIT_EVENT)
    v.immediate_exit = v.req_immediate_exit
    t += p.cost_vmenter
    c[C_NS_VMENTER] += p.cost_vmenter
    c[C_VMENTERS] += 1
    enter(v, p, t, c)
    outcome[0] = PASS_ENTERED
    return t

cdef inline bint runnable(const ks_vcpu *v, const ks_params *p) noexcept nogil:
    # kvm_vcpu_check_block: kvm_vcpu_has_events (an interrupt IF allows, an NMI, an SMI,
    # KVM_REQ_PMI since 73554b29bd70), KVM_REQ_UNBLOCK, the timer, a signal
    return ((v.irq_pending and not v.if_off) or v.nmi_pending or v.vnmi_pending
            or v.smi_pending or test_request(v, BIT_NMI) or test_request(v, BIT_SMI)
            or test_request(v, BIT_UNBLOCK)
            or (test_request(v, BIT_PMI) and not p.pmi_irq_work)
            or v.timer_pending)

cdef inline int64_t halted_work(ks_vcpu *v, const ks_params *p, int64_t *c) noexcept nogil:
    # Task work while blocked: vcpu_block() returns to vcpu_run(), which handles it and
    # blocks again (the vCPU stays halted). Returns the time it took.
    if not v.xfer:
        return 0
    v.xfer = 0
    c[C_TASK_WORK] += 1
    c[C_NS_TASK_WORK] += p.cost_task_work
    return p.cost_task_work

cdef int exit_reason(const ks_vcpu *v, const ks_params *p, int64_t t) noexcept nogil:
    # Why the guest exits at t (VMX exit-reason names), for trace hooks.
    cdef int i, kind
    if v.immediate_exit:
        return R_PREEMPTION_TIMER
    if v.next_kick <= t or v.mode == EXITING_GUEST_MODE:
        return R_EXTERNAL_INTERRUPT
    if v.hlt_due:
        return R_HLT
    for i in range(v.n_guest):
        kind = v.guest[i].kind
        if not event_exits(v, p, &v.guest[i]):
            continue
        # an overflow exits when its host NMI lands, pmi_skid later
        if max64(v.guest[i].next_t, v.entry_t) <= t - (p.pmi_skid_ns if kind == SRC_PMI else 0):
            if kind == SRC_PMI:
                return R_EXCEPTION_NMI
            if kind == SRC_EMUL_PMI:
                return R_EPT_MISCONFIG
            if kind == SRC_TIMER:
                return R_PREEMPTION_TIMER
            if kind == SRC_IPI_SELF or kind == SRC_IPI or kind == SRC_IPI_NMI:
                return R_ICR_WRITE
            return R_GUEST
    if v.guest_exit_at <= t:
        return R_GUEST
    if v.nmi_blocked and v.op_next < v.op_n:
        return R_MSR_WRITE
    if v.nmi_blocked and v.nmi_end <= t:
        return R_NMI_WINDOW if v.nmi_window else R_IRET
    if v.irq_window:
        return R_INTERRUPT_WINDOW
    return R_NMI_WINDOW if v.nmi_window else R_MSR_WRITE

cdef enum:
    OUT_PASS, OUT_REENTERED, OUT_HALTED

cdef inline int vm_exit(ks_vcpu *v, const ks_params *p, int64_t *t_io, int64_t *c,
                        tracing *tr) noexcept nogil:
    # A VM-exit at t and its handling; t_io becomes when that handling ends. Returns what
    # follows: a pass, the fastpath's re-entry, or kvm_vcpu_block after HLT.
    cdef int64_t t = t_io[0]
    cdef int reason = 0
    cdef bint halt
    if tracing is traced:
        reason = exit_reason(v, p, t)
    # A kick, or req_immediate_exit, makes this exit a full one (and interrupts a HLT the
    # guest had not reached).
    v.exit_fast = 0
    v.exit_slow = v.mode == EXITING_GUEST_MODE or v.next_kick <= t or v.immediate_exit
    v.exit_t = t
    v.mode = OUTSIDE_GUEST_MODE
    c[C_VMEXITS] += 1
    if v.immediate_exit:
        c[C_IMMEDIATE_EXITS] += 1
        v.immediate_exit = 0
    apply_guest(v, p, t, c)
    apply_host(v, p, t, c, 1, tr)
    if tracing is traced:
        hook(v, t, T_EXIT, reason, <int64_t>v.requests)
    c[C_NS_VMEXIT] += p.cost_vmexit
    t += p.cost_vmexit
    halt = v.hlt_exit
    if halt:                            # kvm_emulate_halt
        v.hlt_exit = 0
        c[C_HALT_EXITS] += 1
    if v.exit_fast and not v.exit_slow and (not halt or runnable(v, p)) \
            and not exit_request(v):
        # EXIT_FASTPATH_REENTER_GUEST: back in without a pass (kvm_vcpu_exit_request guards
        # it; a request ends the loop without a cancel)
        c[C_FASTPATH_EXITS] += 1
        c[C_VMENTER_ATTEMPTS] += 1
        c[C_VMENTERS] += 1
        c[C_NS_VMENTER] += p.cost_vmenter
        t += p.cost_vmenter
        v.mode = IN_GUEST_MODE
        enter(v, p, t, c)
        t_io[0] = t
        return OUT_REENTERED
    t_io[0] = vcpu_run_tail(v, p, t, c)
    return OUT_HALTED if halt else OUT_PASS

cdef inline bint passes(ks_vcpu *v, const ks_params *p, int64_t *until,
                        tracing *tr) noexcept nogil:
    # Passes (vcpu_run's loop) from pass_at until a VM-Enter completes: true; or until
    # `until` comes first, as it does while every entry keeps being cancelled: false.
    cdef int64_t t = v.pass_at
    # a coupled run stops every pass at `until`: an IPI may still arrive after it
    cdef int64_t horizon = until[0] if p.coupled else NEVER
    cdef int outcome
    while True:
        until[0] = poll(v, t, until[0])
        if t >= until[0]:
            break
        # the counts of a pass go to the interval it started in
        t = one_pass(v, p, t, row(v, p, v.ps_t0 if v.ps_active else t), &outcome, horizon, tr)
        if outcome == PASS_ENTERED:
            v.in_host = 0
            return 1
        if outcome == PASS_SUSPENDED:
            break
        if v.requests & p.unconsumable:
            store32(&v.ctx.stop, STOP_UNCONSUMABLE, RELAXED)
            until[0] = t
    v.pass_at = t
    return 0

cdef inline int64_t next_hv_timer(const ks_vcpu *v) noexcept nogil:
    # A guest timer on the VMX preemption timer: while blocked, a host hrtimer.
    cdef int64_t t = NEVER
    cdef int i
    for i in range(v.n_guest):
        if v.guest[i].kind == SRC_TIMER and v.guest[i].next_t < t:
            t = v.guest[i].next_t
    return t

cdef inline bint blocked(ks_vcpu *v, const ks_params *p, int64_t *until,
                         tracing *tr) noexcept nogil:
    # After HLT: kvm_vcpu_halt -> kvm_vcpu_check_block with what has arrived by then
    # (runnable: the next pass at once); else blocked in kvm_vcpu_block(), where host
    # arrivals may wake it. False when `until` comes first; true once it is runnable again
    # (the next pass is then due at pass_at).
    cdef int64_t t
    cdef int64_t *c
    cdef int i
    if not v.halt_checked:
        t = v.halt_since
        until[0] = poll(v, t, until[0])
        if t >= until[0]:
            return 0
        c = row(v, p, t)
        apply_host(v, p, t, c, 0, tr)
        v.halt_checked = 1
        v.halt_since += halted_work(v, p, c)
        if runnable(v, p):
            v.halted = 0
            v.pass_at = v.halt_since
            v.in_host = 1
            return 1
        if tracing is traced:
            hook(v, t, T_HALT, 1, 0)
    while True:
        # (a timer due while the HLT exit was handled fires as the block starts)
        t = max64(min64(next_host(v), next_hv_timer(v)), v.halt_since)
        until[0] = poll(v, t, until[0])
        if t >= until[0]:
            add_span(v, p, C_NS_HALTED, v.halt_since, until[0])
            if until[0] > v.halt_since:
                v.halt_since = until[0]
            return 0
        add_span(v, p, C_NS_HALTED, v.halt_since, t)
        v.halt_since = t
        c = row(v, p, t)
        apply_host(v, p, t, c, 0, tr)
        for i in range(v.n_guest):      # kvm_lapic_switch_to_sw_timer
            if v.guest[i].kind == SRC_TIMER and v.guest[i].next_t <= t:
                source_advance(&v.guest[i], t)
                arrive(v, p, SRC_TIMER, 0, 1, c, t, tr)
        v.halt_since += halted_work(v, p, c)
        if runnable(v, p):
            v.halted = 0
            if tracing is traced:
                hook(v, t, T_HALT, 0, 0)
            v.pass_at = vcpu_run_tail(v, p, v.halt_since, c)
            v.in_host = 1
            return 1

cdef inline void run_vcpu(ks_vcpu *v, const ks_params *p, int64_t until,
                          tracing *tr) noexcept nogil:
    cdef int64_t tk, tp, tg, t
    cdef bint exits
    cdef int outcome
    if until <= v.now:                  # stopped past it by an earlier, interrupted run
        return
    while True:
        if v.in_host and not passes(v, p, &until, tr):
            v.now = until
            return
        if v.halted:
            if not blocked(v, p, &until, tr):
                v.now = until
                return
            continue
        tk = v.next_kick                # a kick in guest mode: IPI -> VM-exit
        if v.mode == EXITING_GUEST_MODE and v.now < tk:
            tk = v.now                  # kicked between runs (ks_post)
        tk = max64(tk, v.guest_since)
        tp = max64(v.next_posted, v.guest_since)
        tg = next_guest_event(v, p, &exits)
        t = min64(min64(tk, tp), tg)
        if t >= until:
            add_guest_time(v, p, until)
            v.now = until
            return
        add_guest_time(v, p, t)
        if t == tk or (t == tg and exits):
            outcome = vm_exit(v, p, &t, row(v, p, t), tr)
            if outcome == OUT_PASS:
                v.pass_at = t
                v.in_host = 1
            elif outcome == OUT_HALTED:
                v.halted = 1
                v.halt_checked = 0
                v.halt_since = t
        else:
            apply_in_guest(v, p, t, row(v, p, t), tr)


cdef void ks_vcpu_run(ks_vcpu *v, const ks_params *p, int64_t until) noexcept nogil:
    if v.hook != NULL:
        run_vcpu(v, p, until, <traced *>NULL)
    else:
        run_vcpu(v, p, until, <untraced *>NULL)


cdef void run_coupled(ks_vcpu *vcpus, int n, const ks_params *p, ks_ctx *ctx,
                      int64_t until) noexcept nogil:
    # vCPUs that send each other IPIs, in one time order: conservative lookahead. A vCPU
    # may run to the earliest time another can still send plus cost_ipi: nothing can then
    # reach it in its past. Each round moves the earliest sender past its send.
    cdef int i, first
    cdef int64_t send, best, second, other, bound
    cdef bint done
    while True:
        first, best, second = 0, NEVER, NEVER
        for i in range(n):
            send = next_send(&vcpus[i])
            if send < best:
                first, best, second = i, send, best
            elif send < second:
                second = send
        done = 1
        for i in range(n):
            other = second if i == first else best
            bound = until if other == NEVER else min64(until, other + p.cost_ipi)
            if bound > vcpus[i].now:
                ks_vcpu_run(&vcpus[i], p, bound)
                if ctx.stop != STOP_DONE:
                    return
            done = done and vcpus[i].now >= until
        if done:
            return


# --- the C API (_core.pxd) ---------------------------------------------------------------------
cdef void lock(ks_rlock *l) noexcept nogil:
    # A thread that holds it takes it again (a trace hook that posts during a run).
    cdef unsigned long me = PyThread_get_thread_ident()
    if atomic_load(&l.owner, RELAXED) == me:
        l.depth += 1
        return
    fetch_add32(&l.waiting, 1, RELAXED)
    PyThread_acquire_lock(l.lock, 1)
    fetch_add32(&l.waiting, -1, RELAXED)
    atomic_store(&l.owner, me, RELAXED)
    l.depth = 1

cdef void lock_after_waiters(ks_rlock *l) noexcept nogil:
    # A run takes the lock after the posts that wait for it (the lock itself is not fair):
    # a thread that runs slice after slice would keep them out.
    cdef int spins = 0
    while load32(&l.waiting, RELAXED) > 0 and spins < 10000:
        sched_yield()
        spins += 1
    lock(l)

cdef void unlock(ks_rlock *l) noexcept nogil:
    l.depth -= 1
    if l.depth == 0:
        atomic_store(&l.owner, 0, RELAXED)
        PyThread_release_lock(l.lock)

cdef inline bint bad_vcpu(ks_engine *e, int32_t vcpu) noexcept nogil:
    return vcpu < 0 or vcpu >= e.n_vcpus

cdef int ks_post(ks_engine *e, int32_t vcpu, int32_t bit, int32_t and_kick) noexcept nogil:
    cdef int kicked = 0
    if bad_vcpu(e, vcpu) or bit < 0 or bit >= N_BITS:
        return -1
    lock(&e.lock)
    make_request(&e.vcpus[vcpu], bit)       # kvm_make_request
    if and_kick:
        kicked = kick(&e.vcpus[vcpu])       # kvm_vcpu_kick
    unlock(&e.lock)
    return kicked

cdef int ks_inject(ks_engine *e, int32_t vcpu, int32_t kind, int64_t count) noexcept nogil:
    cdef ks_vcpu *v
    cdef int kicked
    cdef int64_t at
    if bad_vcpu(e, vcpu) or count < 1 or not (kind == SRC_NMI or kind == SRC_IRQ
                                              or kind == SRC_PMI):
        return -1
    lock(&e.lock)
    v = &e.vcpus[vcpu]
    at = max64(v.now, v.t_hook)             # from a trace hook: at its event
    if kind == SRC_NMI:                     # kvm_inject_nmi + kick
        v.ext_nmi += count
        v.ext_nmi_at = min64(v.ext_nmi_at, at)
    elif kind == SRC_IRQ:                   # kvm_apic_set_irq: posted, or IRR + kick
        v.ext_irq += count
        v.ext_irq_at = min64(v.ext_irq_at, at)
    else:                                   # kvm_perf_overflow: the host's NMI
        v.pmi_nmi_n += count
        v.pmi_nmi_at = min64(v.pmi_nmi_at, at)
    update_next(v, e.params)
    kicked = 0 if kind == SRC_IRQ and e.params.apicv else kick(v)
    unlock(&e.lock)
    return kicked

cdef int64_t next_event(const ks_vcpu *v, const ks_params *p) noexcept nogil:
    cdef bint exits
    cdef int64_t tk
    if v.in_host:
        return max64(v.pass_at, v.now)
    if v.halted:
        if not v.halt_checked:
            return max64(v.halt_since, v.now)
        return max64(max64(min64(next_host(v), next_hv_timer(v)), v.halt_since), v.now)
    tk = v.next_kick
    if v.mode == EXITING_GUEST_MODE:
        tk = v.now
    return max64(min64(min64(tk, v.next_posted), next_guest_event(v, p, &exits)),
                 max64(v.guest_since, v.now))

cdef int64_t ks_next_event(ks_engine *e, int32_t vcpu) noexcept nogil:
    cdef int64_t t
    if bad_vcpu(e, vcpu):
        return -1
    lock(&e.lock)
    t = next_event(&e.vcpus[vcpu], e.params)
    unlock(&e.lock)
    return t

# vCPUs that send each other no IPIs run in parallel: a team of threads takes them in
# index order. The counts are the same as in one thread: each vCPU's run is its own.
ctypedef struct ks_team:
    ks_engine *e
    int64_t until
    int32_t next          # the next vCPU to take (atomic)

ctypedef struct ks_worker:
    ks_team *team
    void *done            # released when the worker has no vCPU left

cdef void team_work(ks_team *team) noexcept nogil:
    cdef int32_t i
    while load32(&team.e.ctx.stop, RELAXED) == STOP_DONE:
        i = fetch_add32(&team.next, 1, RELAXED)
        if i >= team.e.n_vcpus:
            return
        ks_vcpu_run(&team.e.vcpus[i], team.e.params, team.until)

cdef void team_thread(void *arg) noexcept nogil:
    cdef ks_worker *w = <ks_worker *>arg
    team_work(w.team)
    PyThread_release_lock(w.done)

cdef void run_team(ks_engine *e, int64_t until, int threads) noexcept nogil:
    cdef ks_team team
    cdef ks_worker *workers = <ks_worker *> calloc(threads, sizeof(ks_worker))
    cdef int k, started = 0
    team.e, team.until, team.next = e, until, 0
    if workers != NULL:
        for k in range(threads - 1):      # the calling thread is the last worker
            workers[k].team = &team
            workers[k].done = PyThread_allocate_lock()
            if workers[k].done == NULL:
                break
            PyThread_acquire_lock(workers[k].done, 1)
            if PyThread_start_new_thread(team_thread, &workers[k]) == <unsigned long>-1:
                PyThread_release_lock(workers[k].done)
                PyThread_free_lock(workers[k].done)
                break
            started += 1
    team_work(&team)
    for k in range(started):
        PyThread_acquire_lock(workers[k].done, 1)
        PyThread_release_lock(workers[k].done)
        PyThread_free_lock(workers[k].done)
    free(workers)

cdef int run_locked(ks_engine *e, int64_t until, int64_t *counts, int64_t first,
                    int64_t n_intervals) noexcept nogil:
    # With the lock held: every vCPU to `until`, into counts[vcpu][interval - first][...].
    # A VM whose vCPUs send IPIs runs in one thread (conservative lookahead: its rounds
    # are cost_ipi long, too short to pay for a barrier), and so does a traced one.
    cdef int i
    cdef ks_vcpu *v
    if until > 0 and (until - 1) // e.params.interval_ns - first >= n_intervals:
        return -1
    for i in range(e.n_vcpus):              # nothing may count into an interval before first
        v = &e.vcpus[i]
        if (v.ps_t0 if v.ps_active else v.now) // e.params.interval_ns < first:
            return -1
    e.ctx.stop = STOP_DONE
    for i in range(e.n_vcpus):
        e.vcpus[i].counts = counts + i * n_intervals * C_COLUMNS
        e.vcpus[i].first = first
        e.vcpus[i].row_end = 0              # the window moved: find rows anew
    if e.params.coupled:
        run_coupled(e.vcpus, e.n_vcpus, e.params, e.ctx, until)
    elif e.threads > 1 and e.n_vcpus > 1 and e.vcpus[0].hook == NULL:
        run_team(e, until, min(e.threads, e.n_vcpus))
    else:
        for i in range(e.n_vcpus):
            ks_vcpu_run(&e.vcpus[i], e.params, until)
            if e.ctx.stop != STOP_DONE:
                break
    return e.ctx.stop

cdef int ks_run(ks_engine *e, int64_t until, int64_t *counts, int64_t first,
                int64_t n_intervals) noexcept nogil:
    cdef int stop
    if counts == NULL or first < 0 or n_intervals < 1:
        return -1
    lock_after_waiters(&e.lock)
    e.ctx.poll = NULL
    stop = run_locked(e, until, counts, first, n_intervals)
    unlock(&e.lock)
    return stop

cdef enum:
    READ_MODE, READ_REQUESTS, READ_NOW

cdef int64_t read_vcpu(ks_engine *e, int32_t vcpu, int what, int64_t bad) noexcept nogil:
    # one field of a vCPU, read under the engine's lock; `bad` for a bad index
    cdef int64_t out
    cdef ks_vcpu *v
    if bad_vcpu(e, vcpu):
        return bad
    lock(&e.lock)
    v = &e.vcpus[vcpu]
    out = v.mode if what == READ_MODE else (
        <int64_t>v.requests if what == READ_REQUESTS else v.now)
    unlock(&e.lock)
    return out

cdef int ks_mode(ks_engine *e, int32_t vcpu) noexcept nogil:
    return <int>read_vcpu(e, vcpu, READ_MODE, -1)

cdef uint64_t ks_requests(ks_engine *e, int32_t vcpu) noexcept nogil:
    return <uint64_t>read_vcpu(e, vcpu, READ_REQUESTS, 0)

cdef int64_t ks_now(ks_engine *e, int32_t vcpu) noexcept nogil:
    return read_vcpu(e, vcpu, READ_NOW, -1)

cdef int ks_set_hook(ks_engine *e, ks_hook hook, void *ctx) noexcept nogil:
    cdef int i
    lock(&e.lock)
    for i in range(e.n_vcpus):
        e.vcpus[i].hook = hook
        e.vcpus[i].hook_ctx = ctx
    unlock(&e.lock)
    return 0


# --- Python side --------------------------------------------------------------------------
cdef bitgen_t *_bitgen(object bg) except NULL:
    return <bitgen_t *> PyCapsule_GetPointer(bg.capsule, "BitGenerator")


cdef void _py_hook(void *ctx, int64_t t, int32_t vcpu, int32_t event, int64_t a,
                   int64_t b) noexcept nogil:
    with gil:
        _call_hook(<Engine>ctx, t, vcpu, event, a, b)


cdef int32_t _py_poll(void *ctx) noexcept nogil:
    with gil:
        return _poll(<Engine>ctx)


cdef int32_t _poll(Engine e):
    # Ctrl-C: the C loop holds no GIL, so Python's signal handlers run only when asked to.
    try:
        PyErr_CheckSignals()
    except BaseException as error:
        e._hook_error = error
    if e._hook_error is not None or (e._stop_event is not None and e._stop_event.is_set()):
        return STOP_INTERRUPTED
    return STOP_DONE


cdef void _call_hook(Engine e, int64_t t, int32_t vcpu, int32_t event, int64_t a, int64_t b):
    # A hook that raises stops the run at the next poll point; run() re-raises it.
    try:
        e._hook(t, vcpu, event, a, b)
    except BaseException as error:
        if e._hook_error is None:
            e._hook_error = error
        e.ctx.stop = STOP_INTERRUPTED
        e.vcpus[vcpu].budget = 1


cdef void _init_source(list keep, ks_source *s, sp, seed, bint posted):
    cdef const int64_t[::1] times = sp.times_ns
    s.posted = posted
    s.kind = sp.kind
    s.dist = sp.dist
    s.bit = sp.bit
    s.target = sp.target
    s.mean_ns = sp.mean_ns
    s.period_ns = sp.period_ns
    s.ntimes = len(sp.times_ns)
    s.times = &times[0] if s.ntimes else NULL
    s.idx = 0
    bg = bit_generator(seed, sp.spawn_key)
    keep += [bg, sp.times_ns]
    s.gen = _bitgen(bg)[0]
    if s.dist == DIST_POISSON:
        s.next_t = after(0, random_standard_exponential(&s.gen) * s.mean_ns)
    elif s.dist == DIST_PERIODIC:
        s.next_t = sp.start_ns + s.period_ns
    else:
        s.next_t = s.times[0] if s.ntimes else NEVER


cdef bint _kicked(int kicked, str field, value, str why) except -1:
    # ks_post's and ks_inject's answer: whether a kick was sent, or the argument they refused
    if kicked < 0:
        raise ValueError(f"{field} {value} {why}")
    return kicked


cdef class Engine:
    """Owns the C state of every vCPU (declared in _core.pxd); run() holds no GIL.

    The same interface as the reference engine (kvmsim._engine.Engine)."""

    def __cinit__(self, plan, int threads=1):
        cdef int i
        cdef ks_source *s
        cdef ks_vcpu *v
        self._keep = []
        self._plan = plan
        self.params = plan.params            # dict -> struct: every _spec.PARAMS field
        self.n_vcpus = plan.vcpus
        self.vcpus = <ks_vcpu *> calloc(plan.vcpus, sizeof(ks_vcpu))
        # one empty source after each vCPU's: no cache line holds two vCPUs' sources
        self.sources = <ks_source *> calloc(len(plan.sources) + plan.vcpus, sizeof(ks_source))
        if self.vcpus == NULL or self.sources == NULL:
            raise MemoryError()
        self.ctx.vcpus = self.vcpus
        self.ctx.n_vcpus = plan.vcpus
        self.c.params, self.c.vcpus, self.c.n_vcpus = &self.params, self.vcpus, plan.vcpus
        self.c.ctx = &self.ctx
        self.c.threads = max(1, threads)
        self.c.lock.lock = PyThread_allocate_lock()
        if self.c.lock.lock == NULL:
            raise MemoryError()
        self.api.abi_version, self.api.n_vcpus = KS_ABI_VERSION, plan.vcpus
        self.api.n_columns, self.api.interval_ns = C_COLUMNS, self.params.interval_ns
        self.api.engine = &self.c
        self.api.post, self.api.inject, self.api.next_event = ks_post, ks_inject, ks_next_event
        self.api.run, self.api.mode, self.api.requests = ks_run, ks_mode, ks_requests
        self.api.now, self.api.set_hook = ks_now, ks_set_hook
        # Sources grouped per vCPU: host-side first, then guest-side, in plan order.
        by_vcpu = [[] for _ in range(plan.vcpus)]
        for sp in plan.sources:
            by_vcpu[sp.vcpu].append(sp)
        s = self.sources
        for i in range(plan.vcpus):
            v = &self.vcpus[i]
            v.index = i
            v.nmi_end = v.irq_end = v.guest_exit_at = NEVER
            v.ext_nmi_at = v.ext_irq_at = v.pmi_nmi_at = v.op_at = NEVER
            v.last_pmi_t = NO_PMI_YET
            v.in_host = 1               # KVM_RUN: the first pass starts at t = 0
            v.budget = POLL_EVERY
            v.ctx = &self.ctx
            bg = bit_generator(plan.seed, (i, 0))
            self._keep.append(bg)
            v.exit_gen = _bitgen(bg)[0]
            host = [sp for sp in by_vcpu[i] if not sp.guest]
            guest = [sp for sp in by_vcpu[i] if sp.guest]
            v.host, v.n_host = s, len(host)
            for sp in host:
                _init_source(self._keep, s, sp, plan.seed,
                             sp.kind == SRC_IRQ and self.params.apicv)
                s += 1
            v.guest, v.n_guest = s, len(guest)
            for sp in guest:
                _init_source(self._keep, s, sp, plan.seed, 0)
                s += 1
            s += 1
            update_next(v, &self.params)

    def __reduce__(self):
        # The plan rebuilds the pointers; the vCPU structs, source positions and random
        # streams carry the state. A trace hook is not pickled.
        vcpus = [PyBytes_FromStringAndSize(<char *>&self.vcpus[i], sizeof(ks_vcpu))
                 for i in range(self.n_vcpus)]
        n = len(self._plan.sources) + self.n_vcpus       # with the padding after each vCPU's
        sources = [(self.sources[i].next_t, self.sources[i].idx) for i in range(n)]
        streams = [bg.state for bg in self._keep if isinstance(bg, np.random.PCG64)]
        ipis = [[_heap_items(&self.vcpus[i].in_kick), _heap_items(&self.vcpus[i].in_posted)]
                for i in range(self.n_vcpus)]
        return _restore, (self._plan, vcpus, sources, streams, ipis, self.ctx.ipi_seq,
                          self.c.threads)

    def __dealloc__(self):
        cdef int i
        if self.c.lock.lock != NULL:
            PyThread_free_lock(self.c.lock.lock)
        if self.vcpus != NULL:
            for i in range(self.n_vcpus):
                free(self.vcpus[i].in_kick.items)
                free(self.vcpus[i].in_posted.items)
        free(self.vcpus)
        free(self.sources)

    def run(self, int64_t until_ns, int64_t[:, :, ::1] counts not None,
            int64_t first_interval, stop_event=None):
        """Advance every vCPU to until_ns, adding into counts[vcpu, interval - first, column].
        Returns a Stop code; before DONE each vCPU's `now` says how far it got."""
        if counts.shape[0] != self.n_vcpus or counts.shape[2] != C_COLUMNS:
            raise ValueError(f"counts must be int64[{self.n_vcpus}, intervals, {C_COLUMNS}]")
        if (until_ns - 1) // self.params.interval_ns - first_interval >= counts.shape[1]:
            raise ValueError("counts has fewer intervals than until_ns needs")
        cdef int64_t *base = &counts[0, 0, 0]
        cdef int64_t n = counts.shape[1]
        with nogil:
            lock_after_waiters(&self.c.lock)
        self._stop_event = stop_event
        self.ctx.poll = _py_poll
        self.ctx.poll_ctx = <void *>self
        try:
            with nogil:
                run_locked(&self.c, until_ns, base, first_interval, n)
        finally:
            self._stop_event = None
            unlock(&self.c.lock)
        if self.ctx.stop == STOP_NOMEM:
            raise MemoryError("no memory for the IPIs in flight between vCPUs")
        if self._hook_error is not None:
            error, self._hook_error = self._hook_error, None
            raise error
        return _spec.Stop(self.ctx.stop)

    def make_request(self, int vcpu, int bit, bint kick):
        """Another CPU posts request `bit` (kvm_make_request) and, with kick, kicks the vCPU
        (kvm_vcpu_kick): in guest mode it exits at `now`. Returns whether a kick was sent."""
        _check_vcpu(self, vcpu)
        cdef int kicked
        with nogil:
            kicked = ks_post(&self.c, vcpu, bit, kick)
        return _kicked(kicked, "bit", bit, "is outside 0..63")

    def inject(self, int vcpu, int kind, int64_t count=1):
        """Another CPU injects `count` NMIs or fixed IRQs (kvm_inject_nmi, kvm_apic_set_irq),
        or the host takes the NMI of a guest counter overflow (kvm_perf_overflow), at the
        vCPU's `now`. Returns whether the vCPU was kicked out of guest mode."""
        _check_vcpu(self, vcpu)
        cdef int kicked
        with nogil:
            kicked = ks_inject(&self.c, vcpu, kind, count)
        return _kicked(kicked, "kind", kind, f"with count {count} cannot be injected")

    def next_event(self, int vcpu):
        """When the vCPU next does something of its own (ns, >= its now); NEVER if never."""
        _check_vcpu(self, vcpu)
        cdef int64_t t
        with nogil:
            t = ks_next_event(&self.c, vcpu)
        return t

    def set_trace(self, hook):
        """Call hook(t_ns, vcpu, event, a, b) for each TraceEvent; None turns it off."""
        self._hook = hook
        cdef ks_hook fn = _py_hook if hook is not None else <ks_hook>NULL
        with nogil:
            ks_set_hook(&self.c, fn, <void *>self)

    @property
    def capsule(self):
        """A PyCapsule named "kvmsim.ks_api" holding this engine's ks_api (_core.pxd): the
        engine and the C API as function pointers, for C and ctypes callers. It is valid
        while this Engine lives."""
        return PyCapsule_New(&self.api, "kvmsim.ks_api", NULL)

    def state(self, int vcpu):
        """The vCPU's state (_spec.STATE_FIELDS) as a dict of ints."""
        _check_vcpu(self, vcpu)
        cdef ks_vcpu v
        with nogil:
            lock(&self.c.lock)
            v = self.vcpus[vcpu]
            unlock(&self.c.lock)
        return dict(zip(_spec.STATE_FIELDS, (
            v.now, v.mode, v.requests, v.nmi_queued, v.nmi_pending, v.nmi_injected,
            v.irq_pending, v.irq_injected, v.smi_pending, v.nmi_window, v.irq_window,
            v.lvtpc_masked, v.nmi_blocked, v.irq_blocked, v.in_host, v.vnmi_pending,
            v.halted, v.xfer, v.timer_pending, v.ps_t0 if v.ps_active else v.now)))


cdef list _heap_items(const ks_heap *h):
    return [(h.items[j].t, h.items[j].seq, h.items[j].kind) for j in range(h.n)]


def _restore(plan, vcpus, sources, streams, ipis, ipi_seq, threads):
    cdef Engine e = Engine(plan, threads)
    cdef ks_vcpu fresh
    cdef int i
    for i in range(e.n_vcpus):
        fresh = e.vcpus[i]
        memcpy(&e.vcpus[i], <const char *>vcpus[i], sizeof(ks_vcpu))
        e.vcpus[i].host, e.vcpus[i].guest = fresh.host, fresh.guest
        e.vcpus[i].exit_gen, e.vcpus[i].ctx = fresh.exit_gen, fresh.ctx
        e.vcpus[i].in_kick = e.vcpus[i].in_posted = fresh.in_kick    # empty: filled below
        for heap, items in zip((0, 1), ipis[i]):
            for t, seq, kind in items:
                if not heap_push(&e.vcpus[i].in_kick if heap == 0 else &e.vcpus[i].in_posted,
                                 t, seq, kind):
                    raise MemoryError()
        e.vcpus[i].counts, e.vcpus[i].row, e.vcpus[i].row_end = NULL, NULL, 0
        e.vcpus[i].hook, e.vcpus[i].hook_ctx = NULL, NULL
    for i, (next_t, idx) in enumerate(sources):
        e.sources[i].next_t, e.sources[i].idx = next_t, idx
    for bg, state in zip([bg for bg in e._keep if isinstance(bg, np.random.PCG64)], streams):
        bg.state = state
    e.ctx.ipi_seq = ipi_seq
    return e


cdef _check_vcpu(Engine e, int vcpu):
    if not 0 <= vcpu < e.n_vcpus:
        raise ValueError(f"vcpu {vcpu} is outside 0..{e.n_vcpus - 1}")
