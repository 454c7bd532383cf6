package agentcmd

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/core/agent"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/kubejoin"
	"github.com/wid-project/wid/internal/testkit"
)

// newStartCmd is widagent start on test streams, for its flags.
func newStartCmd() *cobra.Command {
	ios, _, _, _ := iostreams.Test()
	return NewCmdStart(&cmdutil.Factory{IOStreams: ios}, nil)
}

func loadConfig(t *testing.T, yaml string) (StartOptions, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := newStartCmd()
	return loadStartOptions(cmd.Flags(), f)
}

func TestConfigAttestors(t *testing.T) {
	o, err := loadConfig(t, `
attestors:
  proc_root: /host/proc
  timeout: 2s
  unix:
    enabled: false
  kubernetes:
    enabled: true
    kubelet_url: https://node-1:10250
    ca_file: /etc/kubelet-ca.crt
    timeout: 4s
    max_response_bytes: 1048576
  docker:
    enabled: true
    socket: /run/docker.sock
    api_version: "1.43"
  systemd:
    enabled: true
    cgroup_only: true
`)
	if err != nil {
		t.Fatal(err)
	}
	a := o.Attestors
	if a.ProcRoot != "/host/proc" || a.Timeout != 2*time.Second || a.Unix.Enabled == nil || *a.Unix.Enabled {
		t.Errorf("attestors = %+v", a)
	}
	if k := a.Kubernetes; !k.Enabled || k.KubeletURL != "https://node-1:10250" || k.CAFile != "/etc/kubelet-ca.crt" || k.Timeout != 4*time.Second || k.MaxResponseBytes != 1<<20 {
		t.Errorf("kubernetes = %+v", k)
	}
	if d := a.Docker; !d.Enabled || d.Socket != "/run/docker.sock" || d.APIVersion != "1.43" {
		t.Errorf("docker = %+v", d)
	}
	if s := a.Systemd; !s.Enabled || !s.CgroupOnly {
		t.Errorf("systemd = %+v", s)
	}

	// Defaults: unix on (nil), the others off.
	o, err = loadConfig(t, "log_level: info\n")
	if err != nil {
		t.Fatal(err)
	}
	if o.Attestors.Unix.Enabled != nil || o.Attestors.Kubernetes.Enabled || o.Attestors.Docker.Enabled || o.Attestors.Systemd.Enabled {
		t.Errorf("default attestors = %+v", o.Attestors)
	}

	for _, tt := range []struct{ yaml, want string }{
		{"attestors:\n  kubernetes:\n    kubelet_port: 10250\n", "kubelet_port"},
		{"attestors:\n  podman:\n    enabled: true\n", "podman"},
		{"attestors:\n  kubernetes:\n    timeout: soon\n", "timeout"},
	} {
		if _, err := loadConfig(t, tt.yaml); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("config %q: %v, want an error naming %s", tt.yaml, err, tt.want)
		}
	}
}

