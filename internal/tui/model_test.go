package tui

import (
	"bytes"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/exp/golden"
	"github.com/charmbracelet/x/exp/teatest"
	"github.com/muesli/termenv"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fixedNow is the clock of every golden screen.
var fixedNow = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) {
	// Goldens hold text, not the colours of whatever terminal runs the tests.
	lipgloss.SetColorProfile(termenv.Ascii)
	os.Exit(m.Run())
}

func asciiRenderer() *lipgloss.Renderer {
	r := lipgloss.NewRenderer(&bytes.Buffer{})
	r.SetColorProfile(termenv.Ascii)
	return r
}

func newTestModel(r *lipgloss.Renderer) *Model {
	return New(Options{Target: "/var/lib/wid/admin.sock", Renderer: r, Now: func() time.Time { return fixedNow }, NoTick: true})
}

func at(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(fixedNow.Add(-d)) }

// fakeFeed is what a small trust domain's feed says: fixed, so screens are stable.
func fakeFeed(t *testing.T) []tea.Msg {
	pemBytes, err := os.ReadFile("testdata/bundle.pem")
	if err != nil {
		t.Fatal(err)
	}
	svidPEM, err := os.ReadFile("testdata/svid.pem")
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := pem.Decode(svidPEM)
	role := `{"kind":"role","version":"v1","metadata":{"name":"web-issuer"},"spec":{"allow":{"spiffe":[{"path":"/svc/web/*"}]},"deny":{"spiffe":[{"path":"/svc/web/admin"}]}}}`
	editor := `{"kind":"role","version":"v1","metadata":{"name":"editor"},"spec":{"allow":{"rules":[{"resources":["*"],"verbs":["*"]}]}}}`
	wi := `{"kind":"workload_identity","version":"v1","metadata":{"name":"web"},"spec":{"spiffe":{"id":"/svc/web/{{ workload.unix.uid }}"}}}`
	return []tea.Msg{
		ConnectedMsg{Ping: &authv1.PingResponse{TrustDomain: "example.org", IdentityKind: "admin"}},
		EventMsg{Event: &authv1.AuditEvent{Seq: 1, Time: at(2 * time.Hour), Type: "auth.started", Actor: "auth"}},
		EventMsg{Event: &authv1.AuditEvent{Seq: 2, Time: at(50 * time.Minute), Type: "svid.x509.issued", Actor: "bot:local-agent", Host: "node-1",
			SpiffeId: "spiffe://example.org/svc/web/1000", SvidType: "x509", Serial: "000000000000000000005f3a9c0e12ab", TtlSeconds: 3600, DnsSans: []string{"web.internal"},
			Attributes: map[string]string{"workload.unix.pid": "4242", "workload.unix.uid": "1000", "workload.unix.path": "/usr/bin/web"}, Outcome: "success",
			Details: map[string]string{"certificate": base64.StdEncoding.EncodeToString(leaf.Bytes)}}},
		EventMsg{Event: &authv1.AuditEvent{Seq: 3, Time: at(40 * time.Second), Type: "svid.jwt.issued", Actor: "user:alice",
			SpiffeId: "spiffe://example.org/svc/api", SvidType: "jwt", Serial: "jti-7b21", TtlSeconds: 300, Outcome: "success"}},
		EventMsg{Event: &authv1.AuditEvent{Seq: 4, Time: at(30 * time.Second), Type: "svid.denied", Actor: "user:bob",
			SpiffeId: "spiffe://example.org/svc/web/admin", SvidType: "x509", TtlSeconds: 600, Outcome: "denied",
			Reason: "role web-issuer denies /svc/web/admin"}},
		EventMsg{Event: &authv1.AuditEvent{Seq: 5, Time: at(20 * time.Second), Type: "workload.attest", Actor: "bot:local-agent", Host: "node-1",
			Attributes: map[string]string{"workload.unix.pid": "4242", "workload.unix.uid": "1000", "workload.unix.path": "/usr/bin/web",
				"workload.unix.sha256": "9f86d081884c7d659a2feaa0c55ad015"}, Details: map[string]string{"spiffe_ids": "spiffe://example.org/svc/web/1000"}, Outcome: "success"}},
		EventMsg{Event: &authv1.AuditEvent{Seq: 6, Time: at(10 * time.Second), Type: "workload.attest", Actor: "bot:local-agent", Host: "node-1",
			Attributes: map[string]string{"workload.unix.pid": "777", "workload.unix.uid": "0", "workload.unix.path": "/usr/sbin/cron",
				"workload.unix.sha256": "e3b0c44298fc1c149afbf4c8996fb924"}, Outcome: "denied", Reason: "workload.unix.uid is 0, want 1000"}},
		BundleMsg{Bundle: &authv1.GetBundleResponse{TrustDomain: "example.org", Sequence: 3, X509Pem: pemBytes,
			Jwks: []byte(`{"keys":[{"kty":"EC","crv":"P-256","kid":"k-2026-11","use":"jwt-svid"},{"kty":"EC","crv":"P-256","use":"x509-svid"}]}`)}},
		CAsMsg{CAs: fakeCAs()},
		ResourcesMsg{Kind: "role", Resources: [][]byte{[]byte(role), []byte(editor)}},
		ResourcesMsg{Kind: "workload_identity", Resources: [][]byte{[]byte(wi)}},
		// The web SVID is revoked; /svc/web and alice are locked; a lock on
		// a bot has expired.
		EventMsg{Event: &authv1.AuditEvent{Seq: 7, Time: at(5 * time.Second), Type: "svid.x509.revoked", Actor: "admin",
			SpiffeId: "spiffe://example.org/svc/web/1000", SvidType: "x509", Serial: "000000000000000000005f3a9c0e12ab", Outcome: "success", Reason: "key leaked"}},
		ResourcesMsg{Kind: "lock", Resources: [][]byte{
			[]byte(`{"kind":"lock","version":"v1","metadata":{"name":"lock-3f9a1c0b"},"spec":{"target":{"spiffe_id":"/svc/web"},"reason":"key leaked","created_by":"admin"}}`),
			[]byte(`{"kind":"lock","version":"v1","metadata":{"name":"lock-77e0d2aa"},"spec":{"target":{"user":"alice"},"reason":"laptop lost","expires":"` + fixedNow.Add(2*time.Hour).UTC().Format(time.RFC3339) + `","created_by":"admin"}}`),
			[]byte(`{"kind":"lock","version":"v1","metadata":{"name":"lock-0b1c2d3e"},"spec":{"target":{"bot":"old-agent"},"reason":"host rebuilt","expires":"` + fixedNow.Add(-time.Hour).UTC().Format(time.RFC3339) + `","created_by":"admin"}}`),
		}},
	}
}

