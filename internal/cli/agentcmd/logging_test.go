package agentcmd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/ca"
)

// TestLogFormat: --log-format json makes every line a JSON object with
// slog's keys; text stays key=value; anything else is refused by name.
func TestLogFormat(t *testing.T) {
	var buf bytes.Buffer
	logger, closeLog, err := openLog(LogFormatJSON, "debug", "", &buf)
	if err != nil {
		t.Fatal(err)
	}
	defer closeLog()
	logger.Info("joined", "bot", "web", "host", "node-1")
	logger.Debug("a detail", "n", 3)
	lines := 0
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", sc.Text(), err)
		}
		if rec["time"] == nil || rec["level"] == nil || rec["msg"] == nil {
			t.Fatalf("line %q lacks time, level or msg", sc.Text())
		}
		lines++
	}
	if lines != 2 {
		t.Fatalf("%d JSON lines, want 2", lines)
	}

	buf.Reset()
	logger, _, err = openLog(LogFormatText, "info", "", &buf)
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("joined", "bot", "web")
	if !strings.Contains(buf.String(), "msg=joined bot=web") {
		t.Fatalf("text log %q, want key=value", buf.String())
	}

	if _, err := LoadStartConfig("", "--log-format", "xml"); err == nil || !strings.Contains(err.Error(), `--log-format "xml" is unknown: use text or json`) {
		t.Fatalf("--log-format xml: %v", err)
	}
	if _, err := LoadStartConfig("", "--log-level", "loud"); err == nil || !strings.Contains(err.Error(), `log level "loud" is unknown`) {
		t.Fatalf("--log-level loud: %v", err)
	}
	o, err := LoadStartConfig("", "--log-format", "json", "--log-file", "/var/log/wid.log")
	if err != nil || o.LogFormat != LogFormatJSON || o.LogFile != "/var/log/wid.log" {
		t.Fatalf("flags: %+v, %v", o, err)
	}
}

// TestLogFile: the log file is made 0600 and appended to; a file others
// can read, or in a missing directory, is refused saying so.
func TestLogFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "widagent.log")
	for i := range 2 {
		logger, closeLog, err := openLog(LogFormatJSON, "info", path, os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		logger.Info("start", "n", i)
		if err := closeLog(); err != nil {
			t.Fatal(err)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("log file mode %04o, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if n := strings.Count(string(b), "\n"); n != 2 {
		t.Fatalf("log file holds %d lines, want 2 (appended): %q", n, b)
	}

	open := filepath.Join(dir, "open.log")
	if err := os.WriteFile(open, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := openLog(LogFormatText, "info", open, os.Stderr); err == nil || !strings.Contains(err.Error(), "has mode 0644, so other users can read it: run chmod 600") {
		t.Fatalf("world-readable log file: %v", err)
	}
	if _, _, err := openLog(LogFormatText, "info", filepath.Join(dir, "no", "such.log"), os.Stderr); err == nil || !strings.Contains(err.Error(), "its directory does not exist") {
		t.Fatalf("missing directory: %v", err)
	}
}

// TestLogFileRefusals: --log-file does not follow a symlink (one planted
// in a shared directory would choose what a root agent appends to) and
// refuses a file another user owns.
func TestLogFileRefusals(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, _, err := openLog(LogFormatText, "info", link, os.Stderr); err == nil || !strings.Contains(err.Error(), "is a symbolic link, which is not followed") {
		t.Fatalf("symlinked log file: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Log("not root: the other owner's file is not made")
		return
	}
	other := filepath.Join(dir, "other.log")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, _, err := openLog(LogFormatText, "info", other, os.Stderr); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534, not to uid 0 running widagent") {
		t.Fatalf("another user's log file: %v", err)
	}
}

// TestAuthIssuanceSettings: ca_subject, svid_ttl and jwt_svid_ttl reach
// the options; an agent alone refuses them, and unknown subject fields
// are refused by name.
func TestAuthIssuanceSettings(t *testing.T) {
	o, err := loadConfig(t, "ca_subject:\n  country: DE\n  organization: Example GmbH\n  common_name: Example SPIFFE CA\nsvid_ttl: 30m\njwt_svid_ttl: 2m\n")
	if err != nil {
		t.Fatal(err)
	}
	want := ca.Subject{Country: "DE", Organization: "Example GmbH", CommonName: "Example SPIFFE CA"}
	if o.CASubject != want || o.SVIDTTL != 30*time.Minute || o.JWTSVIDTTL != 2*time.Minute {
		t.Fatalf("options %+v %s %s", o.CASubject, o.SVIDTTL, o.JWTSVIDTTL)
	}
	if _, err := loadConfig(t, "ca_subject:\n  locality: Berlin\n"); err == nil || !strings.Contains(err.Error(), "locality") {
		t.Fatalf("ca_subject.locality: %v, want a refusal naming it", err)
	}
	if _, err := loadConfig(t, "roles: [agent]\nauth: 127.0.0.1:3025\nsvid_ttl: 1h\n"); err == nil || !strings.Contains(err.Error(), "configure the auth service, which this process does not run") {
		t.Fatalf("svid_ttl on an agent alone: %v", err)
	}
}

// TestNodeNameEnv: WID_NODE_NAME names the kubernetes attestor's node
// unless the config file does.
func TestNodeNameEnv(t *testing.T) {
	t.Setenv(NodeNameEnv, "node-7")
	o, err := loadConfig(t, "attestors:\n  kubernetes:\n    enabled: true\n")
	if err != nil || o.Attestors.Kubernetes.NodeName != "node-7" {
		t.Fatalf("node name %q, %v; want node-7 from %s", o.Attestors.Kubernetes.NodeName, err, NodeNameEnv)
	}
	o, err = loadConfig(t, "attestors:\n  kubernetes:\n    enabled: true\n    node_name: node-9\n")
	if err != nil || o.Attestors.Kubernetes.NodeName != "node-9" {
		t.Fatalf("node name %q, %v; want node-9 from the file", o.Attestors.Kubernetes.NodeName, err)
	}
}
