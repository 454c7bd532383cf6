package rbac

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/wid-project/wid/internal/core/resource"
)

// CheckEscalation is the refusal check of CheckGrantable.
const CheckEscalation = "escalation"

// CheckGrantable decides whether a caller holding roles may hand out
// target: give it to a user or bot, make a join token for a bot that holds
// it, or write it. It may when target grants nothing the caller's own roles
// do not: every SPIFFE grant (path and SANs) inside one of the caller's,
// every admin rule allowed to the caller, every workload identity selector
// inside one of the caller's, no longer TTLs, and every deny of the caller
// that could matter repeated in target. Otherwise handing it out would be a
// way to get more than one holds, as Teleport refuses role escalation.
//
// It is conservative: a target that only a union of several caller grants
// covers is refused. Target roles are taken together, as their holder
// would hold them.
func CheckGrantable(roles, target []*resource.Role) Decision {
	deny := func(format string, args ...any) Decision {
		return Decision{Check: CheckEscalation, Reason: fmt.Sprintf(format, args...) + fmt.Sprintf(": you may only hand out what your roles %s grant you", roleNames(roles))}
	}
	// Every admin rule and no denied one (editor): such a caller may
	// rewrite any role, its own too, so nothing is beyond it.
	if CheckRule(roles, resource.Wildcard, resource.Wildcard).Allowed &&
		!slices.ContainsFunc(roles, func(r *resource.Role) bool { return len(r.Spec.Deny.Rules) > 0 }) {
		return Decision{Allowed: true, Reason: fmt.Sprintf("roles %s allow every admin operation", roleNames(roles))}
	}
	for _, t := range target {
		name := t.Metadata.Name
		for i, g := range t.Spec.Allow.SPIFFE {
			if !slices.ContainsFunc(allowGrants(roles), func(c resource.SPIFFEGrant) bool { return grantCovers(c, g) }) {
				return deny("role %q grants SPIFFE path %s%s (spec.allow.spiffe[%d]), which none of your grants covers", name, g.Path, sanText(g), i+1)
			}
		}
		for i, r := range t.Spec.Allow.Rules {
			for _, kind := range r.Resources {
				for _, verb := range r.Verbs {
					if d := CheckRule(roles, kind, verb); !d.Allowed {
						return deny("role %q allows %q on %q (spec.allow.rules[%d]), which you may not do", name, verb, kind, i+1)
					}
				}
			}
		}
		if sel := t.Spec.Allow.WorkloadIdentityLabels; len(sel) > 0 {
			if !slices.ContainsFunc(roles, func(c *resource.Role) bool { return selectorCovers(c.Spec.Allow.WorkloadIdentityLabels, sel) }) {
				return deny("role %q selects workload identities labelled %s, more than any of your roles selects", name, selectorText(sel))
			}
		}
	}
	if mine, theirs := maxTTLOf(roles, svidTTL), maxTTLOf(target, svidTTL); theirs > mine {
		return deny("roles %s allow SVIDs for up to %s, longer than your %s", roleNames(target), resource.FormatDuration(theirs), resource.FormatDuration(mine))
	}
	if mine, theirs := maxTTLOf(roles, sessionTTL), maxTTLOf(target, sessionTTL); theirs > mine {
		return deny("roles %s allow logins of up to %s, longer than your %s", roleNames(target), resource.FormatDuration(theirs), resource.FormatDuration(mine))
	}

	// The caller's denies: target must repeat each one that could take
	// away something target allows.
	var targetDeny resource.RoleConditions
	targetSelects := false
	for _, t := range target {
		targetDeny.SPIFFE = append(targetDeny.SPIFFE, t.Spec.Deny.SPIFFE...)
		targetDeny.Rules = append(targetDeny.Rules, t.Spec.Deny.Rules...)
		targetSelects = targetSelects || len(t.Spec.Allow.WorkloadIdentityLabels) > 0
	}
	for _, c := range roles {
		for i, d := range c.Spec.Deny.SPIFFE {
			overlaps := slices.ContainsFunc(target, func(t *resource.Role) bool {
				return slices.ContainsFunc(t.Spec.Allow.SPIFFE, func(g resource.SPIFFEGrant) bool { return PatternsOverlap(g.Path, d.Path) })
			})
			if overlaps && !slices.ContainsFunc(targetDeny.SPIFFE, func(td resource.SPIFFEGrant) bool { return denyCovers(td, d) }) {
				return deny("your role %q denies SPIFFE path %s%s (spec.deny.spiffe[%d]), which roles %s do not deny", c.Metadata.Name, d.Path, sanText(d), i+1, roleNames(target))
			}
		}
		for i, r := range c.Spec.Deny.Rules {
			for _, kind := range r.Resources {
				for _, verb := range r.Verbs {
					if allowsAny(target, kind, verb) && matchingRule(targetDeny.Rules, kind, verb) == 0 {
						return deny("your role %q denies %q on %q (spec.deny.rules[%d]), which roles %s do not deny", c.Metadata.Name, verb, kind, i+1, roleNames(target))
					}
				}
			}
		}
		if sel := c.Spec.Deny.WorkloadIdentityLabels; len(sel) > 0 && targetSelects {
			if !slices.ContainsFunc(target, func(t *resource.Role) bool { return selectorCovers(t.Spec.Deny.WorkloadIdentityLabels, sel) }) {
				return deny("your role %q denies workload identities labelled %s, which roles %s do not deny", c.Metadata.Name, selectorText(sel), roleNames(target))
			}
		}
	}
	return Decision{Allowed: true, Reason: fmt.Sprintf("roles %s grant nothing beyond roles %s", roleNames(target), roleNames(roles))}
}

