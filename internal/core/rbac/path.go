package rbac

// MatchPath reports whether a SPIFFE ID path matches a grant pattern: an
// exact path, * for exactly one non-empty segment, and ** as the last
// segment for one or more further segments (/svc/** matches /svc/a and
// /svc/a/b, not /svc). Matching is case-sensitive, as SPIFFE paths are. Both
// must start with "/"; anything else matches nothing. A * or ** anywhere
// else is compared as written.
//
// It runs on every issuance for every grant, so it walks both strings once,
// byte by byte, and never allocates.
func MatchPath(pattern, path string) bool {
	if pattern == "" || pattern[0] != '/' || path == "" || path[0] != '/' {
		return false
	}
	i, j := 1, 1 // the start of the current segment in pattern and path
	for {
		switch segmentKind(pattern, i) {
		case finalDoubleStar:
			// What is left of the path must hold at least one segment.
			return j < len(path)
		case star:
			k := j
			for k < len(path) && path[k] != '/' {
				k++
			}
			if k == j {
				return false
			}
			i, j = i+1, k
		default:
			for i < len(pattern) && pattern[i] != '/' {
				if j >= len(path) || path[j] != pattern[i] {
					return false
				}
				i, j = i+1, j+1
			}
			if j < len(path) && path[j] != '/' {
				return false
			}
		}
		// Both are at a '/' or at their end.
		patternEnd, pathEnd := i == len(pattern), j == len(path)
		if patternEnd || pathEnd {
			return patternEnd && pathEnd
		}
		i, j = i+1, j+1
	}
}

const (
	literal = iota
	star
	finalDoubleStar
)

// segmentKind classifies the pattern segment starting at i.
func segmentKind(pattern string, i int) int {
	if i >= len(pattern) || pattern[i] != '*' {
		return literal
	}
	if i+1 == len(pattern) || pattern[i+1] == '/' {
		return star
	}
	if pattern[i+1] == '*' && i+2 == len(pattern) {
		return finalDoubleStar
	}
	return literal
}
