package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/core/svidfile"
	"go.yaml.in/yaml/v3"
)

// TestFetchWriteFiles: widagent api fetch x509 --write leaves the files
// every SVID writer leaves: an SVID that verifies against the bundle.pem
// beside it, each file 0600, in a directory made 0700.
func TestFetchWriteFiles(t *testing.T) {
	t.Parallel()
	a := startAgent(t, newDataDir(t))
	dir := filepath.Join(a.dataDir, "fetched", "svid")
	out, err := exec.Command(filepath.Join(binDir, "widagent"), "api", "fetch", "x509", "--socket", a.workload, "--write", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("fetch --write: %v\n%s", err, out)
	}
	want := "spiffe://" + a.td + "/uid/" + uid
	if !strings.Contains(string(out), "Wrote svid.pem, svid.key and bundle.pem for "+want+" to "+dir) {
		t.Errorf("fetch --write printed:\n%s", out)
	}
	s, err := svidfile.ReadX509(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.ID.String() != want {
		t.Errorf("wrote %s, want %s", s.ID, want)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("%s: %v, mode %v, want 0700", dir, err, fi.Mode().Perm())
	}
	for _, name := range []string{svidfile.CertFile, svidfile.KeyFile, svidfile.BundleFile} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v, want 0600", name, err, fi.Mode().Perm())
		}
	}

	// --format is the shared printer's: YAML too, with the SVID's serial.
	out, err = exec.Command(filepath.Join(binDir, "widagent"), "api", "fetch", "x509", "--socket", a.workload, "--format", "yaml").Output()
	if err != nil {
		t.Fatalf("fetch --format yaml: %v", err)
	}
	var rows []struct {
		SPIFFEID string `yaml:"spiffe_id"`
		Serial   string `yaml:"serial"`
	}
	if err := yaml.Unmarshal(out, &rows); err != nil || len(rows) != 1 || rows[0].SPIFFEID != want || rows[0].Serial == "" {
		t.Errorf("fetch --format yaml printed %v:\n%s", err, out)
	}
}
