package cmdutil

import (
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/wid-project/wid/internal/core/resource"
)

// exampleTrustDomain stands in for the trust domain in messages when the
// user's own cannot be read from what they typed.
var exampleTrustDomain = spiffeid.RequireTrustDomainFromString("example.org")

// CheckSPIFFEID checks a SPIFFE ID or a bare path as typed on the command
// line, before anything is sent. The auth service decides whether it is in
// its trust domain; this catches what is malformed in any trust domain.
func CheckSPIFFEID(s string) error {
	td := exampleTrustDomain
	if rest, ok := strings.CutPrefix(s, "spiffe://"); ok {
		name, _, _ := strings.Cut(rest, "/")
		// Lower-casing lets the message suggest the right trust domain
		// while go-spiffe still refuses the upper-case one.
		if t, err := spiffeid.TrustDomainFromString(strings.ToLower(name)); err == nil {
			td = t
		}
	}
	if _, err := resource.ParseSPIFFEID(td, s); err != nil {
		return InputError(err)
	}
	return nil
}
