package spelling

import (
	"strings"
	"testing"
)

func TestDistance(t *testing.T) {
	long := strings.Repeat("a", 65)
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"role", "role", 0},
		{"role", "rloe", 2},
		{"spiffe_id", "spifee_id", 1},
		{"", "abc", 3},
		{"kitten", "sitting", 3},
		{long, "a", 66}, // too long to compare: far apart
	} {
		if got := Distance(tc.a, tc.b); got != tc.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestNearest(t *testing.T) {
	names := []string{"max_ttl", "spiffe_path", "deny_path"}
	for _, tc := range []struct {
		name   string
		within int
		want   string
	}{
		{"max_tll", 3, "max_ttl"},
		{"deny_paht", 3, "deny_path"},
		{"nothing_like_it", 3, ""},
		{"max_tll", 1, ""}, // distance 1 is not below 1
		{"spath", 3, ""},
	} {
		if got := Nearest(tc.name, names, tc.within); got != tc.want {
			t.Errorf("Nearest(%q, within %d) = %q, want %q", tc.name, tc.within, got, tc.want)
		}
	}
}
