package workloadidentity

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/cli/clitest"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/core/resource"
)

func parse(t *testing.T, args ...string) *CreateOptions {
	t.Helper()
	f, _ := clitest.Factory(t)
	var got *CreateOptions
	cmd := NewCmdCreate(f, func(o *CreateOptions) error { got = o; return nil })
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestCreateParsesFlags(t *testing.T) {
	got := parse(t, "web",
		"--spiffe-id", "/svc/web/{{ workload.unix.user }}", "--hint", "web",
		"--dns-san", "web.internal,{{ workload.unix.user }}.example.com", "--dns-san", "x.example.com",
		"--x509-ttl", "1h", "--jwt-ttl", "5m", "--label", "env=prod", "--label", "tier=front",
		"--rule", "workload.unix.uid=1000,workload.unix.path~/opt/*", "--rule", "workload.unix.user=a|b",
		"--description", "the web tier", "--force")
	want := CreateOptions{
		Name:        "web",
		SPIFFEID:    "/svc/web/{{ workload.unix.user }}",
		Hint:        "web",
		DNSSANs:     []string{"web.internal", "{{ workload.unix.user }}.example.com", "x.example.com"},
		X509TTL:     resource.Duration(time.Hour),
		JWTTTL:      resource.Duration(5 * time.Minute),
		Labels:      []string{"env=prod", "tier=front"},
		Rules:       []string{"workload.unix.uid=1000,workload.unix.path~/opt/*", "workload.unix.user=a|b"},
		Description: "the web tier",
		Force:       true,
	}
	got.IO, got.Client, got.Printer = nil, nil, nil
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("options = %+v\nwant %+v", *got, want)
	}
}

// A workload identity made with flags is the same resource as the one
// written as YAML: that is what makes `workload-identity create` and
// `create -f` print alike. The document is DESIGN.md's, with every operator.
func TestCreateBuildsTheDocumentedWorkloadIdentity(t *testing.T) {
	doc := `kind: workload_identity
version: v1
metadata:
  name: web
  description: the web tier
  labels: {env: prod, tier: front}
spec:
  spiffe:
    id: /svc/web/{{ workload.kubernetes.namespace }}
    hint: web
  x509: {dns_sans: [web.internal, "{{ workload.unix.user }}.example.com"], ttl: 1h}
  jwt: {ttl: 5m}
  rules:
    allow:
      - conditions:
          - attribute: workload.unix.uid
            eq: "1000"
          - attribute: workload.unix.path
            glob: /opt/web/*
      - conditions:
          - attribute: workload.unix.user
            in: [alice, bob]
          - attribute: workload.unix.group
            not_eq: wheel
          - attribute: workload.unix.gid
            not_in: ["0", "10"]
`
	rs, err := resource.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	opts := parse(t, "web",
		"--spiffe-id", "/svc/web/{{ workload.kubernetes.namespace }}", "--hint", "web",
		"--dns-san", "web.internal", "--dns-san", "{{ workload.unix.user }}.example.com",
		"--x509-ttl", "1h", "--jwt-ttl", "5m", "--label", "tier=front", "--label", "env=prod",
		"--rule", "workload.unix.uid=1000,workload.unix.path~/opt/web/*",
		"--rule", "workload.unix.user=alice|bob, workload.unix.group!=wheel, workload.unix.gid!=0|10",
		"--description", "the web tier")
	wi, err := opts.WorkloadIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(resource.Resource(wi), rs[0]) {
		t.Errorf("from flags %+v\nfrom the file %+v", wi, rs[0])
	}
	fromFlags, _ := resource.MarshalYAML(wi)
	fromFile, _ := resource.MarshalYAML(rs[0])
	if string(fromFlags) != string(fromFile) {
		t.Errorf("from flags:\n%s\nfrom the file:\n%s", fromFlags, fromFile)
	}
}