// fakeCAs is a trust domain whose spiffe CA is half-way through an
// automatic rotation.
func fakeCAs() []*authv1.CAInfo {
	key := func(state, fp, kid string) *authv1.CAKey {
		return &authv1.CAKey{State: state, Algorithm: "ECDSA-P256", Fingerprint: "sha256:" + fp, Kid: kid, NotAfter: timestamppb.New(fixedNow.Add(365 * 24 * time.Hour))}
	}
	return []*authv1.CAInfo{
		{Type: "spiffe", Phase: "update_clients", Mode: "auto", Sequence: 2, NextPhase: "update_servers", NextStepAt: timestamppb.New(fixedNow.Add(9 * time.Hour)),
			Keys: []*authv1.CAKey{key("additional", "2285171ffb0feabe0c", ""), key("active", "c9f99b8fa2c9181a77", "")}},
		{Type: "jwt", Phase: "standby", Mode: "manual", Sequence: 1, Keys: []*authv1.CAKey{key("active", "4baf07b7630bd71d11", "q3WmJ9xkT2vYc0Lp")}},
		{Type: "wit", Phase: "standby", Mode: "manual", Sequence: 1, Keys: []*authv1.CAKey{key("active", "6a02fd9a404e6317aa", "Zr8tN1qPw4sE6uYb")}},
		{Type: "user", Phase: "standby", Mode: "manual", Sequence: 1, Keys: []*authv1.CAKey{key("active", "0b8e0fe7347b52ecbb", "")}},
		{Type: "host", Phase: "standby", Mode: "manual", Sequence: 3, Keys: []*authv1.CAKey{key("retired", "77aa0fe7347b52ec00", ""), key("active", "0cc3c8cad7ae2cf2cc", "")}},
	}
}

