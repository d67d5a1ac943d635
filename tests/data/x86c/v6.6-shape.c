// SPDX-License-Identifier: MIT
/*
 * kvmsim test data: a small C file written for kvmsim's tests, NOT kernel source.
 *
 * It imitates the *shape* of arch/x86/kvm/x86.c in the v6.6 era (read from
 * kvm-x86/linux @ 6f1cc3d67695f20f11b109ea895e21f8e4f26fdc, the base of the
 * NMI-after-PMI patch): the same request-check statement forms, in the same order,
 * with the same helpers (kvm_service_local_tlb_flush_requests() defined in this
 * file, kvm_dirty_ring_check_request() defined elsewhere), the same #ifdef
 * CONFIG_KVM_SMM block and the same multi-line conditions.  Handler bodies are
 * placeholders.  Decoys: comments and strings that mention requests or braces,
 * request tests in other functions, uses of KVM_REQ_EVENT after the order.
 */

#include "fake.h"

static int vcpu_enter_guest(struct kvm_vcpu *vcpu);	/* a prototype, not the body { */

static const char *banner = "vcpu_enter_guest(struct kvm_vcpu *vcpu) { kvm_check_request(KVM_REQ_FAKE, vcpu); }";

static void kvm_vcpu_flush_tlb_all(struct kvm_vcpu *vcpu)
{
	placeholder_flush_all(vcpu);

	/* flushing everything also covers "current": drop that request { */
	kvm_clear_request(KVM_REQ_TLB_FLUSH_CURRENT, vcpu);
}

static void kvm_vcpu_flush_tlb_guest(struct kvm_vcpu *vcpu)
{
	if (!placeholder_tdp) {
		placeholder_sync_roots(vcpu);
	}
	placeholder_flush_guest(vcpu);
	kvm_hv_vcpu_purge_flush_tlb(vcpu);
}

static inline void kvm_vcpu_flush_tlb_current(struct kvm_vcpu *vcpu)
{
	placeholder_flush_current(vcpu);
}

/*
 * Local flushes, also serviced around nested transitions.  Written here as
 * if (kvm_check_request(KVM_REQ_DECOY_IN_COMMENT, vcpu)) { ... } to test comments.
 */
void kvm_service_local_tlb_flush_requests(struct kvm_vcpu *vcpu)
{
	if (kvm_check_request(KVM_REQ_TLB_FLUSH_CURRENT, vcpu))
		kvm_vcpu_flush_tlb_current(vcpu);

	if (kvm_check_request(KVM_REQ_TLB_FLUSH_GUEST, vcpu))
		kvm_vcpu_flush_tlb_guest(vcpu);
}
EXPORT_SYMBOL_GPL(kvm_service_local_tlb_flush_requests);

static void process_nmi(struct kvm_vcpu *vcpu)
{
	placeholder_nmi(vcpu);
	kvm_make_request(KVM_REQ_EVENT, vcpu);
}

#ifdef CONFIG_KVM_SMM
static void process_smi(struct kvm_vcpu *vcpu)
{
	placeholder_smi(vcpu);
	kvm_make_request(KVM_REQ_EVENT, vcpu);
}
#endif

static void vcpu_scan_ioapic(struct kvm_vcpu *vcpu)
{
	if (placeholder_guest_mode(vcpu))
		placeholder_pending_eoi(vcpu);
	else
		kvm_make_request(KVM_REQ_LOAD_EOI_EXITMAP, vcpu);
}

/*
 * Returns 1 to keep running, <= 0 to go back to userspace.  A stray brace in a
 * comment: } and another {.
 */
