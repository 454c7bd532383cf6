package output_test

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/cli/clitest"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/resource"
)

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]output.Format{"": output.Text, "text": output.Text, "JSON": output.JSON, " yaml ": output.YAML} {
		got, err := output.ParseFormat(in)
		if err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := output.ParseFormat("xml")
	if err == nil || err.Error() != `unknown output format "xml": use text, json or yaml` {
		t.Errorf("ParseFormat(xml) error = %v", err)
	}
}

func TestTableAlignsAndMarksEmptyCells(t *testing.T) {
	var buf bytes.Buffer
	tb := output.NewTable(&buf, "name", "max ttl")
	tb.Row("a-long-name", "")
	tb.Row("b", "1h\nsneaky")
	if err := tb.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "NAME         MAX TTL\na-long-name  -\nb            1h sneaky\n"
	if buf.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestRelative(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		59 * time.Minute: "in 59m", -3 * time.Hour: "3h ago", 30 * time.Second: "in 30s", 72 * time.Hour: "in 3d",
	} {
		if got := output.Relative(now.Add(d), now); got != want {
			t.Errorf("Relative(%v) = %q, want %q", d, got, want)
		}
	}
}

func role() *resource.Role {
	r := &resource.Role{Header: resource.Header{Kind: resource.KindRole, Version: resource.V1,
		Metadata: resource.Metadata{Name: "europe-foo", Description: "issues foo's SVIDs", Revision: 3}}}
	r.Spec.Allow.SPIFFE = []resource.SPIFFEGrant{{Path: "/region/europe/svc/foo", DNSSANs: []string{"foo.example.com"}, IPSANs: []string{"10.0.0.0/8"}}, {Path: "/svc/*"}}
	r.Spec.Deny.SPIFFE = []resource.SPIFFEGrant{{Path: "/region/europe/svc/foo/admin"}}
	r.Spec.Allow.Rules = []resource.Rule{{Resources: []string{"role"}, Verbs: []string{"read", "list"}}}
	r.Spec.Options.MaxSVIDTTL = resource.Duration(24 * time.Hour)
	return r
}

func token() *resource.JoinToken {
	return &resource.JoinToken{
		Header: resource.Header{Kind: resource.KindJoinToken, Version: resource.V1, Metadata: resource.Metadata{Name: "3f9a1c0b5d7e2a64"}},
		Spec: resource.JoinTokenSpec{Bot: "web-agent", Method: "token", Uses: 3, Used: 1,
			Expires: time.Date(2026, 1, 1, 13, 0, 0, 0, time.UTC), SecretHash: strings.Repeat("ab", 32)},
	}
}

func workloadIdentity() *resource.WorkloadIdentity {
	eq, glob := "1000", "/opt/web/*"
	w := &resource.WorkloadIdentity{Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1,
		Metadata: resource.Metadata{Name: "web", Labels: map[string]string{"env": "prod", "tier": "front"}, Revision: 2}}}
	w.Spec.SPIFFE = resource.WorkloadSPIFFE{ID: "/svc/web/{{ workload.unix.user }}", Hint: "web"}
	w.Spec.X509 = resource.WorkloadX509{DNSSANs: []string{"web.internal"}, TTL: resource.Duration(time.Hour)}
	w.Spec.JWT = resource.WorkloadJWT{TTL: resource.Duration(5 * time.Minute)}
	w.Spec.Rules.Allow = []resource.WorkloadRule{
		{Conditions: []resource.Condition{{Attribute: "workload.unix.uid", Eq: &eq}, {Attribute: "workload.unix.path", Glob: &glob}}},
		{Conditions: []resource.Condition{{Attribute: "workload.unix.user", In: []string{"alice", "bob"}}, {Attribute: "workload.unix.gid", NotIn: []string{"0"}}}},
	}
	return w
}

