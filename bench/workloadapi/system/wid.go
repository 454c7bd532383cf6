package system

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
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

// Wid is configured as the SPIRE driver configures SPIRE: the auth service
// (widagent start --roles auth, on its embedded sqlite store) and an agent
// in its own process (--roles agent) that joins with a token, with
// identities created by widctl over the admin socket.
type Wid struct {
	binDir string
	uid    int
	td     spiffeid.TrustDomain

	dir      string
	home     string
	auth     *process
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

// Processes are the agent and the auth service.
func (w *Wid) Processes() []Process {
	var ps []Process
	if w.agent != nil {
		ps = append(ps, Process{Role: "agent", PID: w.agent.pid()})
	}
	if w.auth != nil {
		ps = append(ps, Process{Role: "server", PID: w.auth.pid()})
	}
	return ps
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
	widAddrRE  = regexp.MustCompile(`auth address:\s+(\S+)`)
	widPinRE   = regexp.MustCompile(`CA pin:\s+(sha256:\S+)`)
	widTryRE   = regexp.MustCompile(`^Try: `)
	widReadyRE = regexp.MustCompile(`workload API:\s+(\S+)`)
	widTokenRE = regexp.MustCompile(`--join-token (\S+)`)
)

// Start runs the auth service on a fresh data dir, adds the bot "agent"
// with the built-in role local-agent, starts the agent with its join token,
// and creates the workload identity "uid" (spiffe://<td>/uid/<uid> for the
// current uid) with widctl.
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
	var printed map[*regexp.Regexp]string
	w.auth, printed, err = startWidagent(ctx, "auth", filepath.Join(w.dir, "auth.log"), widTryRE,
		[]*regexp.Regexp{widTDRE, widAddrRE, widPinRE},
		w.bin("widagent"), "start", "--roles", "auth", "--data-dir", w.dataDir(), "--auth-listen", "127.0.0.1:0")
	if err != nil {
		return err
	}
	w.td, _ = spiffeid.TrustDomainFromString(printed[widTDRE])
	out, err := w.widctl(ctx, "bot", "add", "agent", "--roles", "local-agent")
	if err != nil {
		return err
	}
	tok := widTokenRE.FindStringSubmatch(out)
	if tok == nil {
		return fmt.Errorf("widctl bot add printed no join token:\n%s", out)
	}
	w.agent, _, err = startWidagent(ctx, "agent", filepath.Join(w.dir, "agent.log"), widReadyRE, nil,
		w.bin("widagent"), "start", "--roles", "agent", "--data-dir", filepath.Join(w.dir, "agent"),
		"--auth", printed[widAddrRE], "--join-token", tok[1], "--ca-pin", printed[widPinRE],
		"--workload-socket", w.SocketPath())
	if err != nil {
		return err
	}
	_, err = w.widctl(ctx, "workload-identity", "create", "uid",
		"--spiffe-id", "/uid/{{ workload.unix.uid }}", "--rule", w.rule())
	return err
}

// startWidagent starts a widagent process and reads its stdout until a
// line matches ready, collecting the first submatch of each of want; then
// it keeps draining stdout so that widagent never blocks on a write.
func startWidagent(ctx context.Context, name, logPath string, ready *regexp.Regexp, want []*regexp.Regexp, argv ...string) (*process, map[*regexp.Regexp]string, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	p, err := startProcess(name, logPath, pw, argv...)
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, nil, err
	}
	found := map[*regexp.Regexp]string{}
	var printed bytes.Buffer
	done := make(chan error, 1)
	go func() {
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		signalled := false
		for sc.Scan() {
			if signalled {
				continue
			}
			l := sc.Text()
			printed.WriteString(l + "\n")
			for _, re := range want {
				if m := re.FindStringSubmatch(l); m != nil {
					found[re] = m[1]
				}
			}
			if ready.MatchString(l) {
				signalled = true
				done <- nil
			}
		}
		if !signalled {
			done <- fmt.Errorf("widagent (%s) never printed a line matching %q; stdout:\n%s", name, ready, printed.String())
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			if rerr := p.running(); rerr != nil {
				return p, nil, rerr
			}
			return p, nil, err
		}
		for _, re := range want {
			if found[re] == "" {
				return p, nil, fmt.Errorf("widagent (%s) printed no line matching %q; stdout:\n%s", name, re, printed.String())
			}
		}
		return p, found, nil
	case <-time.After(30 * time.Second):
		return p, nil, fmt.Errorf("widagent (%s) did not become ready within 30s; its log ends:\n%s", name, tail(p.log))
	case <-ctx.Done():
		return p, nil, ctx.Err()
	}
}

func (w *Wid) rule() string { return "workload.unix.uid=" + strconv.Itoa(w.uid) }

func (w *Wid) widctl(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{w.bin("widctl"), "--admin-socket", filepath.Join(w.dataDir(), "admin.sock")}, args...)
	return run(ctx, []string{"HOME=" + w.home, "XDG_CONFIG_HOME=" + filepath.Join(w.home, ".config")}, argv...)
}

// Running reports an error if a widagent process has exited.
func (w *Wid) Running() error {
	for _, p := range []*process{w.agent, w.auth} {
		if p != nil {
			if err := p.running(); err != nil {
				return err
			}
		}
	}
	return nil
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
	return w.CreateIdentitiesFor(ctx, names, "workload.unix.uid", strconv.Itoa(w.uid))
}

// CreateIdentitiesFor is CreateIdentities for the workloads whose attribute
// attr equals value (such as one binary's workload.unix.path).
func (w *Wid) CreateIdentitiesFor(ctx context.Context, names []string, attr, value string) ([]spiffeid.ID, error) {
	var file bytes.Buffer
	ids := make([]spiffeid.ID, len(names))
	for i, n := range names {
		ids[i] = w.SPIFFEID(n)
		doc, err := resource.MarshalYAML(&resource.WorkloadIdentity{
			Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{Name: n}},
			Spec: resource.WorkloadIdentitySpec{
				SPIFFE: resource.WorkloadSPIFFE{ID: "/uid/{{ workload.unix.uid }}/" + n},
				Rules: resource.WorkloadRules{Allow: []resource.WorkloadRule{{
					Conditions: []resource.Condition{{Attribute: attr, Eq: &value}},
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

// AdminSocket is the auth service's admin socket.
func (w *Wid) AdminSocket() string { return filepath.Join(w.dataDir(), "admin.sock") }

// Stop ends widagent and removes the temp dir.
func (w *Wid) Stop() error {
	var errs []error
	for _, p := range []*process{w.agent, w.auth} {
		if p != nil {
			errs = append(errs, p.stop())
		}
	}
	err := errors.Join(errs...)
	if w.dir != "" && !w.keepDirs {
		os.RemoveAll(w.dir)
	}
	return err
}