static int vcpu_enter_guest(struct kvm_vcpu *vcpu)
{
	int r;
	bool req_int_win =
		dm_request_for_irq_injection(vcpu) &&
		kvm_cpu_accept_dm_intr(vcpu);
	fastpath_t exit_fastpath;

	bool req_immediate_exit = false;

	if (kvm_request_pending(vcpu)) {
		if (kvm_check_request(KVM_REQ_VM_DEAD, vcpu)) {
			r = -EIO;
			goto out;
		}

		if (kvm_dirty_ring_check_request(vcpu)) {
			r = 0;
			goto out;
		}

		if (kvm_check_request(KVM_REQ_GET_NESTED_STATE_PAGES, vcpu)) {
			if (unlikely(!kvm_x86_ops.nested_ops->get_nested_state_pages(vcpu))) {
				r = 0;
				goto out;
			}
		}
		if (kvm_check_request(KVM_REQ_MMU_FREE_OBSOLETE_ROOTS, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_MIGRATE_TIMER, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_MASTERCLOCK_UPDATE, vcpu))
			placeholder(vcpu->kvm);
		if (kvm_check_request(KVM_REQ_GLOBAL_CLOCK_UPDATE, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_CLOCK_UPDATE, vcpu)) {
			r = placeholder_time(vcpu);
			if (unlikely(r))
				goto out;
		}
		if (kvm_check_request(KVM_REQ_MMU_SYNC, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_LOAD_MMU_PGD, vcpu))
			placeholder(vcpu);

		/*
		 * The "all" flush comes first: it makes a pending "current"
		 * flush redundant { see kvm_vcpu_flush_tlb_all() }.
		 */
		if (kvm_check_request(KVM_REQ_TLB_FLUSH, vcpu))
			kvm_vcpu_flush_tlb_all(vcpu);

		kvm_service_local_tlb_flush_requests(vcpu);

		/*
		 * Hyper-V's precise flush may fail; fall back to flushing the
		 * whole guest TLB.
		 */
		if (kvm_check_request(KVM_REQ_HV_TLB_FLUSH, vcpu) &&
		    kvm_hv_vcpu_flush_tlb(vcpu))
			kvm_vcpu_flush_tlb_guest(vcpu);

		if (kvm_check_request(KVM_REQ_REPORT_TPR_ACCESS, vcpu)) {
			vcpu->run->exit_reason = KVM_EXIT_TPR_ACCESS;
			r = 0;
			goto out;
		}
		if (kvm_test_request(KVM_REQ_TRIPLE_FAULT, vcpu)) {
			if (is_guest_mode(vcpu))
				kvm_x86_ops.nested_ops->triple_fault(vcpu);

			if (kvm_check_request(KVM_REQ_TRIPLE_FAULT, vcpu)) {
				vcpu->run->exit_reason = KVM_EXIT_SHUTDOWN;
				r = 0;
				goto out;
			}
		}
		if (kvm_check_request(KVM_REQ_APF_HALT, vcpu)) {
			/* placeholder: synthetic halt */
			r = 1;
			goto out;
		}
		if (kvm_check_request(KVM_REQ_STEAL_UPDATE, vcpu))
			placeholder(vcpu);
#ifdef CONFIG_KVM_SMM
		if (kvm_check_request(KVM_REQ_SMI, vcpu))
			process_smi(vcpu);
#endif
		if (kvm_check_request(KVM_REQ_NMI, vcpu))
			process_nmi(vcpu);
		if (kvm_check_request(KVM_REQ_PMU, vcpu))
			kvm_pmu_handle_event(vcpu);
		if (kvm_check_request(KVM_REQ_PMI, vcpu))
			kvm_pmu_deliver_pmi(vcpu);
		if (kvm_check_request(KVM_REQ_IOAPIC_EOI_EXIT, vcpu)) {
			if (placeholder_test(vcpu)) {
				vcpu->run->exit_reason = KVM_EXIT_IOAPIC_EOI;
				r = 0;
				goto out;
			}
		}
		if (kvm_check_request(KVM_REQ_SCAN_IOAPIC, vcpu))
			vcpu_scan_ioapic(vcpu);
		if (kvm_check_request(KVM_REQ_LOAD_EOI_EXITMAP, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_APIC_PAGE_RELOAD, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_HV_CRASH, vcpu)) {
			vcpu->run->exit_reason = KVM_EXIT_SYSTEM_EVENT;
			r = 0;
			goto out;
		}
		if (kvm_check_request(KVM_REQ_HV_RESET, vcpu)) {
			vcpu->run->exit_reason = KVM_EXIT_SYSTEM_EVENT;
			r = 0;
			goto out;
		}
		if (kvm_check_request(KVM_REQ_HV_EXIT, vcpu)) {
			struct kvm_vcpu_hv *hv_vcpu = to_hv_vcpu(vcpu);

			vcpu->run->exit_reason = KVM_EXIT_HYPERV;
			r = 0;
			goto out;
		}

		/* SynIC timers need an up-to-date guest clock: after CLOCK_UPDATE. */
		if (kvm_check_request(KVM_REQ_HV_STIMER, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_APICV_UPDATE, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_APF_READY, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_MSR_FILTER_CHANGED, vcpu))
			static_call(kvm_x86_msr_filter_changed)(vcpu);

		if (kvm_check_request(KVM_REQ_UPDATE_CPU_DIRTY_LOGGING, vcpu))
			static_call(kvm_x86_update_cpu_dirty_logging)(vcpu);
	}

	if (kvm_check_request(KVM_REQ_EVENT, vcpu) || req_int_win ||
	    kvm_xen_has_interrupt(vcpu)) {
		r = placeholder_accept(vcpu);
		if (r < 0) {
			r = 0;
			goto out;
		}
		r = kvm_check_and_inject_events(vcpu, &req_immediate_exit);
		if (r < 0) {
			r = 0;
			goto out;
		}
	}

	r = placeholder_mmu_reload(vcpu);
	if (unlikely(r)) {
		goto cancel_injection;
	}

	if (kvm_vcpu_exit_request(vcpu)) {
		r = 1;
		goto cancel_injection;
	}

	if (req_immediate_exit) {
		kvm_make_request(KVM_REQ_EVENT, vcpu);
		static_call(kvm_x86_request_immediate_exit)(vcpu);
	}

	for (;;) {
		exit_fastpath = static_call(kvm_x86_vcpu_run)(vcpu);
		if (likely(exit_fastpath != EXIT_FASTPATH_REENTER_GUEST))
			break;

		if (unlikely(kvm_vcpu_exit_request(vcpu))) {
			exit_fastpath = EXIT_FASTPATH_EXIT_HANDLED;
			break;
		}
	}

	if (unlikely(vcpu->arch.tsc_always_catchup))
		kvm_make_request(KVM_REQ_CLOCK_UPDATE, vcpu);

	r = static_call(kvm_x86_handle_exit)(vcpu, exit_fastpath);
	return r;

cancel_injection:
	if (req_immediate_exit)
		kvm_make_request(KVM_REQ_EVENT, vcpu);
out:
	return r;
}

static int kvm_check_and_inject_events(struct kvm_vcpu *vcpu, bool *req_immediate_exit)
{
	/* after the order: never part of it */
	if (kvm_test_request(KVM_REQ_TRIPLE_FAULT, vcpu))
		return -EBUSY;
	return 0;
}

static int vcpu_run(struct kvm_vcpu *vcpu)
{
	int r;

	for (;;) {
		if (kvm_vcpu_running(vcpu)) {
			r = vcpu_enter_guest(vcpu);
		} else {
			r = vcpu_block(vcpu);
		}
		if (r <= 0)
			break;
		kvm_clear_request(KVM_REQ_UNBLOCK, vcpu);
	}
	return r;
}

bool kvm_vcpu_has_events(struct kvm_vcpu *vcpu)
{
	if (kvm_test_request(KVM_REQ_NMI, vcpu))
		return true;
#ifdef CONFIG_KVM_SMM
	if (kvm_test_request(KVM_REQ_SMI, vcpu))
		return true;
#endif
	if (kvm_test_request(KVM_REQ_PMI, vcpu))
		return true;
	return false;
}
