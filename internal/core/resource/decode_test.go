package resource

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// Canonical files: what MarshalYAML writes, so they must round-trip byte
// for byte.
const (
	roleYAML = `kind: role
version: v1
metadata:
  name: europe-foo-svid-issuer
  description: Issues SVIDs for foo in Europe.
  labels:
    region: europe
spec:
  allow:
    spiffe:
      - path: /region/europe/svc/foo
        dns_sans:
          - foo.example.com
          - '*.foo.example.com'
        ip_sans:
          - 10.0.0.0/8
      - path: /region/europe/svc/*/api
    rules:
      - resources:
          - role
          - audit
        verbs:
          - read
          - list
    workload_identity_labels:
      env:
        - prod
        - '*'
  deny:
    spiffe:
      - path: /region/europe/svc/foo/admin
  options:
    max_svid_ttl: 4h
    max_session_ttl: 12h
`
	workloadIdentityYAML = `kind: workload_identity
version: v1
metadata:
  name: web
  labels:
    env: prod
spec:
  spiffe:
    id: /svc/web/{{ workload.kubernetes.namespace }}
    hint: web
  x509:
    dns_sans:
      - web.internal
    ttl: 1h
  jwt:
    ttl: 5m
  rules:
    allow:
      - conditions:
          - attribute: workload.unix.uid
            eq: "1000"
          - attribute: workload.unix.path
            in:
              - /usr/bin/web
              - /usr/local/bin/web
      - conditions:
          - attribute: workload.kubernetes.namespace
            glob: prod-*
`
	userYAML = `kind: user
version: v1
metadata:
  name: alice
spec:
  roles:
    - editor
`
	botYAML = `kind: bot
version: v1
metadata:
  name: agent-1
spec:
  roles:
    - local-agent
`
	tokenYAML = `kind: token
version: v1
metadata:
  name: 3f2a
spec:
  bot: agent-1
  method: token
  uses: 1
  expires: 2030-01-02T03:04:05Z
  secret_hash: abababababababababababababababababababababababababababababababab
`
)

func TestRoundTripYAML(t *testing.T) {
	for _, in := range []string{roleYAML, workloadIdentityYAML, userYAML, botYAML, tokenYAML} {
		name := strings.SplitN(in, "\n", 2)[0]
		t.Run(name, func(t *testing.T) {
			rs, err := Decode([]byte(in))
			if err != nil {
				t.Fatal(err)
			}
			out, err := MarshalYAML(rs[0])
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != in {
				t.Errorf("YAML -> struct -> YAML changed the text:\n--- got\n%s--- want\n%s", out, in)
			}
			j, err := MarshalJSON(rs[0])
			if err != nil {
				t.Fatal(err)
			}
			back, err := Unmarshal(j)
			if err != nil {
				t.Fatalf("Unmarshal(MarshalJSON) = %v\n%s", err, j)
			}
			if !reflect.DeepEqual(back, rs[0]) {
				t.Errorf("JSON round trip changed the resource:\n got %#v\nwant %#v", back, rs[0])
			}
		})
	}
}

func TestDecodeRoleValues(t *testing.T) {
	rs, err := Decode([]byte(roleYAML))
	if err != nil {
		t.Fatal(err)
	}
	r, ok := rs[0].(*Role)
	if !ok {
		t.Fatalf("decoded %T, want *Role", rs[0])
	}
	if got := r.Spec.Allow.SPIFFE[0].DNSSANs[1]; got != "*.foo.example.com" {
		t.Errorf("dns_sans[2] = %q", got)
	}
	if r.Spec.Options.MaxSVIDTTL.D() != 4*time.Hour || r.Spec.Deny.SPIFFE[0].Path != "/region/europe/svc/foo/admin" {
		t.Errorf("decoded role lost values: %+v", r.Spec)
	}
}

