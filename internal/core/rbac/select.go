package rbac

import (
	"slices"

	"github.com/wid-project/wid/internal/core/resource"
)

// SelectsWorkloadIdentity reports whether roles let a bot issue a workload
// identity with these labels. A selector (workload_identity_labels) matches
// when every one of its labels is present with one of the listed values,
// "*" standing for any value; the label "*" (only as "*": ["*"]) matches
// every identity. A role with no selector selects nothing. A matching deny
// selector of any role excludes the identity whatever the allow selectors say.
// The SPIFFE path grants still apply when the identity's SVIDs are issued.
func SelectsWorkloadIdentity(roles []*resource.Role, labels map[string]string) bool {
	selected := false
	for _, r := range roles {
		if selectorMatches(r.Spec.Deny.WorkloadIdentityLabels, labels) {
			return false
		}
		if selectorMatches(r.Spec.Allow.WorkloadIdentityLabels, labels) {
			selected = true
		}
	}
	return selected
}

func selectorMatches(selector map[string][]string, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for key, values := range selector {
		if key == resource.Wildcard {
			continue // "*": ["*"] holds for every identity
		}
		v, ok := labels[key]
		if !ok || !(slices.Contains(values, resource.Wildcard) || slices.Contains(values, v)) {
			return false
		}
	}
	return true
}
