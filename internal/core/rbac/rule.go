package rbac

import (
	"fmt"
	"slices"

	"github.com/wid-project/wid/internal/core/resource"
)

// CheckRule decides whether roles allow verb on resourceKind for an admin
// operation (a kind, or audit, bundle, cert_authority, svid). Any role's
// matching deny rule refuses, whatever the allow rules say; otherwise some
// role must have a matching allow rule. "*" in a rule's resources or verbs
// matches everything.
func CheckRule(roles []*resource.Role, resourceKind, verb string) Decision {
	var d Decision
	if len(roles) == 0 {
		d.Check = CheckNoRoles
		d.Reason = fmt.Sprintf("no role allows %q on %q: the caller holds no roles, so give it a role with a rule {resources: [%s], verbs: [%s]}", verb, resourceKind, resourceKind, verb)
		return d
	}
	for _, r := range roles {
		if i := matchingRule(r.Spec.Deny.Rules, resourceKind, verb); i > 0 {
			d.Check, d.Role, d.Rule = CheckDenied, r.Metadata.Name, i
			d.Reason = fmt.Sprintf("role %q denies %q on %q (spec.deny.rules[%d])", r.Metadata.Name, verb, resourceKind, i)
			return d
		}
	}
	for _, r := range roles {
		if i := matchingRule(r.Spec.Allow.Rules, resourceKind, verb); i > 0 {
			d.Allowed, d.Role, d.Rule = true, r.Metadata.Name, i
			d.Reason = fmt.Sprintf("role %q allows %q on %q (spec.allow.rules[%d])", r.Metadata.Name, verb, resourceKind, i)
			return d
		}
	}
	d.Check = CheckRuleNotGranted
	if len(roles) == 1 {
		d.Role = roles[0].Metadata.Name
		d.Reason = fmt.Sprintf("role %q allows no %q on %q: add a rule {resources: [%s], verbs: [%s]}", d.Role, verb, resourceKind, resourceKind, verb)
	} else {
		d.Reason = fmt.Sprintf("roles %s allow no %q on %q: add a rule {resources: [%s], verbs: [%s]} to one of them", roleNames(roles), verb, resourceKind, resourceKind, verb)
	}
	return d
}

// matchingRule returns the 1-based index of the first rule covering
// resourceKind and verb, or 0.
func matchingRule(rules []resource.Rule, resourceKind, verb string) int {
	for i, rule := range rules {
		if (slices.Contains(rule.Resources, resource.Wildcard) || slices.Contains(rule.Resources, resourceKind)) &&
			(slices.Contains(rule.Verbs, resource.Wildcard) || slices.Contains(rule.Verbs, verb)) {
			return i + 1
		}
	}
	return 0
}
