package e2e

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestLogFormatJSONAndIssuanceSettings runs widagent with --log-format
// json and --log-file, ca_subject and svid_ttl from its config file, and
// workload identities whose rules need workload.unix.attested or
// workload.kubernetes.attested: the log file is 0600 and every line of it
// a JSON object, the bundle's CA carries the subject, SVIDs live svid_ttl,
// and only the unix-attested identity is served (no kubelet here).
func TestLogFormatJSONAndIssuanceSettings(t *testing.T) {
	t.Parallel()
	dir := newDataDir(t)
	cfg := filepath.Join(dir, "widagent.yaml")
	if err := os.WriteFile(cfg, []byte("ca_subject:\n  country: DE\n  organization: Example GmbH\n  common_name: Example SPIFFE CA\nsvid_ttl: 20m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "widagent.log")
	a := startAgent(t, dir, "--config", cfg, "--log-format", "json", "--log-level", "debug", "--log-file", logFile, "--no-dev-identity")

	a.widctl("workload-identity", "create", "unix-attested", "--spiffe-id", "/svc/unix", "--rule", "workload.unix.attested=true").must(t)
	a.widctl("workload-identity", "create", "pod-only", "--spiffe-id", "/svc/pod", "--rule", "workload.kubernetes.attested=true").must(t)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var ids []string
	for {
		svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+a.workload))
		if err == nil {
			ids = ids[:0]
			for _, s := range svids {
				ids = append(ids, s.ID.String())
				if s.ID.Path() == "/svc/unix" {
					if life := time.Until(s.Certificates[0].NotAfter); life > 20*time.Minute || life < 18*time.Minute {
						t.Fatalf("the SVID lives %s, want svid_ttl 20m", life)
					}
				}
			}
			if slices.Contains(ids, "spiffe://"+a.td+"/svc/unix") {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("no SVID for the unix-attested identity: %v %v", ids, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if slices.Contains(ids, "spiffe://"+a.td+"/svc/pod") {
		t.Fatalf("SVIDs %v include the identity that needs workload.kubernetes.attested", ids)
	}

	blk, _ := pem.Decode([]byte(a.widctl("bundle", "export", "--format", "pem").must(t).stdout))
	if blk == nil {
		t.Fatal("the bundle export holds no certificate")
	}
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if s := ca.Subject.String(); s != "CN=Example SPIFFE CA,O=Example GmbH,C=DE" {
		t.Fatalf("CA subject %q, want CN=Example SPIFFE CA,O=Example GmbH,C=DE", s)
	}

	a.stop()
	if s := strings.TrimSpace(a.out.String()); s != "" {
		t.Fatalf("with --log-file, widagent still wrote to stderr:\n%s", s)
	}
	st, err := os.Stat(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("log file mode %04o, want 0600", st.Mode().Perm())
	}
	f, err := os.Open(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	lines, debug := 0, 0
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %d is not a JSON object: %v\n%s", lines+1, err, sc.Text())
		}
		if _, ok := rec["msg"].(string); !ok {
			t.Fatalf("log line %d has no msg: %s", lines+1, sc.Text())
		}
		if rec["level"] == "DEBUG" {
			debug++
		}
		lines++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if lines == 0 || debug == 0 {
		t.Fatalf("the log file holds %d lines, %d at debug: want some of each", lines, debug)
	}
}
