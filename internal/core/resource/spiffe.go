package resource

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxSPIFFEIDLength is the longest SPIFFE ID, and so the longest path, wid
// accepts, in bytes. The SPIFFE ID standard asks implementations to accept
// IDs of at least 2048 bytes and longer URI SANs break common TLS stacks.
const MaxSPIFFEIDLength = 2048

const spiffeScheme = "spiffe://"

// ValidateSPIFFEIDPath checks a concrete SPIFFE ID path, as issued: non-empty,
// valid per the SPIFFE ID standard and at most MaxSPIFFEIDLength bytes.
func ValidateSPIFFEIDPath(p string) error {
	if problem := spiffePathProblem(p); problem != "" {
		return fmt.Errorf("SPIFFE ID path %s %s", quote(p), problem)
	}
	return nil
}

// ValidatePathPattern checks a path pattern as role grants write it: an exact
// path (/svc/web), * for exactly one whole segment (/svc/*/api), or ** as the
// last segment for one or more further segments (/svc/** matches /svc/a and
// /svc/a/b but not /svc itself, so a grant never covers its parent).
func ValidatePathPattern(p string) error {
	if problem := pathPatternProblem(p); problem != "" {
		return fmt.Errorf("path pattern %s %s", quote(p), problem)
	}
	return nil
}

// ParseSPIFFEID reads what a person or a client names an identity with: a
// full SPIFFE ID in trust domain td (spiffe://td/svc/web) or a bare path
// (/svc/web) that is taken to be in td. The trust domain's own ID, which has
// no path, is refused: nothing is issued for it.
func ParseSPIFFEID(td spiffeid.TrustDomain, s string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, fmt.Errorf("no trust domain is set to read %s in: configure the trust domain first", quote(s))
	}
	if len(s) > MaxSPIFFEIDLength {
		return spiffeid.ID{}, fmt.Errorf("SPIFFE ID %s is %d bytes long, over the limit of %d bytes: shorten its path", quote(s), len(s), MaxSPIFFEIDLength)
	}
	if strings.HasPrefix(s, "/") {
		if err := ValidateSPIFFEIDPath(s); err != nil {
			return spiffeid.ID{}, err
		}
		id, err := spiffeid.FromPath(td, s)
		if err != nil {
			return spiffeid.ID{}, fmt.Errorf("SPIFFE ID path %s is invalid: %w", quote(s), err)
		}
		if n := len(id.String()); n > MaxSPIFFEIDLength {
			return spiffeid.ID{}, fmt.Errorf("SPIFFE ID %s is %d bytes long, over the limit of %d bytes: shorten its path", quote(id.String()), n, MaxSPIFFEIDLength)
		}
		return id, nil
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, explainSPIFFEID(s, td, err)
	}
	if id.TrustDomain() != td {
		return spiffeid.ID{}, fmt.Errorf("SPIFFE ID %s is in trust domain %q, not in %q: write spiffe://%s/PATH or just /PATH", quote(s), id.TrustDomain().Name(), td.Name(), td.Name())
	}
	if id.Path() == "" {
		return spiffeid.ID{}, fmt.Errorf("SPIFFE ID %s names the trust domain itself: add a path, as in spiffe://%s/svc/web", quote(s), td.Name())
	}
	return id, nil
}

// explainSPIFFEID turns go-spiffe's verdict on s into a sentence that says
// which part is wrong. go-spiffe decides; the splitting here only finds the
// words.
func explainSPIFFEID(s string, td spiffeid.TrustDomain, err error) error {
	if !strings.HasPrefix(strings.ToLower(s), spiffeScheme) {
		return fmt.Errorf("%s is neither a SPIFFE ID nor a path: write spiffe://%s/PATH or just /PATH", quote(s), td.Name())
	}
	if !strings.HasPrefix(s, spiffeScheme) {
		return fmt.Errorf("SPIFFE ID %s must start with %q in lower case: write spiffe://%s/PATH", quote(s), spiffeScheme, td.Name())
	}
	name, path, hasPath := strings.Cut(s[len(spiffeScheme):], "/")
	if name == "" {
		return fmt.Errorf("SPIFFE ID %s has no trust domain: write spiffe://%s/PATH", quote(s), td.Name())
	}
	if _, tdErr := spiffeid.TrustDomainFromString(name); tdErr != nil {
		lower := strings.ToLower(name)
		if lower != name {
			if _, lowerErr := spiffeid.TrustDomainFromString(lower); lowerErr == nil {
				return fmt.Errorf("SPIFFE ID %s has upper-case letters in its trust domain %q: trust domains are lower-case, write %q", quote(s), name, lower)
			}
		}
		return fmt.Errorf("SPIFFE ID %s has an invalid trust domain %q: use only lower-case letters, digits, '.', '-' and '_'", quote(s), name)
	}
	if hasPath {
		if problem := spiffePathProblem("/" + path); problem != "" {
			return fmt.Errorf("SPIFFE ID %s %s", quote(s), problem)
		}
	}
	return fmt.Errorf("SPIFFE ID %s is invalid (%v): write spiffe://%s/PATH", quote(s), err, td.Name())
}