func TestMarshalOmitsEmptySections(t *testing.T) {
	r := &Role{
		Header: Header{Kind: KindRole, Version: V1, Metadata: Metadata{Name: "svc"}},
		Spec:   RoleSpec{Allow: RoleConditions{SPIFFE: []SPIFFEGrant{{Path: "/svc/*"}}}, Deny: RoleConditions{SPIFFE: []SPIFFEGrant{}}},
	}
	y, err := MarshalYAML(r)
	if err != nil {
		t.Fatal(err)
	}
	wantYAML := "kind: role\nversion: v1\nmetadata:\n  name: svc\nspec:\n  allow:\n    spiffe:\n      - path: /svc/*\n"
	if string(y) != wantYAML {
		t.Errorf("MarshalYAML =\n%s\nwant\n%s", y, wantYAML)
	}
	j, err := MarshalJSON(r)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON := `{"kind":"role","version":"v1","metadata":{"name":"svc"},"spec":{"allow":{"spiffe":[{"path":"/svc/*"}]}}}`
	if string(j) != wantJSON {
		t.Errorf("MarshalJSON =\n%s\nwant\n%s", j, wantJSON)
	}
	w := validWorkloadIdentity()
	w.Spec.X509, w.Spec.JWT = WorkloadX509{}, WorkloadJWT{}
	j, err = MarshalJSON(w)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(j), `"x509"`) || strings.Contains(string(j), `"jwt"`) {
		t.Errorf("MarshalJSON kept empty x509/jwt sections: %s", j)
	}
	if _, err := MarshalYAML(nil); err == nil {
		t.Error("MarshalYAML(nil) succeeded")
	}
	if _, err := MarshalJSON((*Role)(nil)); err == nil {
		t.Error("MarshalJSON(nil role) succeeded")
	}
}

func TestDecodeMultiDocument(t *testing.T) {
	in := "# wid resources\n---\n" + roleYAML + "---\n# nothing here\n---\n" + userYAML + "---\n---\n" + workloadIdentityYAML + "...\n"
	rs, err := Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range rs {
		kinds = append(kinds, Ref(r))
	}
	want := []string{"role/europe-foo-svid-issuer", "user/alice", "workload_identity/web"}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("decoded %v, want %v", kinds, want)
	}
}

func TestDecodeJSON(t *testing.T) {
	// Tabs, "\/" and a surrogate pair: valid JSON that yaml.v3 alone refuses.
	in := "{\n\t\"kind\": \"role\",\n\t\"version\": \"v1\",\n\t\"metadata\": {\"name\": \"svc\", \"description\": \"a\\/b \\ud83d\\ude00 \\u00e9\"},\n\t\"spec\": {\"allow\": {\"spiffe\": [{\"path\": \"\\/svc\\/*\"}]}}\n}\n"
	rs, err := Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	r := rs[0].(*Role)
	if r.Metadata.Description != "a/b 😀 é" || r.Spec.Allow.SPIFFE[0].Path != "/svc/*" {
		t.Errorf("JSON decoded to %q, %q", r.Metadata.Description, r.Spec.Allow.SPIFFE[0].Path)
	}
	// Line numbers in errors still match the JSON text.
	bad := "{\n  \"kind\": \"role\",\n  \"version\": \"v1\",\n  \"metadata\": {\"name\": \"svc\"},\n  \"spec\": {\n    \"allow\": {\"spiffe\": [\n      {\"path\": \"\\/svc\\/\\/x\"}\n    ]}\n  }\n}\n"
	_, err = Decode([]byte(bad))
	checkErr(t, err, `document 1: line 7: role "svc": spec.allow.spiffe[1].path "/svc//x" has an empty segment 2`)
}

func TestUnmarshal(t *testing.T) {
	r, err := Unmarshal([]byte(`{"kind":"user","version":"v1","metadata":{"name":"bob"},"spec":{"roles":null}}`))
	if err != nil {
		t.Fatal(err)
	}
	// A missing list comes back as an empty one, so it is written as [] and
	// not as null.
	if u := r.(*User); u.Spec.Roles == nil || len(u.Spec.Roles) != 0 {
		t.Errorf("roles = %#v, want an empty list", u.Spec.Roles)
	}
	j, _ := MarshalJSON(r)
	if !strings.Contains(string(j), `"roles":[]`) {
		t.Errorf("MarshalJSON = %s, want roles as []", j)
	}
	_, err = Unmarshal([]byte(userYAML + "---\n" + botYAML))
	checkErr(t, err, "found 2 resources where one was expected: send them one at a time")
	_, err = Unmarshal([]byte("  \n# nothing\n"))
	checkErr(t, err, "no resource found")
	_, err = Unmarshal([]byte(`{"kind":"user","version":"v1","metadata":{"name":"bob"},"spec":{"roles":[]},"extra":1}`))
	checkErr(t, err, `line 1: field "extra" not found in user: check the spelling`)
}

