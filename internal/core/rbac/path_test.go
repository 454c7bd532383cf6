package rbac

import (
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/core/resource"
)

func TestMatchPath(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"/svc/web", "/svc/web", true},
		{"/svc/web", "/svc/web2", false},
		{"/svc/web", "/svc/we", false},
		{"/svc/web", "/svc/web/a", false},
		{"/svc/web", "/svc", false},
		{"/svc/web", "/Svc/web", false}, // SPIFFE paths are case-sensitive
		{"/svc/*", "/svc/web", true},
		{"/svc/*", "/svc/a.b-c_d", true},
		{"/svc/*", "/svc", false},
		{"/svc/*", "/svc/", false},
		{"/svc/*", "/svc/web/api", false},
		{"/svc/*/api", "/svc/web/api", true},
		{"/svc/*/api", "/svc/web/db", false},
		{"/svc/*/api", "/svc/api", false},
		{"/*", "/a", true},
		{"/*", "/a/b", false},
		{"/svc/**", "/svc/a", true},
		{"/svc/**", "/svc/a/b/c", true},
		{"/svc/**", "/svc", false}, // ** needs at least one more segment
		{"/svc/**", "/svcx/a", false},
		{"/svc/**", "/other/a", false},
		{"/**", "/a", true},
		{"/**", "/a/b/c", true},
		{"/*/**", "/a/b", true},
		{"/*/**", "/a", false},
		{"/svc/*", "/svc/*", true}, // a literal path that happens to hold *
		{"", "/a", false},
		{"/a", "", false},
		{"a", "a", false},
		{"/a", "a", false},
	}
	for _, tt := range tests {
		if got := MatchPath(tt.pattern, tt.path); got != tt.want {
			t.Errorf("MatchPath(%q, %q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

// matchSink keeps the calls measured below from being optimised away.
var matchSink bool

func TestMatchPathDoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		matchSink = MatchPath("/region/*/svc/**", "/region/europe/svc/foo/admin")
		matchSink = MatchPath("/region/europe/svc/foo", "/region/europe/svc/foo")
	})
	if allocs != 0 {
		t.Errorf("MatchPath allocates %v times per run, want 0", allocs)
	}
}

// matchPathReference is MatchPath written the obvious way, to compare with.
func matchPathReference(pattern, path string) bool {
	if !strings.HasPrefix(pattern, "/") || !strings.HasPrefix(path, "/") {
		return false
	}
	ps := strings.Split(pattern[1:], "/")
	xs := strings.Split(path[1:], "/")
	for i, p := range ps {
		if p == "**" && i == len(ps)-1 {
			return len(xs) > i && strings.Join(xs[i:], "/") != ""
		}
		if i >= len(xs) {
			return false
		}
		if p == "*" {
			if xs[i] == "" {
				return false
			}
		} else if p != xs[i] {
			return false
		}
	}
	return len(ps) == len(xs)
}

func FuzzMatchPath(f *testing.F) {
	for _, s := range [][2]string{
		{"/svc/web", "/svc/web"},
		{"/svc/*", "/svc/web"},
		{"/svc/**", "/svc/a/b"},
		{"/**", "/a"},
		{"/svc/*/api", "/svc/x/api"},
		{"/svc//x", "/svc//x"},
		{"", ""},
		{"/", "/"},
		{"/**", "/"},
		{"*", "/a"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		got := MatchPath(pattern, path)
		if want := matchPathReference(pattern, path); got != want {
			t.Fatalf("MatchPath(%q, %q) = %v, the reference says %v", pattern, path, got, want)
		}
		if resource.ValidatePathPattern(pattern) != nil {
			return
		}
		if !strings.Contains(pattern, "*") && !MatchPath(pattern, pattern) {
			t.Fatalf("exact pattern %q does not match itself", pattern)
		}
		if prefix, ok := strings.CutSuffix(pattern, "/**"); ok && !strings.Contains(prefix, "*") {
			if prefix != "" && MatchPath(pattern, prefix) {
				t.Fatalf("%q matches its own prefix %q; ** needs one more segment", pattern, prefix)
			}
			if resource.ValidateSPIFFEIDPath(path) == nil && !MatchPath(pattern, prefix+path) {
				t.Fatalf("%q does not match the deeper path %q", pattern, prefix+path)
			}
		}
		if resource.ValidateSPIFFEIDPath(path) == nil && MatchPath(pattern, path) {
			// A matched path matched segment by segment, so it has at least
			// as many segments as the pattern minus a final **.
			n := strings.Count(strings.TrimSuffix(pattern, "/**"), "/")
			if strings.Count(path, "/") < n {
				t.Fatalf("%q matched the shorter path %q", pattern, path)
			}
		}
	})
}
