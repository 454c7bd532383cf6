package explain

import (
	"bytes"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/cli/clitest"
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
