// SPDX-License-Identifier: MIT
/*
 * kvmsim test data, NOT kernel source: the v6.x request block rewritten in an
 * unusual style to test the parser's robustness (Allman braces, split calls,
 * nested and #else conditions, #if 0, a two-level helper, literals with braces).
 * It mirrors no particular kernel; the expected order is the one written below.
 */

#define KVM_REQ_FAKE_MACRO(v) kvm_check_request(KVM_REQ_NOT_IN_A_FUNCTION, v) /* { */

static const char brace_open = '{';
static const char *brace_text = "}}} kvm_check_request(KVM_REQ_IN_STRING, vcpu) {";

static void inner_flush(struct kvm_vcpu *vcpu)
{
	if (kvm_check_request(KVM_REQ_TLB_FLUSH_GUEST, vcpu))
		placeholder(vcpu);
}

static void outer_flush(struct kvm_vcpu *vcpu)
{
	if (kvm_check_request(KVM_REQ_TLB_FLUSH_CURRENT, vcpu))
		placeholder(vcpu);
	inner_flush(vcpu);
}

static void too_deep(struct kvm_vcpu *vcpu)
{
	/* three levels below vcpu_enter_guest(): not followed */
	if (kvm_check_request(KVM_REQ_TOO_DEEP, vcpu))
		placeholder(vcpu);
}

static void level2(struct kvm_vcpu *vcpu)
{
	too_deep(vcpu);
}

static void level1(struct kvm_vcpu *vcpu)
{
	level2(vcpu);
}

static noinline int
vcpu_enter_guest (struct kvm_vcpu *vcpu)
{
	int r = 0;
	char c = '}';
	const char *s = "{ kvm_check_request(KVM_REQ_IN_STRING, vcpu) ";
	bool req_int_win = placeholder_win(vcpu);

	if (unlikely(kvm_request_pending(vcpu)))
	{
		if (kvm_check_request(
				KVM_REQ_VM_DEAD,
				vcpu))
		{
			r = -EIO;
			goto out;
		}
		// if (kvm_check_request(KVM_REQ_IN_LINE_COMMENT, vcpu)) {
		if (kvm_dirty_ring_check_request(vcpu))
		{
			r = 0;
			goto out;
		}
#if 0
		if (kvm_check_request(KVM_REQ_DEAD_CODE, vcpu))
		{
			placeholder(vcpu);
		}
#endif
		if (kvm_check_request(KVM_REQ_TLB_FLUSH, vcpu)) placeholder(vcpu);
		outer_flush(vcpu);
		level1(vcpu);
#ifdef CONFIG_KVM_SMM
		if (kvm_check_request(KVM_REQ_SMI, vcpu))
		{
#else
		if (0)
		{
#endif
			placeholder(vcpu);
		}
#ifndef CONFIG_NO_PMU
		if (kvm_check_request(KVM_REQ_PMU, vcpu))
			placeholder(vcpu);
#else
		if (kvm_check_request(KVM_REQ_PMI, vcpu))
			placeholder(vcpu);
#endif
#ifdef CONFIG_KVM_HYPERV
#if IS_ENABLED(CONFIG_KVM_XEN) || defined(CONFIG_TESTING)
		if (kvm_test_request(KVM_REQ_HV_EXIT, vcpu) &&
		    kvm_check_request(KVM_REQ_HV_EXIT, vcpu))
		{
			r = 0;
			goto out;
		}
#elif defined(CONFIG_OTHER)
		if (kvm_check_request(KVM_REQ_HV_CRASH, vcpu))
			placeholder(vcpu);
#endif
#endif
		if (kvm_check_request(KVM_REQ_NMI, vcpu)) { placeholder(vcpu); }
		if (kvm_check_request(KVM_REQ_VENDOR_SPECIAL, vcpu))
			placeholder(vcpu);
		if (kvm_check_request(KVM_REQ_RECALC_INTERCEPTS, vcpu))
			kvm_x86_call(recalc_intercepts)(vcpu);
	}

	if (kvm_check_request(KVM_REQ_EVENT, vcpu) ||
	    req_int_win)
	{
		placeholder(vcpu);
	}

	/* after the order */
	if (kvm_check_request(KVM_REQ_APF_READY, vcpu))
		placeholder(vcpu);
	outer_flush(vcpu);
out:
	return r;
}
