/* A plain C model of kvmsim's loop (kvmsim/_reference.py, docs/model.md): the benchmarks'
 * C contender.
 *
 * It applies the same rules as kvmsim's engines to the same flattened configuration
 * (kvmsim/_plan.py) and draws from the same random streams: the caller passes numpy PCG64 bit
 * generators, and gaps come from numpy's ziggurat exponential (libnpyrandom), so for a seed
 * it gives kvmsim's counts exactly. The counts use kvmsim's column layout (kvmsim/_spec.py
 * COUNTERS, then 64 columns per bit group); km_column_names names the first KM_NAMED columns.
 */
#ifndef KVMSIM_MODEL_H
#define KVMSIM_MODEL_H

#include <stdint.h>

#include "numpy/random/bitgen.h"

enum km_column {
    KM_VMEXITS, KM_VMENTER_ATTEMPTS, KM_VMENTERS, KM_CANCELED_VMENTERS, KM_IMMEDIATE_EXITS,
    KM_NMI_WINDOW_EXITS, KM_IRQ_WINDOW_EXITS, KM_NMIS_QUEUED, KM_NMIS_INJECTED,
    KM_NMIS_DROPPED, KM_PMIS_RAISED, KM_PMIS_COALESCED, KM_PMIS_DELIVERED, KM_PMIS_DROPPED,
    KM_IRQS_RAISED, KM_IRQS_COALESCED, KM_IRQS_INJECTED, KM_SMIS_INJECTED, KM_HALT_EXITS,
    KM_NMIS_UNKNOWN, KM_PMIS_IRQ_WORK, KM_FASTPATH_EXITS, KM_TASK_WORK, KM_CANCELS_TASK_WORK,
    KM_IPIS_SENT,
    KM_NS_GUEST, KM_NS_VMEXIT, KM_NS_REQUESTS, KM_NS_EVENT, KM_NS_STATE_LOAD, KM_NS_VMENTER,
    KM_NS_CANCEL, KM_NS_TASK_WORK, KM_NS_HALTED,
    KM_NAMED,
    KM_REQUESTS = KM_NAMED,                 /* + bit: checks of that bit that fired */
    KM_CANCELS_ASYNC = KM_REQUESTS + 64,    /* + bit: cancels it caused, posted after its check */
    KM_CANCELS_BACKEDGE = KM_CANCELS_ASYNC + 64,  /* + bit: raised by a later check's handler */
    KM_COLUMNS = KM_CANCELS_BACKEDGE + 64,
};

extern const char *const km_column_names[KM_NAMED];
extern const int32_t km_named, km_columns;    /* KM_NAMED, KM_COLUMNS, for callers without enums */
/* The request bits the model gives a meaning: EVENT, NMI, PMU, PMI, SMI, UNBLOCK. */
extern const int32_t km_special_bits[6];
/* An IPI source's target besides a vCPU number: another vCPU drawn each time; all others. */
extern const int32_t km_ipi_any, km_ipi_all;
/* sizeof(struct km_params) and the offset of each field, in declaration order; likewise
 * struct km_source. */
extern const int64_t km_params_size, km_param_offsets[];
extern const int64_t km_source_size, km_source_offsets[];

/* Source kinds, distributions, LVTPC modes: the values of kvmsim._spec's Src, Dist, Lvtpc. */
enum km_kind {
    KM_SRC_EXIT, KM_SRC_PMI, KM_SRC_EMUL_PMI, KM_SRC_NMI, KM_SRC_IRQ, KM_SRC_REQUEST,
    KM_SRC_REQUEST_NOOP, KM_SRC_TIMER, KM_SRC_HLT, KM_SRC_IPI_SELF, KM_SRC_TASK_WORK,
    KM_SRC_IPI, KM_SRC_IPI_NMI,
};
enum km_dist { KM_POISSON, KM_PERIODIC, KM_TRACE };
enum km_lvtpc { KM_LVTPC_NMI, KM_LVTPC_FIXED, KM_LVTPC_SMI, KM_LVTPC_MASKED };
/* km_simulate's result: kvmsim._spec.Stop's codes. */
enum km_stop { KM_DONE = 0, KM_UNCONSUMABLE = 2, KM_NOMEM = 3 };
#define KM_IPI_ANY (-1)
#define KM_IPI_ALL (-2)