// users are one user locked for everyone, one locked from two addresses
// and one free to log in.
func users() []resource.Resource {
	user := func(name string, st *resource.UserStatus) *resource.User {
		return &resource.User{Header: resource.Header{Kind: resource.KindUser, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
			Spec: resource.UserSpec{Roles: []string{"dev"}}, Status: st}
	}
	return []resource.Resource{
		user("alice", &resource.UserStatus{LockedUntil: time.Date(2026, 1, 1, 12, 14, 0, 0, time.UTC), LockedSources: 3}),
		user("bob", &resource.UserStatus{LockedSources: 2}),
		user("carol", nil),
	}
}

// The golden files are what people and scripts see; a change to them is a
// change to widctl's interface.
func TestResourceFormats(t *testing.T) {
	now := func() time.Time { return time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC) }
	for _, format := range output.Formats {
		for name, r := range map[string]resource.Resource{"role": role(), "token": token(), "workload_identity": workloadIdentity()} {
			t.Run(string(format)+"/"+name, func(t *testing.T) {
				var buf bytes.Buffer
				p := &output.Printer{Out: &buf, Format: format, TTY: true, Now: now}
				if err := p.Resource(r); err != nil {
					t.Fatal(err)
				}
				clitest.Golden(t, buf.Bytes())
			})
		}
		t.Run(string(format)+"/list", func(t *testing.T) {
			var buf bytes.Buffer
			p := &output.Printer{Out: &buf, Format: format, Now: now}
			if err := p.Resources(resource.KindRole, []resource.Resource{role(), role()}); err != nil {
				t.Fatal(err)
			}
			clitest.Golden(t, buf.Bytes())
		})
		t.Run(string(format)+"/users", func(t *testing.T) {
			var buf bytes.Buffer
			p := &output.Printer{Out: &buf, Format: format, Now: now}
			if err := p.Resources(resource.KindUser, users()); err != nil {
				t.Fatal(err)
			}
			clitest.Golden(t, buf.Bytes())
		})
		t.Run(string(format)+"/user", func(t *testing.T) {
			var buf bytes.Buffer
			p := &output.Printer{Out: &buf, Format: format, TTY: true, Now: now}
			if err := p.Resource(users()[0]); err != nil {
				t.Fatal(err)
			}
			clitest.Golden(t, buf.Bytes())
		})
		t.Run(string(format)+"/workload_identities", func(t *testing.T) {
			var buf bytes.Buffer
			p := &output.Printer{Out: &buf, Format: format, Now: now}
			other := workloadIdentity()
			other.Metadata = resource.Metadata{Name: "db"}
			other.Spec.SPIFFE.Hint = ""
			other.Spec.Rules.Allow = other.Spec.Rules.Allow[1:]
			if err := p.Resources(resource.KindWorkloadIdentity, []resource.Resource{workloadIdentity(), other}); err != nil {
				t.Fatal(err)
			}
			clitest.Golden(t, buf.Bytes())
		})
	}
}

// What get prints in YAML must be what create -f reads back, unchanged.
func TestYAMLRoundTrips(t *testing.T) {
	var buf bytes.Buffer
	p := &output.Printer{Out: &buf, Format: output.YAML}
	other := role()
	other.Metadata.Name = "other"
	if err := p.Resources(resource.KindRole, []resource.Resource{role(), other}); err != nil {
		t.Fatal(err)
	}
	rs, err := resource.Decode(buf.Bytes())
	if err != nil {
		t.Fatalf("decoding what was printed: %v\n%s", err, buf.String())
	}
	if len(rs) != 2 || rs[1].GetMetadata().Name != "other" {
		t.Fatalf("decoded %d resources", len(rs))
	}
	var again bytes.Buffer
	p.Out = &again
	if err := p.Resources(resource.KindRole, rs); err != nil {
		t.Fatal(err)
	}
	if again.String() != buf.String() {
		t.Errorf("second print differs:\n%s\nfirst:\n%s", again.String(), buf.String())
	}
}

// A user's status is printed, and create -f reads the document back.
func TestUserWithStatusRoundTrips(t *testing.T) {
	for _, format := range []output.Format{output.JSON, output.YAML} {
		var buf bytes.Buffer
		p := &output.Printer{Out: &buf, Format: format}
		if err := p.Resource(users()[0]); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), "locked_until") {
			t.Errorf("%s output lacks locked_until:\n%s", format, buf.String())
		}
		rs, err := resource.Decode(buf.Bytes())
		if err != nil || len(rs) != 1 || rs[0].GetMetadata().Name != "alice" {
			t.Errorf("%s output does not decode: %v\n%s", format, err, buf.String())
		}
	}
}

func TestJSONListIsAnArrayOfDocuments(t *testing.T) {
	var buf bytes.Buffer
	p := &output.Printer{Out: &buf, Format: output.JSON}
	if err := p.Resources(resource.KindRole, nil); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "[]\n" {
		t.Errorf("empty list = %q, want []", buf.String())
	}
	buf.Reset()
	if err := p.Resources(resource.KindRole, []resource.Resource{role()}); err != nil {
		t.Fatal(err)
	}
	var docs []json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &docs); err != nil || len(docs) != 1 {
		t.Fatalf("not an array of one document: %v\n%s", err, buf.String())
	}
	if _, err := resource.Unmarshal(docs[0]); err != nil {
		t.Errorf("the element is not a resource document: %v", err)
	}
}

func TestNeverPrintsTokenSecretHash(t *testing.T) {
	hash := token().Spec.SecretHash
	for _, format := range output.Formats {
		var buf bytes.Buffer
		p := &output.Printer{Out: &buf, Format: format}
		if err := p.Resource(token()); err != nil {
			t.Fatal(err)
		}
		if err := p.Resources(resource.KindJoinToken, []resource.Resource{token()}); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(buf.String(), hash) {
			t.Errorf("%s output shows the secret hash:\n%s", format, buf.String())
		}
	}
}

func TestPrintStructs(t *testing.T) {
	v := struct {
		Name string `json:"name" yaml:"name"`
	}{"x"}
	for format, want := range map[output.Format]string{output.JSON: "{\n  \"name\": \"x\"\n}\n", output.YAML: "name: x\n", output.Text: "text x\n"} {
		var buf bytes.Buffer
		p := &output.Printer{Out: &buf, Format: format}
		err := p.Print(v, func(w io.Writer) error { _, err := io.WriteString(w, "text x\n"); return err })
		if err != nil || buf.String() != want {
			t.Errorf("%s: %q, %v; want %q", format, buf.String(), err, want)
		}
	}
}
