/* The kvmsim model in plain C11: vcpu_enter_guest() (arch/x86/kvm/x86.c) as docs/model.md
 * states it, written the way a C programmer would write this loop for speed: one struct of
 * state per vCPU, plain bit operations on the request bitmap (one thread owns a vCPU, so no
 * atomics), a walk over the set bits with count-trailing-zeros, and a switch on the request
 * bit for the handlers. Each function names the kernel function it mirrors.
 */
#include "kvmsim_model.h"

#include <stdbool.h>
#include <stdlib.h>

/* From numpy/random/distributions.h, which needs Python.h: the ziggurat Exp(1). */
double random_standard_exponential(bitgen_t *bitgen_state);

#define NEVER INT64_MAX
#define BIT(b) ((uint64_t)1 << (b))
#define ctz(x) __builtin_ctzll(x)

/* Request bits: KVM_ARCH_REQ(nr) = nr + KVM_REQUEST_ARCH_BASE (arch/x86/include/asm/kvm_host.h). */
#define KVM_ARCH_REQ(nr) ((nr) + 8)
#define KVM_REQ_EVENT KVM_ARCH_REQ(6)
#define KVM_REQ_NMI KVM_ARCH_REQ(9)
#define KVM_REQ_PMU KVM_ARCH_REQ(10)
#define KVM_REQ_PMI KVM_ARCH_REQ(11)
#define KVM_REQ_SMI KVM_ARCH_REQ(12)

const char *const km_column_names[KM_NAMED] = {
    "vmexits", "vmenter_attempts", "vmenters", "canceled_vmenters", "immediate_exits",
    "nmi_window_exits", "irq_window_exits", "nmis_queued", "nmis_injected", "nmis_dropped",
    "pmis_raised", "pmis_coalesced", "pmis_delivered", "pmis_dropped", "irqs_raised",
    "irqs_coalesced", "irqs_injected", "smis_injected",
    "ns.guest", "ns.vmexit", "ns.requests", "ns.event", "ns.state_load", "ns.vmenter",
    "ns.cancel",
};

const int32_t km_named = KM_NAMED, km_columns = KM_COLUMNS;

struct arrivals {
    int64_t next;           /* time of the next arrival, NEVER when done */
    int kind, dist, bit;
    double mean_ns;
    int64_t period_ns;
    const int64_t *times;
    int64_t n_times, idx;
    bitgen_t *rng;
};

enum entry_event { ENTRY_NONE, ENTRY_NMI, ENTRY_IRQ };  /* VM_ENTRY_INTR_INFO_FIELD */

struct vcpu {
    uint64_t requests;                  /* vcpu->requests */
    int64_t nmi_queued, nmi_pending;    /* vcpu->arch.nmi_queued, nmi_pending */
    bool nmi_injected, irq_injected;    /* vcpu->arch.nmi_injected, interrupt.injected */
    bool irq_pending;                   /* the IRR bit */
    bool smi_pending;
    enum entry_event entry_event;       /* the event written for this VM-Enter */
    bool nmi_window, irq_window;
    bool req_immediate_exit, immediate_exit;
    bool lvtpc_masked;                  /* LVTPC.MASK */
    bool pmu_reprogram, emul_overflow;  /* pmu->reprogram_pmi, an emulated count wrapped */
    int64_t nmi_end, irq_end;           /* the guest's NMI / IRQ handler runs until then */
    int64_t entry_t;                    /* the last completed VM-Enter */
    int64_t guest_since;                /* guest time counted up to here */
    int64_t guest_exit_at;              /* the guest's own next VM-exit */
    struct arrivals *host, *guest;      /* from other CPUs / from the guest itself */
    int n_host, n_guest;
    int64_t next_host;                  /* min of host[i].next */
    bitgen_t *exit_rng;
};

static inline bool nmi_blocked(const struct vcpu *v) { return v->nmi_end != NEVER; }
static inline bool irq_blocked(const struct vcpu *v) { return v->irq_end != NEVER; }

/* t + gap; a gap of 2^62 ns or more means never (and cannot overflow). */
static inline int64_t after(int64_t t, double gap)
{
    return gap >= 4611686018427387904.0 ? NEVER : t + (int64_t)gap;
}

static void advance(struct arrivals *a)
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

static void update_next_host(struct vcpu *v)
{
    v->next_host = NEVER;
    for (int i = 0; i < v->n_host; i++)
        if (v->host[i].next < v->next_host)
            v->next_host = v->host[i].next;
}