// Without the right to list CAs (a user's login), the tab shows the bundle.
func TestBundleViewWithoutCAs(t *testing.T) {
	pemBytes, err := os.ReadFile("testdata/bundle.pem")
	if err != nil {
		t.Fatal(err)
	}
	v := bundleView(&authv1.GetBundleResponse{TrustDomain: "example.org", Sequence: 3, X509Pem: pemBytes}, nil, fixedNow, newStyles(asciiRenderer()), 80, 20)
	if !strings.Contains(v, "X.509 authorities") || !strings.Contains(v, "ECDSA") {
		t.Errorf("bundle view without CAs:\n%s", v)
	}
}

func keyMsg(s string) tea.Msg {
	switch s {
	case "tab":
		return tea.KeyMsg{Type: tea.KeyTab}
	case "shift+tab":
		return tea.KeyMsg{Type: tea.KeyShiftTab}
	case "enter":
		return tea.KeyMsg{Type: tea.KeyEnter}
	case "esc":
		return tea.KeyMsg{Type: tea.KeyEsc}
	case "down":
		return tea.KeyMsg{Type: tea.KeyDown}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)}
}

// run drives a model at w x h with the fake feed, then keys, and returns
// the last screen.
func run(t *testing.T, m *Model, w, h int, keys ...string) string {
	t.Helper()
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(w, h))
	for _, msg := range fakeFeed(t) {
		tm.Send(msg)
	}
	for _, k := range keys {
		tm.Send(keyMsg(k))
	}
	if err := tm.Quit(); err != nil {
		t.Fatal(err)
	}
	return tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).View()
}