// TestSDSSettings: the sds section of the config file and
// --sds-spiffe-validator reach the agent's config; unknown sds keys are
// refused, naming the key.
func TestSDSSettings(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	load := func(cfg string, args ...string) (StartOptions, error) {
		cmd := newStartCmd()
		if err := cmd.Flags().Parse(append([]string{"--data-dir", dir}, args...)); err != nil {
			t.Fatal(err)
		}
		return loadStartOptions(cmd.Flags(), cfg)
	}

	o, err := load(write("sds:\n  default_svid_name: svid\n  default_bundle_name: bundle\n  default_all_bundles_name: everything\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := agent.SDSConfig{DefaultSVIDName: "svid", DefaultBundleName: "bundle", DefaultAllBundlesName: "everything"}
	if o.SDS != want {
		t.Fatalf("sds = %+v, want %+v", o.SDS, want)
	}

	o, err = load("", "--sds-spiffe-validator")
	if err != nil || !o.SDS.SPIFFEValidator {
		t.Fatalf("--sds-spiffe-validator gave %+v, %v", o.SDS, err)
	}
	o, err = load(write("sds:\n  spiffe_validator: true\n"))
	if err != nil || !o.SDS.SPIFFEValidator {
		t.Fatalf("sds.spiffe_validator in the file gave %+v, %v", o.SDS, err)
	}

	_, err = load(write("sds:\n  default_name: x\n"))
	if err == nil || !strings.Contains(err.Error(), `unknown key "sds.default_name": sds takes default_svid_name`) {
		t.Fatalf("an unknown sds key: %v, want a refusal naming it", err)
	}
}

func startOptions(t *testing.T, config string, args ...string) (StartOptions, error) {
	t.Helper()
	file := ""
	if config != "" {
		file = filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return LoadStartConfig(file, args...)
}

func TestKubernetesJoinSettings(t *testing.T) {
	o, err := startOptions(t, "", "--roles", "agent", "--auth", "wid-auth:3025", "--join-method", "kubernetes", "--join-token", "k8s-nodes")
	if err != nil {
		t.Fatal(err)
	}
	if o.JoinMethod != "kubernetes" || o.JoinToken != "k8s-nodes" || o.SATokenFile != kubejoin.DefaultTokenFile {
		t.Errorf("flags gave %+v", o)
	}
	o, err = startOptions(t, "roles: [agent]\nauth: wid-auth:3025\njoin_method: kubernetes\njoin_token: k8s-nodes\nsa_token_file: /run/token\n")
	if err != nil {
		t.Fatal(err)
	}
	if o.JoinMethod != "kubernetes" || o.SATokenFile != "/run/token" {
		t.Errorf("config file gave %+v", o)
	}
	o, _ = startOptions(t, "")
	if o.JoinMethod != "token" {
		t.Errorf("default join method = %q", o.JoinMethod)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--roles", "agent", "--auth", "a:1", "--join-method", "iam"}, `--join-method "iam" is unknown: use token, kubernetes or x509pop`},
		{[]string{"--join-method", "kubernetes"}, "are for an agent alone (--roles agent)"},
	} {
		_, err := startOptions(t, "", c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
}

// The join token comes from the first place that sets one, so that it can
// stay out of the command line every local user can read.
func TestJoinTokenSources(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fromFile := file("token", "  from-file\n")
	fromEnvFile := file("env-token", "from-widagent-env-file\n")
	agentArgs := []string{"--roles", "agent", "--auth", "a:1"}
	for _, tt := range []struct {
		name   string
		config string
		env    map[string]string
		args   []string
		want   string
	}{
		{"flag over everything", "join_token: from-config\n", map[string]string{"WID_JOIN_TOKEN": "from-env"}, []string{"--join-token", "from-flag"}, "from-flag"},
		{"file flag over environment", "", map[string]string{"WID_JOIN_TOKEN": "from-env", "WIDAGENT_JOIN_TOKEN": "from-widagent-env"}, []string{"--join-token-file", fromFile}, "from-file"},
		{"WID_JOIN_TOKEN over WIDAGENT_JOIN_TOKEN and config", "join_token: from-config\n", map[string]string{"WID_JOIN_TOKEN": "from-env", "WIDAGENT_JOIN_TOKEN": "from-widagent-env"}, nil, "from-env"},
		{"WIDAGENT_JOIN_TOKEN over the config file", "join_token_file: " + fromFile + "\n", map[string]string{"WIDAGENT_JOIN_TOKEN": "from-widagent-env"}, nil, "from-widagent-env"},
		{"WIDAGENT_JOIN_TOKEN_FILE over the config file", "join_token: from-config\n", map[string]string{"WIDAGENT_JOIN_TOKEN_FILE": fromEnvFile}, nil, "from-widagent-env-file"},
		{"config join_token", "join_token: from-config\n", nil, nil, "from-config"},
		{"config join_token_file", "join_token_file: " + fromFile + "\n", nil, nil, "from-file"},
		{"none", "", nil, nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"WID_JOIN_TOKEN", "WIDAGENT_JOIN_TOKEN", "WIDAGENT_JOIN_TOKEN_FILE"} {
				t.Setenv(k, tt.env[k])
			}
			o, err := startOptions(t, tt.config, append(slices.Clone(agentArgs), tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if o.JoinToken != tt.want {
				t.Errorf("join token = %q, want %q", o.JoinToken, tt.want)
			}
		})
	}
}

// A join token file that cannot hold a token is refused in one sentence
// that names the file and what to do.
func TestJoinTokenFileRefusals(t *testing.T) {
	t.Setenv("WID_JOIN_TOKEN", "")
	dir := t.TempDir()
	write := func(name string, content []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(dir, "missing")
	empty := write("empty", []byte(" \n"))
	large := write("large", []byte(strings.Repeat("a", 5000)))
	words := write("words", []byte("abc def\n"))
	okFile := write("ok", []byte("abc\n"))
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"missing", []string{"--join-token-file", missing}, "the join token file " + missing + " does not exist: write the token that widctl bot create printed into it"},
		{"empty", []string{"--join-token-file", empty}, "the join token file " + empty + " is empty: write the token that widctl bot create printed into it"},
		{"too large", []string{"--join-token-file", large}, "the join token file " + large + " is larger than 4096 bytes"},
		{"not one word", []string{"--join-token-file", words}, "holds more than one word"},
		{"a directory", []string{"--join-token-file", dir}, "reading the join token file " + dir},
		{"empty name", []string{"--join-token-file", ""}, "--join-token-file is empty"},
		{"both flags", []string{"--join-token", "x", "--join-token-file", okFile}, "--join-token and --join-token-file both give a join token: pass one"},
		{"next to the auth service", []string{"--roles", "auth,agent", "--join-token-file", okFile}, "a join token (--join-token, --join-token-file or WID_JOIN_TOKEN) and --join-method are for an agent alone"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if !slices.Contains(args, "--roles") {
				args = append([]string{"--roles", "agent", "--auth", "a:1"}, args...)
			}
			_, err := startOptions(t, "", args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%v: %v, want %q", tt.args, err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("not one line: %q", err)
			}
		})
	}
	t.Run("config sets both", func(t *testing.T) {
		_, err := startOptions(t, "roles: [agent]\nauth: a:1\njoin_token: x\njoin_token_file: "+okFile+"\n")
		if err == nil || !strings.Contains(err.Error(), "the config file sets both join_token and join_token_file: keep one") {
			t.Fatalf("%v", err)
		}
	})
}

func TestStoreSettings(t *testing.T) {
	o, err := startOptions(t, "", "--store", "postgres://wid@db:5432/wid")
	if err != nil || o.Store != "postgres://wid@db:5432/wid" {
		t.Fatalf("--store gave %q, %v", o.Store, err)
	}
	o, err = startOptions(t, "store: sqlite:///var/lib/wid/state.db\n")
	if err != nil || o.Store != "sqlite:///var/lib/wid/state.db" {
		t.Fatalf("config key store gave %q, %v", o.Store, err)
	}
	t.Setenv("WIDAGENT_STORE", "postgres://env@db/wid")
	o, err = startOptions(t, "")
	if err != nil || o.Store != "postgres://env@db/wid" {
		t.Fatalf("WIDAGENT_STORE gave %q, %v", o.Store, err)
	}
	t.Setenv("WIDAGENT_STORE", "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--store", "mysql://root:hunter2@db/wid"}, `--store scheme "mysql" is unknown`},
		{[]string{"--store", "hunter2"}, "--store takes a URL"},
		{[]string{"--store", "sqlite://"}, "needs a file path"},
		{[]string{"--roles", "agent", "--auth", "a:1", "--store", "postgres://db/wid"}, "--store is for the auth service"},
	} {
		_, err := startOptions(t, "", c.args...)
		var fe *cmdutil.Error
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.As(err, &fe) || fe.Code != cmdutil.ExitBadInput {
			t.Errorf("%v: %v, want a flag error saying %q", c.args, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%v: error %q holds the password", c.args, err)
		}
	}
}

// TestStartWithUnreachableStore: widagent start with a PostgreSQL URL that
// nothing answers fails with one sentence that names the server and what
// failed, without the password, and leaves no SQLite store behind.
func TestStartWithUnreachableStore(t *testing.T) {
	addr := testkit.ClosedAddr(t)
	dir := t.TempDir()
	o, err := startOptions(t, "", "--roles", "auth", "--data-dir", dir, "--auth-listen", "127.0.0.1:0",
		"--store", "postgres://wid:hunter2@"+addr+"/wid?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	// Bounded: a start that wrongly succeeds serves until its context ends.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err = runStart(ctx, o, io.Discard, &logs)
	if err == nil {
		t.Fatal("start with an unreachable store succeeded")
	}
	msg := cmdutil.Explain(err, "").Message
	want := "cannot use the PostgreSQL store at " + addr + ": the connection was refused"
	if !strings.HasPrefix(msg, want) || strings.Contains(msg, "\n") {
		t.Errorf("error %q, want one line starting %q", msg, want)
	}
	if strings.Contains(msg, "hunter2") || strings.Contains(logs.String(), "hunter2") {
		t.Errorf("the password leaked: error %q, logs %q", msg, logs.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "wid.db")); !os.IsNotExist(err) {
		t.Errorf("a SQLite store was created beside the chosen one: %v", err)
	}
}

// The auth service's kubernetes clusters come from its config file only,
// are checked at start, and are refused where no auth service runs.
func TestKubernetesClustersSettings(t *testing.T) {
	o, err := startOptions(t, "kubernetes_clusters:\n  - name: other\n    api_server: https://10.96.0.1:443\n    ca_file: /etc/wid/ca.crt\n    token_file: /etc/wid/token\n")
	if err != nil {
		t.Fatal(err)
	}
	want := kubejoin.Cluster{Name: "other", APIServer: "https://10.96.0.1:443", CAFile: "/etc/wid/ca.crt", TokenFile: "/etc/wid/token"}
	if len(o.KubernetesClusters) != 1 || o.KubernetesClusters[0] != want {
		t.Errorf("config file gave %+v", o.KubernetesClusters)
	}
	for _, c := range []struct{ config, want string }{
		{"kubernetes_clusters:\n  - name: other\n    api_server: https://a\n    token: /x\n", "token"},
		{"kubernetes_clusters:\n  - name: other\n    api_server: https://a\n    token_file: x\n", "is not an absolute path"},
		{"roles: [agent]\nauth: a:1\nkubernetes_clusters:\n  - name: other\n    api_server: https://a\n", "kubernetes_clusters configure the auth service"},
	} {
		if _, err := startOptions(t, c.config); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.config, err, c.want)
		}
	}
}

// An agent with no saved identity and no join token stops, and the
// command line says how to get a token: widctl's commands, which the agent
// itself does not name.
func TestStartWithoutJoinTokenSaysHowToGetOne(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"token", nil, "and no join token: create one with 'widctl bot create NAME --roles ROLE' (or 'widctl token create --bot NAME') and pass --join-token"},
		{"kubernetes", []string{"--join-method", "kubernetes"}, "and no join token: pass --join-token NAME of a kubernetes join token (see widctl token ls)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"--roles", "agent", "--data-dir", dir, "--auth", "127.0.0.1:1",
				"--workload-socket", filepath.Join(dir, "workload.sock")}, tc.args...)
			o, err := startOptions(t, "", args...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			err = runStart(ctx, o, io.Discard, io.Discard)
			var nj *client.NoJoinTokenError
			if !errors.As(err, &nj) {
				t.Fatalf("start: %v, want a client.NoJoinTokenError", err)
			}
			if msg := cmdutil.Explain(err, "").Message; !strings.Contains(msg, "the agent has no identity in ") || !strings.HasSuffix(msg, tc.want) {
				t.Errorf("error %q, want it to end %q", msg, tc.want)
			}
		})
	}
}
