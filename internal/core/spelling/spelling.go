// Package spelling finds the name a user most likely meant when they
// misspelt one, for "did you mean" hints in the CLI and in resource
// decoding errors. It only compares strings; it never decides anything.
package spelling

// Nearest returns the candidate closest to name by edit distance when that
// distance is below within, the first such candidate on a tie, or "" when
// none is that close.
func Nearest(name string, candidates []string, within int) string {
	best, bestDist := "", within
	for _, c := range candidates {
		if d := Distance(name, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// Distance is the Levenshtein distance between two short strings; names
// longer than 64 bytes are reported as far apart rather than compared, so
// that a hostile name costs nothing.
func Distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return len(a) + len(b)
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