func TestScreens(t *testing.T) {
	cases := []struct {
		name string
		keys []string
	}{
		{"svids", nil},
		{"attestations", []string{"2"}},
		{"bundles", []string{"3"}},
		{"roles", []string{"4"}},
		{"tab_cycles", []string{"tab", "tab", "tab", "tab", "shift+tab"}},
		{"filter_typing", []string{"/", "a", "l", "i"}},
		{"filter", []string{"/", "d", "e", "n", "i", "e", "d", "enter"}},
		{"filter_cleared", []string{"/", "d", "e", "n", "i", "e", "d", "enter", "esc"}},
		{"detail", []string{"down", "down", "enter"}},
		// Scrolled to the decoded certificate and its PEM.
		{"detail_certificate", []string{"down", "down", "enter", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down"}},
		{"detail_attestation", []string{"2", "enter"}},
		{"help", []string{"?"}},
		{"roles_select", []string{"4", "j"}},
		{"explain_form", []string{"4", "j", "e", "/", "s", "v", "c", "/", "w", "e", "b", "/", "a", "d", "m", "i", "n", "tab", "tab", "1", "h"}},
		{"explain_bad_ttl", []string{"4", "j", "e", "/", "x", "tab", "tab", "s", "o", "o", "n", "enter"}},
	}
	for _, size := range []struct{ w, h int }{{80, 24}, {120, 40}} {
		for _, c := range cases {
			t.Run(c.name+"_"+itoa(size.w)+"x"+itoa(size.h), func(t *testing.T) {
				out := run(t, newTestModel(asciiRenderer()), size.w, size.h, c.keys...)
				checkSize(t, out, size.w, size.h)
				golden.RequireEqual(t, []byte(out))
			})
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// checkSize: a screen never draws more lines or wider lines than the terminal.
func checkSize(t *testing.T, out string, w, h int) {
	t.Helper()
	lines := strings.Split(out, "\n")
	if len(lines) != h {
		t.Errorf("screen has %d lines, want %d", len(lines), h)
	}
	for i, l := range lines {
		if lipgloss.Width(l) > w {
			t.Errorf("line %d is %d wide, more than %d: %q", i, lipgloss.Width(l), w, l)
		}
	}
}

func TestTooSmall(t *testing.T) {
	for _, size := range []struct{ w, h int }{{79, 24}, {80, 23}, {40, 10}} {
		t.Run(itoa(size.w)+"x"+itoa(size.h), func(t *testing.T) {
			out := run(t, newTestModel(asciiRenderer()), size.w, size.h)
			if !strings.Contains(out, "needs at least 80x24") {
				t.Errorf("screen at %dx%d does not say it is too small:\n%s", size.w, size.h, out)
			}
			golden.RequireEqual(t, []byte(out))
		})
	}
}

// TestResize: the model follows the terminal, from too small to big enough.
func TestResize(t *testing.T) {
	m := newTestModel(asciiRenderer())
	m.Update(tea.WindowSizeMsg{Width: 60, Height: 20})
	if !strings.Contains(m.View(), "needs at least") {
		t.Fatalf("60x20 is drawn:\n%s", m.View())
	}
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	checkSize(t, m.View(), 100, 30)
}

var sgr = regexp.MustCompile("\x1b\\[[0-9;]*m")

// TestNoColor: with NO_COLOR set the screens carry no colour or style
// escapes; without it, the same renderer on a colour terminal does (so the
// test can fail).
func TestNoColor(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "NO_COLOR" {
				return v
			}
			return ""
		}
	}
	colour := NewRenderer(&bytes.Buffer{}, env(""))
	colour.SetColorProfile(termenv.TrueColor)
	if out := run(t, newTestModel(colour), 80, 24); !sgr.MatchString(out) {
		t.Fatalf("a colour renderer drew no escapes, so this test proves nothing:\n%q", out)
	}
	for _, keys := range [][]string{nil, {"2"}, {"3"}, {"4"}, {"enter"}, {"?"}} {
		out := run(t, newTestModel(NewRenderer(&bytes.Buffer{}, env("1"))), 80, 24, keys...)
		if loc := sgr.FindStringIndex(out); loc != nil {
			t.Errorf("NO_COLOR screen after %v has an escape at %d:\n%q", keys, loc[0], out)
		}
	}
}

// TestReconnectingHeader: a broken connection shows in the header until the
// feed is connected again, and the events already shown stay.
func TestReconnectingHeader(t *testing.T) {
	m := newTestModel(asciiRenderer())
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	for _, msg := range fakeFeed(t) {
		m.Update(msg)
	}
	m.Update(ReconnectingMsg{Err: errors.New("auth service unavailable")})
	out := m.View()
	if !strings.Contains(out, "reconnecting") || strings.Contains(out, "connected ") {
		t.Errorf("header after a broken stream:\n%s", out)
	}
	if !strings.Contains(out, "/svc/web/admin") {
		t.Errorf("events vanished while reconnecting:\n%s", out)
	}
	golden.RequireEqual(t, []byte(out))
	m.Update(ConnectedMsg{Ping: &authv1.PingResponse{TrustDomain: "example.org", IdentityKind: "admin"}})
	if out := m.View(); strings.Contains(out, "reconnecting") || !strings.Contains(out, "connected") {
		t.Errorf("header after reconnecting:\n%s", out)
	}
}

// TestExplainForm: e on a role opens the form, enter asks through
// Options.Explain, and the answer shows the decision and the failing check.
func TestExplainForm(t *testing.T) {
	var asked *authv1.ExplainRequest
	for _, size := range []struct{ w, h int }{{80, 24}, {120, 40}} {
		t.Run(strconv.Itoa(size.w)+"x"+strconv.Itoa(size.h), func(t *testing.T) {
			m := newTestModel(asciiRenderer())
			m.roles.explain = func(req *authv1.ExplainRequest) tea.Cmd {
				asked = req
				return func() tea.Msg {
					return ExplainResultMsg{Request: req, Response: &authv1.ExplainResponse{
						Allowed: false, Reason: "role web-issuer denies /svc/web/admin", Check: "denied", Role: "web-issuer"}}
				}
			}
			tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(size.w, size.h))
			for _, msg := range fakeFeed(t) {
				tm.Send(msg)
			}
			for _, k := range []string{"4", "j", "e", "/", "s", "v", "c", "/", "w", "e", "b", "/", "a", "d", "m", "i", "n", "tab", "w", "e", "b", ".", "i", "n", "tab", "1", "h", "enter"} {
				tm.Send(keyMsg(k))
			}
			teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("failed check")) })
			if err := tm.Quit(); err != nil {
				t.Fatal(err)
			}
			out := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).View()
			checkSize(t, out, size.w, size.h)
			golden.RequireEqual(t, []byte(out))
			want := &authv1.ExplainRequest{PrincipalKind: "role", PrincipalName: "web-issuer", SpiffeId: "/svc/web/admin", DnsSans: []string{"web.in"}, TtlSeconds: 3600}
			if asked == nil || asked.String() != want.String() {
				t.Errorf("asked %v, want %v", asked, want)
			}
		})
	}
}