/* The fields of kvmsim._plan.Plan.params this model reads (same names and C types). */
struct km_params {
    int32_t n_checks;
    uint8_t order[64];          /* the check order as request bits, EVENT last */
    uint8_t rank[64];           /* position of each bit in order; 255: not checked */
    int64_t handler_ns[64];     /* handler cost per bit (EVENT's is the event cost) */
    uint64_t raises[64];        /* requests a no-op handler always raises */
    uint64_t unconsumable;      /* bits no check clears */
    int32_t n_noop;
    uint8_t noop_bits[64];      /* what request:noop picks from */
    int64_t cost_vmexit, cost_vmenter, cost_check, cost_state_load, cost_cancel,
        cost_task_work, cost_ipi;
    int32_t lvtpc;              /* enum km_lvtpc */
    uint8_t automask;           /* kvm_apic_local_deliver masks LVTPC after a PMI */
    uint8_t pmi_irq_work;       /* a host PMI outside guest mode goes through irq_work */
    uint8_t pmu_request;        /* PMU control writes defer reprogramming (KVM_REQ_PMU) */
    uint8_t nmi_event_always;   /* process_nmi raises KVM_REQ_EVENT with none pending */
    uint8_t apicv;              /* fixed interrupts are posted, not injected */
    uint8_t ipiv;               /* a guest's IPI to another vCPU does not exit */
    uint8_t vnmi;               /* AMD vNMI: V_NMI_PENDING, no NMI window */
    uint8_t iret_exits;         /* SVM without vNMI intercepts IRET */
    uint8_t idle_hlt;           /* AMD Idle HLT */
    uint8_t fastpath_reenter;   /* ICR writes and HLT re-enter from the fastpath */
    uint8_t coupled;            /* some vCPU sends IPIs to others: vCPUs run in step */
    int32_t pmi_ops_n[2];       /* the guest perf NMI handler's accesses: PMI, no PMI */
    uint32_t pmi_ops_pmu[2];    /* those that raise KVM_REQ_PMU, as bit masks */
    int32_t pmi_ops_lvtpc[2];   /* the one that unmasks LVTPC, or -1 */
    int64_t amd_nmi_window_ns;  /* an unclaimed NMI this soon after a PMI is claimed */
    int64_t pmi_skid_ns;        /* guest counter overflow -> host NMI */
    int64_t nmi_handler_ns, irq_handler_ns;   /* guest handler times (guest time) */
    double guest_exit_mean_ns;  /* 0: no guest-initiated exits */
};

/* One arrival source on one vCPU. */
struct km_source {
    int32_t vcpu, guest, kind, dist, bit;   /* guest: acts only while the guest runs;
                                               bit: the request of KM_SRC_REQUEST */
    int32_t target;                 /* KM_SRC_IPI, KM_SRC_IPI_NMI: a vCPU, KM_IPI_ANY/ALL */
    double mean_ns;                 /* KM_POISSON */
    int64_t period_ns, start_ns;    /* KM_PERIODIC */
    const int64_t *times;           /* KM_TRACE, ns, non-decreasing */
    int64_t n_times;
    bitgen_t *rng;
};

/* Simulate n_vcpus vCPUs from t = 0 to until_ns = ends[n_ends - 1], run to ends[0], then on
 * to ends[1], ... (increasing; kvmsim's Simulation runs its engine in such slices). vCPUs
 * that send each other IPIs (p->coupled) run in one time order, in rounds of conservative
 * lookahead, as kvmsim's engines run them. exit_rngs[i] draws vCPU i's guest exits. Adds
 * into counts[n_vcpus][ceil(until_ns / interval_ns)][KM_COLUMNS] (zeroed by the caller) and
 * writes each vCPU's outstanding NMIs. Returns KM_DONE; KM_UNCONSUMABLE when a request no
 * check clears stopped the run; KM_NOMEM when out of memory. */
int km_simulate(const struct km_params *p, int32_t n_vcpus, bitgen_t *const *exit_rngs,
                const struct km_source *sources, int32_t n_sources, const int64_t *ends,
                int32_t n_ends, int64_t interval_ns, int64_t *counts,
                int64_t *nmis_outstanding);

#endif
