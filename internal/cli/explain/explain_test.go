package explain

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/clitest"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/resource"
)

func TestParsesFlags(t *testing.T) {
	f, _ := clitest.Factory(t)
	var got *Options
	cmd := NewCmdExplain(f, func(o *Options) error { got = o; return nil })
	cmd.SetArgs([]string{"--bot", "web-agent", "--spiffe-id", "spiffe://example.org/svc/web", "--dns-san", "web.example.com", "--ip-san", "10.1.2.3,fd00::1", "--ttl", "2h"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.PrincipalKind != "bot" || got.PrincipalName != "web-agent" || got.SPIFFEID != "spiffe://example.org/svc/web" ||
		len(got.DNSSANs) != 1 || len(got.IPSANs) != 2 || got.TTL != resource.Duration(2*time.Hour) {
		t.Errorf("options = %+v", got)
	}
}

func TestTextAnswer(t *testing.T) {
	e := Explanation{Allowed: false, Principal: "user alice", SPIFFEID: "spiffe://example.org/svc/admin",
		Reason: `role "web" denies /svc/admin`, Check: "denied", Role: "web", Rule: 2, Roles: []string{"web", "dev"}}
	var buf bytes.Buffer
	if err := e.text(&buf); err != nil {
		t.Fatal(err)
	}
	want := `DENIED: user alice may not get spiffe://example.org/svc/admin
Reason:      role "web" denies /svc/admin
Check:       denied
Decided by:  role web, rule 2
Roles:       web, dev
`
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func parseWorkload(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	f, _ := clitest.Factory(t)
	var got *Options
	cmd := NewCmdExplain(f, func(o *Options) error { got = o; return nil })
	cmd.SetArgs(args)
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	err := cmd.Execute()
	return got, err
}

func TestParsesWorkloadAttrs(t *testing.T) {
	tests := []struct {
		args    []string
		wantBot string
		want    map[string]string
	}{
		{[]string{"--workload-attrs", "workload.unix.uid=1000,workload.unix.user=web"}, "local-agent",
			map[string]string{"workload.unix.uid": "1000", "workload.unix.user": "web"}},
		{[]string{"--bot", "web-agent", "--workload-attrs", "workload.unix.uid=1000", "--workload-attrs", `workload.unix.supplementary_gids=10\,20`}, "web-agent",
			map[string]string{"workload.unix.uid": "1000", "workload.unix.supplementary_gids": "10,20"}},
	}
	for _, tt := range tests {
		got, err := parseWorkload(t, tt.args...)
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if got.PrincipalKind != "bot" || got.PrincipalName != tt.wantBot || !reflect.DeepEqual(got.WorkloadAttributes, tt.want) || got.SPIFFEID != "" {
			t.Errorf("%v: options = %+v", tt.args, got)
		}
	}
}

func TestWorkloadAttrsRefuses(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--workload-attrs", ""}, "--workload-attrs: no attributes given: write them as ATTR=VALUE,ATTR=VALUE"},
		{[]string{"--workload-attrs", "uid=1000"}, `--workload-attrs: attribute "uid" is not a workload attribute: write it like workload.unix.uid`},
		{[]string{"--workload-attrs", "workload.unix.uid"}, `--workload-attrs: "workload.unix.uid" is not ATTR=VALUE`},
		{[]string{"--workload-attrs", "workload.unix.uid=1", "--workload-attrs", "workload.unix.uid=2"}, "--workload-attrs: attribute workload.unix.uid is given twice"},
		{[]string{"--user", "alice", "--workload-attrs", "workload.unix.uid=1"}, "--workload-attrs asks what the agent of a bot would issue, not a user: use --bot NAME, or no principal for the bot local-agent"},
		{[]string{"--role", "web", "--workload-attrs", "workload.unix.uid=1"}, "not a role"},
		{[]string{"--bot", "Web", "--workload-attrs", "workload.unix.uid=1"}, `--bot: name "Web" is invalid`},
		{[]string{"--workload-attrs", "workload.unix.uid=1", "--spiffe-id", "/svc/web"}, "--workload-attrs and --spiffe-id ask different questions: explain one of them at a time"},
		{[]string{"--workload-attrs", "workload.unix.uid=1", "--ttl", "1h"}, "--workload-attrs and --ttl ask different questions"},
	}
	for _, tt := range tests {
		_, err := parseWorkload(t, tt.args...)
		var e *cmdutil.Error
		if err == nil || !errors.As(err, &e) || e.Code != cmdutil.ExitBadInput || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want bad input with %q", tt.args, err, tt.want)
		}
	}
}

func workloadAnswer() WorkloadAnswer {
	opts := &Options{PrincipalKind: "bot", PrincipalName: "local-agent", WorkloadAttributes: map[string]string{"workload.unix.uid": "1000", "workload.unix.user": "web"}}
	return newWorkloadAnswer(opts, []*authv1.WorkloadExplanation{
		{Identity: "per-uid", Allowed: true, SpiffeId: "spiffe://example.org/uid/1000"},
		{Identity: "db", Allowed: false, Reason: `workload identity "db" does not match: workload.unix.user is "web", not "db"`, Check: "rules"},
	})
}

func TestWorkloadTextAnswer(t *testing.T) {
	var buf bytes.Buffer
	if err := workloadAnswer().text(&buf); err != nil {
		t.Fatal(err)
	}
	want := `IDENTITY  RESULT   SPIFFE ID                      REASON
per-uid   issued   spiffe://example.org/uid/1000  -
db        refused  -                              workload identity "db" does not match: workload.unix.user is "web", not "db"
`
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
}

// JSON and YAML come from the output structs, with stable keys.
func TestWorkloadAnswerFormats(t *testing.T) {
	var buf bytes.Buffer
	p := &output.Printer{Out: &buf, Format: output.JSON}
	a := workloadAnswer()
	if err := p.Print(a, a.text); err != nil {
		t.Fatal(err)
	}
	want := `{
  "principal": "bot local-agent",
  "attributes": {
    "workload.unix.uid": "1000",
    "workload.unix.user": "web"
  },
  "identities": [
    {
      "identity": "per-uid",
      "issued": true,
      "spiffe_id": "spiffe://example.org/uid/1000"
    },
    {
      "identity": "db",
      "issued": false,
      "reason": "workload identity \"db\" does not match: workload.unix.user is \"web\", not \"db\"",
      "check": "rules"
    }
  ]
}
`
	if buf.String() != want {
		t.Errorf("JSON:\n%s\nwant:\n%s", buf.String(), want)
	}
	buf.Reset()
	p.Format = output.YAML
	if err := p.Print(a, a.text); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), "principal: bot local-agent\nattributes:\n  workload.unix.uid: \"1000\"\n") || !strings.Contains(buf.String(), "\n  - identity: db\n    issued: false\n") {
		t.Errorf("YAML:\n%s", buf.String())
	}
	// No identities is an empty list, not null: scripts iterate over it.
	empty := newWorkloadAnswer(&Options{PrincipalKind: "bot", PrincipalName: "b", WorkloadAttributes: map[string]string{}}, nil)
	b, _ := json.Marshal(empty)
	if !strings.Contains(string(b), `"identities":[]`) || empty.anyIssued() {
		t.Errorf("empty answer = %s", b)
	}
}