// TestExplainWorkload: the form's Workload field asks which workload
// identities a workload with those attributes gets, and the answer shows
// each identity issued or refused with the failing check.
func TestExplainWorkload(t *testing.T) {
	for _, size := range []struct{ w, h int }{{80, 24}, {120, 40}} {
		t.Run(strconv.Itoa(size.w)+"x"+strconv.Itoa(size.h), func(t *testing.T) {
			var asked *authv1.ExplainRequest
			m := newTestModel(asciiRenderer())
			m.roles.explain = func(req *authv1.ExplainRequest) tea.Cmd {
				asked = req
				return func() tea.Msg {
					return ExplainResultMsg{Request: req, Response: &authv1.ExplainResponse{Workloads: []*authv1.WorkloadExplanation{
						{Identity: "cron", Reason: "rule workload.unix.path=/usr/sbin/cron does not match /usr/bin/web", Check: "rules"},
						{Identity: "web", Allowed: true, SpiffeId: "spiffe://example.org/svc/web/1000"},
					}}}
				}
			}
			tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(size.w, size.h))
			for _, msg := range fakeFeed(t) {
				tm.Send(msg)
			}
			keys := []string{"4", "j", "e", "tab", "tab", "tab"}
			for _, r := range "workload.unix.uid=1000,workload.unix.path=/usr/bin/web" {
				keys = append(keys, string(r))
			}
			for _, k := range append(keys, "enter") {
				tm.Send(keyMsg(k))
			}
			teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("identities issued")) })
			if err := tm.Quit(); err != nil {
				t.Fatal(err)
			}
			out := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).View()
			checkSize(t, out, size.w, size.h)
			for _, want := range []string{"1 of 2 identities issued", "ISSUED  web", "REFUSED cron", "failed check: rules"} {
				if !strings.Contains(out, want) {
					t.Errorf("the answer lacks %q:\n%s", want, out)
				}
			}
			golden.RequireEqual(t, []byte(out))
			want := &authv1.ExplainRequest{PrincipalKind: "role", PrincipalName: "web-issuer",
				WorkloadAttributes: map[string]string{"workload.unix.uid": "1000", "workload.unix.path": "/usr/bin/web"}}
			if asked == nil || asked.String() != want.String() {
				t.Errorf("asked %v, want %v", asked, want)
			}
		})
	}
}

// TestExplainFormRefuses: what the form cannot ask is said in the form, and
// nothing is sent.
func TestExplainFormRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		keys []string
		want string
	}{
		{"empty", nil, "give a SPIFFE ID or path, or workload attributes"},
		{"bad attributes", []string{"tab", "tab", "tab", "u", "i", "d"}, "workload attributes:"},
		{"ttl without id", append([]string{"tab", "tab", "1", "h", "tab"}, strings.Split("workload.unix.uid=1", "")...), "belong to a SPIFFE ID"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newTestModel(asciiRenderer())
			m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
			for _, msg := range fakeFeed(t) {
				m.Update(msg)
			}
			sent := false
			m.roles.explain = func(*authv1.ExplainRequest) tea.Cmd { sent = true; return nil }
			for _, k := range append(append([]string{"4", "e"}, c.keys...), "enter") {
				m.Update(keyMsg(k))
			}
			if sent || !strings.Contains(m.roles.formErr, c.want) {
				t.Errorf("sent %v, form error %q; want nothing sent and %q", sent, m.roles.formErr, c.want)
			}
		})
	}
}

// TestHeaderNamesTheReplica: given several replicas, the header names the
// one the dashboard talks to now, and follows it when it changes.
func TestHeaderNamesTheReplica(t *testing.T) {
	current := "10.0.0.2:3025"
	m := New(Options{Target: "10.0.0.1:3025,10.0.0.2:3025", Replica: func() string { return current },
		Renderer: asciiRenderer(), Now: func() time.Time { return fixedNow }, NoTick: true})
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 24})
	for _, msg := range fakeFeed(t) {
		m.Update(msg)
	}
	if out := m.View(); !strings.Contains(out, "auth 10.0.0.2:3025 (replica of 10.0.0.1:3025,10.0.0.2:3025)") {
		t.Errorf("header with replica 2 current:\n%s", out)
	}
	current = "10.0.0.1:3025"
	if out := m.View(); !strings.Contains(out, "auth 10.0.0.1:3025 (replica of") {
		t.Errorf("header after failing over to replica 1:\n%s", out)
	}
}
