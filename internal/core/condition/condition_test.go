package condition

import (
	"reflect"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/core/resource"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want resource.Condition
		// canonical is what Format prints back; empty means in itself.
		canonical string
	}{
		{in: "workload.unix.uid=1000", want: resource.Condition{Attribute: "workload.unix.uid", Eq: new("1000")}},
		{in: "workload.unix.user!=root", want: resource.Condition{Attribute: "workload.unix.user", NotEq: new("root")}},
		{in: "workload.unix.user=alice|bob", want: resource.Condition{Attribute: "workload.unix.user", In: []string{"alice", "bob"}}},
		{in: "workload.unix.gid!=0|10", want: resource.Condition{Attribute: "workload.unix.gid", NotIn: []string{"0", "10"}}},
		{in: "workload.unix.path~/opt/web/*", want: resource.Condition{Attribute: "workload.unix.path", Glob: new("/opt/web/*")}},
		{in: "workload.unix.path~/opt/[a-z]?|x", want: resource.Condition{Attribute: "workload.unix.path", Glob: new("/opt/[a-z]?|x")}},
		{in: "  workload.unix.user = alice | bob ", want: resource.Condition{Attribute: "workload.unix.user", In: []string{"alice", "bob"}}, canonical: "workload.unix.user=alice|bob"},
		{in: "workload.kubernetes.namespace=prod", want: resource.Condition{Attribute: "workload.kubernetes.namespace", Eq: new("prod")}},
		{in: "workload.unix.path=/opt/my app/bin", want: resource.Condition{Attribute: "workload.unix.path", Eq: new("/opt/my app/bin")}},
		// Escapes: \, and \| inside values, other backslashes as they are.
		{in: `workload.unix.supplementary_gids=10\,20`, want: resource.Condition{Attribute: "workload.unix.supplementary_gids", Eq: new("10,20")}},
		{in: `workload.unix.path!=/a\|b|/c`, want: resource.Condition{Attribute: "workload.unix.path", NotIn: []string{"/a|b", "/c"}}},
		{in: `workload.unix.path=C:\x`, want: resource.Condition{Attribute: "workload.unix.path", Eq: new(`C:\x`)}},
		{in: `workload.unix.path~/opt/\[x\]*\,y`, want: resource.Condition{Attribute: "workload.unix.path", Glob: new(`/opt/\[x\]*,y`)}},
		{in: `workload.unix.path~a\|b`, want: resource.Condition{Attribute: "workload.unix.path", Glob: new(`a\|b`)}},
		{in: `workload.unix.path=a\\,b`, want: resource.Condition{Attribute: "workload.unix.path", Eq: new(`a\,b`)}},
	}
	for _, tt := range tests {
		got, err := parseCondition(tt.in)
		if err != nil {
			t.Errorf("parseCondition(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseCondition(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		want := tt.canonical
		if want == "" {
			want = tt.in
		}
		if f := Format(got); f != want {
			t.Errorf("Format(parseCondition(%q)) = %q, want %q", tt.in, f, want)
		}
	}
}

// Every error is one sentence that quotes what was typed and says what to
// write instead.
func TestParseErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "the rule is empty: give at least one condition"},
		{"   ", "the rule is empty"},
		{"workload.unix.uid=1000,", "condition 2 is empty: separate conditions with single commas"},
		{",workload.unix.uid=1000", "condition 1 is empty"},
		{"workload.unix.uid", `condition "workload.unix.uid" has no operator: write ATTR=VALUE, ATTR!=VALUE, ATTR=A|B|C, ATTR!=A|B|C or ATTR~GLOB (and \, for a comma inside a value)`},
		{"workload.unix.path=/opt/a,b", `condition "b" has no operator`},
		{"=1000", `condition "=1000" names no attribute`},
		{"uid=1000", `condition "uid=1000": attribute "uid" is not a workload attribute: write it like workload.unix.uid`},
		{"workload.Unix.uid=1", `attribute "workload.Unix.uid" is not a workload attribute`},
		{"workload.unix.uid=", `condition "workload.unix.uid=" has no value after "=": write it like workload.unix.uid=1000`},
		{"workload.unix.uid!=", `has no value after "!="`},
		{"workload.unix.path~", `has no value after "~"`},
		{"workload.unix.uid==1000", `condition "workload.unix.uid==1000" has "==": write a single "=" to compare`},
		{"workload.unix.uid!==1000", `has "!=="`},
		{"workload.unix.path=~/opt/*", `has "=~": write ATTR~GLOB to match a pattern`},
		{"workload.unix.path!~/opt/*", "negates a glob, which rules cannot do"},
		{"workload.unix.uid!1000", `has "!" without "="`},
		{"workload.unix.path~/opt/[a-", `condition "workload.unix.path~/opt/[a-": "/opt/[a-" is not a valid glob`},
		{"workload.unix.user=alice||bob", "has an empty value in its list: write the values as A|B|C"},
		{"workload.unix.user!=alice|", "has an empty value in its list"},
		{"workload.unix.user=alice|alice", `lists "alice" twice`},
		{`workload.unix.path=/opt/a\`, "has a value ending in a backslash, which escapes nothing"},
		{`workload.unix.path=/opt/a\|b\`, "has a value ending in a backslash"},
		{`workload.unix.path~/opt/a\`, "ends in a backslash"},
	}
	for _, tt := range tests {
		_, err := ParseRule(tt.in)
		if err == nil {
			t.Errorf("ParseRule(%q) succeeded, want %q", tt.in, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseRule(%q) = %q, want %q", tt.in, err, tt.want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseRule(%q) error is more than one line: %q", tt.in, err)
		}
	}
}

func TestParseRuleKeepsOrder(t *testing.T) {
	r, err := ParseRule("workload.unix.uid=1000, workload.unix.path~/opt/web/*,workload.unix.user!=root|admin")
	if err != nil {
		t.Fatal(err)
	}
	want := resource.WorkloadRule{Conditions: []resource.Condition{
		{Attribute: "workload.unix.uid", Eq: new("1000")},
		{Attribute: "workload.unix.path", Glob: new("/opt/web/*")},
		{Attribute: "workload.unix.user", NotIn: []string{"root", "admin"}},
	}}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("got %+v\nwant %+v", r, want)
	}
	if got := FormatRule(r); got != "workload.unix.uid=1000,workload.unix.path~/opt/web/*,workload.unix.user!=root|admin" {
		t.Errorf("FormatRule = %q", got)
	}
}

// Whatever ParseRule accepts is a rule the resource package accepts, and
// prints back to text that parses to the same rule.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{
		"workload.unix.uid=1000", "workload.unix.user=a|b,workload.unix.gid!=0",
		"workload.unix.path~/opt/*", "workload.unix.user!=x", "workload.unix.uid!=1|2|3",
		" workload.a.b = c ", "workload.unix.path~[", "a=b", "workload.x=,", "workload.x=y|",
		`workload.x=a\,b|c\|d`, `workload.x~a\,b\|c`, `workload.x=a\\,b`, `workload.x=a\`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			return
		}
		wi := &resource.WorkloadIdentity{
			Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{Name: "x"}},
			Spec:   resource.WorkloadIdentitySpec{SPIFFE: resource.WorkloadSPIFFE{ID: "/x"}, Rules: resource.WorkloadRules{Allow: []resource.WorkloadRule{r}}},
		}
		if err := wi.Validate(); err != nil {
			t.Fatalf("ParseRule(%q) gave a rule Validate refuses: %v", s, err)
		}
		text := FormatRule(r)
		again, err := ParseRule(text)
		if err != nil {
			t.Fatalf("ParseRule(%q) then FormatRule = %q, which does not parse: %v", s, text, err)
		}
		if !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip of %q through %q: %+v != %+v", s, text, again, r)
		}
	})
}

func TestParseAttributes(t *testing.T) {
	got, err := ParseAttributes(`workload.unix.uid=1000, workload.unix.user = web ,workload.unix.supplementary_gids=10\,20,workload.unix.path=/opt/a|b`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"workload.unix.uid": "1000", "workload.unix.user": "web", "workload.unix.supplementary_gids": "10,20", "workload.unix.path": "/opt/a|b"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for in, wantErr := range map[string]string{
		"":                        "no attributes given: write them as ATTR=VALUE,ATTR=VALUE",
		"workload.unix.uid=1,":    "attribute 2 is empty",
		"workload.unix.uid":       `"workload.unix.uid" is not ATTR=VALUE: write it like workload.unix.uid=1000`,
		"workload.unix.path=/a,b": `"b" is not ATTR=VALUE`,
		"uid=1000":                `attribute "uid" is not a workload attribute`,
		"workload.unix.uid=1,workload.unix.uid=2": "attribute workload.unix.uid is given twice",
		"workload.unix.user=":                     "attribute workload.unix.user has no value: leave out an attribute the workload does not have",
		`workload.unix.path=/a\`:                  "has a value ending in a backslash",
	} {
		_, err := ParseAttributes(in)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("ParseAttributes(%q) = %v, want %q", in, err, wantErr)
		}
	}
}

func TestCompleteAttribute(t *testing.T) {
	for in, want := range map[string][]string{
		"workload.unix.u":                        {"workload.unix.uid", "workload.unix.user"},
		"workload.unix.uid=1000,workload.unix.g": {"workload.unix.uid=1000,workload.unix.gid", "workload.unix.uid=1000,workload.unix.group"},
		"workload.unix.uid=10":                   nil,
		"workload.k":                             nil,
	} {
		if got := CompleteAttribute(in); !reflect.DeepEqual(got, want) {
			t.Errorf("CompleteAttribute(%q) = %q, want %q", in, got, want)
		}
	}
}
