package system

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Spire is a SPIRE server and agent on one host, configured as wid is by
// default: a sqlite datastore, keys on disk, join-token node attestation, the
// unix workload attestor, and SPIRE's defaults for everything else (sync
// interval, SVID TTLs, cache size).
type Spire struct {
	binDir string
	uid    int
	td     spiffeid.TrustDomain

	dir      string
	port     int
	agentID  string
	server   *process
	agent    *process
	started  bool
	keepDirs bool
}

// NewSpire uses spire-server and spire-agent from binDir, as
// scripts/spire/build.sh leaves them in .bin/spire-<version>.
func NewSpire(binDir string) *Spire {
	return &Spire{binDir: binDir, uid: os.Getuid(), td: spiffeid.RequireTrustDomainFromString("example.org")}
}

// KeepDirs leaves the temp dir (configs, data, logs) in place after Stop.
func (s *Spire) KeepDirs() { s.keepDirs = true }

// Name is "spire" and the version spire-agent reports.
func (s *Spire) Name() string {
	// SPIRE prints its version on stderr.
	out, err := exec.Command(s.bin("spire-agent"), "-version").CombinedOutput()
	if err != nil {
		return "spire"
	}
	return "spire " + strings.TrimSpace(string(out))
}

func (s *Spire) bin(name string) string { return filepath.Join(s.binDir, name) }

// Dir is the temp dir with the configs, data and logs.
func (s *Spire) Dir() string { return s.dir }

// SocketPath is the agent's Workload API socket.
func (s *Spire) SocketPath() string { return filepath.Join(s.dir, "agent.sock") }

func (s *Spire) serverSocket() string { return filepath.Join(s.dir, "server.sock") }

// Processes are the agent and the server.
func (s *Spire) Processes() []Process {
	var ps []Process
	if s.agent != nil {
		ps = append(ps, Process{Role: "agent", PID: s.agent.pid()})
	}
	if s.server != nil {
		ps = append(ps, Process{Role: "server", PID: s.server.pid()})
	}
	return ps
}

// UIDSPIFFEID is the identity Start gives the current uid.
func (s *Spire) UIDSPIFFEID() spiffeid.ID {
	return spiffeid.RequireFromPathf(s.td, "/uid/%d", s.uid)
}

// SPIFFEID is the identity CreateIdentity(name) gives the current uid.
func (s *Spire) SPIFFEID(name string) spiffeid.ID {
	return spiffeid.RequireFromPathf(s.td, "/uid/%d/%s", s.uid, name)
}

const spireServerConf = `server {
    bind_address = "127.0.0.1"
    bind_port = "{{port}}"
    socket_path = "{{dir}}/server.sock"
    trust_domain = "example.org"
    data_dir = "{{dir}}/server"
    log_level = "WARN"
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "{{dir}}/server/datastore.sqlite3"
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = "{{dir}}/server/keys.json"
        }
    }
}
`

// The agent trusts the server it is first given (insecure_bootstrap): the
// server is ours, on loopback, started a moment ago.
const spireAgentConf = `agent {
    data_dir = "{{dir}}/agent"
    log_level = "WARN"
    server_address = "127.0.0.1"
    server_port = "{{port}}"
    socket_path = "{{dir}}/agent.sock"
    insecure_bootstrap = true
    trust_domain = "example.org"
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            directory = "{{dir}}/agent"
        }
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`

var tokenRE = regexp.MustCompile(`Token:\s+(\S+)`)