func allowGrants(roles []*resource.Role) []resource.SPIFFEGrant {
	var out []resource.SPIFFEGrant
	for _, r := range roles {
		out = append(out, r.Spec.Allow.SPIFFE...)
	}
	return out
}

// grantCovers reports whether allow grant c allows everything allow grant
// g allows: its path and each of its SANs.
func grantCovers(c, g resource.SPIFFEGrant) bool {
	if !PatternCovers(c.Path, g.Path) {
		return false
	}
	for _, san := range g.DNSSANs {
		// dnsAllows treats a wildcard asked for as needing the same wildcard.
		if !slices.ContainsFunc(c.DNSSANs, func(p string) bool { return dnsAllows(p, san) }) {
			return false
		}
	}
	for _, ip := range g.IPSANs {
		want, err := resource.ParseIPRange(ip)
		if err != nil {
			return false
		}
		if !slices.ContainsFunc(c.IPSANs, func(entry string) bool {
			have, err := resource.ParseIPRange(entry)
			return err == nil && have.Bits() <= want.Bits() && have.Contains(want.Addr())
		}) {
			return false
		}
	}
	return true
}

// denyCovers reports whether deny grant td denies at least what deny grant
// d denies: a wider path, and no SANs (all of them) or each of d's.
func denyCovers(td, d resource.SPIFFEGrant) bool {
	if !PatternCovers(td.Path, d.Path) {
		return false
	}
	if len(td.DNSSANs) == 0 && len(td.IPSANs) == 0 {
		return true
	}
	if len(d.DNSSANs) == 0 && len(d.IPSANs) == 0 {
		return false
	}
	for _, san := range d.DNSSANs {
		if !slices.ContainsFunc(td.DNSSANs, func(p string) bool { return dnsAllows(p, san) }) {
			return false
		}
	}
	for _, ip := range d.IPSANs {
		if !slices.Contains(td.IPSANs, ip) {
			return false
		}
	}
	return true
}

