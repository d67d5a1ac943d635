# cython: language_level=3
"""The Cython engine: kvmsim/_reference.py's rules in C, one nogil loop per vCPU.

Each function names the kernel function it mirrors; docs/model.md gives the citations. The
codes, bits and counter columns come from _spec.pxd, generated from kvmsim/_spec.py.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy
from numpy.random cimport bitgen_t
from numpy.random.c_distributions cimport random_standard_exponential

from kvmsim._spec cimport *

import numpy as np

from . import _spec
from ._plan import bit_generator

cdef extern from *:
    int ctz "__builtin_ctzll"(unsigned long long) noexcept nogil

# Each function that reports to a trace hook is compiled twice: `tracing` picks, at compile
# time, whether it calls the hook, so a run without one pays nothing for them.
ctypedef struct traced:
    char unused
ctypedef struct untraced:
    char unused
ctypedef fused tracing:
    traced
    untraced


# --- sources ------------------------------------------------------------------------------
cdef inline int64_t after(int64_t t, double gap) noexcept nogil:
    # t + gap, where a gap of KS_MAX_GAP_NS or more means NEVER (and cannot overflow int64)
    return NEVER if gap >= KS_MAX_GAP_NS else t + <int64_t>gap

cdef inline void source_step(ks_source *s) noexcept nogil:
    if s.dist == DIST_POISSON:
        s.next_t = after(s.next_t, random_standard_exponential(s.rng) * s.mean_ns)
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

cdef inline void update_next_host(ks_vcpu *v) noexcept nogil:
    # The earliest host-side arrival, cached: the loop asks for it at every step.
    cdef int64_t t = v.ext_at
    cdef int i
    for i in range(v.n_host):
        if v.host[i].next_t < t:
            t = v.host[i].next_t
    v.next_host = t


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

# The vCPU's own requests: its thread, or another with the engine's lock held between runs
# (Engine.make_request), is the only writer during a run, so plain bit operations suffice;
# ks_make_request and friends (_core.pxd) are the atomic forms for code outside the engine.
cdef inline void make_request(ks_vcpu *v, int bit) noexcept nogil:
    v.requests |= (<uint64_t>1) << bit

cdef inline bint test_request(const ks_vcpu *v, int bit) noexcept nogil:
    return (v.requests >> bit) & 1

cdef inline void hook(ks_vcpu *v, int64_t t, int32_t event, int64_t a,
                      int64_t b) noexcept nogil:
    v.hook(v.hook_ctx, t, v.index, event, a, b)

cdef inline int64_t poll(ks_vcpu *v, int64_t t, int64_t until) noexcept nogil:
    # Every POLL_EVERY steps: stop at t (as a run to `until` = t would) when asked.
    v.budget -= 1
    if v.budget > 0:
        return until
    v.budget = POLL_EVERY
    if v.ctx.stop == STOP_DONE and v.ctx.poll != NULL:
        v.ctx.stop = v.ctx.poll(v.ctx.poll_ctx)
    return t if v.ctx.stop != STOP_DONE else until


# --- arrivals from other CPUs -------------------------------------------------------------
cdef inline void accept_irq(ks_vcpu *v, int64_t k, int64_t *c) noexcept nogil:
    # kvm_lapic_set_irr + KVM_REQ_EVENT (vmx_deliver_interrupt without APICv)
    c[C_IRQS_RAISED] += k
    c[C_IRQS_COALESCED] += k - 1 + v.irq_pending
    v.irq_pending = 1
    make_request(v, BIT_EVENT)

cdef inline void arrive(ks_vcpu *v, int kind, int bit, int64_t k, int64_t *c, int64_t t,
                        tracing *tr) noexcept nogil:
    # k arrivals of one kind at once
    cdef int64_t j
    if k == 0:
        return
    if tracing is traced:
        for j in range(k):
            hook(v, t, T_MAKE_REQUEST, kind, bit if kind == SRC_REQUEST else -1)
    if kind == SRC_NMI:                 # kvm_inject_nmi
        v.nmi_queued += k
        c[C_NMIS_QUEUED] += k
        make_request(v, BIT_NMI)
    elif kind == SRC_IRQ:               # __apic_accept_irq, APIC_DM_FIXED
        accept_irq(v, k, c)
    else:                               # SRC_REQUEST
        make_request(v, bit)

cdef inline void apply_host(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c,
                            tracing *tr) noexcept nogil:
    # kvm_make_request for every host-side arrival at or before t; the kick only matters in
    # guest mode (kvm_vcpu_kick), where the caller turns it into a VM-exit. Arrivals of one
    # source are applied together, unless a trace hook wants each with its own time.
    cdef int i, bit
    cdef int64_t at
    cdef ks_source *s
    if v.next_host > t:
        return
    for i in range(v.n_host):
        s = &v.host[i]
        while s.next_t <= t:
            at = s.next_t
            if s.kind == SRC_REQUEST_NOOP:  # one of the no-op requests, uniformly
                bit = p.noop_bits[<int>(s.rng.next_double(s.rng.state) * p.n_noop)]
                source_step(s)
                arrive(v, SRC_REQUEST, bit, 1, c, at, tr)
            else:
                arrive(v, s.kind, s.bit,
                       source_advance(s, at if tracing is traced else t), c, at, tr)
    if v.ext_at <= t:                   # Engine.inject: NMIs, then IRQs
        arrive(v, SRC_NMI, 0, v.ext_nmi, c, v.ext_at, tr)
        arrive(v, SRC_IRQ, 0, v.ext_irq, c, v.ext_at, tr)
        v.ext_nmi = v.ext_irq = 0
        v.ext_at = NEVER
    update_next_host(v)


# --- the guest ----------------------------------------------------------------------------
cdef inline bint nmi_end_exits(const ks_vcpu *v, const ks_params *p) noexcept nogil:
    return (p.lvtpc == LVTPC_NMI or not p.intel or v.nmi_window
            or (v.irq_window and not v.irq_blocked))

cdef inline bint irq_end_exits(const ks_vcpu *v, const ks_params *p) noexcept nogil:
    return ((v.irq_window and not v.nmi_blocked)
            or (p.intel and p.lvtpc == LVTPC_FIXED and v.lvtpc_masked))

cdef void end_handlers(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c) noexcept nogil:
    # IRET unblocks NMIs; the perf handler's LVTPC write unmasks LVTPC; a satisfied window
    # raises KVM_REQ_EVENT (handle_nmi_window, svm IRET completion, interrupt window).
    if v.nmi_blocked and v.nmi_end <= t:
        v.nmi_blocked = 0
        v.nmi_end = NEVER
        if p.lvtpc == LVTPC_NMI:
            v.lvtpc_masked = 0
        if not p.intel:
            v.nmi_window = 0
            c[C_NMI_WINDOW_EXITS] += 1
            make_request(v, BIT_EVENT)
    if v.irq_blocked and v.irq_end <= t:
        v.irq_blocked = 0
        v.irq_end = NEVER
        if p.lvtpc == LVTPC_FIXED:
            v.lvtpc_masked = 0
    if v.nmi_window and not v.nmi_blocked:
        v.nmi_window = 0
        c[C_NMI_WINDOW_EXITS] += 1
        make_request(v, BIT_EVENT)
    if v.irq_window and not (v.nmi_blocked or v.irq_blocked):
        v.irq_window = 0
        c[C_IRQ_WINDOW_EXITS] += 1
        make_request(v, BIT_EVENT)

cdef inline void perf_overflow(ks_vcpu *v, int64_t *c) noexcept nogil:
    # __kvm_perf_overflow: global_status, KVM_REQ_PMI
    if test_request(v, BIT_PMI):
        c[C_PMIS_COALESCED] += 1
    else:
        c[C_PMIS_RAISED] += 1
        make_request(v, BIT_PMI)

cdef inline void guest_event(ks_vcpu *v, int kind, int64_t *c) noexcept nogil:
    if kind == SRC_PMI:
        # kvm_perf_overflow: ignored while the counter's reprogram bit is set
        if v.pmu_reprogram:
            c[C_PMIS_COALESCED] += 1
        else:
            v.pmu_reprogram = 1
            perf_overflow(v, c)
            make_request(v, BIT_PMU)
    elif kind == SRC_EMUL_PMI:
        # kvm_pmu_trigger_event -> kvm_pmu_request_counter_reprogram
        v.pmu_reprogram = 1
        v.emul_overflow = 1
        make_request(v, BIT_PMU)

cdef void apply_guest(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c) noexcept nogil:
    cdef int i
    cdef int64_t j
    cdef ks_source *s
    end_handlers(v, p, t, c)
    for i in range(v.n_guest):
        s = &v.guest[i]
        while s.next_t <= t:
            guest_event(v, s.kind, c)
            source_step(s)
    if v.ext_pmi_at <= t:               # Engine.inject: counter overflows
        for j in range(v.ext_pmi):
            guest_event(v, SRC_PMI, c)
        v.ext_pmi = 0
        v.ext_pmi_at = NEVER

cdef inline int64_t handler_end(int64_t t, int64_t when, bint end_exits,
                                bint *exits) noexcept nogil:
    # A guest handler ending at `when`: the next event if it comes first (whether it exits
    # is end_exits); on a tie the guest exits if either event makes it.
    if when < t:
        exits[0] = end_exits
        return when
    if when == t:
        exits[0] = exits[0] or end_exits
    return t

cdef inline int64_t next_guest_event(const ks_vcpu *v, const ks_params *p,
                                     bint *exits) noexcept nogil:
    cdef int64_t t = v.guest_exit_at
    cdef int i
    for i in range(v.n_guest):
        if v.guest[i].next_t < t:
            t = v.guest[i].next_t
    if v.ext_pmi_at < t:
        t = v.ext_pmi_at
    if v.immediate_exit or (v.nmi_window and not v.nmi_blocked) or (
            v.irq_window and not (v.nmi_blocked or v.irq_blocked)):
        t = v.entry_t
    exits[0] = 1
    if v.nmi_blocked:
        t = handler_end(t, v.nmi_end, nmi_end_exits(v, p), exits)
    if v.irq_blocked:
        t = handler_end(t, v.irq_end, irq_end_exits(v, p), exits)
    return t if t > v.entry_t else v.entry_t


# --- handlers of vcpu_enter_guest() -------------------------------------------------------
cdef inline void process_nmi(ks_vcpu *v, int64_t t, int64_t *c, tracing *tr) noexcept nogil:
    # process_nmi: limit 2, or 1 if NMIs are masked or one is injected; excess dropped
    cdef int64_t limit = 1 if (v.nmi_blocked or v.nmi_injected) else 2
    v.nmi_pending += v.nmi_queued
    v.nmi_queued = 0
    if v.nmi_pending > limit:
        if tracing is traced:
            hook(v, t, T_NMI_DROP, v.nmi_pending - limit, limit)
        c[C_NMIS_DROPPED] += v.nmi_pending - limit
        v.nmi_pending = limit
    if v.nmi_pending:
        make_request(v, BIT_EVENT)

cdef inline void deliver_pmi(ks_vcpu *v, const ks_params *p, int64_t *c) noexcept nogil:
    # kvm_pmu_deliver_pmi -> kvm_apic_local_deliver(APIC_LVTPC)
    if p.lvtpc == LVTPC_MASKED or v.lvtpc_masked:
        c[C_PMIS_DROPPED] += 1
        return
    c[C_PMIS_DELIVERED] += 1
    if p.lvtpc == LVTPC_NMI:            # APIC_DM_NMI: kvm_inject_nmi
        v.nmi_queued += 1
        c[C_NMIS_QUEUED] += 1
        make_request(v, BIT_NMI)
    elif p.lvtpc == LVTPC_FIXED:        # APIC_DM_FIXED
        accept_irq(v, 1, c)
    else:                               # APIC_DM_SMI: kvm_inject_smi
        make_request(v, BIT_SMI)
    if p.intel:                         # guest_cpuid_is_intel_compatible: mask LVTPC
        v.lvtpc_masked = 1

cdef void inject_events(ks_vcpu *v, int64_t t, int64_t *c, tracing *tr) noexcept nogil:
    # kvm_check_and_inject_events: re-injection, then SMI > NMI > IRQ; -EBUSY sets
    # req_immediate_exit.
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
        if v.nmi_pending:
            v.nmi_window = 1            # enable_nmi_window
    if v.irq_pending:
        if not can_inject:
            v.req_immediate_exit = 1
            return
        if not (v.nmi_blocked or v.irq_blocked):
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
        process_nmi(v, t, c, tr)
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
        inject_events(v, t, c, tr)


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

cdef int64_t one_pass(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c, bint *entered,
                      tracing *tr) noexcept nogil:
    cdef int n = p.n_checks, pos, r, bit
    cdef int64_t t0, t_r, ta, passed, cost, event_ns = 0
    cdef uint64_t rm, before, x, raised = 0   # raised: bits this pass's handlers raised
    apply_host(v, p, t, c, tr)
    v.req_immediate_exit = 0
    t0 = t
    # if (kvm_request_pending(vcpu)) { ... }; the EVENT check follows the block
    pos = 0 if v.requests else n - 1
    while True:
        rm = ranks_from(v, p, pos)
        r = ctz(rm) if rm else n
        t_r = t + (r - pos) * p.cost_check
        ta = v.next_host
        if ta <= t_r:
            # arrivals land among the checks: those that started before them have run
            if ta > t and p.cost_check:
                passed = (ta - t + p.cost_check - 1) // p.cost_check
                pos += <int>passed
                t += passed * p.cost_check
            apply_host(v, p, t, c, tr)
            continue
        if r == n:
            t = t_r
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
    c[C_NS_REQUESTS] += t - t0 - event_ns
    c[C_NS_EVENT] += event_ns
    # kvm_mmu_reload .. smp_store_release(mode, IN_GUEST_MODE) .. kvm_vcpu_exit_request()
    t += p.cost_state_load
    c[C_NS_STATE_LOAD] += p.cost_state_load
    v.mode = IN_GUEST_MODE
    apply_host(v, p, t, c, tr)
    c[C_VMENTER_ATTEMPTS] += 1
    if tracing is traced:
        hook(v, t, T_CANCEL if v.requests else T_ENTRY, 0, <int64_t>v.requests)
    if v.requests:
        # cancel_injection: vmx_cancel_injection puts the written event back as injected
        v.mode = OUTSIDE_GUEST_MODE
        c[C_CANCELED_VMENTERS] += 1
        x = v.requests
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
        entered[0] = 0
        return t
    if v.req_immediate_exit:            # raised after the late check: no cancel
        make_request(v, BIT_EVENT)
    v.immediate_exit = v.req_immediate_exit
    t += p.cost_vmenter
    c[C_NS_VMENTER] += p.cost_vmenter
    c[C_VMENTERS] += 1
    if v.entry_event == ENTRY_NMI:      # delivered: the guest's NMI handler runs
        c[C_NMIS_INJECTED] += 1
        v.nmi_injected = 0
        v.nmi_blocked = 1
        v.nmi_end = t + p.nmi_handler_ns
    elif v.entry_event == ENTRY_IRQ:
        c[C_IRQS_INJECTED] += 1
        v.irq_injected = 0
        v.irq_blocked = 1
        v.irq_end = t + p.irq_handler_ns
    v.entry_event = ENTRY_NONE
    if p.guest_exit_mean_ns > 0:
        v.guest_exit_at = after(t, random_standard_exponential(v.exit_rng)
                                * p.guest_exit_mean_ns)
    v.entry_t = t
    v.guest_since = t
    entered[0] = 1
    return t

cdef int exit_reason(const ks_vcpu *v, const ks_params *p, int64_t t) noexcept nogil:
    # Why the guest exits at t (VMX exit-reason names), for trace hooks.
    cdef int i
    if v.immediate_exit:
        return R_PREEMPTION_TIMER
    if v.next_host <= t or v.mode == EXITING_GUEST_MODE:
        return R_EXTERNAL_INTERRUPT
    for i in range(v.n_guest):
        if v.guest[i].next_t <= t:
            if v.guest[i].kind == SRC_PMI:
                return R_EXCEPTION_NMI
            return R_EPT_MISCONFIG if v.guest[i].kind == SRC_EMUL_PMI else R_GUEST
    if v.ext_pmi_at <= t:
        return R_EXCEPTION_NMI
    if v.guest_exit_at <= t:
        return R_GUEST
    if v.nmi_blocked and v.nmi_end <= t:
        if v.nmi_window:
            return R_NMI_WINDOW
        return R_MSR_WRITE if p.intel else R_IRET
    if v.irq_window:
        return R_INTERRUPT_WINDOW
    return R_NMI_WINDOW if v.nmi_window else R_MSR_WRITE

cdef inline int64_t vm_exit(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c,
                            tracing *tr) noexcept nogil:
    # A VM-exit at t; returns when vcpu_enter_guest() starts its first pass.
    cdef int reason = 0
    if tracing is traced:
        reason = exit_reason(v, p, t)
    v.mode = OUTSIDE_GUEST_MODE
    c[C_VMEXITS] += 1
    if v.immediate_exit:
        c[C_IMMEDIATE_EXITS] += 1
        v.immediate_exit = 0
    apply_guest(v, p, t, c)
    apply_host(v, p, t, c, tr)
    if tracing is traced:
        hook(v, t, T_EXIT, reason, <int64_t>v.requests)
    c[C_NS_VMEXIT] += p.cost_vmexit
    return t + p.cost_vmexit

cdef inline bint passes(ks_vcpu *v, const ks_params *p, int64_t *until,
                        tracing *tr) noexcept nogil:
    # Passes (vcpu_run's loop) from pass_at until a VM-Enter completes: true; or until
    # `until` comes first, as it does while every entry keeps being cancelled: false.
    cdef int64_t t = v.pass_at
    cdef bint entered = 0
    while True:
        until[0] = poll(v, t, until[0])
        if t >= until[0]:
            break
        t = one_pass(v, p, t, row(v, p, t), &entered, tr)
        if entered:
            v.in_host = 0
            return 1
        if v.requests & p.unconsumable:
            v.ctx.stop = STOP_UNCONSUMABLE
            until[0] = t
    v.pass_at = t
    return 0

cdef inline void add_guest_time(ks_vcpu *v, const ks_params *p, int64_t t1) noexcept nogil:
    cdef int64_t t0 = v.guest_since, end
    cdef int64_t *c
    while t0 < t1:
        c = row(v, p, t0)
        end = v.row_end if v.row_end < t1 else t1
        c[C_NS_GUEST] += end - t0
        t0 = end
    if t1 > v.guest_since:
        v.guest_since = t1

cdef inline void run_vcpu(ks_vcpu *v, const ks_params *p, int64_t until,
                          tracing *tr) noexcept nogil:
    cdef int64_t ta, tg, t
    cdef bint exits
    if until <= v.now:                  # stopped past it by an earlier, interrupted run
        return
    while True:
        if v.in_host and not passes(v, p, &until, tr):
            v.now = until
            return
        ta = v.next_host                # a kick in guest mode: IPI -> VM-exit
        if v.mode == EXITING_GUEST_MODE and v.now < ta:
            ta = v.now                  # kicked between runs (ks_kick)
        if ta < v.entry_t:
            ta = v.entry_t
        tg = next_guest_event(v, p, &exits)
        t = ta if ta < tg else tg
        if t >= until:
            add_guest_time(v, p, until)
            v.now = until
            return
        if t == tg and not exits and ta > tg:
            end_handlers(v, p, t, row(v, p, t))
            continue
        add_guest_time(v, p, t)
        v.pass_at = vm_exit(v, p, t, row(v, p, t), tr)
        v.in_host = 1


cdef void ks_vcpu_run(ks_vcpu *v, const ks_params *p, int64_t until) noexcept nogil:
    if v.hook != NULL:
        run_vcpu(v, p, until, <traced *>NULL)
    else:
        run_vcpu(v, p, until, <untraced *>NULL)


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


cdef void _init_source(list keep, ks_source *s, sp, seed):
    cdef const int64_t[::1] times = sp.times_ns
    s.kind = sp.kind
    s.dist = sp.dist
    s.bit = sp.bit
    s.mean_ns = sp.mean_ns
    s.period_ns = sp.period_ns
    s.ntimes = len(sp.times_ns)
    s.times = &times[0] if s.ntimes else NULL
    s.idx = 0
    bg = bit_generator(seed, sp.spawn_key)
    keep += [bg, sp.times_ns]
    s.rng = _bitgen(bg)
    if s.dist == DIST_POISSON:
        s.next_t = after(0, random_standard_exponential(s.rng) * s.mean_ns)
    elif s.dist == DIST_PERIODIC:
        s.next_t = sp.start_ns + s.period_ns
    else:
        s.next_t = s.times[0] if s.ntimes else NEVER


cdef class Engine:
    """Owns the C state of every vCPU (declared in _core.pxd); run() holds no GIL.

    The same interface as the reference engine (kvmsim._engine.Engine)."""

    def __cinit__(self, plan):
        cdef int i
        cdef ks_source *s
        cdef ks_vcpu *v
        self._keep = []
        self._plan = plan
        self.params = plan.params            # dict -> struct: every _spec.PARAMS field
        self.n_vcpus = plan.vcpus
        self.vcpus = <ks_vcpu *> calloc(plan.vcpus, sizeof(ks_vcpu))
        self.sources = <ks_source *> calloc(max(1, len(plan.sources)), sizeof(ks_source))
        if self.vcpus == NULL or self.sources == NULL:
            raise MemoryError()
        # Sources grouped per vCPU: host-side first, then guest-side, in plan order.
        by_vcpu = [[] for _ in range(plan.vcpus)]
        for sp in plan.sources:
            by_vcpu[sp.vcpu].append(sp)
        s = self.sources
        for i in range(plan.vcpus):
            v = &self.vcpus[i]
            v.index = i
            v.nmi_end = v.irq_end = v.guest_exit_at = v.ext_at = v.ext_pmi_at = NEVER
            v.in_host = 1               # KVM_RUN: the first pass starts at t = 0
            v.budget = POLL_EVERY
            v.ctx = &self.ctx
            bg = bit_generator(plan.seed, (i, 0))
            self._keep.append(bg)
            v.exit_rng = _bitgen(bg)
            host = [sp for sp in by_vcpu[i] if sp.kind >= FIRST_HOST_SRC]
            guest = [sp for sp in by_vcpu[i] if sp.kind < FIRST_HOST_SRC]
            v.host, v.n_host = s, len(host)
            for sp in host:
                _init_source(self._keep, s, sp, plan.seed)
                s += 1
            v.guest, v.n_guest = s, len(guest)
            for sp in guest:
                _init_source(self._keep, s, sp, plan.seed)
                s += 1
            update_next_host(v)

    def __reduce__(self):
        # The plan rebuilds the pointers; the vCPU structs, source positions and random
        # streams carry the state. A trace hook is not pickled.
        vcpus = [PyBytes_FromStringAndSize(<char *>&self.vcpus[i], sizeof(ks_vcpu))
                 for i in range(self.n_vcpus)]
        n = len(self._plan.sources)
        sources = [(self.sources[i].next_t, self.sources[i].idx) for i in range(n)]
        streams = [bg.state for bg in self._keep if isinstance(bg, np.random.PCG64)]
        return _restore, (self._plan, vcpus, sources, streams)

    def __dealloc__(self):
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
        cdef int i
        cdef int64_t *base = &counts[0, 0, 0]
        cdef int64_t stride = counts.shape[1] * C_COLUMNS
        self._stop_event = stop_event
        self.ctx.stop = STOP_DONE
        self.ctx.poll = _py_poll
        self.ctx.poll_ctx = <void *>self
        try:
            with nogil:
                for i in range(self.n_vcpus):
                    self.vcpus[i].counts = base + i * stride
                    self.vcpus[i].first = first_interval
                    self.vcpus[i].row_end = 0           # the window moved: find rows anew
                    ks_vcpu_run(&self.vcpus[i], &self.params, until_ns)
                    if self.ctx.stop != STOP_DONE:
                        break
        finally:
            self._stop_event = None
        if self._hook_error is not None:
            error, self._hook_error = self._hook_error, None
            raise error
        return _spec.Stop(self.ctx.stop)

    def make_request(self, int vcpu, int bit, bint kick):
        """Another CPU posts request `bit` (kvm_make_request) and, with kick, kicks the vCPU
        (kvm_vcpu_kick): in guest mode it exits at `now`. Returns whether a kick was sent."""
        _check_vcpu(self, vcpu)
        if not ks_make_request(&self.vcpus[vcpu].requests, bit):
            raise ValueError(f"bit {bit} is outside 0..63")
        return bool(kick and ks_kick(&self.vcpus[vcpu].mode))

    def inject(self, int vcpu, int kind, int64_t count=1):
        """Another CPU injects `count` NMIs or IRQs (kvm_inject_nmi / kvm_apic_set_irq), or a
        guest counter overflows (kvm_perf_overflow), at the vCPU's `now`, with a kick."""
        _check_vcpu(self, vcpu)
        cdef ks_vcpu *v = &self.vcpus[vcpu]
        if kind == SRC_PMI:
            v.ext_pmi += count
            v.ext_pmi_at = min(v.ext_pmi_at, v.now)
        elif kind == SRC_NMI or kind == SRC_IRQ:
            if kind == SRC_NMI:
                v.ext_nmi += count
            else:
                v.ext_irq += count
            v.ext_at = min(v.ext_at, v.now)
            update_next_host(v)
        else:
            raise ValueError(f"kind {kind} cannot be injected")
        return bool(ks_kick(&v.mode))

    def set_trace(self, hook):
        """Call hook(t_ns, vcpu, event, a, b) for each TraceEvent; None turns it off."""
        cdef int i
        self._hook = hook
        for i in range(self.n_vcpus):
            self.vcpus[i].hook = NULL
            if hook is not None:
                self.vcpus[i].hook = _py_hook
            self.vcpus[i].hook_ctx = <void *>self

    def state(self, int vcpu):
        """The vCPU's state (_spec.STATE_FIELDS) as a dict of ints."""
        _check_vcpu(self, vcpu)
        cdef ks_vcpu *v = &self.vcpus[vcpu]
        return dict(zip(_spec.STATE_FIELDS, (
            v.now, v.mode, v.requests, v.nmi_queued, v.nmi_pending, v.nmi_injected,
            v.irq_pending, v.irq_injected, v.smi_pending, v.nmi_window, v.irq_window,
            v.lvtpc_masked, v.nmi_blocked, v.irq_blocked, v.in_host)))



def _restore(plan, vcpus, sources, streams):
    cdef Engine e = Engine(plan)
    cdef ks_vcpu fresh
    cdef int i
    for i in range(e.n_vcpus):
        fresh = e.vcpus[i]
        memcpy(&e.vcpus[i], <const char *>vcpus[i], sizeof(ks_vcpu))
        e.vcpus[i].host, e.vcpus[i].guest = fresh.host, fresh.guest
        e.vcpus[i].exit_rng, e.vcpus[i].ctx = fresh.exit_rng, fresh.ctx
        e.vcpus[i].counts, e.vcpus[i].row, e.vcpus[i].row_end = NULL, NULL, 0
        e.vcpus[i].hook, e.vcpus[i].hook_ctx = NULL, NULL
    for i, (next_t, idx) in enumerate(sources):
        e.sources[i].next_t, e.sources[i].idx = next_t, idx
    for bg, state in zip([bg for bg in e._keep if isinstance(bg, np.random.PCG64)], streams):
        bg.state = state
    return e


cdef _check_vcpu(Engine e, int vcpu):
    if not 0 <= vcpu < e.n_vcpus:
        raise ValueError(f"vcpu {vcpu} is outside 0..{e.n_vcpus - 1}")
