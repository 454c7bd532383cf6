package resource

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestValidatePathPattern(t *testing.T) {
	long := "/" + strings.Repeat("a", MaxSPIFFEIDLength)
	tests := []struct {
		pattern string
		wantErr string // "" means valid
	}{
		{"/svc/web", ""},
		{"/svc/*", ""},
		{"/svc/**", ""},
		{"/**", ""},
		{"/*", ""},
		{"/svc/*/api", ""},
		{"/region/europe/svc/foo", ""},
		{"/Svc/A-b_c.d/1", ""}, // SPIFFE paths may hold upper-case letters
		{"/" + strings.Repeat("a", MaxSPIFFEIDLength-1), ""},
		{"", "is empty"},
		{"svc/web", `must start with "/": write /svc/web`},
		{"/", "names no path: write /** to grant every path"},
		{"/svc//x", `path pattern "/svc//x" has an empty segment 2 ("//"): remove the extra "/"`},
		{"//svc", `has an empty segment 1 ("//")`},
		{"/svc/", `ends with "/": remove the trailing slash`},
		{"/svc/./x", `has a "." segment`},
		{"/svc/../x", `has a ".." segment`},
		{"/svc/..", `has a ".." segment`},
		{"/svc/%41", `has the character '%' in segment "%41": SPIFFE paths allow only letters, digits, '.', '-' and '_' and no percent-encoding`},
		{"/svc/a b", `has the character ' '`},
		{"/svc/é", `has the character 'é'`},
		{"/svc/a?b", `has the character '?'`},
		{"/svc/we*", `has the partial glob "we*": only a whole segment * (exactly one segment) and a final ** (any depth) are supported`},
		{"/svc/*x/y", `partial glob "*x"`},
		{"/svc/***", `partial glob "***"`},
		{"/**/x", `has ** in segment 1: ** is only allowed as the last segment`},
		{"/svc/**/**", `has ** in segment 2`},
		{long, "is 2049 bytes long, over the limit of 2048 bytes: shorten it"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern[:min(len(tt.pattern), 40)], func(t *testing.T) {
			err := ValidatePathPattern(tt.pattern)
			checkErr(t, err, tt.wantErr)
		})
	}
}

func TestValidateSPIFFEIDPath(t *testing.T) {
	tests := []struct {
		path    string
		wantErr string
	}{
		{"/svc/web", ""},
		{"/a", ""},
		{"", "is empty: give a path such as /svc/web"},
		{"/", "names no path"},
		{"svc", `must start with "/"`},
		{"/svc/*", `has the character '*' in segment "*"`},
		{"/svc/**", `has the character '*' in segment "**"`},
		{"/svc//web", `SPIFFE ID path "/svc//web" has an empty segment 2 ("//")`},
		{"/svc/.", `has a "." segment`},
		{"/svc/%2F", "no percent-encoding"},
		{"/" + strings.Repeat("x", MaxSPIFFEIDLength), "over the limit of 2048 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.path[:min(len(tt.path), 40)], func(t *testing.T) {
			checkErr(t, ValidateSPIFFEIDPath(tt.path), tt.wantErr)
		})
	}
}

func TestParseSPIFFEID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "spiffe://example.org/svc/web", want: "spiffe://example.org/svc/web"},
		{in: "/svc/web", want: "spiffe://example.org/svc/web"},
		{in: "/Svc/Web", want: "spiffe://example.org/Svc/Web"},
		{in: "spiffe://Example.org/svc", wantErr: `SPIFFE ID "spiffe://Example.org/svc" has upper-case letters in its trust domain "Example.org": trust domains are lower-case, write "example.org"`},
		{in: "spiffe://EXAMPLE.ORG", wantErr: `upper-case letters in its trust domain "EXAMPLE.ORG"`},
		{in: "spiffe://other.org/svc", wantErr: `SPIFFE ID "spiffe://other.org/svc" is in trust domain "other.org", not in "example.org": write spiffe://example.org/PATH or just /PATH`},
		{in: "spiffe://example.org", wantErr: "names the trust domain itself: add a path, as in spiffe://example.org/svc/web"},
		{in: "spiffe://example.org/", wantErr: `SPIFFE ID "spiffe://example.org/" names no path: give a path such as /svc/web`},
		{in: "spiffe://example.org/a//b", wantErr: `has an empty segment 2 ("//")`},
		{in: "spiffe://example.org/a/../b", wantErr: `has a ".." segment`},
		{in: "spiffe://example.org/a/./b", wantErr: `has a "." segment`},
		{in: "spiffe://example.org/a%20b", wantErr: "no percent-encoding"},
		{in: "SPIFFE://example.org/a", wantErr: `must start with "spiffe://" in lower case`},
		{in: "http://example.org/a", wantErr: "is neither a SPIFFE ID nor a path: write spiffe://example.org/PATH or just /PATH"},
		{in: "svc/web", wantErr: "is neither a SPIFFE ID nor a path"},
		{in: "", wantErr: "is neither a SPIFFE ID nor a path"},
		{in: "spiffe:///a", wantErr: "has no trust domain"},
		{in: "spiffe://exa mple.org/a", wantErr: `has an invalid trust domain "exa mple.org"`},
		{in: "spiffe://example.org:8443/a", wantErr: "has an invalid trust domain"},
		{in: "/a//b", wantErr: `SPIFFE ID path "/a//b" has an empty segment 2`},
		{in: "spiffe://example.org/" + strings.Repeat("a", MaxSPIFFEIDLength), wantErr: "bytes long, over the limit of 2048 bytes: shorten its path"},
		// The path alone fits, the whole ID does not.
		{in: "/" + strings.Repeat("a", MaxSPIFFEIDLength-10), wantErr: "2059 bytes long, over the limit of 2048 bytes"},
		{in: "/" + strings.Repeat("a", MaxSPIFFEIDLength-1-len("spiffe://example.org")), want: "spiffe://example.org/" + strings.Repeat("a", MaxSPIFFEIDLength-1-len("spiffe://example.org"))},
	}
	for _, tt := range tests {
		t.Run(tt.in[:min(len(tt.in), 40)], func(t *testing.T) {
			id, err := ParseSPIFFEID(td, tt.in)
			checkErr(t, err, tt.wantErr)
			if err == nil && id.String() != tt.want {
				t.Errorf("ParseSPIFFEID(%q) = %s, want %s", tt.in, id, tt.want)
			}
		})
	}
	if _, err := ParseSPIFFEID(spiffeid.TrustDomain{}, "/a"); err == nil {
		t.Error("ParseSPIFFEID with no trust domain succeeded, want an error")
	}
}

// checkErr fails unless err matches want: nil for "", else containing want.
func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
	if err != nil {
		msg := err.Error()
		if msg != strings.TrimSpace(msg) || msg[0] >= 'A' && msg[0] <= 'Z' && !strings.HasPrefix(msg, "SPIFFE") && !strings.HasPrefix(msg, "DNS") && !strings.HasPrefix(msg, "IP") {
			t.Errorf("error %q should start lower-case (or with an acronym) and have no surrounding space", msg)
		}
	}
}