/* __apic_accept_irq, APIC_DM_FIXED, no APICv: set the IRR bit, KVM_REQ_EVENT. */
static void accept_irq(struct vcpu *v, int64_t *c)
{
    c[KM_IRQS_RAISED]++;
    if (v->irq_pending)
        c[KM_IRQS_COALESCED]++;
    v->irq_pending = true;
    v->requests |= BIT(KVM_REQ_EVENT);
}

/* kvm_make_request() from other CPUs, for every host-side arrival at or before t. */
static void apply_host(struct vcpu *v, const struct km_params *p, int64_t t, int64_t *c)
{
    if (v->next_host > t)
        return;
    for (int i = 0; i < v->n_host; i++) {
        struct arrivals *a = &v->host[i];
        for (; a->next <= t; advance(a)) {
            switch (a->kind) {
            case KM_NMI:                        /* kvm_inject_nmi */
                v->nmi_queued++;
                c[KM_NMIS_QUEUED]++;
                v->requests |= BIT(KVM_REQ_NMI);
                break;
            case KM_IRQ:
                accept_irq(v, c);
                break;
            case KM_REQUEST:
                v->requests |= BIT(a->bit);
                break;
            default:                            /* request:noop */
                v->requests |= BIT(p->noop_bits[(int)(a->rng->next_double(a->rng->state)
                                                      * p->n_noop)]);
            }
        }
    }
    update_next_host(v);
}

/* Whether the end of the guest's NMI / IRQ handler is a VM-exit (docs/model.md §7). */
static bool nmi_end_exits(const struct vcpu *v, const struct km_params *p)
{
    return p->lvtpc == KM_LVTPC_NMI || !p->intel || v->nmi_window
        || (v->irq_window && !irq_blocked(v));
}

static bool irq_end_exits(const struct vcpu *v, const struct km_params *p)
{
    return (v->irq_window && !nmi_blocked(v))
        || (p->intel && p->lvtpc == KM_LVTPC_FIXED && v->lvtpc_masked);
}

/* Guest handlers whose time is up: IRET, the perf handler's LVTPC write, and the windows
 * they satisfy (handle_nmi_window, the SVM IRET intercept, handle_interrupt_window). */
static void end_handlers(struct vcpu *v, const struct km_params *p, int64_t t, int64_t *c)
{
    if (v->nmi_end <= t) {
        v->nmi_end = NEVER;
        if (p->lvtpc == KM_LVTPC_NMI)
            v->lvtpc_masked = false;
        if (!p->intel) {
            v->nmi_window = false;
            c[KM_NMI_WINDOW_EXITS]++;
            v->requests |= BIT(KVM_REQ_EVENT);
        }
    }
    if (v->irq_end <= t) {
        v->irq_end = NEVER;
        if (p->lvtpc == KM_LVTPC_FIXED)
            v->lvtpc_masked = false;
    }
    if (v->nmi_window && !nmi_blocked(v)) {
        v->nmi_window = false;
        c[KM_NMI_WINDOW_EXITS]++;
        v->requests |= BIT(KVM_REQ_EVENT);
    }
    if (v->irq_window && !nmi_blocked(v) && !irq_blocked(v)) {
        v->irq_window = false;
        c[KM_IRQ_WINDOW_EXITS]++;
        v->requests |= BIT(KVM_REQ_EVENT);
    }
}

/* __kvm_perf_overflow: KVM_REQ_PMI. */
static void perf_overflow(struct vcpu *v, int64_t *c)
{
    if (v->requests & BIT(KVM_REQ_PMI)) {
        c[KM_PMIS_COALESCED]++;
    } else {
        c[KM_PMIS_RAISED]++;
        v->requests |= BIT(KVM_REQ_PMI);
    }
}

/* Guest-side arrivals at or before t, seen at a VM-exit. */
static void apply_guest(struct vcpu *v, const struct km_params *p, int64_t t, int64_t *c)
{
    end_handlers(v, p, t, c);
    for (int i = 0; i < v->n_guest; i++) {
        struct arrivals *a = &v->guest[i];
        for (; a->next <= t; advance(a)) {
            if (a->kind == KM_PMI) {            /* kvm_perf_overflow */
                if (v->pmu_reprogram) {
                    c[KM_PMIS_COALESCED]++;
                } else {
                    v->pmu_reprogram = true;
                    perf_overflow(v, c);
                    v->requests |= BIT(KVM_REQ_PMU);
                }
            } else if (a->kind == KM_EMUL_PMI) {  /* kvm_pmu_request_counter_reprogram */
                v->pmu_reprogram = v->emul_overflow = true;
                v->requests |= BIT(KVM_REQ_PMU);
            }
        }
    }
}

/* When the guest next stops running on its own after entry_t, and whether that is a
 * VM-exit (a handler ending inside the guest is not). */
