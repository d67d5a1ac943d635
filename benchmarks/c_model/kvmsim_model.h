/* A plain C model of kvmsim's loop (docs/model.md): the benchmarks' C contender.
 *
 * It applies the same rules as kvmsim's engines to the same flattened configuration
 * (kvmsim/plan.py) and draws from the same random streams: the caller passes numpy PCG64 bit
 * generators, and gaps come from numpy's ziggurat exponential (libnpyrandom), so for a seed
 * it gives kvmsim's counts exactly. The counts use kvmsim's column layout
 * (kvmsim/counters.py); km_column_names names the first KM_NAMED columns.
 */
#ifndef KVMSIM_MODEL_H
#define KVMSIM_MODEL_H

#include <stdint.h>

#include "numpy/random/bitgen.h"

enum km_column {
    KM_VMEXITS, KM_VMENTER_ATTEMPTS, KM_VMENTERS, KM_CANCELED_VMENTERS, KM_IMMEDIATE_EXITS,
    KM_NMI_WINDOW_EXITS, KM_IRQ_WINDOW_EXITS, KM_NMIS_QUEUED, KM_NMIS_INJECTED,
    KM_NMIS_DROPPED, KM_PMIS_RAISED, KM_PMIS_COALESCED, KM_PMIS_DELIVERED, KM_PMIS_DROPPED,
    KM_IRQS_RAISED, KM_IRQS_COALESCED, KM_IRQS_INJECTED, KM_SMIS_INJECTED,
    KM_NS_GUEST, KM_NS_VMEXIT, KM_NS_REQUESTS, KM_NS_EVENT, KM_NS_STATE_LOAD, KM_NS_VMENTER,
    KM_NS_CANCEL,
    KM_NAMED,
    KM_REQUESTS = KM_NAMED,                 /* + bit: checks of that bit that fired */
    KM_CANCELS_ASYNC = KM_REQUESTS + 64,    /* + bit: cancels it caused, posted after its check */
    KM_CANCELS_BACKEDGE = KM_CANCELS_ASYNC + 64,  /* + bit: raised by a later check's handler */
    KM_COLUMNS = KM_CANCELS_BACKEDGE + 64,
};

extern const char *const km_column_names[KM_NAMED];
extern const int32_t km_named, km_columns;    /* KM_NAMED, KM_COLUMNS, for callers without enums */

/* Source kinds and distributions: the values of kvmsim/plan.py's SRC_* and DIST_*. */
enum km_kind { KM_EXIT, KM_PMI, KM_EMUL_PMI, KM_NMI, KM_IRQ, KM_REQUEST, KM_REQUEST_NOOP };
enum km_dist { KM_POISSON, KM_PERIODIC, KM_TRACE };
/* LVTPC delivery modes: plan.LVTPC_CODE. */
enum km_lvtpc { KM_LVTPC_NMI, KM_LVTPC_FIXED, KM_LVTPC_SMI, KM_LVTPC_MASKED };

struct km_params {
    int32_t n_checks;
    uint8_t order[64];          /* the check order as request bits, EVENT last */
    uint8_t rank[64];           /* position of each bit in order; 255: not checked */
    int64_t handler_ns[64];     /* handler cost per bit (EVENT's is event_ns) */
    uint64_t raises[64];        /* requests a no-op handler always raises */
    uint8_t noop_bits[64];      /* what request:noop picks from */
    int32_t n_noop;
    int64_t vmexit_ns, vmenter_ns, check_ns, event_ns, state_load_ns, cancel_ns;
    int32_t intel;
    int32_t lvtpc;              /* enum km_lvtpc */
    int64_t nmi_handler_ns, irq_handler_ns;
    double guest_exit_mean_ns;  /* 0: no guest-initiated exits */
};

/* One arrival source on one vCPU. */
struct km_source {
    int32_t vcpu, kind, dist, bit;  /* bit: the request of KM_REQUEST */
    double mean_ns;                 /* KM_POISSON */
    int64_t period_ns, start_ns;    /* KM_PERIODIC */
    const int64_t *times;           /* KM_TRACE, ns, non-decreasing */
    int64_t n_times;
    bitgen_t *rng;
};

/* Simulate n_vcpus vCPUs from t = 0 to until_ns. exit_rngs[i] draws vCPU i's guest exits.
 * Adds into counts[n_vcpus][ceil(until_ns / interval_ns)][KM_COLUMNS] (zeroed by the caller)
 * and writes each vCPU's outstanding NMIs. Returns 0, or -1 if out of memory. */
int km_simulate(const struct km_params *p, int32_t n_vcpus, bitgen_t *const *exit_rngs,
                const struct km_source *sources, int32_t n_sources, int64_t until_ns,
                int64_t interval_ns, int64_t *counts, int64_t *nmis_outstanding);

#endif
