"""Names of the counters both engines fill, in column order of the counts array.

_core.pxd declares the same columns as a C enum (tests/test_engines.py checks they agree).
"""

EVENTS = (
    "vmexits",             # VM-exits, any reason
    "vmenter_attempts",    # passes that reached kvm_vcpu_exit_request()
    "vmenters",            # completed VM-Enters
    "canceled_vmenters",   # probe:vmx_cancel_injection
    "immediate_exits",     # req_immediate_exit honoured after entry
    "nmi_window_exits",    # handle_nmi_window (VMX) / IRET completion (SVM)
    "irq_window_exits",
    "nmis_queued",         # kvm_inject_nmi: nmi_queued++
    "nmis_injected",       # NMIs delivered by a completed VM-Enter
    "nmis_dropped",        # process_nmi: over the limit
    "pmis_raised",         # counter overflows that raised KVM_REQ_PMI
    "pmis_coalesced",      # overflows that found KVM_REQ_PMI already pending
    "pmis_delivered",      # kvm_apic_local_deliver(LVTPC) accepted
    "pmis_dropped",        # LVTPC masked
    "irqs_raised",
    "irqs_coalesced",      # IRR bit already set
    "irqs_injected",       # delivered by a completed VM-Enter
    "smis_injected",       # enter_smm from the EVENT block
)

PHASES = ("guest", "vmexit", "requests", "event", "state_load", "vmenter", "cancel")

N_BITS = 64
# Three groups of one column per request bit: checks that fired; cancels the bit caused
# because it arrived from another CPU after its check ("async"); cancels it caused because a
# handler checked after it raised it in the same pass ("backedge"). A cancel with two bits
# pending counts for both.
BIT_GROUPS = ("requests", "cancels.async", "cancels.backedge")

COLUMNS = (EVENTS + tuple(f"ns.{p}" for p in PHASES)
           + tuple(f"{g}.{b}" for g in BIT_GROUPS for b in range(N_BITS)))
EV = {n: i for i, n in enumerate(EVENTS)}
PHASE_BASE = len(EVENTS)
PH = {p: PHASE_BASE + i for i, p in enumerate(PHASES)}
REQ_BASE = PHASE_BASE + len(PHASES)
CANCEL_ASYNC_BASE = REQ_BASE + N_BITS
CANCEL_BACKEDGE_BASE = CANCEL_ASYNC_BASE + N_BITS
N_COLUMNS = len(COLUMNS)
