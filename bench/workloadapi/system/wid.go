package system

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/wid-project/wid/internal/core/resource"
)

// Wid is widagent start (the auth service and the agent in one process, on
// its embedded sqlite store) with identities created by widctl over the
// admin socket.
type Wid struct {
	binDir string
	uid    int
	td     spiffeid.TrustDomain

	dir      string
	home     string
	agent    *process
	started  bool
	keepDirs bool
}

// NewWid uses widagent and widctl from binDir.
func NewWid(binDir string) *Wid {
	return &Wid{binDir: binDir, uid: os.Getuid()}
}

// KeepDirs leaves the temp dir (data dir, logs) in place after Stop.
func (w *Wid) KeepDirs() { w.keepDirs = true }

// Name is "wid" and the version widagent reports.
func (w *Wid) Name() string {
	out, err := exec.Command(w.bin("widagent"), "version").CombinedOutput()
	if err != nil {
		return "wid"
	}
	if v := strings.Fields(string(out)); len(v) > 0 {
		return "wid " + v[len(v)-1]
	}
	return "wid"
}

func (w *Wid) bin(name string) string { return filepath.Join(w.binDir, name) }

// Dir is the temp dir; the data dir is data/ inside it.
func (w *Wid) Dir() string { return w.dir }

func (w *Wid) dataDir() string { return filepath.Join(w.dir, "data") }

// SocketPath is the agent's Workload API socket.
func (w *Wid) SocketPath() string { return filepath.Join(w.dir, "workload.sock") }

// Processes is widagent, which is both the auth service and the agent.
func (w *Wid) Processes() []Process {
	if w.agent == nil {
		return nil
	}
	return []Process{{Role: "auth+agent", PID: w.agent.pid()}}
}

// UIDSPIFFEID is the identity Start gives the current uid.
func (w *Wid) UIDSPIFFEID() spiffeid.ID {
	return spiffeid.RequireFromPathf(w.trustDomain(), "/uid/%d", w.uid)
}

// SPIFFEID is the identity CreateIdentity(name) gives the current uid.
func (w *Wid) SPIFFEID(name string) spiffeid.ID {
	return spiffeid.RequireFromPathf(w.trustDomain(), "/uid/%d/%s", w.uid, name)
}

func (w *Wid) trustDomain() spiffeid.TrustDomain {
	if w.td.IsZero() {
		return spiffeid.RequireTrustDomainFromString("example.org")
	}
	return w.td
}

var (
	widTDRE    = regexp.MustCompile(`trust domain:\s+spiffe://(\S+)`)
	widReadyRE = regexp.MustCompile(`workload API:\s+(\S+)`)
)