static int64_t next_guest_event(const struct vcpu *v, const struct km_params *p, bool *exits)
{
    int64_t t = v->guest_exit_at;
    for (int i = 0; i < v->n_guest; i++)
        if (v->guest[i].next < t)
            t = v->guest[i].next;
    if (v->immediate_exit || (v->nmi_window && !nmi_blocked(v))
        || (v->irq_window && !nmi_blocked(v) && !irq_blocked(v)))
        t = v->entry_t;
    *exits = true;
    if (nmi_blocked(v)) {
        if (v->nmi_end < t) {
            t = v->nmi_end;
            *exits = nmi_end_exits(v, p);
        } else if (v->nmi_end == t) {
            *exits = *exits || nmi_end_exits(v, p);
        }
    }
    if (irq_blocked(v)) {
        if (v->irq_end < t) {
            t = v->irq_end;
            *exits = irq_end_exits(v, p);
        } else if (v->irq_end == t) {
            *exits = *exits || irq_end_exits(v, p);
        }
    }
    return t > v->entry_t ? t : v->entry_t;
}

/* process_nmi: at most 2 NMIs pending, 1 if one is injected or the guest blocks NMIs. */
static void process_nmi(struct vcpu *v, int64_t *c)
{
    int64_t limit = nmi_blocked(v) || v->nmi_injected ? 1 : 2;
    v->nmi_pending += v->nmi_queued;
    v->nmi_queued = 0;
    if (v->nmi_pending > limit) {
        c[KM_NMIS_DROPPED] += v->nmi_pending - limit;
        v->nmi_pending = limit;
    }
    if (v->nmi_pending)
        v->requests |= BIT(KVM_REQ_EVENT);
}

/* kvm_pmu_deliver_pmi -> kvm_apic_local_deliver(APIC_LVTPC); Intel masks LVTPC. */
static void deliver_pmi(struct vcpu *v, const struct km_params *p, int64_t *c)
{
    if (p->lvtpc == KM_LVTPC_MASKED || v->lvtpc_masked) {
        c[KM_PMIS_DROPPED]++;
        return;
    }
    c[KM_PMIS_DELIVERED]++;
    if (p->lvtpc == KM_LVTPC_NMI) {             /* kvm_inject_nmi */
        v->nmi_queued++;
        c[KM_NMIS_QUEUED]++;
        v->requests |= BIT(KVM_REQ_NMI);
    } else if (p->lvtpc == KM_LVTPC_FIXED) {
        accept_irq(v, c);
    } else {                                    /* kvm_inject_smi */
        v->requests |= BIT(KVM_REQ_SMI);
    }
    if (p->intel)
        v->lvtpc_masked = true;
}

/* kvm_check_and_inject_events: re-injection, then SMI > NMI > IRQ; -EBUSY sets
 * req_immediate_exit. */
static void inject_events(struct vcpu *v, int64_t *c)
{
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
        if (!nmi_blocked(v)) {                  /* nmi_allowed */
            v->nmi_pending--;
            v->nmi_injected = true;
            v->entry_event = ENTRY_NMI;
            can_inject = false;
        }
        if (v->nmi_pending)
            v->nmi_window = true;               /* enable_nmi_window */
    }
    if (v->irq_pending) {
        if (!can_inject) {
            v->req_immediate_exit = true;
            return;
        }
        if (!nmi_blocked(v) && !irq_blocked(v)) {   /* interrupt_allowed */
            v->irq_pending = false;
            v->irq_injected = true;
            v->entry_event = ENTRY_IRQ;
        } else {
            v->irq_window = true;               /* enable_irq_window */
        }
    }
}

static void handle(struct vcpu *v, const struct km_params *p, int bit, int64_t *c)
{
    switch (bit) {
    case KVM_REQ_EVENT:
        inject_events(v, c);
        break;
    case KVM_REQ_NMI:
        process_nmi(v, c);
        break;
    case KVM_REQ_PMU:                           /* kvm_pmu_handle_event */
        v->pmu_reprogram = false;
        if (v->emul_overflow) {
            v->emul_overflow = false;
            perf_overflow(v, c);
        }
        break;
    case KVM_REQ_PMI:
        deliver_pmi(v, p, c);
        break;
    case KVM_REQ_SMI:                           /* process_smi */
        v->smi_pending = true;
        v->requests |= BIT(KVM_REQ_EVENT);
        break;
    default:
        v->requests |= p->raises[bit];
    }
}

