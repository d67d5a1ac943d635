// SPDX-License-Identifier: MIT
/*
 * kvmsim test data: a small C file written for kvmsim's tests, NOT kernel source.
 *
 * It imitates the *shape* of arch/x86/kvm/x86.c in 5.10.y (read from
 * openharmony/kernel_linux_5.10 @ 001420d125b99fe567a9622162e16fbae78c39d9, a 5.10
 * stable-based tree; v5.10 itself checks KVM_REQ_HV_TLB_FLUSH where this has
 * TLB_FLUSH_GUEST): no VM_DEAD, no dirty-ring request, GET_NESTED_STATE_PAGES
 * first, KVM_REQ_MMU_RELOAD, the TLB_FLUSH_CURRENT and TLB_FLUSH_GUEST checks
 * written inline (no helper yet), right after a kvm_clear_request() of
 * TLB_FLUSH_CURRENT; TRIPLE_FAULT checked once; MSR_FILTER_CHANGED last, no
 * UPDATE_CPU_DIRTY_LOGGING; the EVENT condition without kvm_xen_has_interrupt();
 * kvm_x86_ops.hook(vcpu) calls instead of static_call(); no fast-path loop.
 */

#include "fake.h"

static void kvm_vcpu_flush_tlb_all(struct kvm_vcpu *vcpu)
{
	placeholder_flush_all(vcpu);
}

static void kvm_vcpu_flush_tlb_guest(struct kvm_vcpu *vcpu)
{
	placeholder_flush_guest(vcpu);
}

static void kvm_vcpu_flush_tlb_current(struct kvm_vcpu *vcpu)
{
	placeholder_flush_current(vcpu);
}

static int vcpu_enter_guest(struct kvm_vcpu *vcpu)
{
	int r;
	bool req_int_win =
		dm_request_for_irq_injection(vcpu) &&
		kvm_cpu_accept_dm_intr(vcpu);
	fastpath_t exit_fastpath;

	bool req_immediate_exit = false;

	if (kvm_request_pending(vcpu)) {
		if (kvm_check_request(KVM_REQ_GET_NESTED_STATE_PAGES, vcpu)) {
			if (unlikely(!kvm_x86_ops.nested_ops->get_nested_state_pages(vcpu))) {
				r = 0;
				goto out;
			}
		}
		if (kvm_check_request(KVM_REQ_MMU_RELOAD, vcpu))
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
		if (kvm_check_request(KVM_REQ_TLB_FLUSH, vcpu)) {
			kvm_vcpu_flush_tlb_all(vcpu);

			/* the current ASID is one of "all" */
			kvm_clear_request(KVM_REQ_TLB_FLUSH_CURRENT, vcpu);
		}
		if (kvm_check_request(KVM_REQ_TLB_FLUSH_CURRENT, vcpu))
			kvm_vcpu_flush_tlb_current(vcpu);
		if (kvm_check_request(KVM_REQ_TLB_FLUSH_GUEST, vcpu))
			kvm_vcpu_flush_tlb_guest(vcpu);

		if (kvm_check_request(KVM_REQ_REPORT_TPR_ACCESS, vcpu)) {
			vcpu->run->exit_reason = KVM_EXIT_TPR_ACCESS;
			r = 0;
			goto out;
		}
		if (kvm_check_request(KVM_REQ_TRIPLE_FAULT, vcpu)) {
			vcpu->run->exit_reason = KVM_EXIT_SHUTDOWN;
			r = 0;
			goto out;
		}
		if (kvm_check_request(KVM_REQ_APF_HALT, vcpu)) {
			r = 1;
			goto out;
		}
		if (kvm_check_request(KVM_REQ_STEAL_UPDATE, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_SMI, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_NMI, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_PMU, vcpu))
			kvm_pmu_handle_event(vcpu);
		if (kvm_check_request(KVM_REQ_PMI, vcpu))
			kvm_pmu_deliver_pmi(vcpu);
		if (kvm_check_request(KVM_REQ_IOAPIC_EOI_EXIT, vcpu)) {
			if (placeholder_test(vcpu)) {
				r = 0;
				goto out;
			}
		}
		if (kvm_check_request(KVM_REQ_SCAN_IOAPIC, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_LOAD_EOI_EXITMAP, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_APIC_PAGE_RELOAD, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_HV_CRASH, vcpu)) {
			r = 0;
			goto out;
		}
		if (kvm_check_request(KVM_REQ_HV_RESET, vcpu)) {
			r = 0;
			goto out;
		}
		if (kvm_check_request(KVM_REQ_HV_EXIT, vcpu)) {
			r = 0;
			goto out;
		}

		/* SynIC timers: after the clock update */
		if (kvm_check_request(KVM_REQ_HV_STIMER, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_APICV_UPDATE, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_APF_READY, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_MSR_FILTER_CHANGED, vcpu))
			kvm_x86_ops.msr_filter_changed(vcpu);
	}

	if (kvm_check_request(KVM_REQ_EVENT, vcpu) || req_int_win) {
		inject_pending_event(vcpu, &req_immediate_exit);
		if (req_int_win)
			kvm_x86_ops.enable_irq_window(vcpu);
	}

	if (kvm_vcpu_exit_request(vcpu)) {
		r = 1;
		goto cancel_injection;
	}

	if (req_immediate_exit) {
		kvm_make_request(KVM_REQ_EVENT, vcpu);
		kvm_x86_ops.request_immediate_exit(vcpu);
	}

	exit_fastpath = kvm_x86_ops.run(vcpu);

	r = kvm_x86_ops.handle_exit(vcpu, exit_fastpath);
	return r;

cancel_injection:
	if (req_immediate_exit)
		kvm_make_request(KVM_REQ_EVENT, vcpu);
out:
	return r;
}
