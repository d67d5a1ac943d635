/* The kvmsim model in plain C11: vcpu_enter_guest() (arch/x86/kvm/x86.c) and what surrounds
 * it, as kvmsim/_reference.py (the specification) states it, written the way a C programmer
 * would write this loop for speed: one struct of state per vCPU, plain bit operations on the
 * request bitmap (one thread runs the whole VM, so no atomics), a walk over the set bits with
 * count-trailing-zeros, a switch on the request bit for the handlers, the next host-side
 * arrival cached, and a binary heap per vCPU for the IPIs in flight to it. Each function
 * names the kernel function it mirrors.
 */
#include "kvmsim_model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

/* From numpy/random/distributions.h, which needs Python.h: the ziggurat Exp(1). */
double random_standard_exponential(bitgen_t *bitgen_state);

#define NEVER INT64_MAX
#define NO_PMI_YET (-((int64_t)1 << 62))
#define BIT(b) ((uint64_t)1 << (b))
#define ctz(x) __builtin_ctzll(x)

/* Request bits: KVM_ARCH_REQ(nr) = nr + KVM_REQUEST_ARCH_BASE (asm/kvm_host.h),
 * and KVM_REQ_UNBLOCK, a generic one (include/linux/kvm_host.h). */
#define KVM_ARCH_REQ(nr) ((nr) + 8)
#define KVM_REQ_UNBLOCK 2
#define KVM_REQ_EVENT KVM_ARCH_REQ(6)
#define KVM_REQ_NMI KVM_ARCH_REQ(9)
#define KVM_REQ_PMU KVM_ARCH_REQ(10)
#define KVM_REQ_PMI KVM_ARCH_REQ(11)
#define KVM_REQ_SMI KVM_ARCH_REQ(12)

const char *const km_column_names[KM_NAMED] = {
    "vmexits", "vmenter_attempts", "vmenters", "canceled_vmenters", "immediate_exits",
    "nmi_window_exits", "irq_window_exits", "nmis_queued", "nmis_injected", "nmis_dropped",
    "pmis_raised", "pmis_coalesced", "pmis_delivered", "pmis_dropped", "irqs_raised",
    "irqs_coalesced", "irqs_injected", "smis_injected", "halt_exits", "nmis_unknown",
    "pmis_irq_work", "fastpath_exits", "task_work", "cancels_task_work", "ipis_sent",
    "ns.guest", "ns.vmexit", "ns.requests", "ns.event", "ns.state_load", "ns.vmenter",
    "ns.cancel", "ns.task_work", "ns.halted",
};

const int32_t km_named = KM_NAMED, km_columns = KM_COLUMNS;
const int32_t km_special_bits[6] = {KVM_REQ_EVENT, KVM_REQ_NMI, KVM_REQ_PMU, KVM_REQ_PMI,
                                    KVM_REQ_SMI, KVM_REQ_UNBLOCK};
const int32_t km_ipi_any = KM_IPI_ANY, km_ipi_all = KM_IPI_ALL;

enum mode { OUTSIDE_GUEST_MODE, IN_GUEST_MODE, EXITING_GUEST_MODE };   /* vcpu->mode */
enum entry_event { ENTRY_NONE, ENTRY_NMI, ENTRY_IRQ };  /* VM_ENTRY_INTR_INFO_FIELD */
/* What ended a VM-exit's handling: a pass of vcpu_enter_guest() follows, the fastpath
 * re-entered the guest, or HLT: kvm_vcpu_halt decides whether to block. */
enum outcome { PASS, REENTERED, HALTED };
/* How a pass ended: the guest runs, the entry was cancelled, or the pass stopped at the
 * horizon of a coupled run and goes on later (its state in struct vcpu's ps_*). */
enum pass_end { ENTERED, CANCELLED, SUSPENDED };

struct arrivals {
    int64_t next;           /* time of the next arrival, NEVER when done */
    int kind, dist, bit, target;
    bool posted;            /* a posted interrupt (APICv): no kick, no VM-exit */
    double mean_ns;
    int64_t period_ns;
    const int64_t *times;
    int64_t n_times, idx;
    bitgen_t *rng;
};

/* An IPI in flight to a vCPU: it arrives at t; seq orders those of one instant. */
struct ipi {
    int64_t t, seq;
    int kind;               /* KM_SRC_NMI or KM_SRC_IRQ */
};

struct ipi_heap {           /* a binary min-heap by (t, seq) */
    struct ipi *items;
    int64_t n, cap;
};

struct vm;

struct vcpu {
    const struct km_params *p;
    struct vm *vm;
    int index;
    uint64_t requests;                  /* vcpu->requests */
    enum mode mode;
    int64_t nmi_queued, nmi_pending;    /* vcpu->arch.nmi_queued, nmi_pending */
    bool nmi_injected;                  /* vcpu->arch.nmi_injected */
    bool vnmi_pending;                  /* V_NMI_PENDING (AMD vNMI) */
    bool irq_pending;                   /* the IRR (or PIR) bit of the device vector */
    bool irq_injected;                  /* vcpu->arch.interrupt.injected */
    bool smi_pending;
    enum entry_event entry_event;       /* the event written for this VM-Enter */
    bool nmi_window, irq_window;
    bool req_immediate_exit, immediate_exit;
    bool lvtpc_masked;                  /* LVTPC.MASK */
    bool pmu_reprogram, emul_overflow;  /* pmu->reprogram_pmi, an emulated count wrapped */
    bool pmi_status;                    /* GLOBAL_STATUS has an overflow the guest sees */
    int64_t pmi_nmi_at, pmi_nmi_n;      /* a host PMI (NMI) in flight lands then, for n */
    int64_t nmi_credit;                 /* NMI IPIs a guest handler will claim */
    int64_t last_pmi_t;                 /* the guest last handled a PMI then */
    bool nmi_blocked, irq_blocked;      /* the guest runs its NMI / IRQ handler ... */
    int64_t nmi_end, irq_end;           /* ... until then (guest time) */
    int op_seq, op_next, op_n;          /* the perf NMI handler's intercepted accesses */
    int64_t op_at;
    bool timer_pending;                 /* apic->lapic_timer.pending */
    bool xfer;                          /* xfer_to_guest_mode work: need_resched, a signal */
    bool if_off, hlt_due, hlt_exit;     /* STI;HLT: IF = 0 until it runs; this exit is it */
    bool halted;                        /* blocked in kvm_vcpu_block() ... */
    bool halt_checked;                  /* ... after kvm_vcpu_check_block said so */
    int64_t halt_since;
    /* a pass suspended at a coupled run's horizon: where its check walk stands */
    bool ps_active, ps_late;
    int ps_pos;
    uint64_t ps_raised;
    int64_t ps_t0, ps_event_ns;
    bool exit_fast, exit_slow;          /* what the VM-exit being handled carries */
    bool in_host;                       /* between a VM-exit and the next VM-Enter */
    int64_t now;                        /* the time this vCPU has been run to */
    int64_t pass_at;                    /* in the host: when the next pass starts */
    int64_t entry_t, exit_t;            /* the last VM-Enter, the last VM-exit */
    int64_t guest_since;                /* guest time counted up to here */
    int64_t guest_exit_at;              /* the guest's own next VM-exit */
    struct arrivals *host, *guest;      /* from other CPUs / from the guest itself */
    int n_host, n_guest;
    struct ipi_heap in_kick, in_posted; /* other vCPUs' IPIs in flight: kick / posted */
    int64_t next_kick, next_posted;     /* the next host-side arrivals, cached */
    bitgen_t *exit_rng;
    int64_t *counts;                    /* [intervals][KM_COLUMNS] of this vCPU */
    int64_t *row;                       /* the row of the interval that ends at row_end */
    int64_t row_end, interval_ns;
};