// Start runs widagent start on a fresh data dir without the dev identity,
// waits until it prints its addresses, and creates the workload identity
// "uid" (spiffe://<td>/uid/<uid> for the current uid) with widctl.
func (w *Wid) Start(ctx context.Context) error {
	if w.started {
		return fmt.Errorf("wid was already started in %s", w.dir)
	}
	w.started = true
	for _, b := range []string{"widagent", "widctl"} {
		if err := checkBinary(w.bin(b), "go build -o "+w.binDir+"/ ./cmd/widagent ./cmd/widctl"); err != nil {
			return err
		}
	}
	var err error
	if w.dir, err = tempDir("wid-"); err != nil {
		return err
	}
	// widctl reads ~/.config/widctl; give it an empty home.
	w.home = filepath.Join(w.dir, "home")
	if err := os.Mkdir(w.home, 0o700); err != nil {
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	w.agent, err = startProcess("widagent", filepath.Join(w.dir, "widagent.log"), pw,
		w.bin("widagent"), "start", "--data-dir", w.dataDir(), "--workload-socket", w.SocketPath(),
		"--auth-listen", "127.0.0.1:0", "--no-dev-identity")
	pw.Close()
	if err != nil {
		pr.Close()
		return err
	}
	if err := w.waitReady(ctx, pr); err != nil {
		return err
	}
	_, err = w.widctl(ctx, "workload-identity", "create", "uid",
		"--spiffe-id", "/uid/{{ workload.unix.uid }}", "--rule", w.rule())
	return err
}

// waitReady reads widagent's stdout until it says where the Workload API
// is, then keeps draining it so that widagent never blocks on a write.
func (w *Wid) waitReady(ctx context.Context, stdout io.ReadCloser) error {
	var printed bytes.Buffer
	ready := make(chan error, 1)
	go func() {
		defer stdout.Close()
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			if signalled {
				continue
			}
			l := sc.Text()
			printed.WriteString(l + "\n")
			if m := widTDRE.FindStringSubmatch(l); m != nil {
				w.td, _ = spiffeid.TrustDomainFromString(m[1])
			}
			if widReadyRE.MatchString(l) {
				signalled = true
				ready <- nil
			}
		}
		if !signalled {
			ready <- fmt.Errorf("widagent printed no workload API address; stdout:\n%s", printed.String())
		}
	}()
	timeout := time.After(30 * time.Second)
	select {
	case err := <-ready:
		if err != nil {
			if rerr := w.agent.running(); rerr != nil {
				return rerr
			}
		}
		return err
	case <-timeout:
		return fmt.Errorf("widagent did not become ready within 30s; its log ends:\n%s", tail(w.agent.log))
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *Wid) rule() string { return "workload.unix.uid=" + strconv.Itoa(w.uid) }

func (w *Wid) widctl(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{w.bin("widctl"), "--admin-socket", filepath.Join(w.dataDir(), "admin.sock")}, args...)
	return run(ctx, []string{"HOME=" + w.home, "XDG_CONFIG_HOME=" + filepath.Join(w.home, ".config")}, argv...)
}

// Running reports an error if widagent has exited.
func (w *Wid) Running() error {
	if w.agent == nil {
		return nil
	}
	return w.agent.running()
}

// CreateIdentity creates the workload identity name, which gives the
// current uid spiffe://<td>/uid/<uid>/<name>, with widctl workload-identity create.
func (w *Wid) CreateIdentity(ctx context.Context, name string) (spiffeid.ID, error) {
	_, err := w.widctl(ctx, "workload-identity", "create", name,
		"--spiffe-id", "/uid/{{ workload.unix.uid }}/"+name, "--rule", w.rule())
	return w.SPIFFEID(name), err
}

// CreateIdentities creates one workload identity per name, as
// CreateIdentity does, with one widctl create -f FILE.
func (w *Wid) CreateIdentities(ctx context.Context, names []string) ([]spiffeid.ID, error) {
	var file bytes.Buffer
	ids := make([]spiffeid.ID, len(names))
	uid := strconv.Itoa(w.uid)
	for i, n := range names {
		ids[i] = w.SPIFFEID(n)
		doc, err := resource.MarshalYAML(&resource.WorkloadIdentity{
			Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{Name: n}},
			Spec: resource.WorkloadIdentitySpec{
				SPIFFE: resource.WorkloadSPIFFE{ID: "/uid/{{ workload.unix.uid }}/" + n},
				Rules: resource.WorkloadRules{Allow: []resource.WorkloadRule{{
					Conditions: []resource.Condition{{Attribute: "workload.unix.uid", Eq: &uid}},
				}}},
			},
		})
		if err != nil {
			return nil, err
		}
		if i > 0 {
			file.WriteString("---\n")
		}
		file.Write(doc)
	}
	path := filepath.Join(w.dir, fmt.Sprintf("identities-%d.yaml", time.Now().UnixNano()))
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		return nil, err
	}
	if _, err := w.widctl(ctx, "create", "-f", path); err != nil {
		return nil, err
	}
	return ids, nil
}

// Stop ends widagent and removes the temp dir.
func (w *Wid) Stop() error {
	var err error
	if w.agent != nil {
		err = w.agent.stop()
	}
	if w.dir != "" && !w.keepDirs {
		os.RemoveAll(w.dir)
	}
	return err
}