// allowsAny reports whether some allow rule of roles could cover verb on
// kind, either of which may be "*".
func allowsAny(roles []*resource.Role, kind, verb string) bool {
	overlaps := func(list []string, v string) bool {
		return v == resource.Wildcard && len(list) > 0 || slices.Contains(list, resource.Wildcard) || slices.Contains(list, v)
	}
	for _, r := range roles {
		for _, rule := range r.Spec.Allow.Rules {
			if overlaps(rule.Resources, kind) && overlaps(rule.Verbs, verb) {
				return true
			}
		}
	}
	return false
}

// selectorCovers reports whether selector c matches every workload
// identity that selector t matches (see SelectsWorkloadIdentity).
func selectorCovers(c, t map[string][]string) bool {
	if len(c) == 0 {
		return false
	}
	for key, values := range c {
		if key == resource.Wildcard {
			continue
		}
		if slices.Contains(values, resource.Wildcard) {
			if _, ok := t[key]; !ok {
				return false
			}
			continue
		}
		want, ok := t[key]
		if !ok || len(want) == 0 || slices.Contains(want, resource.Wildcard) {
			return false
		}
		for _, v := range want {
			if !slices.Contains(values, v) {
				return false
			}
		}
	}
	return true
}

func selectorText(sel map[string][]string) string {
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strings.Join(sel[k], "|")
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func sanText(g resource.SPIFFEGrant) string {
	var s string
	if len(g.DNSSANs) > 0 {
		s += " with dns_sans " + listOf(g.DNSSANs)
	}
	if len(g.IPSANs) > 0 {
		s += " with ip_sans " + listOf(g.IPSANs)
	}
	return s
}

func svidTTL(r *resource.Role) time.Duration    { return r.Spec.Options.MaxSVIDTTL.D() }
func sessionTTL(r *resource.Role) time.Duration { return r.Spec.Options.MaxSessionTTL.D() }

// maxTTLOf is the smallest positive TTL option of roles, or an unbounded
// value when none sets one (the service's own caps then apply to both).
func maxTTLOf(roles []*resource.Role, opt func(*resource.Role) time.Duration) time.Duration {
	limit := time.Duration(1<<63 - 1)
	for _, r := range roles {
		if t := opt(r); t > 0 && t < limit {
			limit = t
		}
	}
	return limit
}

// PatternCovers reports whether every path that pattern b matches is also
// matched by pattern a (see MatchPath): /svc/** covers /svc/* and /svc/a/b;
// /svc/* does not cover /svc/**.
func PatternCovers(a, b string) bool {
	as, bs, ok := segments(a, b)
	if !ok {
		return false
	}
	for i, seg := range as {
		if seg == "**" && i == len(as)-1 {
			return len(bs) > i
		}
		if i >= len(bs) {
			return false
		}
		bseg := bs[i]
		bDouble := bseg == "**" && i == len(bs)-1
		switch {
		case seg == "*":
			if bDouble {
				return false
			}
		case seg != bseg || bDouble || bseg == "*":
			return false
		}
	}
	return len(as) == len(bs)
}

// PatternsOverlap reports whether some path matches both patterns.
func PatternsOverlap(a, b string) bool {
	as, bs, ok := segments(a, b)
	if !ok {
		return false
	}
	for i := 0; ; i++ {
		aEnd, bEnd := i >= len(as), i >= len(bs)
		if aEnd || bEnd {
			return aEnd && bEnd
		}
		aDouble := as[i] == "**" && i == len(as)-1
		bDouble := bs[i] == "**" && i == len(bs)-1
		if aDouble || bDouble {
			// ** takes one or more segments: the other has one here.
			return true
		}
		if as[i] != "*" && bs[i] != "*" && as[i] != bs[i] {
			return false
		}
	}
}

func segments(a, b string) ([]string, []string, bool) {
	if a == "" || a[0] != '/' || b == "" || b[0] != '/' {
		return nil, nil, false
	}
	return strings.Split(a[1:], "/"), strings.Split(b[1:], "/"), true
}