struct vm {
    struct vcpu *vcpus;
    int n_vcpus;
    int64_t ipi_seq;                    /* orders IPIs that arrive at one instant */
    int stop;                           /* enum km_stop */
};

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* t + gap; a gap of 2^62 ns or more means never (and cannot overflow). */
static inline int64_t after(int64_t t, double gap)
{
    return gap >= 4611686018427387904.0 ? NEVER : t + (int64_t)gap;
}

/* --- sources ------------------------------------------------------------------------- */
static inline void step(struct arrivals *a)
{
    switch (a->dist) {
    case KM_POISSON:
        a->next = after(a->next, random_standard_exponential(a->rng) * a->mean_ns);
        break;
    case KM_PERIODIC:
        a->next += a->period_ns;
        break;
    default:
        a->next = ++a->idx < a->n_times ? a->times[a->idx] : NEVER;
    }
}

/* Past every arrival at or before t; how many. A periodic source jumps in one step. */
static inline int64_t advance(struct arrivals *a, int64_t t)
{
    if (a->dist == KM_PERIODIC) {
        int64_t k = (t - a->next) / a->period_ns + 1;
        a->next += k * a->period_ns;
        return k;
    }
    int64_t k = 0;
    while (a->next <= t) {
        step(a);
        k++;
    }
    return k;
}

