// Package rbac decides what a caller's roles allow: the SPIFFE IDs, SANs and
// TTLs of the SVIDs it may have issued, the admin operations it may perform,
// and the workload identities its agent may issue. Deny beats allow. Every
// decision says why: a Check for code and a Reason sentence for people, so
// that a refusal names the grant that was missing.
//
// It is pure: it never reads a store, the clock or the network, and never
// imports the CLI or TUI. Roles are expected to have passed Validate; grants
// that did not simply match nothing.
package rbac

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wid-project/wid/internal/core/resource"
)

// Checks: why a Decision refused. An allowed Decision has an empty Check.
const (
	// CheckNoRoles: the caller holds no role at all.
	CheckNoRoles = "no_roles"
	// CheckDenied: a deny grant or deny rule of a role matched.
	CheckDenied = "denied"
	// CheckPathNotGranted: no allow grant matches the SPIFFE ID's path.
	CheckPathNotGranted = "path_not_granted"
	// CheckDNSSANNotGranted: a requested DNS SAN is in no matching allow grant.
	CheckDNSSANNotGranted = "dns_san_not_granted"
	// CheckIPSANNotGranted: a requested IP SAN is in no matching allow grant.
	CheckIPSANNotGranted = "ip_san_not_granted"
	// CheckTTLOverMax: the requested TTL is over the roles' maximum.
	CheckTTLOverMax = "ttl_over_max"
	// CheckRuleNotGranted: no allow rule covers the admin operation.
	CheckRuleNotGranted = "rule_not_granted"
)

// DefaultMaxSVIDTTL is the longest SVID life when no role sets
// options.max_svid_ttl; roles may only lower it.
const DefaultMaxSVIDTTL = resource.MaxSVIDTTL

// Request is what an SVID issuance asks for.
type Request struct {
	ID      spiffeid.ID
	DNSSANs []string
	IPSANs  []net.IP
	// TTL is the life asked for; zero lets the issuer choose its default,
	// which it must cap at Decision.MaxTTL.
	TTL time.Duration
}

// Decision is the outcome of a check and the reason for it.
type Decision struct {
	Allowed bool
	// Check names the check that refused; empty when Allowed.
	Check string
	// Role is the role whose grant or rule decided, when one did.
	Role string
	// Rule is the 1-based index of that grant or rule in the role's allow or
	// deny list (spec.deny.spiffe[Rule]); 0 when no single one decided.
	Rule int
	// Reason is one sentence for people.
	Reason string
	// MaxTTL is the longest SVID life the roles allow (CheckSVID only), so
	// that an issuer can cap a default TTL without asking again.
	MaxTTL time.Duration
}

// Err returns nil when the decision allows, else a *DeniedError.
func (d Decision) Err() error {
	if d.Allowed {
		return nil
	}
	return &DeniedError{Decision: d}
}

// DeniedError carries a refusal; its message is the decision's Reason.
type DeniedError struct {
	Decision Decision
}

func (e *DeniedError) Error() string { return e.Decision.Reason }

// roleNames lists the roles' names as "[a b]" for reasons.
func roleNames(roles []*resource.Role) string {
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = r.Metadata.Name
	}
	return fmt.Sprintf("%v", names)
}

// listOf formats values as "[a b]", shortened when long so a reason stays
// one readable sentence.
func listOf(values []string) string {
	const max = 8
	if len(values) <= max {
		return fmt.Sprintf("%v", values)
	}
	return fmt.Sprintf("[%s and %d more]", strings.Join(values[:max], " "), len(values)-max)
}
