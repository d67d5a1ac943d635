// SPDX-License-Identifier: MIT
/*
 * kvmsim test data: a small C file written for kvmsim's tests, NOT kernel source.
 *
 * It imitates the *shape* of arch/x86/kvm/x86.c in a v5.4 vendor tree (read from
 * CodeLinaro-mirror/qsdk_oss_kernel_linux-ipq-5.4 @
 * 7744840b595e164d6c4294c8192001c16526ce00): KVM_REQ_GET_VMCS12_PAGES (renamed
 * GET_NESTED_STATE_PAGES in 5.10), KVM_REQ_LOAD_CR3 (renamed LOAD_MMU_PGD), a
 * vendor request KVM_REQ_SUSPEND_TIME_ADJ whose handler has an #ifdef/#else pair
 * of definitions, only TLB_FLUSH (no CURRENT/GUEST split), HV_STIMER last, the
 * `kvm_x86_ops->hook(vcpu)` call style, and a late check written out in full.
 */

#include "fake.h"

#ifdef CONFIG_KVM_VIRT_SUSPEND_TIMING
static void kvm_adjust_suspend_time(struct kvm_vcpu *vcpu)
{
	u64 total_ns = placeholder_total(vcpu->kvm);

	if (!total_ns) {
		/* not suspended yet: retry on the next entry */
		kvm_make_request(KVM_REQ_SUSPEND_TIME_ADJ, vcpu);
		return;
	}
	kvm_make_request(KVM_REQ_MASTERCLOCK_UPDATE, vcpu);
}
#else
static void kvm_adjust_suspend_time(struct kvm_vcpu *vcpu)
{
}
#endif

static int vcpu_enter_guest(struct kvm_vcpu *vcpu)
{
	int r;
	bool req_int_win =
		dm_request_for_irq_injection(vcpu) &&
		kvm_cpu_accept_dm_intr(vcpu);

	bool req_immediate_exit = false;

	if (kvm_request_pending(vcpu)) {
		if (kvm_check_request(KVM_REQ_GET_VMCS12_PAGES, vcpu)) {
			if (unlikely(!kvm_x86_ops->get_vmcs12_pages(vcpu))) {
				r = 0;
				goto out;
			}
		}
		if (kvm_check_request(KVM_REQ_SUSPEND_TIME_ADJ, vcpu))
			kvm_adjust_suspend_time(vcpu);
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
		if (kvm_check_request(KVM_REQ_LOAD_CR3, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_TLB_FLUSH, vcpu))
			placeholder_flush(vcpu, true);
		if (kvm_check_request(KVM_REQ_REPORT_TPR_ACCESS, vcpu)) {
			r = 0;
			goto out;
		}
		if (kvm_check_request(KVM_REQ_TRIPLE_FAULT, vcpu)) {
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
	}

	if (kvm_check_request(KVM_REQ_EVENT, vcpu) || req_int_win) {
		if (inject_pending_event(vcpu) != 0)
			req_immediate_exit = true;
		else {
			/* SMI/NMI/IRQ windows { placeholder } */
			if (placeholder_pending(vcpu))
				kvm_x86_ops->enable_nmi_window(vcpu);
		}
	}

	if (vcpu->mode == EXITING_GUEST_MODE || kvm_request_pending(vcpu)
	    || need_resched() || signal_pending(current)) {
		r = 1;
		goto cancel_injection;
	}

	if (req_immediate_exit) {
		kvm_make_request(KVM_REQ_EVENT, vcpu);
		kvm_x86_ops->request_immediate_exit(vcpu);
	}

	kvm_x86_ops->run(vcpu);

	r = kvm_x86_ops->handle_exit(vcpu);
	return r;

cancel_injection:
	kvm_x86_ops->cancel_injection(vcpu);
out:
	return r;
}
