package rbac

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/wid-project/wid/internal/core/resource"
)

// CheckSVID decides whether roles allow an SVID for req. The checks run in
// this order and the first to refuse decides: no roles; any role's deny
// grant (deny beats allow); a matching allow grant for the path; every DNS
// SAN and IP SAN allowed by some allow grant that matches the path; the TTL
// within the roles' maximum.
//
// A deny grant that lists no SANs denies its paths; one that lists SANs
// denies only requests carrying one of them (a requested wildcard counts if
// it covers a denied name). A granted DNS SAN matches exactly, ignoring case,
// or as *.example.com for exactly one more leftmost label; a requested
// wildcard needs the same wildcard granted.
func CheckSVID(roles []*resource.Role, req Request) Decision {
	maxTTL, maxRole := maxSVIDTTL(roles)
	d := Decision{MaxTTL: maxTTL}
	if len(roles) == 0 {
		d.Check = CheckNoRoles
		d.Reason = fmt.Sprintf("no role grants %s: the caller holds no roles, so give it a role that allows the path", req.ID)
		return d
	}
	if req.ID.IsZero() {
		d.Check = CheckPathNotGranted
		d.Reason = "the request names no SPIFFE ID: give the SPIFFE ID to issue"
		return d
	}
	path := req.ID.Path()
	ips := make([]netip.Addr, len(req.IPSANs))
	for i, ip := range req.IPSANs {
		a, _ := netip.AddrFromSlice(ip) // an invalid address stays zero and matches nothing
		ips[i] = a.Unmap()
	}

	for _, r := range roles {
		for i := range r.Spec.Deny.SPIFFE {
			if reason := denyReason(r, i, path, req, ips); reason != "" {
				d.Check, d.Role, d.Rule, d.Reason = CheckDenied, r.Metadata.Name, i+1, reason
				return d
			}
		}
	}

	// The allow grants that match the path, found once: the SAN checks
	// below only look at these. Most requests match a few grants, so the
	// array keeps them off the heap.
	var buf [8]grantRef
	matches := matchingGrants(buf[:0], roles, path)
	if len(matches) == 0 {
		d.Check = CheckPathNotGranted
		d.Reason = pathNotGrantedReason(roles, req)
		return d
	}
	first := matches[0]
	d.Role, d.Rule = first.role.Metadata.Name, first.index+1

	for _, san := range req.DNSSANs {
		if !slices.ContainsFunc(matches, func(m grantRef) bool {
			return slices.ContainsFunc(m.grant().DNSSANs, func(p string) bool { return dnsAllows(p, san) })
		}) {
			d.Check = CheckDNSSANNotGranted
			d.Reason = fmt.Sprintf("DNS SAN %q is not granted for %s: %s", san, path, sansAllowed(matches, "dns_sans", func(g *resource.SPIFFEGrant) []string { return g.DNSSANs }))
			return d
		}
	}
	for j, ip := range ips {
		if !slices.ContainsFunc(matches, func(m grantRef) bool {
			return slices.ContainsFunc(m.grant().IPSANs, func(entry string) bool { return ipAllows(entry, ip) })
		}) {
			d.Check = CheckIPSANNotGranted
			d.Reason = fmt.Sprintf("IP SAN %s is not granted for %s: %s", req.IPSANs[j], path, sansAllowed(matches, "ip_sans", func(g *resource.SPIFFEGrant) []string { return g.IPSANs }))
			return d
		}
	}

	if req.TTL > maxTTL {
		d.Check = CheckTTLOverMax
		if maxRole != "" {
			d.Role, d.Rule = maxRole, 0
			d.Reason = fmt.Sprintf("TTL %s is over the maximum %s set by role %q: ask for %s or less", resource.FormatDuration(req.TTL), resource.FormatDuration(maxTTL), maxRole, resource.FormatDuration(maxTTL))
		} else {
			d.Reason = fmt.Sprintf("TTL %s is over the maximum %s of any SVID: ask for %s or less", resource.FormatDuration(req.TTL), resource.FormatDuration(maxTTL), resource.FormatDuration(maxTTL))
		}
		return d
	}

	d.Allowed = true
	d.Reason = fmt.Sprintf("role %q allows %s (spec.allow.spiffe[%d] path %s)", d.Role, req.ID, d.Rule, first.grant().Path)
	return d
}