// spiffePathProblem says what is wrong with a concrete path, as the end of a
// sentence that starts with the path ("... has an empty segment: ..."), or
// returns "".
func spiffePathProblem(p string) string {
	switch {
	case p == "":
		return "is empty: give a path such as /svc/web"
	case len(p) > MaxSPIFFEIDLength:
		return fmt.Sprintf("is %d bytes long, over the limit of %d bytes: shorten it", len(p), MaxSPIFFEIDLength)
	case p == "/":
		return "names no path: give a path such as /svc/web"
	}
	if err := spiffeid.ValidatePath(p); err != nil {
		return explainPath(p, false, err)
	}
	return ""
}

// pathPatternProblem is spiffePathProblem for grant patterns.
func pathPatternProblem(p string) string {
	switch {
	case p == "":
		return "is empty: give a path such as /svc/web, /svc/* or /svc/**"
	case len(p) > MaxSPIFFEIDLength:
		return fmt.Sprintf("is %d bytes long, over the limit of %d bytes: shorten it", len(p), MaxSPIFFEIDLength)
	case p[0] != '/':
		return fmt.Sprintf("must start with \"/\": write /%s", p)
	case p == "/":
		return "names no path: write /** to grant every path"
	}
	segments := strings.Split(p[1:], "/")
	var literal strings.Builder
	literal.Grow(len(p))
	for i, seg := range segments {
		switch {
		case seg == "*":
			literal.WriteString("/x")
		case seg == "**":
			if i != len(segments)-1 {
				return fmt.Sprintf("has ** in segment %d: ** is only allowed as the last segment, as in /svc/**", i+1)
			}
			literal.WriteString("/x")
		case strings.Contains(seg, "*"):
			return fmt.Sprintf("has the partial glob %q: only a whole segment * (exactly one segment) and a final ** (any depth) are supported", seg)
		default:
			literal.WriteByte('/')
			literal.WriteString(seg)
		}
	}
	// Wildcards became a plain segment, so go-spiffe judges the literal
	// segments in place and segment numbers stay the same.
	if err := spiffeid.ValidatePath(literal.String()); err != nil {
		return explainPath(p, true, err)
	}
	return ""
}

// explainPath finds which segment of p made go-spiffe refuse it. In a
// pattern, whole-segment wildcards were already accepted.
func explainPath(p string, pattern bool, err error) string {
	if p[0] != '/' {
		return fmt.Sprintf("must start with \"/\": write /%s", p)
	}
	segments := strings.Split(p[1:], "/")
	for i, seg := range segments {
		switch seg {
		case "":
			if i == len(segments)-1 {
				return "ends with \"/\": remove the trailing slash"
			}
			return fmt.Sprintf("has an empty segment %d (\"//\"): remove the extra \"/\"", i+1)
		case ".", "..":
			return fmt.Sprintf("has a %q segment: SPIFFE paths may not contain \".\" or \"..\" segments, write the path without it", seg)
		case "*", "**":
			if pattern {
				continue
			}
		}
		for j := 0; j < len(seg); {
			r, size := utf8.DecodeRuneInString(seg[j:])
			// Ask go-spiffe about each character on its own; '.' alone would
			// be a dot segment, so it is skipped (it is allowed in a segment).
			if seg[j] != '.' && spiffeid.ValidatePathSegment(seg[j:j+size]) != nil {
				msg := fmt.Sprintf("has the character %q in segment %q: SPIFFE paths allow only letters, digits, '.', '-' and '_'", r, seg)
				if r == '%' {
					msg += " and no percent-encoding"
				}
				return msg
			}
			j += size
		}
	}
	return fmt.Sprintf("is not a valid SPIFFE ID path (%v): use segments of letters, digits, '.', '-' and '_' separated by single slashes", err)
}

// quote quotes a value for an error message, shortening very long values so
// that the message stays one readable sentence.
func quote(s string) string {
	const max = 80
	if len(s) <= max {
		return fmt.Sprintf("%q", s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q...", s[:cut])
}