/* --- IPIs in flight -------------------------------------------------------------------- */
static inline bool ipi_before(const struct ipi *a, const struct ipi *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static bool heap_push(struct ipi_heap *h, struct ipi x)
{
    if (h->n == h->cap) {
        int64_t cap = h->cap ? 2 * h->cap : 16;
        struct ipi *items = realloc(h->items, (size_t)cap * sizeof *items);
        if (!items)
            return false;
        h->items = items;
        h->cap = cap;
    }
    int64_t i = h->n++;
    while (i > 0) {
        int64_t up = (i - 1) / 2;
        if (!ipi_before(&x, &h->items[up]))
            break;
        h->items[i] = h->items[up];
        i = up;
    }
    h->items[i] = x;
    return true;
}

static struct ipi heap_pop(struct ipi_heap *h)
{
    struct ipi top = h->items[0], last = h->items[--h->n];
    int64_t i = 0;
    for (;;) {
        int64_t child = 2 * i + 1;
        if (child >= h->n)
            break;
        if (child + 1 < h->n && ipi_before(&h->items[child + 1], &h->items[child]))
            child++;
        if (!ipi_before(&h->items[child], &last))
            break;
        h->items[i] = h->items[child];
        i = child;
    }
    if (h->n)
        h->items[i] = last;
    return top;
}

static inline int64_t heap_head(const struct ipi_heap *h)
{
    return h->n ? h->items[0].t : NEVER;
}

/* The next host-side arrival that kicks the vCPU (an IPI: a VM-exit in guest mode), and the
 * next posted interrupt (reaches a running guest without one). */
static void update_next(struct vcpu *v)
{
    int64_t kick = min64(v->pmi_nmi_at, heap_head(&v->in_kick));
    int64_t posted = heap_head(&v->in_posted);
    for (int i = 0; i < v->n_host; i++) {
        if (v->host[i].posted)
            posted = min64(posted, v->host[i].next);
        else
            kick = min64(kick, v->host[i].next);
    }
    v->next_kick = kick;
    v->next_posted = posted;
}

static inline int64_t next_host(const struct vcpu *v)
{
    return min64(v->next_kick, v->next_posted);
}

/* --- bookkeeping --------------------------------------------------------------------- */
/* The counts row of the interval holding t; the division only when t leaves the row's. */
static inline int64_t *row_at(struct vcpu *v, int64_t t)
{
    if (t >= v->row_end || t < v->row_end - v->interval_ns) {
        int64_t i = t / v->interval_ns;
        v->row = v->counts + i * KM_COLUMNS;
        v->row_end = (i + 1) * v->interval_ns;
    }
    return v->row;
}

/* Time from t0 to t1 into column col, split at interval boundaries. */
static void add_span(struct vcpu *v, int col, int64_t t0, int64_t t1)
{
    while (t0 < t1) {
        int64_t *c = row_at(v, t0);
        int64_t end = min64(v->row_end, t1);
        c[col] += end - t0;
        t0 = end;
    }
}

static inline void add_guest_time(struct vcpu *v, int64_t t1)
{
    add_span(v, KM_NS_GUEST, v->guest_since, t1);
    v->guest_since = max64(v->guest_since, t1);
}

/* kvm_vcpu_kick: kvm_vcpu_exiting_guest_mode() cmpxchg IN_GUEST -> EXITING. */
static inline void kick(struct vcpu *v)
{
    if (v->mode == IN_GUEST_MODE)
        v->mode = EXITING_GUEST_MODE;
}

/* --- arrivals from other CPUs ---------------------------------------------------------- */
/* kvm_lapic_set_irr + KVM_REQ_EVENT + kick (vmx_deliver_interrupt without APICv); with APICv
 * or AVIC the vector is posted (PIR) and no request is made. k arrivals at once. */
static void accept_irq(struct vcpu *v, int64_t k, int64_t *c)
{
    c[KM_IRQS_RAISED] += k;
    c[KM_IRQS_COALESCED] += k - 1 + v->irq_pending;
    v->irq_pending = true;
    if (!v->p->apicv) {
        v->requests |= BIT(KVM_REQ_EVENT);
        kick(v);
    }
}

/* k arrivals of one host-side kind at once. */
static void arrive(struct vcpu *v, int kind, int bit, int64_t k, int64_t *c)
{
    switch (kind) {
    case KM_SRC_NMI:                            /* kvm_inject_nmi, from an NMI IPI */
        v->nmi_queued += k;
        c[KM_NMIS_QUEUED] += k;
        v->nmi_credit += k;                     /* the guest's handler for it claims it */
        v->requests |= BIT(KVM_REQ_NMI);
        kick(v);
        break;
    case KM_SRC_IRQ:                            /* __apic_accept_irq, APIC_DM_FIXED */
        accept_irq(v, k, c);
        break;
    case KM_SRC_TIMER:                          /* apic_timer_expired(from_timer_fn) */
        v->timer_pending = true;
        v->requests |= BIT(KVM_REQ_UNBLOCK);
        kick(v);
        break;
    case KM_SRC_TASK_WORK:                      /* need_resched / a signal, and its IPI */
        v->xfer = true;
        kick(v);
        break;
    default:                                    /* kvm_make_request + kick */
        v->requests |= BIT(bit);
        kick(v);
    }
}

static void apply_source(struct vcpu *v, struct arrivals *a, int64_t t, int64_t *c)
{
    const struct km_params *p = v->p;
    while (a->next <= t) {
        if (a->kind == KM_SRC_REQUEST_NOOP) {   /* one of the no-op requests, uniformly */
            int bit = p->noop_bits[(int)(a->rng->next_double(a->rng->state) * p->n_noop)];
            step(a);
            arrive(v, KM_SRC_REQUEST, bit, 1, c);
        } else {
            arrive(v, a->kind, a->bit, advance(a, t), c);
        }
    }
}

/* Other vCPUs' IPIs that have arrived by t, in order (__apic_accept_irq). */
static void apply_ipis(struct vcpu *v, struct ipi_heap *h, int64_t t, int64_t *c)
{
    while (h->n && h->items[0].t <= t)
        arrive(v, heap_pop(h).kind, 0, 1, c);
}

/* __kvm_perf_overflow: set global_status and raise KVM_REQ_PMI. */
static void perf_overflow(struct vcpu *v, int64_t *c)
{
    v->pmi_status = true;
    if (v->requests & BIT(KVM_REQ_PMI)) {
        c[KM_PMIS_COALESCED]++;
    } else {
        c[KM_PMIS_RAISED]++;
        v->requests |= BIT(KVM_REQ_PMI);
    }
}

/* kvm_perf_overflow: ignored while the counter's reprogram bit is set; else
 * __kvm_perf_overflow, then KVM_REQ_PMU. */
static void overflow(struct vcpu *v, int64_t *c)
{
    if (v->pmu_reprogram) {
        c[KM_PMIS_COALESCED]++;
    } else {
        v->pmu_reprogram = true;
        perf_overflow(v, c);
        v->requests |= BIT(KVM_REQ_PMU);
    }
}

/* kvm_pmu_deliver_pmi -> kvm_apic_local_deliver(APIC_LVTPC). */
static void deliver_pmi(struct vcpu *v, int64_t *c)
{
    const struct km_params *p = v->p;
    if (p->lvtpc == KM_LVTPC_MASKED || v->lvtpc_masked) {
        c[KM_PMIS_DROPPED]++;
        return;
    }
    c[KM_PMIS_DELIVERED]++;
    if (p->lvtpc == KM_LVTPC_NMI) {             /* APIC_DM_NMI: kvm_inject_nmi */
        v->nmi_queued++;
        c[KM_NMIS_QUEUED]++;
        v->requests |= BIT(KVM_REQ_NMI);
        kick(v);
    } else if (p->lvtpc == KM_LVTPC_FIXED) {    /* APIC_DM_FIXED */
        accept_irq(v, 1, c);
    } else {                                    /* APIC_DM_SMI: kvm_inject_smi */
        v->requests |= BIT(KVM_REQ_SMI);
        kick(v);
    }
    if (p->automask)                            /* a16eb25b09c0; 49ff3b4aec51: Intel only */
        v->lvtpc_masked = true;
}

/* The host's NMIs for guest counter overflows (kvm_perf_overflow, NMI context): taken while
 * the guest ran, or in the request path: KVM_REQ_PMI. Before 73554b29bd70, outside guest
 * mode: irq_work (kvm_pmi_trigger_fn) delivers the PMI at once. */
static void host_pmi(struct vcpu *v, int64_t *c, bool in_guest)
{
    int64_t n = v->pmi_nmi_n;
    v->pmi_nmi_n = 0;
    v->pmi_nmi_at = NEVER;
    for (int64_t j = 0; j < n; j++) {
        if (in_guest || !v->p->pmi_irq_work) {
            overflow(v, c);
        } else if (v->pmu_reprogram) {
            c[KM_PMIS_COALESCED]++;
        } else {
            v->pmu_reprogram = true;
            v->pmi_status = true;
            v->requests |= BIT(KVM_REQ_PMU);
            c[KM_PMIS_IRQ_WORK]++;
            deliver_pmi(v, c);
        }
    }
}

/* Every host-side arrival at or before t; in_guest: the VM-exit at t is theirs. */
static void apply_host(struct vcpu *v, int64_t t, int64_t *c, bool in_guest)
{
    if (next_host(v) > t)
        return;
    for (int i = 0; i < v->n_host; i++)
        apply_source(v, &v->host[i], t, c);
    apply_ipis(v, &v->in_kick, t, c);
    apply_ipis(v, &v->in_posted, t, c);
    if (v->pmi_nmi_at <= t)
        host_pmi(v, c, in_guest);
    update_next(v);
}

/* Posted interrupts up to t, reaching a guest that runs. */
static void apply_posted(struct vcpu *v, int64_t t, int64_t *c)
{
    if (v->next_posted > t)
        return;
    for (int i = 0; i < v->n_host; i++)
        if (v->host[i].posted)
            apply_source(v, &v->host[i], t, c);
    apply_ipis(v, &v->in_posted, t, c);
    update_next(v);
}

/* --- the guest ------------------------------------------------------------------------- */
/* interrupt_allowed: IF = 1 and no handler blocking interrupts. */
static inline bool allowed(const struct vcpu *v)
{
    return !(v->nmi_blocked || v->irq_blocked || v->if_off);
}

/* Whether the guest's STI;HLT exits: an open interrupt window takes the VM-exit instead;
 * AMD's Idle HLT intercept lets HLT with a pending interrupt run on. */
static inline bool hlt_exits(const struct vcpu *v)
{
    if (v->irq_window && !(v->nmi_blocked || v->irq_blocked))
        return true;
    return !(v->p->idle_hlt && (v->irq_pending || v->vnmi_pending));
}

/* Whether a guest-side event makes a VM-exit. STI;HLT never does by itself: it becomes
 * hlt_due, which decides once the rest of its instant has happened. An IPI with a shorthand
 * (ipi:all) is neither virtualised nor taken by the fastpath. */
static inline bool event_exits(const struct vcpu *v, const struct arrivals *a)
{
    switch (a->kind) {
    case KM_SRC_IPI:
        return !v->p->ipiv || a->target == KM_IPI_ALL;
    case KM_SRC_IPI_SELF:
        return !v->p->apicv;
    case KM_SRC_HLT:
        return false;
    default:
        return true;
    }
}

static inline bool nmi_end_exits(const struct vcpu *v)
{
    return v->p->iret_exits || v->nmi_window
        || (v->irq_window && !v->irq_blocked && !v->if_off);
}

static inline bool irq_end_exits(const struct vcpu *v)
{
    return (v->irq_window && !v->nmi_blocked && !v->if_off)
        || (v->p->automask && v->p->lvtpc == KM_LVTPC_FIXED && v->lvtpc_masked);
}

/* The earlier of two guest events; at a tie the guest exits if either makes it. */
static inline int64_t earlier(int64_t t, bool *exits, int64_t when, bool when_exits)
{
    if (when < t) {
        *exits = when_exits;
        return when;
    }
    if (when == t && when_exits)
        *exits = true;
    return t;
}

/* When the guest's next own event comes, and whether it is a VM-exit: not before the time
 * the guest has reached (an event that came due while the vCPU was in the host is at once). */
static int64_t next_guest_event(const struct vcpu *v, bool *exits)
{
    const struct km_params *p = v->p;
    const int64_t e = v->guest_since;
    int64_t t = NEVER;
    *exits = true;
    for (int i = 0; i < v->n_guest; i++) {
        const struct arrivals *a = &v->guest[i];
        int64_t when;
        if (a->kind == KM_SRC_PMI && a->next != NEVER)
            /* the host's NMI, a skid after the overflow (which needs the guest running) */
            when = max64(max64(a->next, v->entry_t) + p->pmi_skid_ns, e);
        else
            when = max64(a->next, e);
        t = earlier(t, exits, when, event_exits(v, a));
    }
    t = earlier(t, exits, max64(v->guest_exit_at, e), true);
    if (v->immediate_exit || (v->nmi_window && !v->nmi_blocked)
        || (v->irq_window && allowed(v)))
        t = earlier(t, exits, e, true);
    if (v->hlt_due)
        t = earlier(t, exits, e, hlt_exits(v));
    if (v->nmi_blocked && v->op_next < v->op_n)
        t = earlier(t, exits, max64(v->op_at, e), true);
    else if (v->nmi_blocked)
        t = earlier(t, exits, max64(v->nmi_end, e), nmi_end_exits(v));
    if (v->irq_blocked)
        t = earlier(t, exits, max64(v->irq_end, e), irq_end_exits(v));
    return t;
}

/* handle_interrupt_window: the window is satisfied, KVM_REQ_EVENT. */
static inline void irq_window_exit(struct vcpu *v, int64_t *c)
{
    v->irq_window = false;
    c[KM_IRQ_WINDOW_EXITS]++;
    v->requests |= BIT(KVM_REQ_EVENT);
}

/* Guest handlers whose time is up: IRET unblocks NMIs (SVM without vNMI intercepts it); an
 * open window is satisfied (handle_nmi_window, handle_interrupt_window). True if one ended. */
static bool end_handlers(struct vcpu *v, int64_t t, int64_t *c)
{
    const struct km_params *p = v->p;
    bool ended = false;
    if (v->nmi_blocked && v->nmi_end <= t && v->op_next >= v->op_n) {
        v->nmi_blocked = false;
        v->nmi_end = NEVER;
        ended = true;
        if (p->iret_exits) {
            v->nmi_window = false;
            c[KM_NMI_WINDOW_EXITS]++;
            v->requests |= BIT(KVM_REQ_EVENT);
        }
    }
    if (v->irq_blocked && v->irq_end <= t) {
        v->irq_blocked = false;
        v->irq_end = NEVER;
        ended = true;
        if (p->lvtpc == KM_LVTPC_FIXED)         /* the PMI handler's LVTPC write */
            v->lvtpc_masked = false;
    }
    if (v->nmi_window && !v->nmi_blocked) {
        v->nmi_window = false;
        c[KM_NMI_WINDOW_EXITS]++;
        v->requests |= BIT(KVM_REQ_EVENT);
        ended = true;
    }
    if (v->irq_window && allowed(v)) {
        irq_window_exit(v, c);
        ended = true;
    }
    return ended;
}

/* An NMI reaches the guest: default_do_nmi. Perf's handler finds the overflow in
 * GLOBAL_STATUS (a PMI), another claims an NMI IPI; one none claims is "unknown" (AMD perf
 * claims those within perf_nmi_window of a PMI). */
static void nmi_start(struct vcpu *v, int64_t t, int64_t *c)
{
    const struct km_params *p = v->p;
    bool pmi = v->pmi_status, claimed = pmi;
    v->nmi_blocked = true;
    v->nmi_end = t + p->nmi_handler_ns;
    v->pmi_status = false;
    if (v->nmi_credit) {
        v->nmi_credit--;
        claimed = true;
    }
    if (!claimed && t - v->last_pmi_t < p->amd_nmi_window_ns)
        claimed = true;
    if (pmi)
        v->last_pmi_t = t;
    if (!claimed)
        c[KM_NMIS_UNKNOWN]++;
    /* the perf NMI handler's intercepted accesses, evenly spaced in its guest time */
    v->op_seq = pmi ? 0 : 1;
    v->op_next = 0;
    v->op_n = p->pmi_ops_n[v->op_seq];
    v->op_at = v->op_n ? t + p->nmi_handler_ns / (v->op_n + 1) : NEVER;
}

/* One access of the perf NMI handler (an exit): a write that makes KVM reprogram counters
 * raises KVM_REQ_PMU (reprogram_counters; synchronous before 68fb4757e867); the LVTPC write
 * unmasks LVTPC. */
static void pmu_access(struct vcpu *v)
{
    const struct km_params *p = v->p;
    int i = v->op_next;
    if ((p->pmi_ops_pmu[v->op_seq] >> i & 1) && p->pmu_request) {
        v->pmu_reprogram = true;
        v->requests |= BIT(KVM_REQ_PMU);
    }
    if (p->pmi_ops_lvtpc[v->op_seq] == i)
        v->lvtpc_masked = false;
    v->op_next++;
    v->op_at = v->op_next < v->op_n ? v->op_at + p->nmi_handler_ns / (v->op_n + 1) : NEVER;
}

/* What the CPU delivers by itself in guest mode: the NMI in V_NMI_PENDING (also inside an
 * IRQ handler), and a posted interrupt (APICv virtual-interrupt delivery, AVIC). */
static void hardware_deliver(struct vcpu *v, int64_t t, int64_t *c)
{
    if (v->vnmi_pending && !v->nmi_blocked) {
        v->vnmi_pending = false;
        c[KM_NMIS_INJECTED]++;
        nmi_start(v, t, c);
    } else if (v->p->apicv && v->irq_pending && allowed(v)) {
        v->irq_pending = false;
        c[KM_IRQS_INJECTED]++;
        v->irq_blocked = true;
        v->irq_end = t + v->p->irq_handler_ns;
    }
}

/* kvm_apic_send_ipi -> kvm_irq_delivery_to_apic: the IPI reaches each target cost_ipi later;
 * there __apic_accept_irq posts it (fixed, APICv), or sets the IRR and kicks, or injects an
 * NMI and kicks. A target of "any" is drawn from the source's stream among the others. */
static void send_ipi(struct vcpu *v, struct arrivals *a, int64_t t, int64_t *c)
{
    struct vm *vm = v->vm;
    int lo, hi;
    if (a->target == KM_IPI_ALL) {
        lo = 0;
        hi = vm->n_vcpus;
    } else if (a->target == KM_IPI_ANY) {
        int j = (int)(a->rng->next_double(a->rng->state) * (vm->n_vcpus - 1));
        lo = j + (j >= v->index);
        hi = lo + 1;
    } else {
        lo = a->target;
        hi = lo + 1;
    }
    int kind = a->kind == KM_SRC_IPI_NMI ? KM_SRC_NMI : KM_SRC_IRQ;
    bool posted = kind == KM_SRC_IRQ && v->p->apicv;
    int64_t at = t + v->p->cost_ipi;
    for (int i = lo; i < hi; i++) {
        if (i == v->index)
            continue;
        struct vcpu *w = &vm->vcpus[i];
        struct ipi x = {.t = at, .seq = vm->ipi_seq++, .kind = kind};
        if (!heap_push(posted ? &w->in_posted : &w->in_kick, x)) {
            vm->stop = KM_NOMEM;
            return;
        }
        if (posted)
            w->next_posted = min64(w->next_posted, at);
        else
            w->next_kick = min64(w->next_kick, at);
        c[KM_IPIS_SENT]++;
    }
}

/* The earliest time this vCPU can still send an IPI (NEVER: it sends none). */
static int64_t next_send(const struct vcpu *v)
{
    int64_t t = NEVER;
    for (int i = 0; i < v->n_guest; i++)
        if (v->guest[i].kind == KM_SRC_IPI || v->guest[i].kind == KM_SRC_IPI_NMI)
            t = min64(t, max64(v->guest[i].next, v->now));
    return t;
}

static void guest_event(struct vcpu *v, struct arrivals *a, int64_t t, int64_t *c)
{
    const struct km_params *p = v->p;
    switch (a->kind) {
    case KM_SRC_EMUL_PMI:
        /* kvm_pmu_trigger_event -> kvm_pmu_request_counter_reprogram; before 68fb4757e867
         * the counter is reprogrammed and overflows at once */
        if (p->pmu_request) {
            v->pmu_reprogram = true;
            v->emul_overflow = true;
            v->requests |= BIT(KVM_REQ_PMU);
        } else {
            perf_overflow(v, c);
        }
        v->exit_slow = true;
        break;
    case KM_SRC_TIMER:
        /* VMX preemption timer: handle_fastpath_preemption_timer -> apic_timer_expired.
         * With APICv the interrupt is posted; without, lapic_timer.pending and
         * KVM_REQ_UNBLOCK, which ends the fastpath loop. */
        if (p->apicv) {
            accept_irq(v, 1, c);
        } else {
            v->timer_pending = true;
            v->requests |= BIT(KVM_REQ_UNBLOCK);
        }
        v->exit_fast = true;
        break;
    case KM_SRC_IPI_NMI:                        /* ICR write, APIC_DM_NMI: a full exit */
        send_ipi(v, a, t, c);
        v->exit_slow = true;
        break;
    case KM_SRC_IPI:                            /* x2APIC ICR write, APIC_DM_FIXED */
        send_ipi(v, a, t, c);
        if (event_exits(v, a)) {      /* handle_fastpath_set_x2apic_icr_irqoff: no shorthand */
            if (p->fastpath_reenter && a->target != KM_IPI_ALL)
                v->exit_fast = true;
            else
                v->exit_slow = true;
        }
        break;
    case KM_SRC_IPI_SELF:                       /* x2APIC SELF IPI write (APICv: no exit) */
        accept_irq(v, 1, c);
        v->exit_slow = true;
        break;
    case KM_SRC_HLT:
        v->hlt_due = true;                      /* runs once the rest of this instant has */
        v->if_off = true;
        break;
    default:                                    /* KM_SRC_EXIT: the guest's own exit */
        v->exit_slow = true;
    }
}

/* The guest's STI;HLT, due now. If anything else is handled at this exit it runs at the
 * next guest instant; else it is this exit's: an open interrupt window takes it, else
 * kvm_emulate_halt. */
static void hlt(struct vcpu *v, int64_t *c)
{
    if (v->exit_fast || v->exit_slow)
        return;
    v->hlt_due = v->if_off = false;
    if (v->irq_window && !(v->nmi_blocked || v->irq_blocked)) {
        irq_window_exit(v, c);
        v->exit_slow = true;
    } else {
        v->hlt_exit = true;
        if (v->p->fastpath_reenter)
            v->exit_fast = true;
        else
            v->exit_slow = true;
    }
}

/* Guest-side events at or before t, at a VM-exit at t (one handler access at a time); marks
 * the exit fast when only fastpath events make it. */
static void apply_guest(struct vcpu *v, int64_t t, int64_t *c)
{
    const struct km_params *p = v->p;
    if (v->nmi_blocked && v->op_next < v->op_n && v->op_at <= t) {
        pmu_access(v);
        v->exit_slow = true;
    }
    if (end_handlers(v, t, c))
        v->exit_slow = true;
    for (int i = 0; i < v->n_guest; i++) {
        struct arrivals *a = &v->guest[i];
        if (a->kind == KM_SRC_PMI) {
            for (int64_t at; (at = max64(a->next, v->entry_t)) <= t; step(a)) {
                if (at + p->pmi_skid_ns <= t) {     /* the NMI hit the guest: exit context */
                    overflow(v, c);
                    v->exit_slow = true;
                } else {                            /* the exit came first: NMI in flight */
                    v->pmi_nmi_at = min64(v->pmi_nmi_at, at + p->pmi_skid_ns);
                    v->pmi_nmi_n++;
                }
            }
            continue;
        }
        for (; a->next <= t; step(a))
            guest_event(v, a, t, c);
    }
    if (v->hlt_due)
        hlt(v, c);
    update_next(v);
}

/* Guest-side events at or before t that need no VM-exit (an IPI with IPIv; STI;HLT, which
 * becomes hlt_due), handler ends, posted interrupts; then what the CPU delivers. An hlt_due
 * still set here ran on without an exit (Idle HLT). */
static void apply_in_guest(struct vcpu *v, int64_t t, int64_t *c)
{
    end_handlers(v, t, c);
    apply_posted(v, t, c);
    v->hlt_due = v->if_off = false;
    for (int i = 0; i < v->n_guest; i++) {
        struct arrivals *a = &v->guest[i];
        if (a->kind != KM_SRC_IPI_SELF && a->kind != KM_SRC_HLT && a->kind != KM_SRC_IPI)
            continue;
        if (event_exits(v, a))                  /* never an HLT's */
            continue;                           /* (its exit takes it) */
        for (; a->next <= t; step(a)) {
            if (a->kind == KM_SRC_IPI_SELF)
                accept_irq(v, 1, c);
            else if (a->kind == KM_SRC_IPI)
                send_ipi(v, a, t, c);
            else
                v->hlt_due = v->if_off = true;
        }
    }
    hardware_deliver(v, t, c);
}

/* --- handlers of vcpu_enter_guest() ------------------------------------------------------ */
/* process_nmi: fold nmi_queued into nmi_pending, at most 2 (1 if NMIs are masked or one is
 * injected, one fewer while V_NMI_PENDING holds one); the rest is dropped. With vNMI one
 * goes to V_NMI_PENDING. KVM_REQ_EVENT always (before 2cb9317377ca) or if one is pending. */
static void process_nmi(struct vcpu *v, int64_t *c)
{
    const struct km_params *p = v->p;
    int64_t limit = v->nmi_blocked || v->nmi_injected ? 1 : 2;
    if (v->vnmi_pending)
        limit--;
    v->nmi_pending += v->nmi_queued;
    v->nmi_queued = 0;
    if (v->nmi_pending > limit) {
        c[KM_NMIS_DROPPED] += v->nmi_pending - limit;
        v->nmi_pending = limit;
    }
    if (v->nmi_pending && p->vnmi && !v->vnmi_pending) {   /* svm_set_vnmi_pending */
        v->vnmi_pending = true;
        v->nmi_pending--;
    }
    if (v->nmi_pending || p->nmi_event_always)
        v->requests |= BIT(KVM_REQ_EVENT);
}

/* kvm_check_and_inject_events: re-injection first, then SMI > NMI > IRQ; at most one new
 * event; -EBUSY sets req_immediate_exit. Posted interrupts are the CPU's to deliver; with
 * vNMI no NMI window is opened. */
static void inject_events(struct vcpu *v, int64_t *c)
{
    const struct km_params *p = v->p;
    bool can_inject = true;
    if (v->nmi_injected) {
        v->entry_event = ENTRY_NMI;
        can_inject = false;
    } else if (v->irq_injected) {
        v->entry_event = ENTRY_IRQ;
        can_inject = false;
    }
    if (v->smi_pending) {
        if (!can_inject) {
            v->req_immediate_exit = true;
            return;
        }
        v->smi_pending = false;                 /* enter_smm */
        c[KM_SMIS_INJECTED]++;
        can_inject = false;
    }
    if (v->nmi_pending) {
        if (!can_inject) {
            v->req_immediate_exit = true;
            return;
        }
        if (!v->nmi_blocked) {                  /* nmi_allowed */
            v->nmi_pending--;
            v->nmi_injected = true;
            v->entry_event = ENTRY_NMI;
            can_inject = false;
        }
        if (v->nmi_pending && !p->vnmi)
            v->nmi_window = true;               /* enable_nmi_window */
    }
    if (v->irq_pending && !p->apicv) {
        if (!can_inject) {
            v->req_immediate_exit = true;
            return;
        }
        if (allowed(v)) {                       /* interrupt_allowed */
            v->irq_pending = false;
            v->irq_injected = true;
            v->entry_event = ENTRY_IRQ;
        } else {
            v->irq_window = true;               /* enable_irq_window */
        }
    }
}

static void handle(struct vcpu *v, int bit, int64_t *c)
{
    switch (bit) {
    case KVM_REQ_EVENT:
        inject_events(v, c);
        break;
    case KVM_REQ_NMI:
        process_nmi(v, c);
        break;
    case KVM_REQ_PMU:           /* kvm_pmu_handle_event: an emulated wrap overflows */
        v->pmu_reprogram = false;
        if (v->emul_overflow) {
            v->emul_overflow = false;
            perf_overflow(v, c);
        }
        break;
    case KVM_REQ_PMI:
        deliver_pmi(v, c);
        break;
    case KVM_REQ_SMI:           /* process_smi */
        v->smi_pending = true;
        v->requests |= BIT(KVM_REQ_EVENT);
        break;
    default:
        v->requests |= v->p->raises[bit];
    }
}

/* --- one pass of vcpu_enter_guest() ------------------------------------------------------ */
/* The pending requests as a mask over check positions >= pos. */
static inline uint64_t pending_positions(const struct vcpu *v, int pos)
{
    const struct km_params *p = v->p;
    uint64_t mask = 0;
    for (uint64_t x = v->requests; x; x &= x - 1) {
        int r = p->rank[ctz(x)];
        if (r >= pos && r < p->n_checks)
            mask |= BIT(r);
    }
    return mask;
}

/* kvm_vcpu_exit_request: kicked, any request, or xfer_to_guest_mode work. */
static inline bool exit_request(const struct vcpu *v)
{
    return v->requests || v->xfer || v->mode == EXITING_GUEST_MODE;
}

/* kvm_vcpu_check_block: kvm_vcpu_has_events (an interrupt IF allows, an NMI, an SMI,
 * KVM_REQ_PMI since 73554b29bd70), KVM_REQ_UNBLOCK, the timer. (Task work does not wake a
 * halted vCPU: halted_work.) */
static inline bool runnable(const struct vcpu *v)
{
    uint64_t r = v->requests;
    return (v->irq_pending && !v->if_off) || v->nmi_pending || v->vnmi_pending
        || v->smi_pending || r & (BIT(KVM_REQ_NMI) | BIT(KVM_REQ_SMI) | BIT(KVM_REQ_UNBLOCK))
        || (r & BIT(KVM_REQ_PMI) && !v->p->pmi_irq_work) || v->timer_pending;
}

/* Task work while blocked: vcpu_block() returns to vcpu_run(), which handles it and blocks
 * again (the vCPU stays halted). Returns the time it took. */
static int64_t halted_work(struct vcpu *v, int64_t *c)
{
    if (!v->xfer)
        return 0;
    v->xfer = false;
    c[KM_TASK_WORK]++;
    c[KM_NS_TASK_WORK] += v->p->cost_task_work;
    return v->p->cost_task_work;
}

/* vcpu_run() after vcpu_enter_guest() returned 1: clear KVM_REQ_UNBLOCK, inject the LAPIC
 * timer's interrupt (kvm_inject_pending_timer_irqs), handle task work
 * (xfer_to_guest_mode_handle_work). Returns when the next pass can start. */
static int64_t vcpu_run_tail(struct vcpu *v, int64_t t, int64_t *c)
{
    v->requests &= ~BIT(KVM_REQ_UNBLOCK);
    if (v->timer_pending) {
        v->timer_pending = false;
        accept_irq(v, 1, c);
    }
    if (v->xfer) {
        v->xfer = false;
        c[KM_TASK_WORK]++;
        c[KM_NS_TASK_WORK] += v->p->cost_task_work;
        t += v->p->cost_task_work;
    }
    return t;
}

/* The guest runs from t: handlers the last VM-exit interrupted resume (their times are guest
 * time); the written event is delivered (its handler starts), then what the CPU delivers by
 * itself; the guest's next own exit is drawn. */
static void enter(struct vcpu *v, int64_t t, int64_t *c)
{
    const struct km_params *p = v->p;
    int64_t paused = t - v->exit_t;
    if (v->nmi_blocked) {
        v->nmi_end += paused;
        if (v->op_at != NEVER)
            v->op_at += paused;
    }
    if (v->irq_blocked)
        v->irq_end += paused;
    if (v->entry_event == ENTRY_NMI) {
        c[KM_NMIS_INJECTED]++;
        v->nmi_injected = false;
        nmi_start(v, t, c);
    } else if (v->entry_event == ENTRY_IRQ) {
        c[KM_IRQS_INJECTED]++;
        v->irq_injected = false;
        v->irq_blocked = true;
        v->irq_end = t + p->irq_handler_ns;
    }
    v->entry_event = ENTRY_NONE;
    hardware_deliver(v, t, c);
    if (p->guest_exit_mean_ns > 0)
        v->guest_exit_at = after(t, random_standard_exponential(v->exit_rng)
                                    * p->guest_exit_mean_ns);
    v->entry_t = v->guest_since = t;
}

/* One vcpu_enter_guest() starting at t, or the rest of the suspended one; it stops before
 * anything at or after `horizon` (SUSPENDED). Returns when it ends; *end says how. A
 * cancelled entry has run vcpu_run's tail. */
static int64_t one_pass(struct vcpu *v, int64_t t, int64_t *c, int64_t horizon,
                        enum pass_end *end)
{
    const struct km_params *p = v->p;
    const int n = p->n_checks;
    int pos;
    uint64_t raised;                            /* bits this pass's handlers raised */
    int64_t t0, event_ns;
    bool late;
    if (v->ps_active) {
        v->ps_active = false;
        pos = v->ps_pos;
        raised = v->ps_raised;
        t0 = v->ps_t0;
        event_ns = v->ps_event_ns;
        late = v->ps_late;
    } else {
        apply_host(v, t, c, false);
        v->req_immediate_exit = false;
        pos = v->requests ? 0 : n - 1;          /* if (kvm_request_pending(vcpu)) { ... } */
        raised = 0;
        t0 = t;
        event_ns = 0;
        late = false;
    }
    while (!late) {
        uint64_t mask = pending_positions(v, pos);
        int r = mask ? ctz(mask) : n;
        int64_t t_r = t + (r - pos) * p->cost_check;
        int64_t ta = next_host(v);
        if (t >= horizon || min64(ta, t_r) >= horizon) {
            v->ps_active = true;
            v->ps_late = false;
            v->ps_pos = pos;
            v->ps_raised = raised;
            v->ps_t0 = t0;
            v->ps_event_ns = event_ns;
            *end = SUSPENDED;
            return t;
        }
        if (ta <= t_r) {                        /* lands among the checks before r */
            if (ta > t && p->cost_check) {
                int64_t passed = (ta - t + p->cost_check - 1) / p->cost_check;
                pos += (int)passed;
                t += passed * p->cost_check;
            }
            apply_host(v, t, c, false);
            continue;
        }
        if (r == n) {
            t = t_r;
            c[KM_NS_REQUESTS] += t - t0 - event_ns;
            c[KM_NS_EVENT] += event_ns;
            late = true;
            break;
        }
        int bit = p->order[r];
        v->requests &= ~BIT(bit);               /* kvm_check_request: clear, then handle */
        c[KM_REQUESTS + bit]++;
        int64_t cost = p->handler_ns[bit];
        if (bit == KVM_REQ_EVENT)
            event_ns += cost;
        t = t_r + p->cost_check + cost;
        pos = r + 1;
        uint64_t before = v->requests;
        handle(v, bit, c);
        raised = (raised & ~BIT(bit)) | (v->requests & ~before);
    }
    /* kvm_mmu_reload .. vcpu->mode = IN_GUEST_MODE .. kvm_vcpu_exit_request() */
    if (t + p->cost_state_load >= horizon) {
        v->ps_active = true;
        v->ps_late = true;
        v->ps_pos = pos;
        v->ps_raised = raised;
        v->ps_t0 = t0;
        v->ps_event_ns = event_ns;
        *end = SUSPENDED;
        return t;
    }
    t += p->cost_state_load;
    c[KM_NS_STATE_LOAD] += p->cost_state_load;
    v->mode = IN_GUEST_MODE;
    apply_host(v, t, c, false);
    c[KM_VMENTER_ATTEMPTS]++;
    if (exit_request(v)) {                      /* kvm_vcpu_exit_request: cancel_injection */
        v->mode = OUTSIDE_GUEST_MODE;
        c[KM_CANCELED_VMENTERS]++;
        if (!v->requests)
            c[KM_CANCELS_TASK_WORK]++;
        for (uint64_t x = v->requests; x; x &= x - 1) {
            int b = ctz(x);
            c[(raised & BIT(b) ? KM_CANCELS_BACKEDGE : KM_CANCELS_ASYNC) + b]++;
        }
        t += p->cost_cancel;
        c[KM_NS_CANCEL] += p->cost_cancel;
        /* vmx_cancel_injection -> __vmx_complete_interrupts: back to "injected", EVENT */
        if (v->entry_event != ENTRY_NONE || v->req_immediate_exit)
            v->requests |= BIT(KVM_REQ_EVENT);
        v->entry_event = ENTRY_NONE;
        *end = CANCELLED;
        return vcpu_run_tail(v, t, c);
    }
    if (v->req_immediate_exit)                  /* after the late check: no cancel */
        v->requests |= BIT(KVM_REQ_EVENT);
    v->immediate_exit = v->req_immediate_exit;
    t += p->cost_vmenter;
    c[KM_NS_VMENTER] += p->cost_vmenter;
    c[KM_VMENTERS]++;
    enter(v, t, c);
    *end = ENTERED;
    return t;
}

/* A VM-exit at t and its handling; *t_io becomes when that ends. */
static enum outcome vm_exit(struct vcpu *v, int64_t *t_io, int64_t *c)
{
    const struct km_params *p = v->p;
    int64_t t = *t_io;
    /* a kick, or req_immediate_exit, makes this exit a full one (and interrupts a HLT the
     * guest had not reached) */
    v->exit_fast = false;
    v->exit_slow = v->mode == EXITING_GUEST_MODE || v->next_kick <= t || v->immediate_exit;
    v->exit_t = t;
    v->mode = OUTSIDE_GUEST_MODE;
    c[KM_VMEXITS]++;
    if (v->immediate_exit) {
        c[KM_IMMEDIATE_EXITS]++;
        v->immediate_exit = false;
    }
    apply_guest(v, t, c);
    apply_host(v, t, c, true);
    c[KM_NS_VMEXIT] += p->cost_vmexit;
    t += p->cost_vmexit;
    bool halt = v->hlt_exit;
    if (halt) {                                 /* kvm_emulate_halt */
        v->hlt_exit = false;
        c[KM_HALT_EXITS]++;
    }
    if (v->exit_fast && !v->exit_slow && (!halt || runnable(v)) && !exit_request(v)) {
        /* EXIT_FASTPATH_REENTER_GUEST: back in without a pass */
        c[KM_FASTPATH_EXITS]++;
        c[KM_VMENTER_ATTEMPTS]++;
        c[KM_VMENTERS]++;
        c[KM_NS_VMENTER] += p->cost_vmenter;
        t += p->cost_vmenter;
        v->mode = IN_GUEST_MODE;
        enter(v, t, c);
        *t_io = t;
        return REENTERED;
    }
    *t_io = vcpu_run_tail(v, t, c);
    return halt ? HALTED : PASS;
}

/* Passes of vcpu_run's loop from pass_at until a VM-Enter completes (true), or until
 * `until` comes first, as it does while every entry keeps being cancelled (false). */
static bool passes(struct vcpu *v, int64_t *until)
{
    int64_t t = v->pass_at;
    /* a coupled run stops every pass at `until`: an IPI may still arrive after it */
    int64_t horizon = v->p->coupled ? *until : NEVER;
    enum pass_end end;
    while (t < *until) {
        /* the counts of a pass go to the interval it started in */
        t = one_pass(v, t, row_at(v, v->ps_active ? v->ps_t0 : t), horizon, &end);
        if (end == ENTERED) {
            v->in_host = false;
            return true;
        }
        if (end == SUSPENDED)
            break;
        if (v->requests & v->p->unconsumable) {
            v->vm->stop = KM_UNCONSUMABLE;
            *until = t;
        }
    }
    v->pass_at = t;
    return false;
}

/* A guest timer on the VMX preemption timer: while blocked, a host hrtimer. */
static inline int64_t next_hv_timer(const struct vcpu *v)
{
    int64_t t = NEVER;
    for (int i = 0; i < v->n_guest; i++)
        if (v->guest[i].kind == KM_SRC_TIMER)
            t = min64(t, v->guest[i].next);
    return t;
}

/* After HLT: kvm_vcpu_halt -> kvm_vcpu_check_block with what has arrived by then (runnable:
 * the next pass at once); else blocked in kvm_vcpu_block(), where host arrivals may wake it.
 * False when `until` comes first; true once it is runnable again (the next pass is then due
 * at pass_at). */
static bool blocked(struct vcpu *v, int64_t until)
{
    if (!v->halt_checked) {
        int64_t t = v->halt_since;
        if (t >= until)
            return false;
        int64_t *c = row_at(v, t);
        apply_host(v, t, c, false);
        v->halt_checked = true;
        v->halt_since += halted_work(v, c);
        if (runnable(v)) {
            v->halted = false;
            v->pass_at = v->halt_since;
            v->in_host = true;
            return true;
        }
    }
    for (;;) {
        /* (a timer due while the HLT exit was handled fires as the block starts) */
        int64_t t = max64(min64(next_host(v), next_hv_timer(v)), v->halt_since);
        if (t >= until) {
            add_span(v, KM_NS_HALTED, v->halt_since, until);
            v->halt_since = max64(v->halt_since, until);
            return false;
        }
        add_span(v, KM_NS_HALTED, v->halt_since, t);
        v->halt_since = t;
        int64_t *c = row_at(v, t);
        apply_host(v, t, c, false);
        for (int i = 0; i < v->n_guest; i++) {   /* kvm_lapic_switch_to_sw_timer */
            struct arrivals *a = &v->guest[i];
            if (a->kind == KM_SRC_TIMER && a->next <= t) {
                advance(a, t);
                arrive(v, KM_SRC_TIMER, 0, 1, c);
            }
        }
        v->halt_since += halted_work(v, c);
        if (runnable(v)) {
            v->halted = false;
            v->pass_at = vcpu_run_tail(v, v->halt_since, c);
            v->in_host = true;
            return true;
        }
    }
}

/* KVM_RUN from where the vCPU stands (now) until `until`; a run can go on from there. */
static void vcpu_run(struct vcpu *v, int64_t until)
{
    if (until <= v->now)                        /* stopped past it by an earlier run */
        return;
    for (;;) {
        if (v->in_host && !passes(v, &until))
            break;
        if (v->halted) {
            if (!blocked(v, until))
                break;
            continue;
        }
        int64_t tk = v->next_kick;              /* a kick: IPI -> VM-exit */
        if (v->mode == EXITING_GUEST_MODE)
            tk = min64(tk, v->now);             /* kicked between runs */
        tk = max64(tk, v->guest_since);
        int64_t tp = max64(v->next_posted, v->guest_since);
        bool exits;
        int64_t tg = next_guest_event(v, &exits);
        int64_t t = min64(min64(tk, tp), tg);
        if (t >= until) {
            add_guest_time(v, until);
            break;
        }
        add_guest_time(v, t);
        if (t == tk || (t == tg && exits)) {
            enum outcome out = vm_exit(v, &t, row_at(v, t));
            if (out == PASS) {
                v->pass_at = t;
                v->in_host = true;
            } else if (out == HALTED) {
                v->halted = true;
                v->halt_checked = false;
                v->halt_since = t;
            }
        } else {
            apply_in_guest(v, t, row_at(v, t));
        }
    }
    v->now = until;
}

/* vCPUs that send each other IPIs, in one time order: conservative lookahead. A vCPU may
 * run to the earliest time another can still send plus cost_ipi: nothing can then reach it
 * in its past. Each round moves the earliest sender past its send. */
static void run_coupled(struct vm *vm, int64_t until)
{
    const int64_t cost_ipi = vm->vcpus[0].p->cost_ipi;
    for (;;) {
        int first = 0;
        int64_t best = NEVER, second = NEVER;
        for (int i = 0; i < vm->n_vcpus; i++) {
            int64_t send = next_send(&vm->vcpus[i]);
            if (send < best) {
                second = best;
                best = send;
                first = i;
            } else if (send < second) {
                second = send;
            }
        }
        bool done = true;
        for (int i = 0; i < vm->n_vcpus; i++) {
            struct vcpu *v = &vm->vcpus[i];
            int64_t other = i == first ? second : best;
            int64_t bound = other == NEVER ? until : min64(until, other + cost_ipi);
            if (bound > v->now) {
                vcpu_run(v, bound);
                if (vm->stop != KM_DONE)
                    return;
            }
            done = done && v->now >= until;
        }
        if (done)
            return;
    }
}

static void init_arrivals(struct arrivals *a, const struct km_source *s, bool posted)
{
    *a = (struct arrivals){.kind = s->kind, .dist = s->dist, .bit = s->bit,
                           .target = s->target, .posted = posted, .mean_ns = s->mean_ns,
                           .period_ns = s->period_ns, .times = s->times,
                           .n_times = s->n_times, .rng = s->rng};
    if (s->dist == KM_POISSON)
        a->next = after(0, random_standard_exponential(s->rng) * s->mean_ns);
    else if (s->dist == KM_PERIODIC)
        a->next = s->start_ns + s->period_ns;
    else
        a->next = s->n_times ? s->times[0] : NEVER;
}

int km_simulate(const struct km_params *p, int32_t n_vcpus, bitgen_t *const *exit_rngs,
                const struct km_source *sources, int32_t n_sources, const int64_t *ends,
                int32_t n_ends, int64_t interval_ns, int64_t *counts,
                int64_t *nmis_outstanding)
{
    int64_t until_ns = ends[n_ends - 1];
    int64_t intervals = (until_ns + interval_ns - 1) / interval_ns;
    struct vm vm = {.n_vcpus = n_vcpus, .stop = KM_DONE};
    vm.vcpus = calloc((size_t)n_vcpus, sizeof *vm.vcpus);
    struct arrivals *arrivals = malloc(((size_t)n_sources + 1) * sizeof *arrivals);
    if (!vm.vcpus || !arrivals) {
        free(vm.vcpus);
        free(arrivals);
        return KM_NOMEM;
    }
    struct arrivals *next = arrivals;
    for (int i = 0; i < n_vcpus; i++) {
        struct vcpu *v = &vm.vcpus[i];
        *v = (struct vcpu){
            .p = p, .vm = &vm, .index = i, .mode = OUTSIDE_GUEST_MODE,
            .entry_event = ENTRY_NONE, .pmi_nmi_at = NEVER, .last_pmi_t = NO_PMI_YET,
            .nmi_end = NEVER, .irq_end = NEVER, .op_at = NEVER, .in_host = true,
            .guest_exit_at = NEVER, .exit_rng = exit_rngs[i],
            .counts = counts + i * intervals * KM_COLUMNS, .interval_ns = interval_ns,
        };
        /* this vCPU's sources: host-side first, then guest-side, each in plan order */
        v->host = next;
        for (int j = 0; j < n_sources; j++)
            if (sources[j].vcpu == i && !sources[j].guest)
                init_arrivals(&v->host[v->n_host++], &sources[j],
                              sources[j].kind == KM_SRC_IRQ && p->apicv);
        v->guest = v->host + v->n_host;
        for (int j = 0; j < n_sources; j++)
            if (sources[j].vcpu == i && sources[j].guest)
                init_arrivals(&v->guest[v->n_guest++], &sources[j], false);
        next = v->guest + v->n_guest;
        update_next(v);
    }
    if (p->coupled) {
        for (int k = 0; k < n_ends && vm.stop == KM_DONE; k++)
            run_coupled(&vm, ends[k]);
    } else {
        for (int i = 0; i < n_vcpus && vm.stop == KM_DONE; i++)
            for (int k = 0; k < n_ends && vm.stop == KM_DONE; k++)
                vcpu_run(&vm.vcpus[i], ends[k]);
    }
    for (int i = 0; i < n_vcpus; i++) {
        struct vcpu *v = &vm.vcpus[i];
        nmis_outstanding[i] = v->nmi_queued + v->nmi_pending + v->nmi_injected
            + v->vnmi_pending;
        free(v->in_kick.items);
        free(v->in_posted.items);
    }
    free(vm.vcpus);
    free(arrivals);
    return vm.stop;
}

/* The layout of struct km_params and struct km_source, for the caller's ctypes mirror to
 * check. */
#define OFF(s, f) ((int64_t)offsetof(struct s, f))
const int64_t km_params_size = sizeof(struct km_params);
const int64_t km_param_offsets[] = {
    OFF(km_params, n_checks), OFF(km_params, order), OFF(km_params, rank),
    OFF(km_params, handler_ns), OFF(km_params, raises), OFF(km_params, unconsumable),
    OFF(km_params, n_noop), OFF(km_params, noop_bits), OFF(km_params, cost_vmexit),
    OFF(km_params, cost_vmenter), OFF(km_params, cost_check), OFF(km_params, cost_state_load),
    OFF(km_params, cost_cancel), OFF(km_params, cost_task_work), OFF(km_params, cost_ipi),
    OFF(km_params, lvtpc), OFF(km_params, automask), OFF(km_params, pmi_irq_work),
    OFF(km_params, pmu_request), OFF(km_params, nmi_event_always), OFF(km_params, apicv),
    OFF(km_params, ipiv), OFF(km_params, vnmi), OFF(km_params, iret_exits),
    OFF(km_params, idle_hlt), OFF(km_params, fastpath_reenter), OFF(km_params, coupled),
    OFF(km_params, pmi_ops_n), OFF(km_params, pmi_ops_pmu), OFF(km_params, pmi_ops_lvtpc),
    OFF(km_params, amd_nmi_window_ns), OFF(km_params, pmi_skid_ns),
    OFF(km_params, nmi_handler_ns), OFF(km_params, irq_handler_ns),
    OFF(km_params, guest_exit_mean_ns),
};
const int64_t km_source_size = sizeof(struct km_source);
const int64_t km_source_offsets[] = {
    OFF(km_source, vcpu), OFF(km_source, guest), OFF(km_source, kind), OFF(km_source, dist),
    OFF(km_source, bit), OFF(km_source, target), OFF(km_source, mean_ns),
    OFF(km_source, period_ns), OFF(km_source, start_ns), OFF(km_source, times),
    OFF(km_source, n_times), OFF(km_source, rng),
};