/* The pending requests as a mask of check positions >= pos. */
static inline uint64_t pending_positions(const struct vcpu *v, const struct km_params *p,
                                         int pos)
{
    uint64_t mask = 0;
    for (uint64_t x = v->requests; x; x &= x - 1) {
        int r = p->rank[ctz(x)];
        if (r >= pos && r < p->n_checks)
            mask |= BIT(r);
    }
    return mask;
}

/* One vcpu_enter_guest() starting at t; returns when it ends, *entered if the VM-Enter
 * completed (else it was cancelled). */
static int64_t one_pass(struct vcpu *v, const struct km_params *p, int64_t t, int64_t *c,
                        bool *entered)
{
    const int n = p->n_checks;
    const int64_t t0 = t;
    int64_t event_ns = 0;
    uint64_t raised = 0;                        /* bits this pass's handlers raised */
    apply_host(v, p, t, c);
    v->req_immediate_exit = false;
    int pos = v->requests ? 0 : n - 1;          /* if (kvm_request_pending(vcpu)) { ... } */
    for (;;) {
        uint64_t mask = pending_positions(v, p, pos);
        int r = mask ? ctz(mask) : n;
        int64_t t_r = t + (r - pos) * p->check_ns;
        int64_t ta = v->next_host;
        if (ta <= t_r) {                        /* lands among the checks before r */
            if (ta > t && p->check_ns) {
                int64_t passed = (ta - t + p->check_ns - 1) / p->check_ns;
                pos += (int)passed;
                t += passed * p->check_ns;
            }
            apply_host(v, p, ta, c);
            continue;
        }
        if (r == n) {
            t = t_r;
            break;
        }
        int bit = p->order[r];
        v->requests &= ~BIT(bit);               /* kvm_check_request: clear, then handle */
        c[KM_REQUESTS + bit]++;
        int64_t cost = bit == KVM_REQ_EVENT ? p->event_ns : p->handler_ns[bit];
        if (bit == KVM_REQ_EVENT)
            event_ns += cost;
        t = t_r + p->check_ns + cost;
        pos = r + 1;
        uint64_t before = v->requests;
        handle(v, p, bit, c);
        raised = (raised & ~BIT(bit)) | (v->requests & ~before);
    }
    c[KM_NS_REQUESTS] += t - t0 - event_ns;
    c[KM_NS_EVENT] += event_ns;
    t += p->state_load_ns;                      /* kvm_mmu_reload .. IN_GUEST_MODE */
    c[KM_NS_STATE_LOAD] += p->state_load_ns;
    apply_host(v, p, t, c);
    c[KM_VMENTER_ATTEMPTS]++;
    if (v->requests) {                          /* kvm_vcpu_exit_request: cancel_injection */
        c[KM_CANCELED_VMENTERS]++;
        for (uint64_t x = v->requests; x; x &= x - 1) {
            int b = ctz(x);
            c[(raised & BIT(b) ? KM_CANCELS_BACKEDGE : KM_CANCELS_ASYNC) + b]++;
        }
        t += p->cancel_ns;
        c[KM_NS_CANCEL] += p->cancel_ns;
        /* vmx_cancel_injection -> __vmx_complete_interrupts: back to "injected", EVENT */
        if (v->entry_event != ENTRY_NONE || v->req_immediate_exit)
            v->requests |= BIT(KVM_REQ_EVENT);
        v->entry_event = ENTRY_NONE;
        *entered = false;
        return t;
    }
    if (v->req_immediate_exit)                  /* after the late check: no cancel */
        v->requests |= BIT(KVM_REQ_EVENT);
    v->immediate_exit = v->req_immediate_exit;
    t += p->vmenter_ns;
    c[KM_NS_VMENTER] += p->vmenter_ns;
    c[KM_VMENTERS]++;
    if (v->entry_event == ENTRY_NMI) {          /* delivered: the guest's handler runs */
        c[KM_NMIS_INJECTED]++;
        v->nmi_injected = false;
        v->nmi_end = t + p->nmi_handler_ns;
    } else if (v->entry_event == ENTRY_IRQ) {
        c[KM_IRQS_INJECTED]++;
        v->irq_injected = false;
        v->irq_end = t + p->irq_handler_ns;
    }
    v->entry_event = ENTRY_NONE;
    if (p->guest_exit_mean_ns > 0)
        v->guest_exit_at = after(t, random_standard_exponential(v->exit_rng)
                                    * p->guest_exit_mean_ns);
    v->entry_t = v->guest_since = t;
    *entered = true;
    return t;
}