func TestDecodeErrors(t *testing.T) {
	replace := func(s, old, new string) string {
		if !strings.Contains(s, old) {
			t.Fatalf("test input has no %q", old)
		}
		return strings.Replace(s, old, new, 1)
	}
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"unknown key", userYAML + "---\n" + replace(roleYAML, "  allow:", "  alow:"),
			`document 2: line 17: field "alow" not found in role spec: check the spelling (did you mean "allow"?)`},
		{"unknown nested key", replace(roleYAML, "      - path: /region/europe/svc/*/api", "      - pth: /region/europe/svc/*/api"),
			`document 1: line 17: field "pth" not found in role spec.allow.spiffe[2]: check the spelling (did you mean "path"?)`},
		{"unknown top key", "kind: bot\nversion: v1\nmetadata: {name: a}\nspec: {roles: []}\nstatus: ok\n",
			`document 1: line 5: field "status" not found in bot: check the spelling; the fields here are kind, version, metadata, spec`},
		{"missing kind", "version: v1\nmetadata: {name: a}\n",
			"document 1: line 1: kind is missing: add kind: with one of role, user, bot, token, workload_identity"},
		{"unknown kind", "kind: rol\nversion: v1\n",
			`document 1: line 1: unknown kind "rol": use one of role, user, bot, token, workload_identity`},
		{"alias kind", "kind: roles\nversion: v1\n",
			`document 1: line 1: kind "roles" is not how resource files name it: write kind: role`},
		{"upper-case kind", "kind: Role\nversion: v1\n", `kind "Role" is not how resource files name it: write kind: role`},
		{"list kind", "kind: [role]\nversion: v1\n", "kind must be one of role, user"},
		{"missing version", "kind: user\nmetadata: {name: a}\nspec: {roles: []}\n",
			"document 1: line 1: version is missing: add version: v1"},
		{"wrong version", replace(userYAML, "version: v1", "version: v2"),
			`document 1: line 2: user "alice": version "v2" is not supported: use version: v1`},
		{"bad name", replace(userYAML, "name: alice", "name: Alice"),
			`document 1: line 4: user: metadata.name: name "Alice" is invalid`},
		{"bad ttl", replace(roleYAML, "max_svid_ttl: 4h", "max_svid_ttl: forever"),
			`document 1: line 33: spec.options.max_svid_ttl: "forever" is not a duration: write it like 90s, 15m, 1h or 24h`},
		{"zero ttl", replace(roleYAML, "max_svid_ttl: 4h", "max_svid_ttl: 0s"), `line 33: spec.options.max_svid_ttl: duration "0s" must be positive`},
		{"ttl over max", replace(roleYAML, "max_svid_ttl: 4h", "max_svid_ttl: 72h"),
			`document 1: line 33: role "europe-foo-svid-issuer": spec.options.max_svid_ttl 72h is over the 24h that any SVID may live`},
		{"ttl as list", replace(workloadIdentityYAML, "ttl: 5m", "ttl: [5m]"), "line 16: spec.jwt.ttl must be a duration such as 1h, not a list"},
		{"double slash", replace(roleYAML, "/region/europe/svc/*/api", "/region//svc"),
			`document 1: line 17: role "europe-foo-svid-issuer": spec.allow.spiffe[2].path "/region//svc" has an empty segment 2 ("//")`},
		{"dot dot", replace(roleYAML, "/region/europe/svc/foo/admin", "/region/../admin"), `line 31: role "europe-foo-svid-issuer": spec.deny.spiffe[1].path "/region/../admin" has a ".." segment`},
		{"percent", replace(roleYAML, "/region/europe/svc/*/api", "/region/%2e"), "no percent-encoding"},
		{"long path", replace(roleYAML, "/region/europe/svc/*/api", "/"+strings.Repeat("a", 2048)), "2049 bytes long, over the limit of 2048 bytes"},
		{"partial glob", replace(roleYAML, "/region/europe/svc/*/api", "/region/eu*"), `partial glob "eu*"`},
		{"bad cidr", replace(roleYAML, "10.0.0.0/8", "10.0.0.0/40"), `document 1: line 16: role "europe-foo-svid-issuer": spec.allow.spiffe[1].ip_sans[1]: IP range "10.0.0.0/40" is not a CIDR`},
		{"bad glob", replace(workloadIdentityYAML, "glob: prod-*", "glob: prod-["), `line 28: workload_identity "web": spec.rules.allow[2].conditions[1].glob "prod-[" is not a valid glob`},
		{"bad template", replace(workloadIdentityYAML, "{{ workload.kubernetes.namespace }}", "{{ kubernetes.namespace }}"), `line 9: workload_identity "web": spec.spiffe.id is invalid: template`},
		{"not a number", replace(tokenYAML, "uses: 1", "uses: once"), `document 1: line 8: spec.uses "once" is not a whole number`},
		{"not a time", replace(tokenYAML, "expires: 2030-01-02T03:04:05Z", "expires: soon"), `line 9: spec.expires "soon" is not a time: write it in RFC 3339`},
		{"scalar for list", replace(userYAML, "roles:\n    - editor", "roles: editor"), "line 6: spec.roles must be a list, not the value \"editor\""},
		{"list for mapping", "kind: user\nversion: v1\nmetadata: {name: a}\nspec: [roles]\n", "line 4: spec must be a mapping of fields, not a list"},
		{"mapping for string", replace(userYAML, "name: alice", "name: {first: alice}"), "line 4: metadata.name must be a single value, not a mapping"},
		{"duplicate key", replace(userYAML, "spec:", "metadata:\n  name: bob\nspec:"), `line 5: field "metadata" appears twice in user (first on line 3): keep one`},
		{"binary", "kind: user\nversion: v1\nmetadata: {name: a, description: !!binary /w==}\nspec: {roles: []}\n", "line 3: metadata.description is tagged !!binary"},
		{"alias", "kind: user\nversion: v1\nmetadata: &m {name: a}\nspec:\n  roles: [*m]\n", "anchors and aliases are not supported"},
		{"syntax", "kind: user\nversion: v1\nmetadata: {name: a\n", "document 1: line 3: did not find expected ',' or '}': fix the YAML syntax"},
		{"syntax in second document", userYAML + "---\nkind: user\nversion: v1\n  bad: indent\n", "document 2: line 11: mapping values are not allowed in this context: fix the YAML syntax"},
		{"syntax on first line", "a: b: c\n", "document 1: line 1: mapping values are not allowed"},
		{"not utf-8", "kind: user\nversion: \xff\n", "the input must be UTF-8 or UTF-16 text"},
		{"scalar document", "hello\n", `document 1: line 1: a resource must be a mapping with kind, version, metadata and spec, not the value "hello"`},
		{"empty", "", "no resource found"},
		{"only comments", "# nothing\n---\n", "no resource found"},
		{"defined twice", userYAML + "---\n" + botYAML + "---\n" + userYAML, `document 3: user "alice" is also defined in document 1: keep one of them`},
		{"no rules", replace(workloadIdentityYAML, "  rules:\n", "  rulez:\n"), `field "rulez" not found in workload_identity spec: check the spelling (did you mean "rules"?)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Decode([]byte(tt.in))
			checkErr(t, err, tt.want)
			if rs != nil {
				t.Errorf("Decode returned %d resources along with an error", len(rs))
			}
		})
	}
}

func TestDecodeReportsEveryBadDocument(t *testing.T) {
	in := strings.Replace(userYAML, "alice", "Alice", 1) + "---\n" + botYAML + "---\nkind: nope\nversion: v1\n"
	_, err := Decode([]byte(in))
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "document 1: line 4:") || !strings.HasPrefix(lines[1], "document 3: line 17: unknown kind") {
		t.Errorf("error = %q, want one line for document 1 and one for document 3", err)
	}
}

// Values that YAML would read as something else unless quoted must come
// back as the same text, through YAML and through JSON.
func TestRoundTripTrickyText(t *testing.T) {
	for _, text := range []string{
		"true", "null", "~", "1e3", "0x10", "2030-01-02", "<<", "- x", "a: b", "#x", "'q'", `"q"`,
		" padded ", "line\nbreak", "tab\there", "nul\x00byte", "😀 é", "\u2028", strings.Repeat("long words ", 40), "",
	} {
		w := validWorkloadIdentity()
		w.Metadata.Description = text
		w.Metadata.Labels = map[string]string{"app": text}
		w.Spec.Rules.Allow[0].Conditions[0].Eq = new(text)
		w.Spec.Rules.Allow[0].Conditions = append(w.Spec.Rules.Allow[0].Conditions, Condition{Attribute: "workload.unix.user", In: []string{text, "x"}})
		if err := w.Validate(); err != nil {
			t.Fatal(err)
		}
		y, err := MarshalYAML(w)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := Decode(y)
		if err != nil {
			t.Fatalf("%q: Decode(MarshalYAML) = %v\n%s", text, err, y)
		}
		if !reflect.DeepEqual(rs[0], w) {
			t.Errorf("%q: YAML round trip changed the resource\n%s", text, y)
		}
		j, err := MarshalJSON(w)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Unmarshal(j)
		if err != nil {
			t.Fatalf("%q: Unmarshal(MarshalJSON) = %v\n%s", text, err, j)
		}
		if !reflect.DeepEqual(back, w) {
			t.Errorf("%q: JSON round trip changed the resource\n%s", text, j)
		}
	}
}
