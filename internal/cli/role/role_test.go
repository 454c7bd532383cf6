package role

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/cli/clitest"
	"github.com/wid-project/wid/internal/core/resource"
)

func TestCreateParsesFlags(t *testing.T) {
	f, _ := clitest.Factory(t)
	var got *CreateOptions
	cmd := NewCmdCreate(f, func(o *CreateOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"europe-foo",
		"--spiffe-path", "/region/europe/svc/foo", "--spiffe-path", "/svc/*",
		"--dns-san", "foo.example.com,*.foo.example.com", "--ip-san", "10.0.0.0/8",
		"--deny-path", "/region/europe/svc/foo/admin", "--max-ttl", "24h", "--description", "issues foo's SVIDs"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	want := Flags{
		Description: "issues foo's SVIDs",
		SPIFFEPaths: []string{"/region/europe/svc/foo", "/svc/*"},
		DNSSANs:     []string{"foo.example.com", "*.foo.example.com"},
		IPSANs:      []string{"10.0.0.0/8"},
		DenyPaths:   []string{"/region/europe/svc/foo/admin"},
		MaxTTL:      resource.Duration(24 * time.Hour),
	}
	if got == nil || got.Name != "europe-foo" || !reflect.DeepEqual(got.Flags, want) {
		t.Fatalf("options = %+v, want name europe-foo and %+v", got, want)
	}
}

// A role made with flags is the same resource as the one written as YAML in
// DESIGN.md: that is what makes `role create` and `create -f` print alike.
func TestCreateBuildsTheDocumentedRole(t *testing.T) {
	doc := `kind: role
version: v1
metadata:
  name: europe-foo-svid-issuer
spec:
  allow:
    spiffe:
      - path: /region/europe/svc/foo
        dns_sans: ["foo.example.com"]
        ip_sans: ["10.0.0.0/8"]
  deny:
    spiffe:
      - path: /region/europe/svc/foo/admin
  options:
    max_svid_ttl: 24h
`
	rs, err := resource.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	opts := &CreateOptions{Name: "europe-foo-svid-issuer", Flags: Flags{
		SPIFFEPaths: []string{"/region/europe/svc/foo"}, DNSSANs: []string{"foo.example.com"}, IPSANs: []string{"10.0.0.0/8"},
		DenyPaths: []string{"/region/europe/svc/foo/admin"}, MaxTTL: resource.Duration(24 * time.Hour),
	}}
	r, err := opts.Role()
	if err != nil {
		t.Fatal(err)
	}
	fromFlags, _ := resource.MarshalYAML(r)
	fromFile, _ := resource.MarshalYAML(rs[0])
	if string(fromFlags) != string(fromFile) {
		t.Errorf("from flags:\n%s\nfrom the file:\n%s", fromFlags, fromFile)
	}
}

func current() *resource.Role {
	r := &resource.Role{Header: resource.Header{Kind: resource.KindRole, Version: resource.V1, Metadata: resource.Metadata{Name: "web", Revision: 7, Description: "old"}}}
	r.Spec.Allow.SPIFFE = []resource.SPIFFEGrant{
		{Path: "/svc/web", DNSSANs: []string{"web.example.com"}},
		{Path: "/svc/old", IPSANs: []string{"10.0.0.0/8"}},
	}
	r.Spec.Deny.SPIFFE = []resource.SPIFFEGrant{{Path: "/svc/web/admin"}}
	r.Spec.Options.MaxSVIDTTL = resource.Duration(time.Hour)
	return r
}

func TestUpdateReplacesOnlyWhatIsGiven(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, r *resource.Role)
	}{
		{"max ttl only", []string{"--max-ttl", "4h"}, func(t *testing.T, r *resource.Role) {
			want := current()
			want.Spec.Options.MaxSVIDTTL = resource.Duration(4 * time.Hour)
			if !reflect.DeepEqual(r, want) {
				t.Errorf("got %+v\nwant %+v", r.Spec, want.Spec)
			}
		}},
		{"paths keep their SANs", []string{"--spiffe-path", "/svc/web", "--spiffe-path", "/svc/new"}, func(t *testing.T, r *resource.Role) {
			want := []resource.SPIFFEGrant{{Path: "/svc/web", DNSSANs: []string{"web.example.com"}}, {Path: "/svc/new"}}
			if !reflect.DeepEqual(r.Spec.Allow.SPIFFE, want) {
				t.Errorf("allow = %+v, want %+v", r.Spec.Allow.SPIFFE, want)
			}
		}},
		{"SANs apply to every path", []string{"--dns-san", "a.example.com"}, func(t *testing.T, r *resource.Role) {
			for _, g := range r.Spec.Allow.SPIFFE {
				if !reflect.DeepEqual(g.DNSSANs, []string{"a.example.com"}) {
					t.Errorf("%s has DNS SANs %v", g.Path, g.DNSSANs)
				}
			}
			if !reflect.DeepEqual(r.Spec.Allow.SPIFFE[1].IPSANs, []string{"10.0.0.0/8"}) {
				t.Errorf("IP SANs changed: %v", r.Spec.Allow.SPIFFE[1].IPSANs)
			}
		}},
		{"empty SAN clears", []string{"--dns-san", ""}, func(t *testing.T, r *resource.Role) {
			if r.Spec.Allow.SPIFFE[0].DNSSANs != nil {
				t.Errorf("DNS SANs = %v, want none", r.Spec.Allow.SPIFFE[0].DNSSANs)
			}
		}},
		{"deny and description", []string{"--deny-path", "/svc/x", "--description", "new"}, func(t *testing.T, r *resource.Role) {
			if r.Metadata.Description != "new" || len(r.Spec.Deny.SPIFFE) != 1 || r.Spec.Deny.SPIFFE[0].Path != "/svc/x" {
				t.Errorf("got %q %+v", r.Metadata.Description, r.Spec.Deny.SPIFFE)
			}
			if r.Metadata.Revision != 7 {
				t.Errorf("revision = %d: the update must carry the revision it read", r.Metadata.Revision)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := clitest.Factory(t)
			var opts *UpdateOptions
			cmd := NewCmdUpdate(f, func(o *UpdateOptions) error { opts = o; return nil })
			cmd.SetArgs(append([]string{"web"}, tt.args...))
			if err := cmd.Execute(); err != nil {
				t.Fatal(err)
			}
			r := current()
			if err := opts.Apply(r); err != nil {
				t.Fatal(err)
			}
			tt.check(t, r)
		})
	}
}

func TestUpdateRefusesBadResults(t *testing.T) {
	f, _ := clitest.Factory(t)
	var opts *UpdateOptions
	cmd := NewCmdUpdate(f, func(o *UpdateOptions) error { opts = o; return nil })
	cmd.SetArgs([]string{"web", "--ip-san", "10.0.0.0/40"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	err := opts.Apply(current())
	if err == nil || !strings.HasPrefix(err.Error(), "--ip-san") {
		t.Errorf("error = %v, want one about --ip-san", err)
	}
}
