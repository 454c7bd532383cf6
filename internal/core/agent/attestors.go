package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/wid-project/wid/internal/core/attest"
)

// AttestorsConfig says which attestors tell the agent who calls it, and how
// they are set up: the config file's attestors key. The unix attestor is on
// unless switched off; the others are off unless switched on.
type AttestorsConfig struct {
	// ProcRoot is where procfs is mounted ("" means /proc). The caller's
	// start time is still taken from /proc as its connection is accepted.
	ProcRoot string `yaml:"proc_root"`
	// Timeout bounds each attestor other than unix per call (default 3s):
	// past it the attestor adds nothing and the attestation says why.
	Timeout    time.Duration            `yaml:"timeout"`
	Unix       UnixAttestorConfig       `yaml:"unix"`
	Kubernetes KubernetesAttestorConfig `yaml:"kubernetes"`
	Docker     DockerAttestorConfig     `yaml:"docker"`
	Systemd    SystemdAttestorConfig    `yaml:"systemd"`
}

// UnixAttestorConfig configures the unix attestor (workload.unix.*).
type UnixAttestorConfig struct {
	// Enabled defaults to true.
	Enabled *bool `yaml:"enabled"`
	// MaxHashBytes: larger binaries get no sha256 (default 512 MiB; -1 never hashes).
	MaxHashBytes int64 `yaml:"max_hash_bytes"`
}

// KubernetesAttestorConfig configures the kubernetes attestor
// (workload.kubernetes.*).
type KubernetesAttestorConfig struct {
	Enabled bool `yaml:"enabled"`
	// KubeletURL: http://127.0.0.1:10255 (read-only port, the default) or
	// https://<node>:10250.
	KubeletURL string `yaml:"kubelet_url"`
	// NodeName is the agent's node (widagent takes WID_NODE_NAME when it
	// is unset): with no KubeletURL the kubelet is asked at
	// https://<node>:10250.
	NodeName string `yaml:"node_name"`
	// TokenFile and CAFile for the secure port; the pod's service-account
	// token and ca.crt by default.
	TokenFile  string `yaml:"token_file"`
	CAFile     string `yaml:"ca_file"`
	SkipVerify bool   `yaml:"skip_verify"`
	// Timeout of one request to the kubelet (default 5s).
	Timeout          time.Duration `yaml:"timeout"`
	MaxResponseBytes int64         `yaml:"max_response_bytes"`
	CacheTTL         time.Duration `yaml:"cache_ttl"`
}

// DockerAttestorConfig configures the docker attestor (workload.docker.*).
type DockerAttestorConfig struct {
	Enabled bool `yaml:"enabled"`
	// Socket of the Docker Engine API (default /var/run/docker.sock).
	Socket string `yaml:"socket"`
	// APIVersion of the request paths (default 1.41).
	APIVersion string        `yaml:"api_version"`
	Timeout    time.Duration `yaml:"timeout"`
	CacheTTL   time.Duration `yaml:"cache_ttl"`
}

// SystemdAttestorConfig configures the systemd attestor (workload.systemd.*).
type SystemdAttestorConfig struct {
	Enabled bool `yaml:"enabled"`
	// DBusAddress of systemd (default the system bus).
	DBusAddress string `yaml:"dbus_address"`
	// CgroupOnly names the unit from the cgroup without asking systemd.
	CgroupOnly bool `yaml:"cgroup_only"`
}

// buildAttestor builds the attestors c switches on, in a fixed order:
// unix, kubernetes, docker, systemd. close releases what they hold.
func (c AttestorsConfig) buildAttestor(logger *slog.Logger) (a Attestor, close func(), err error) {
	close = func() {}
	var unix *attest.Unix
	if c.Unix.Enabled == nil || *c.Unix.Enabled {
		unix = attest.NewUnix(attest.UnixOptions{ProcRoot: c.ProcRoot, Logger: logger, MaxHashBytes: c.Unix.MaxHashBytes})
	}
	if c.Timeout < 0 {
		return nil, close, errors.New("agent config attestors.timeout must not be negative")
	}
	var sources []attest.Source
	if k := c.Kubernetes; k.Enabled {
		s, err := attest.NewKubernetes(attest.KubernetesOptions{
			KubeletURL: k.KubeletURL, NodeName: k.NodeName, TokenFile: k.TokenFile, CAFile: k.CAFile, InsecureSkipVerify: k.SkipVerify,
			Timeout: k.Timeout, MaxResponseBytes: k.MaxResponseBytes, CacheTTL: k.CacheTTL, Logger: logger,
		})
		if err != nil {
			return nil, close, fmt.Errorf("agent config attestors.kubernetes: %w", err)
		}
		sources = append(sources, s)
	}
	if d := c.Docker; d.Enabled {
		s, err := attest.NewDocker(attest.DockerOptions{Socket: d.Socket, APIVersion: d.APIVersion, Timeout: d.Timeout, CacheTTL: d.CacheTTL, Logger: logger})
		if err != nil {
			return nil, close, fmt.Errorf("agent config attestors.docker: %w", err)
		}
		sources = append(sources, s)
	}
	if s := c.Systemd; s.Enabled {
		sd := attest.NewSystemd(attest.SystemdOptions{BusAddress: s.DBusAddress, CgroupOnly: s.CgroupOnly, Logger: logger})
		close = func() { _ = sd.Close() }
		sources = append(sources, sd)
	}
	if unix == nil && len(sources) == 0 {
		return nil, close, errors.New("agent config attestors: every attestor is off, so no caller could be told apart: leave unix on or enable another")
	}
	if len(sources) == 0 {
		return unix, close, nil
	}
	return attest.NewChain(attest.ChainOptions{Unix: unix, Sources: sources, ProcRoot: c.ProcRoot, Timeout: c.Timeout, Logger: logger}), close, nil
}