// The least a workload identity needs: no empty sections appear.
func TestCreateMinimal(t *testing.T) {
	wi, err := parse(t, "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.user=web").WorkloadIdentity()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := resource.MarshalYAML(wi)
	want := `kind: workload_identity
version: v1
metadata:
  name: web
spec:
  spiffe:
    id: /svc/web
  rules:
    allow:
      - conditions:
          - attribute: workload.unix.user
            eq: web
`
	if string(got) != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// Every refusal is bad input in one sentence that names the flag.
func TestCreateRefuses(t *testing.T) {
	base := []string{"--spiffe-id", "/svc/web", "--rule", "workload.unix.uid=1000"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad name", append([]string{"Web"}, base...), `name "Web" is invalid`},
		{"no spiffe id", []string{"web", "--rule", "workload.unix.uid=1"}, "no SPIFFE ID given: pass --spiffe-id"},
		{"no rule", []string{"web", "--spiffe-id", "/svc/web"}, `workload identity "web" has no rules, so no workload could get it: give at least one --rule`},
		{"empty rule", []string{"web", "--spiffe-id", "/svc/web", "--rule", ""}, `--rule "": the rule is empty: give at least one condition`},
		{"second rule bad", []string{"web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid=1", "--rule", "uid=2"}, `--rule 2 "uid=2": condition "uid=2": attribute "uid" is not a workload attribute`},
		{"bad glob", []string{"web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.path~[x"}, `"[x" is not a valid glob`},
		{"unclosed template", []string{"web", "--spiffe-id", "/svc/{{ workload.unix.uid", "--rule", "workload.unix.uid=1"}, `--spiffe-id is invalid: template "/svc/{{ workload.unix.uid" has "{{" without a closing "}}"`},
		{"unknown attribute in template", []string{"web", "--spiffe-id", "/uid/{{ uid }}", "--rule", "workload.unix.uid=1"}, `--spiffe-id is invalid: template "/uid/{{ uid }}": attribute "uid" is not a workload attribute`},
		{"full SPIFFE ID", []string{"web", "--spiffe-id", "spiffe://example.org/svc/web", "--rule", "workload.unix.uid=1"}, `--spiffe-id "spiffe://example.org/svc/web" is a full SPIFFE ID: write only the path`},
		{"bad path", []string{"web", "--spiffe-id", "/svc//{{ workload.unix.uid }}", "--rule", "workload.unix.uid=1"}, "--spiffe-id "},
		{"bad DNS SAN template", append([]string{"web", "--dns-san", "{{ workload.unix.user }.example.com"}, base...), `--dns-san: template "{{ workload.unix.user }.example.com" has "{{" without a closing "}}"`},
		{"hint too long", append([]string{"web", "--hint", strings.Repeat("h", 65)}, base...), "--hint is 65 characters long, over the limit of 64"},
		{"x509 ttl too long", append([]string{"web", "--x509-ttl", "25h"}, base...), "--x509-ttl 25h is over the 24h that any SVID may live: set 24h or less"},
		{"jwt ttl too long", append([]string{"web", "--jwt-ttl", "48h"}, base...), "--jwt-ttl 48h is over the 24h"},
		{"label without value", append([]string{"web", "--label", "env"}, base...), `--label "env" has no value: write it as KEY=VALUE`},
		{"bad label key", append([]string{"web", "--label", "-x=1"}, base...), `--label: label name "-x" is invalid`},
		{"label twice", append([]string{"web", "--label", "env=a", "--label", "env=b"}, base...), `--label sets "env" twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.args...).WorkloadIdentity()
			if err == nil {
				t.Fatalf("accepted, want %q", tt.want)
			}
			var e *cmdutil.Error
			if !errors.As(err, &e) || e.Code != cmdutil.ExitBadInput {
				t.Errorf("error %v is not bad input", err)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error = %q, want one line with %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "spec.") {
				t.Errorf("error = %q names a document field, not a flag", err)
			}
		})
	}
}