// Start runs spire-server on a fresh data dir, generates a join token,
// registers spiffe://example.org/uid/<uid> for the current uid under the
// agent it will attest, and starts spire-agent with the token: the fastest
// path SPIRE has from nothing to a served SVID. It returns once the agent
// process runs; the agent serves that SVID shortly after.
func (s *Spire) Start(ctx context.Context) error {
	if s.started {
		return fmt.Errorf("spire was already started in %s", s.dir)
	}
	s.started = true
	for _, b := range []string{"spire-server", "spire-agent"} {
		if err := checkBinary(s.bin(b), "run scripts/spire/build.sh"); err != nil {
			return err
		}
	}
	var err error
	if s.dir, err = tempDir("spire-"); err != nil {
		return err
	}
	if s.port, err = freePort(); err != nil {
		return err
	}
	for _, d := range []string{"server", "agent"} {
		if err := os.Mkdir(filepath.Join(s.dir, d), 0o700); err != nil {
			return err
		}
	}
	if err := s.writeConf("server.conf", spireServerConf); err != nil {
		return err
	}
	if err := s.writeConf("agent.conf", spireAgentConf); err != nil {
		return err
	}
	s.server, err = startProcess("spire-server", filepath.Join(s.dir, "server.log"), nil,
		s.bin("spire-server"), "run", "-config", filepath.Join(s.dir, "server.conf"))
	if err != nil {
		return err
	}
	// The token request is also the readiness check: it fails until the
	// server's API socket answers.
	var token string
	for {
		out, err := s.serverCmd(ctx, "token", "generate", "-ttl", "600")
		if err == nil {
			m := tokenRE.FindStringSubmatch(out)
			if m == nil {
				return fmt.Errorf("spire-server token generate printed no token: %s", out)
			}
			token = m[1]
			break
		}
		if err := s.server.running(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for spire-server: %w (last: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.agentID = spiffeid.RequireFromPath(s.td, "/spire/agent/join_token/"+token).String()
	if _, err := s.serverCmd(ctx, "entry", "create", "-parentID", s.agentID,
		"-spiffeID", s.UIDSPIFFEID().String(), "-selector", fmt.Sprintf("unix:uid:%d", s.uid)); err != nil {
		return err
	}
	s.agent, err = startProcess("spire-agent", filepath.Join(s.dir, "agent.log"), nil,
		s.bin("spire-agent"), "run", "-config", filepath.Join(s.dir, "agent.conf"), "-joinToken", token)
	return err
}

func (s *Spire) writeConf(name, tmpl string) error {
	conf := strings.NewReplacer("{{dir}}", s.dir, "{{port}}", strconv.Itoa(s.port)).Replace(tmpl)
	return os.WriteFile(filepath.Join(s.dir, name), []byte(conf), 0o600)
}

func (s *Spire) serverCmd(ctx context.Context, args ...string) (string, error) {
	args = append(args, "-socketPath", s.serverSocket())
	return run(ctx, nil, append([]string{s.bin("spire-server")}, args...)...)
}

// Running reports an error if a process has exited.
func (s *Spire) Running() error {
	for _, p := range []*process{s.server, s.agent} {
		if p == nil {
			continue
		}
		if err := p.running(); err != nil {
			return err
		}
	}
	return nil
}

// CreateIdentity registers spiffe://example.org/uid/<uid>/<name> for the
// current uid with spire-server entry create.
func (s *Spire) CreateIdentity(ctx context.Context, name string) (spiffeid.ID, error) {
	id := s.SPIFFEID(name)
	_, err := s.serverCmd(ctx, "entry", "create", "-parentID", s.agentID,
		"-spiffeID", id.String(), "-selector", fmt.Sprintf("unix:uid:%d", s.uid))
	return id, err
}

// CreateIdentities registers one entry per name, as CreateIdentity does, in
// one spire-server entry create -data FILE.
func (s *Spire) CreateIdentities(ctx context.Context, names []string) ([]spiffeid.ID, error) {
	type selector struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	}
	type entry struct {
		ParentID  string     `json:"parent_id"`
		SPIFFEID  string     `json:"spiffe_id"`
		Selectors []selector `json:"selectors"`
	}
	var file struct {
		Entries []entry `json:"entries"`
	}
	ids := make([]spiffeid.ID, len(names))
	for i, n := range names {
		ids[i] = s.SPIFFEID(n)
		file.Entries = append(file.Entries, entry{
			ParentID: s.agentID, SPIFFEID: ids[i].String(),
			Selectors: []selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", s.uid)}},
		})
	}
	b, err := json.Marshal(file)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(s.dir, fmt.Sprintf("entries-%d.json", time.Now().UnixNano()))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, err
	}
	if _, err := s.serverCmd(ctx, "entry", "create", "-data", path); err != nil {
		return nil, err
	}
	return ids, nil
}

// Stop ends the agent, then the server, and removes the temp dir.
func (s *Spire) Stop() error {
	errA := s.agent.stop()
	errS := s.server.stop()
	if s.dir != "" && !s.keepDirs {
		os.RemoveAll(s.dir)
	}
	if errA != nil {
		return errA
	}
	return errS
}

// freePort is a loopback TCP port free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
