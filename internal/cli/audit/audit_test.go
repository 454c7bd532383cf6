package audit

import (
	"bytes"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/clitest"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/audit"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                     {},
		"90m":                  now.Add(-90 * time.Minute),
		"2026-01-01T00:00:00Z": time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		got, err := ParseTime("since", in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"-1h", "yesterday", "2026-01-01"} {
		if _, err := ParseTime("since", bad, now); err == nil {
			t.Errorf("ParseTime(%q) succeeded", bad)
		}
	}
}

func TestListParsesFlags(t *testing.T) {
	f, _ := clitest.Factory(t)
	var got *ListOptions
	cmd := NewCmdList(f, func(o *ListOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"--type", "svid.denied", "--type", "bot.join.denied", "--actor", "bot:web", "--outcome", "denied", "--since", "2h", "--limit", "5"})
	start := time.Now()
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if len(got.Types) != 2 || got.Actor != "bot:web" || got.Outcome != "denied" || got.Limit != 5 {
		t.Errorf("options = %+v", got)
	}
	if d := start.Sub(got.Since); d < 2*time.Hour-time.Minute || d > 2*time.Hour+time.Minute {
		t.Errorf("since is %v ago, want 2h", d)
	}
	q := got.query()
	if q.GetOutcome() != "denied" || len(q.GetTypes()) != 2 {
		t.Errorf("query = %v", q)
	}
}

func TestVerifyReportsEachProblem(t *testing.T) {
	resp := &authv1.VerifyAuditResponse{Ok: false, Events: 10, Problems: []*authv1.AuditProblem{
		{Seq: 4, Kind: "edited", Message: "event 4's hash does not match its content"},
		{Seq: 7, Kind: "gap", Message: "events 7 to 8 are missing"},
	}}
	var buf bytes.Buffer
	err := printVerification(&output.Printer{Out: &buf, Format: output.Text}, NewVerification(resp))
	want := "seq 4: edited: event 4's hash does not match its content\nseq 7: gap: events 7 to 8 are missing\n"
	if buf.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", buf.String(), want)
	}
	var e *cmdutil.Error
	if !errors.As(err, &e) || e.Code != cmdutil.ExitError || !strings.Contains(e.Message, "2 problems in 10 events") {
		t.Errorf("error = %v, want exit 1 naming 2 problems", err)
	}

	buf.Reset()
	err = printVerification(&output.Printer{Out: &buf, Format: output.Text}, NewVerification(&authv1.VerifyAuditResponse{Ok: true, Events: 1, HeadHash: "0123456789abcdef"}))
	if err != nil || buf.String() != "audit log verified: 1 event, head 0123456789ab\n" {
		t.Errorf("ok: %q, %v", buf.String(), err)
	}
	// A server claiming ok while listing problems is not believed.
	if v := NewVerification(&authv1.VerifyAuditResponse{Ok: true, Problems: resp.Problems}); v.OK {
		t.Error("ok with problems was accepted")
	}
}

func TestTailWritesFixedColumns(t *testing.T) {
	var buf bytes.Buffer
	w := &tailWriter{out: &buf, format: output.Text}
	if err := w.header(); err != nil {
		t.Fatal(err)
	}
	e := Event{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Type: "svid.denied", Actor: "bot:web", SPIFFEID: "spiffe://example.org/svc/admin", Outcome: "denied", Reason: "denied by role web"}
	if err := w.event(e); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 || strings.Index(lines[0], "REASON") != strings.Index(lines[1], "denied by role") {
		t.Errorf("columns do not line up:\n%s", buf.String())
	}
}

func TestVerifyPrintsAnExportableHead(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	var buf bytes.Buffer
	v := NewVerification(&authv1.VerifyAuditResponse{Ok: true, Events: 12, HeadSeq: 12, HeadHash: hash, AnchoredSeq: 11})
	if err := printVerification(&output.Printer{Out: &buf, Format: output.Text}, v); err != nil {
		t.Fatal(err)
	}
	want := "audit log verified: 12 events, head abababababab\nanchored up to event 11; to check later, keep elsewhere: --head 12:" + hash + "\n"
	if buf.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", buf.String(), want)
	}
	seq, h, err := ParseHead(v.Head)
	if err != nil || seq != 12 || h != hash {
		t.Errorf("the printed head does not parse back: %d %q %v", seq, h, err)
	}
}

func TestParseHeadRefusesWhatIsNotAHead(t *testing.T) {
	for _, bad := range []string{"", "12", "12:", ":" + strings.Repeat("a", 64), "0:" + strings.Repeat("a", 64), "-1:" + strings.Repeat("a", 64),
		"12:" + strings.Repeat("a", 63), "12:" + strings.Repeat("A", 64), "x:" + strings.Repeat("a", 64)} {
		_, _, err := ParseHead(bad)
		var e *cmdutil.Error
		if !errors.As(err, &e) || e.Code != cmdutil.ExitBadInput {
			t.Errorf("ParseHead(%q) = %v, want a bad-input error", bad, err)
		}
	}
}

// Every event type the auth service writes is one --type accepts, and one
// docs/audit.md's table explains.
func TestEveryEventTypeKnown(t *testing.T) {
	src, err := os.ReadFile("../../core/audit/event.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	consts := regexp.MustCompile(`(?m)^\s*Type\w+\s*=\s*"([^"]+)"`).FindAllStringSubmatch(string(src), -1)
	if len(consts) < 10 {
		t.Fatalf("found only %d event types in event.go", len(consts))
	}
	for _, m := range consts {
		if !slices.Contains(audit.Types, m[1]) {
			t.Errorf("event type %s is missing from audit.Types, so --type refuses it", m[1])
		}
		if !strings.Contains(string(doc), "`"+m[1]+"`") {
			t.Errorf("event type %s is missing from docs/audit.md", m[1])
		}
	}
}