// denyReason says why deny grant i of role r refuses the request, or
// returns "" when it does not apply.
func denyReason(r *resource.Role, i int, path string, req Request, ips []netip.Addr) string {
	g := &r.Spec.Deny.SPIFFE[i]
	if !MatchPath(g.Path, path) {
		return ""
	}
	if len(g.DNSSANs) == 0 && len(g.IPSANs) == 0 {
		return fmt.Sprintf("role %q denies %s (spec.deny.spiffe[%d] path %s)", r.Metadata.Name, path, i+1, g.Path)
	}
	for _, san := range req.DNSSANs {
		if slices.ContainsFunc(g.DNSSANs, func(p string) bool { return dnsOverlaps(p, san) }) {
			return fmt.Sprintf("role %q denies DNS SAN %q for %s (spec.deny.spiffe[%d] path %s dns_sans %s)", r.Metadata.Name, san, path, i+1, g.Path, listOf(g.DNSSANs))
		}
	}
	for j, ip := range ips {
		if slices.ContainsFunc(g.IPSANs, func(entry string) bool { return ipAllows(entry, ip) }) {
			return fmt.Sprintf("role %q denies IP SAN %s for %s (spec.deny.spiffe[%d] path %s ip_sans %s)", r.Metadata.Name, req.IPSANs[j], path, i+1, g.Path, listOf(g.IPSANs))
		}
	}
	return ""
}

// maxSVIDTTL is the smallest options.max_svid_ttl among roles, never over
// DefaultMaxSVIDTTL, and the role that set it ("" when none is lower than
// the default).
func maxSVIDTTL(roles []*resource.Role) (time.Duration, string) {
	max, by := DefaultMaxSVIDTTL, ""
	for _, r := range roles {
		if t := r.Spec.Options.MaxSVIDTTL.D(); t > 0 && t < max {
			max, by = t, r.Metadata.Name
		}
	}
	return max, by
}

// grantRef points at allow grant index (from 0) of role.
type grantRef struct {
	role  *resource.Role
	index int
}

func (g grantRef) grant() *resource.SPIFFEGrant { return &g.role.Spec.Allow.SPIFFE[g.index] }

// matchingGrants appends the allow grants whose pattern matches path, in
// role order, to dst.
func matchingGrants(dst []grantRef, roles []*resource.Role, path string) []grantRef {
	for _, r := range roles {
		for i := range r.Spec.Allow.SPIFFE {
			if MatchPath(r.Spec.Allow.SPIFFE[i].Path, path) {
				dst = append(dst, grantRef{role: r, index: i})
			}
		}
	}
	return dst
}

func pathNotGrantedReason(roles []*resource.Role, req Request) string {
	var patterns []string
	for _, r := range roles {
		for _, g := range r.Spec.Allow.SPIFFE {
			if !slices.Contains(patterns, g.Path) {
				patterns = append(patterns, g.Path)
			}
		}
	}
	if len(patterns) == 0 {
		return fmt.Sprintf("no role grants %s: roles %s allow no SPIFFE paths", req.ID, roleNames(roles))
	}
	const max = 8
	list := strings.Join(patterns[:min(len(patterns), max)], ", ")
	if len(patterns) > max {
		list += fmt.Sprintf(" and %d more", len(patterns)-max)
	}
	return fmt.Sprintf("no role grants %s: roles %s allow %s", req.ID, roleNames(roles), list)
}

// sansAllowed says, per role with a grant matching the path, which SANs of
// one kind it allows: `role "a" allows dns_sans [x.example.com]`.
func sansAllowed(matches []grantRef, field string, sans func(*resource.SPIFFEGrant) []string) string {
	var parts []string
	for i := 0; i < len(matches); {
		r := matches[i].role
		var allowed []string
		for ; i < len(matches) && matches[i].role == r; i++ {
			for _, s := range sans(matches[i].grant()) {
				if !slices.Contains(allowed, s) {
					allowed = append(allowed, s)
				}
			}
		}
		if len(allowed) == 0 {
			parts = append(parts, fmt.Sprintf("role %q allows no %s", r.Metadata.Name, field))
		} else {
			parts = append(parts, fmt.Sprintf("role %q allows %s %s", r.Metadata.Name, field, listOf(allowed)))
		}
	}
	return strings.Join(parts, ", ")
}

// dnsAllows reports whether a granted DNS SAN pattern allows a requested
// name: the same name ignoring case, or *.example.com for exactly one more
// leftmost label. A requested wildcard is thus allowed only by the same
// wildcard: *.a.example.com has two labels before example.com.
func dnsAllows(pattern, name string) bool {
	if strings.EqualFold(pattern, name) {
		return true
	}
	if !strings.HasPrefix(pattern, "*.") {
		return false
	}
	label, rest, ok := strings.Cut(name, ".")
	return ok && label != "" && strings.EqualFold(rest, pattern[2:])
}

// dnsOverlaps reports whether a certificate for name could be used for a
// name that the denied pattern covers: a requested *.example.com overlaps a
// denied a.example.com.
func dnsOverlaps(pattern, name string) bool {
	if dnsAllows(pattern, name) {
		return true
	}
	if !strings.HasPrefix(name, "*.") {
		return false
	}
	label, rest, ok := strings.Cut(pattern, ".")
	return ok && label != "" && strings.EqualFold(rest, name[2:])
}

// ipAllows reports whether addr is inside a granted ip_sans entry.
func ipAllows(entry string, addr netip.Addr) bool {
	p, err := resource.ParseIPRange(entry)
	return err == nil && addr.IsValid() && p.Contains(addr)
}
