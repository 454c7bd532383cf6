package rbac

import "strings"

// MatchPath reports whether a SPIFFE ID path matches a grant pattern: an
// exact path, * for exactly one non-empty segment, and ** as the last
// segment for one or more further segments (/svc/** matches /svc/a and
// /svc/a/b, not /svc). Matching is case-sensitive, as SPIFFE paths are. Both
// must start with "/"; anything else matches nothing. It does not allocate.
func MatchPath(pattern, path string) bool {
	if pattern == "" || pattern[0] != '/' || path == "" || path[0] != '/' {
		return false
	}
	pat, p := pattern[1:], path[1:]
	for {
		ps, patRest, patMore := strings.Cut(pat, "/")
		if ps == "**" && !patMore {
			// What is left of the path must hold at least one segment.
			return p != ""
		}
		s, pRest, pMore := strings.Cut(p, "/")
		if ps == "*" {
			if s == "" {
				return false
			}
		} else if ps != s {
			return false
		}
		if patMore != pMore {
			return false
		}
		if !patMore {
			return true
		}
		pat, p = patRest, pRest
	}
}