/* A VM-exit at t; returns when the first vcpu_enter_guest() pass starts. */
static int64_t vm_exit(struct vcpu *v, const struct km_params *p, int64_t t, int64_t *c)
{
    c[KM_VMEXITS]++;
    if (v->immediate_exit) {
        c[KM_IMMEDIATE_EXITS]++;
        v->immediate_exit = false;
    }
    apply_guest(v, p, t, c);
    apply_host(v, p, t, c);
    c[KM_NS_VMEXIT] += p->vmexit_ns;
    return t + p->vmexit_ns;
}

/* The counts row of the interval that holds time t. A vCPU's time only moves forward, so
 * the row moves forward with it: no division per event. */
struct rows {
    int64_t *row;
    int64_t end;                        /* where the row's interval ends */
    int64_t interval_ns;
};

static inline int64_t *row_at(struct rows *r, int64_t t)
{
    while (t >= r->end) {
        r->row += KM_COLUMNS;
        r->end += r->interval_ns;
    }
    return r->row;
}

static void add_guest_time(struct vcpu *v, int64_t t1, struct rows *rows)
{
    for (int64_t t0 = v->guest_since; t0 < t1;) {
        int64_t *c = row_at(rows, t0);
        int64_t end = rows->end < t1 ? rows->end : t1;
        c[KM_NS_GUEST] += end - t0;
        t0 = end;
    }
    if (t1 > v->guest_since)
        v->guest_since = t1;
}

/* KVM_RUN until `until`: passes of vcpu_run() until a VM-Enter completes, guest time until
 * the next VM-exit (a kick from another CPU, or the guest's own), and so on. */
static void vcpu_run(struct vcpu *v, const struct km_params *p, int64_t until,
                     struct rows *rows)
{
    int64_t pass_at = 0;
    for (;;) {
        bool entered = false;
        while (!entered && pass_at < until)
            pass_at = one_pass(v, p, pass_at, row_at(rows, pass_at), &entered);
        if (!entered)
            return;                             /* every entry cancelled up to until */
        bool exits;
        int64_t t;
        for (;;) {
            int64_t ta = v->next_host > v->entry_t ? v->next_host : v->entry_t;
            int64_t tg = next_guest_event(v, p, &exits);
            t = ta < tg ? ta : tg;
            if (t >= until) {
                add_guest_time(v, until, rows);
                return;
            }
            if (t == tg && !exits && ta > tg) {  /* a handler ends inside the guest */
                end_handlers(v, p, t, row_at(rows, t));
                continue;
            }
            break;
        }
        add_guest_time(v, t, rows);
        pass_at = vm_exit(v, p, t, row_at(rows, t));
    }
}

static void init_arrivals(struct arrivals *a, const struct km_source *s)
{
    *a = (struct arrivals){.kind = s->kind, .dist = s->dist, .bit = s->bit,
                           .mean_ns = s->mean_ns, .period_ns = s->period_ns,
                           .times = s->times, .n_times = s->n_times, .rng = s->rng};
    if (s->dist == KM_POISSON)
        a->next = after(0, random_standard_exponential(s->rng) * s->mean_ns);
    else if (s->dist == KM_PERIODIC)
        a->next = s->start_ns + s->period_ns;
    else
        a->next = s->n_times ? s->times[0] : NEVER;
}

int km_simulate(const struct km_params *p, int32_t n_vcpus, bitgen_t *const *exit_rngs,
                const struct km_source *sources, int32_t n_sources, int64_t until_ns,
                int64_t interval_ns, int64_t *counts, int64_t *nmis_outstanding)
{
    struct arrivals *arrivals = malloc(((size_t)n_sources + 1) * sizeof *arrivals);
    if (!arrivals)
        return -1;
    int64_t intervals = (until_ns + interval_ns - 1) / interval_ns;
    for (int i = 0; i < n_vcpus; i++) {
        /* this vCPU's sources: host-side first, then guest-side, each in plan order */
        struct vcpu v = {.nmi_end = NEVER, .irq_end = NEVER, .guest_exit_at = NEVER,
                         .exit_rng = exit_rngs[i], .host = arrivals};
        for (int j = 0; j < n_sources; j++)
            if (sources[j].vcpu == i && sources[j].kind >= KM_NMI)
                init_arrivals(&v.host[v.n_host++], &sources[j]);
        v.guest = v.host + v.n_host;
        for (int j = 0; j < n_sources; j++)
            if (sources[j].vcpu == i && sources[j].kind < KM_NMI)
                init_arrivals(&v.guest[v.n_guest++], &sources[j]);
        update_next_host(&v);
        struct rows rows = {counts + i * intervals * KM_COLUMNS, interval_ns, interval_ns};
        vcpu_run(&v, p, until_ns, &rows);
        nmis_outstanding[i] = v.nmi_queued + v.nmi_pending + v.nmi_injected;
    }
    free(arrivals);
    return 0;
}
