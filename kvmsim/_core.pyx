# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The Cython engine: kvmsim/_reference.py's rules in C, one nogil loop per vCPU.

Each function names the kernel function it mirrors; docs/model.md gives the citations.
"""

from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset
from numpy.random cimport bitgen_t
from numpy.random.c_distributions cimport random_standard_exponential

import numpy as np

from . import catalogue
from . import plan as P

cdef extern from "<stdint.h>":
    const int64_t NEVER "INT64_MAX"
cdef extern from *:
    int ctz "__builtin_ctzll"(unsigned long long) noexcept nogil

cdef enum:
    EVENT_BIT = 14                       # KVM_REQ_EVENT
    NMI_BIT = 17
    PMU_BIT = 18
    PMI_BIT = 19
    SMI_BIT = 20

cdef enum:
    SRC_EXIT, SRC_PMI, SRC_EMUL_PMI, SRC_NMI, SRC_IRQ, SRC_REQUEST, SRC_REQUEST_NOOP
cdef enum:
    DIST_POISSON, DIST_PERIODIC, DIST_TRACE
cdef enum:
    H_NOOP, H_NMI, H_PMU, H_PMI, H_SMI, H_EVENT
cdef enum:
    ENTRY_NONE, ENTRY_NMI, ENTRY_IRQ

assert (SRC_NMI, SRC_REQUEST_NOOP, DIST_TRACE, H_EVENT) == (
    P.SRC_NMI, P.SRC_REQUEST_NOOP, P.DIST_TRACE, P.HANDLER_EVENT)
assert (EVENT_BIT, NMI_BIT, PMU_BIT, PMI_BIT, SMI_BIT) == tuple(
    map(catalogue.bit_of, ("EVENT", "NMI", "PMU", "PMI", "SMI")))

COLUMNS = C_COLUMNS
EVENT_COLUMNS = C_NS_GUEST
REQUEST_BASE = C_REQ_BASE
CANCEL_ASYNC_BASE = C_CANCEL_ASYNC_BASE
CANCEL_BACKEDGE_BASE = C_CANCEL_BACKEDGE_BASE


# --- sources ------------------------------------------------------------------------------
cdef inline int64_t after(int64_t t, double gap) noexcept nogil:
    # t + gap, where a gap of 2**62 ns or more means "never" (and cannot overflow int64)
    return NEVER if gap >= 4611686018427387904.0 else t + <int64_t>gap

cdef inline void source_advance(ks_source *s) noexcept nogil:
    if s.dist == DIST_POISSON:
        s.next_t = after(s.next_t, random_standard_exponential(s.rng) * s.mean_ns)
    elif s.dist == DIST_PERIODIC:
        s.next_t += s.period_ns
    else:
        s.idx += 1
        s.next_t = s.times[s.idx] if s.idx < s.ntimes else NEVER

cdef inline void update_next_host(ks_vcpu *v) noexcept nogil:
    # The earliest host-side arrival, cached: the loop asks for it at every step.
    cdef int64_t t = NEVER
    cdef int i
    for i in range(v.n_host):
        if v.host[i].next_t < t:
            t = v.host[i].next_t
    v.next_host = t


# --- arrivals from other CPUs -------------------------------------------------------------
cdef inline void accept_irq(ks_vcpu *v, int64_t *c) noexcept nogil:
    # kvm_lapic_set_irr + KVM_REQ_EVENT (vmx_deliver_interrupt without APICv)
    c[C_IRQS_RAISED] += 1
    if v.irq_pending:
        c[C_IRQS_COALESCED] += 1
    v.irq_pending = 1
    ks_make_request(&v.requests, EVENT_BIT)

cdef inline void apply_host(ks_vcpu *v, const ks_params *p, int64_t t,
                            int64_t *c) noexcept nogil:
    # kvm_make_request for every host-side arrival at or before t; the kick only matters in
    # guest mode (kvm_vcpu_kick), where the caller turns it into a VM-exit.
    cdef int i
    cdef ks_source *s
    if v.next_host > t:
        return
    for i in range(v.n_host):
        s = &v.host[i]
        while s.next_t <= t:
            if s.kind == SRC_NMI:            # kvm_inject_nmi
                v.nmi_queued += 1
                c[C_NMIS_QUEUED] += 1
                ks_make_request(&v.requests, NMI_BIT)
            elif s.kind == SRC_IRQ:
                accept_irq(v, c)
            elif s.kind == SRC_REQUEST:
                ks_make_request(&v.requests, s.bit)
            else:
                ks_make_request(&v.requests, p.noop_bits[
                    <int>(s.rng.next_double(s.rng.state) * p.n_noop)])
            source_advance(s)
    update_next_host(v)


# --- the guest ----------------------------------------------------------------------------
cdef inline bint nmi_end_exits(const ks_vcpu *v, const ks_params *p) noexcept nogil:
    return (p.lvtpc == 0 or not p.intel or v.nmi_window
            or (v.irq_window and not v.irq_blocked))

cdef inline bint irq_end_exits(const ks_vcpu *v, const ks_params *p) noexcept nogil:
    return ((v.irq_window and not v.nmi_blocked)
            or (p.intel and p.lvtpc == 1 and v.lvtpc_masked))

cdef void end_handlers(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c) noexcept nogil:
    # IRET unblocks NMIs; the perf handler's LVTPC write unmasks LVTPC; a satisfied window
    # raises KVM_REQ_EVENT (handle_nmi_window, svm IRET completion, interrupt window).
    if v.nmi_blocked and v.nmi_end <= t:
        v.nmi_blocked = 0
        v.nmi_end = NEVER
        if p.lvtpc == 0:
            v.lvtpc_masked = 0
        if not p.intel:
            v.nmi_window = 0
            c[C_NMI_WINDOW_EXITS] += 1
            ks_make_request(&v.requests, EVENT_BIT)
    if v.irq_blocked and v.irq_end <= t:
        v.irq_blocked = 0
        v.irq_end = NEVER
        if p.lvtpc == 1:
            v.lvtpc_masked = 0
    if v.nmi_window and not v.nmi_blocked:
        v.nmi_window = 0
        c[C_NMI_WINDOW_EXITS] += 1
        ks_make_request(&v.requests, EVENT_BIT)
    if v.irq_window and not (v.nmi_blocked or v.irq_blocked):
        v.irq_window = 0
        c[C_IRQ_WINDOW_EXITS] += 1
        ks_make_request(&v.requests, EVENT_BIT)

cdef inline void perf_overflow(ks_vcpu *v, int64_t *c) noexcept nogil:
    # __kvm_perf_overflow: global_status, KVM_REQ_PMI
    if ks_test_request(&v.requests, PMI_BIT):
        c[C_PMIS_COALESCED] += 1
    else:
        c[C_PMIS_RAISED] += 1
        ks_make_request(&v.requests, PMI_BIT)

cdef void apply_guest(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c) noexcept nogil:
    cdef int i
    cdef ks_source *s
    end_handlers(v, p, t, c)
    for i in range(v.n_guest):
        s = &v.guest[i]
        while s.next_t <= t:
            if s.kind == SRC_PMI:
                # kvm_perf_overflow: ignored while the counter's reprogram bit is set
                if v.pmu_reprogram:
                    c[C_PMIS_COALESCED] += 1
                else:
                    v.pmu_reprogram = 1
                    perf_overflow(v, c)
                    ks_make_request(&v.requests, PMU_BIT)
            elif s.kind == SRC_EMUL_PMI:
                # kvm_pmu_trigger_event -> kvm_pmu_request_counter_reprogram
                v.pmu_reprogram = 1
                v.emul_overflow = 1
                ks_make_request(&v.requests, PMU_BIT)
            source_advance(s)

cdef inline int64_t next_guest_event(const ks_vcpu *v, const ks_params *p,
                                     bint *exits) noexcept nogil:
    cdef int64_t t = v.guest_exit_at, when
    cdef int i
    for i in range(v.n_guest):
        if v.guest[i].next_t < t:
            t = v.guest[i].next_t
    if v.immediate_exit or (v.nmi_window and not v.nmi_blocked) or (
            v.irq_window and not (v.nmi_blocked or v.irq_blocked)):
        t = v.entry_t
    exits[0] = 1
    if v.nmi_blocked:
        when = v.nmi_end
        if when < t:
            t = when
            exits[0] = nmi_end_exits(v, p)
        elif when == t:
            exits[0] = exits[0] or nmi_end_exits(v, p)
    if v.irq_blocked:
        when = v.irq_end
        if when < t:
            t = when
            exits[0] = irq_end_exits(v, p)
        elif when == t:
            exits[0] = exits[0] or irq_end_exits(v, p)
    return t if t > v.entry_t else v.entry_t


# --- handlers of vcpu_enter_guest() -------------------------------------------------------
cdef inline void process_nmi(ks_vcpu *v, int64_t *c) noexcept nogil:
    # process_nmi: limit 2, or 1 if NMIs are masked or one is injected; excess dropped
    cdef int64_t limit = 1 if (v.nmi_blocked or v.nmi_injected) else 2
    v.nmi_pending += v.nmi_queued
    v.nmi_queued = 0
    if v.nmi_pending > limit:
        c[C_NMIS_DROPPED] += v.nmi_pending - limit
        v.nmi_pending = limit
    if v.nmi_pending:
        ks_make_request(&v.requests, EVENT_BIT)

cdef inline void deliver_pmi(ks_vcpu *v, const ks_params *p, int64_t *c) noexcept nogil:
    # kvm_pmu_deliver_pmi -> kvm_apic_local_deliver(APIC_LVTPC)
    if p.lvtpc == 3 or v.lvtpc_masked:
        c[C_PMIS_DROPPED] += 1
        return
    c[C_PMIS_DELIVERED] += 1
    if p.lvtpc == 0:                    # APIC_DM_NMI: kvm_inject_nmi
        v.nmi_queued += 1
        c[C_NMIS_QUEUED] += 1
        ks_make_request(&v.requests, NMI_BIT)
    elif p.lvtpc == 1:                  # APIC_DM_FIXED
        accept_irq(v, c)
    else:                               # APIC_DM_SMI: kvm_inject_smi
        ks_make_request(&v.requests, SMI_BIT)
    if p.intel:                         # guest_cpuid_is_intel_compatible: mask LVTPC
        v.lvtpc_masked = 1

cdef void inject_events(ks_vcpu *v, int64_t *c) noexcept nogil:
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
            v.irq_pending = 0
            v.irq_injected = 1
            v.entry_event = ENTRY_IRQ
        else:
            v.irq_window = 1            # enable_irq_window

cdef inline void handle(ks_vcpu *v, const ks_params *p, int bit, int64_t *c) noexcept nogil:
    cdef int h = p.handler[bit]
    if h == H_NOOP:
        if p.raises[bit]:
            ks_make_requests(&v.requests, p.raises[bit])
    elif h == H_NMI:
        process_nmi(v, c)
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
        ks_make_request(&v.requests, EVENT_BIT)
    else:
        inject_events(v, c)


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

cdef int64_t one_pass(ks_vcpu *v, const ks_params *p, int64_t t, int64_t *c,
                      bint *entered) noexcept nogil:
    cdef int n = p.n_checks, pos, r, bit
    cdef int64_t t0, t_r, ta, passed, cost, event_ns = 0
    cdef uint64_t rm, before, x, raised = 0   # raised: bits this pass's handlers raised
    apply_host(v, p, t, c)
    v.req_immediate_exit = 0
    t0 = t
    # if (kvm_request_pending(vcpu)) { ... }; the EVENT check follows the block
    pos = 0 if ks_request_pending(&v.requests) else n - 1
    while True:
        rm = ranks_from(v, p, pos)
        r = ctz(rm) if rm else n
        t_r = t + (r - pos) * p.cost_check
        ta = v.next_host
        if ta <= t_r:
            # the arrival lands among the checks: those before it have run
            if ta > t and p.cost_check:
                passed = (ta - t + p.cost_check - 1) // p.cost_check
                pos += <int>passed
                t += passed * p.cost_check
            apply_host(v, p, ta, c)
            continue
        if r == n:
            t = t_r
            break
        bit = p.order[r]
        ks_check_request(&v.requests, bit)     # clear, then handle
        c[C_REQ_BASE + bit] += 1
        cost = p.cost_event if bit == EVENT_BIT else p.handler_ns[bit]
        if bit == EVENT_BIT:
            event_ns += cost
        t = t_r + p.cost_check + cost
        pos = r + 1
        before = v.requests
        handle(v, p, bit, c)
        raised = (raised & ~((<uint64_t>1) << bit)) | (v.requests & ~before)
    c[C_NS_REQUESTS] += t - t0 - event_ns
    c[C_NS_EVENT] += event_ns
    # kvm_mmu_reload .. smp_store_release(mode, IN_GUEST_MODE) .. kvm_vcpu_exit_request()
    t += p.cost_state_load
    c[C_NS_STATE_LOAD] += p.cost_state_load
    v.mode = IN_GUEST_MODE
    apply_host(v, p, t, c)
    c[C_VMENTER_ATTEMPTS] += 1
    if ks_request_pending(&v.requests):
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
            ks_make_request(&v.requests, EVENT_BIT)
        v.entry_event = ENTRY_NONE
        entered[0] = 0
        return t
    if v.req_immediate_exit:            # raised after the late check: no cancel
        ks_make_request(&v.requests, EVENT_BIT)
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

cdef inline int64_t vm_exit(ks_vcpu *v, const ks_params *p, int64_t t,
                            int64_t *c) noexcept nogil:
    # A VM-exit at t; returns when vcpu_enter_guest() starts its first pass.
    v.mode = OUTSIDE_GUEST_MODE
    c[C_VMEXITS] += 1
    if v.immediate_exit:
        c[C_IMMEDIATE_EXITS] += 1
        v.immediate_exit = 0
    apply_guest(v, p, t, c)
    apply_host(v, p, t, c)
    c[C_NS_VMEXIT] += p.cost_vmexit
    return t + p.cost_vmexit

cdef inline bint passes(ks_vcpu *v, const ks_params *p, int64_t until,
                        int64_t *counts) noexcept nogil:
    # Passes (vcpu_run's loop) from pass_at until a VM-Enter completes: true; or until
    # `until` comes first, as it does while every entry keeps being cancelled: false.
    cdef int64_t t = v.pass_at
    cdef bint entered = 0
    while t < until:
        t = one_pass(v, p, t, counts + (t // p.interval_ns) * C_COLUMNS, &entered)
        if entered:
            v.in_host = 0
            return 1
    v.pass_at = t
    return 0

cdef inline void add_guest_time(ks_vcpu *v, const ks_params *p, int64_t t1,
                                int64_t *counts) noexcept nogil:
    cdef int64_t t0 = v.guest_since, i, end
    if t1 <= t0:
        return
    while t0 < t1:
        i = t0 // p.interval_ns
        end = (i + 1) * p.interval_ns
        if end > t1:
            end = t1
        counts[i * C_COLUMNS + C_NS_GUEST] += end - t0
        t0 = end
    v.guest_since = t1

cdef void ks_vcpu_run(ks_vcpu *v, const ks_params *p, int64_t until,
                      int64_t *counts) noexcept nogil:
    cdef int64_t ta, tg, t
    cdef bint exits
    while True:
        if v.in_host and not passes(v, p, until, counts):
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
            add_guest_time(v, p, until, counts)
            v.now = until
            return
        if t == tg and not exits and ta > tg:
            end_handlers(v, p, t, counts + (t // p.interval_ns) * C_COLUMNS)
            continue
        add_guest_time(v, p, t, counts)
        v.pass_at = vm_exit(v, p, t, counts + (t // p.interval_ns) * C_COLUMNS)
        v.in_host = 1


# --- Python side --------------------------------------------------------------------------
cdef bitgen_t *_bitgen(object bg) except NULL:
    return <bitgen_t *> PyCapsule_GetPointer(bg.capsule, "BitGenerator")


cdef _init_source(list keep, ks_source *s, sp, seed):
    cdef const int64_t[::1] times = sp.times_ns
    s.kind = sp.kind
    s.dist = sp.dist
    s.bit = sp.bit
    s.mean_ns = sp.mean_ns
    s.period_ns = sp.period_ns
    s.ntimes = len(sp.times_ns)
    s.times = &times[0] if s.ntimes else NULL
    s.idx = 0
    bg = P.bit_generator(seed, sp.spawn_key)
    keep += [bg, sp.times_ns]
    s.rng = _bitgen(bg)
    if s.dist == DIST_POISSON:
        s.next_t = after(0, random_standard_exponential(s.rng) * s.mean_ns)
    elif s.dist == DIST_PERIODIC:
        s.next_t = sp.start_ns + s.period_ns
    else:
        s.next_t = s.times[0] if s.ntimes else NEVER


cdef class Engine:
    """Owns the C state of every vCPU (declared in _core.pxd); run() holds no GIL."""

    def __cinit__(self, p, int64_t interval_ns):
        cdef int i, n
        cdef ks_source *s
        cdef ks_vcpu *v
        self._keep = []
        memset(&self.params, 0, sizeof(ks_params))
        n = len(p.order_bits)
        self.params.n_checks = n
        for i in range(n):
            self.params.order[i] = p.order_bits[i]
        for i in range(64):
            self.params.rank[i] = p.rank[i]
            self.params.handler[i] = p.handler[i]
            self.params.handler_ns[i] = p.handler_ns[i]
            self.params.raises[i] = p.raises[i]
        self.params.n_noop = len(p.noop_bits)
        for i in range(self.params.n_noop):
            self.params.noop_bits[i] = p.noop_bits[i]
        self.params.cost_vmexit = p.cost_vmexit
        self.params.cost_vmenter = p.cost_vmenter
        self.params.cost_check = p.cost_check
        self.params.cost_event = p.cost_event
        self.params.cost_state_load = p.cost_state_load
        self.params.cost_cancel = p.cost_cancel
        self.params.intel = p.intel
        self.params.lvtpc = p.lvtpc
        self.params.nmi_handler_ns = p.nmi_handler_ns
        self.params.irq_handler_ns = p.irq_handler_ns
        self.params.guest_exit_mean_ns = p.guest_exit_mean_ns
        self.params.interval_ns = interval_ns

        self.n_vcpus = p.vcpus
        self.vcpus = <ks_vcpu *> calloc(p.vcpus, sizeof(ks_vcpu))
        self.sources = <ks_source *> calloc(max(1, len(p.sources)), sizeof(ks_source))
        if self.vcpus == NULL or self.sources == NULL:
            raise MemoryError()
        # Sources grouped per vCPU: host-side first, then guest-side, in plan order.
        s = self.sources
        for i in range(p.vcpus):
            v = &self.vcpus[i]
            v.nmi_end = v.irq_end = v.guest_exit_at = NEVER
            v.in_host = 1               # KVM_RUN: the first pass starts at t = 0
            bg = P.bit_generator(p.seed, (i, 0))
            self._keep.append(bg)
            v.exit_rng = _bitgen(bg)
            mine = [sp for sp in p.sources if sp.vcpu == i]
            host = [sp for sp in mine if sp.kind >= P.SRC_NMI]
            guest = [sp for sp in mine if sp.kind < P.SRC_NMI]
            v.host, v.n_host = s, len(host)
            for sp in host:
                _init_source(self._keep, s, sp, p.seed)
                s += 1
            v.guest, v.n_guest = s, len(guest)
            for sp in guest:
                _init_source(self._keep, s, sp, p.seed)
                s += 1
            update_next_host(v)

    def __dealloc__(self):
        free(self.vcpus)
        free(self.sources)

    def run(self, int64_t until_ns, int64_t[:, :, ::1] counts not None):
        """Advance every vCPU to until_ns, adding into counts[vcpu, interval, column]."""
        if counts.shape[0] != self.n_vcpus or counts.shape[2] != C_COLUMNS:
            raise ValueError(f"counts must be int64[{self.n_vcpus}, intervals, {C_COLUMNS}]")
        if (until_ns + self.params.interval_ns - 1) // self.params.interval_ns > counts.shape[1]:
            raise ValueError("counts has fewer intervals than until_ns needs")
        cdef int i
        cdef int64_t *base = &counts[0, 0, 0]
        cdef int64_t stride = counts.shape[1] * C_COLUMNS
        with nogil:
            for i in range(self.n_vcpus):
                ks_vcpu_run(&self.vcpus[i], &self.params, until_ns, base + i * stride)

    def make_request(self, int vcpu, int bit, bint kick):
        """Another CPU posts request `bit` (kvm_make_request) and, with kick, kicks the vCPU
        (kvm_vcpu_kick): in guest mode it exits at once. Returns whether the kick was sent."""
        if not 0 <= vcpu < self.n_vcpus or not 0 <= bit < 64:
            raise ValueError(f"vcpu {vcpu} / bit {bit} out of range")
        ks_make_request(&self.vcpus[vcpu].requests, bit)
        return bool(kick and ks_kick(&self.vcpus[vcpu].mode))

    def outstanding_nmis(self):
        return np.array([self.vcpus[i].nmi_queued + self.vcpus[i].nmi_pending
                         + self.vcpus[i].nmi_injected for i in range(self.n_vcpus)],
                        dtype=np.int64)
