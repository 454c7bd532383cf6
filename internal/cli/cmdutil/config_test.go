package cmdutil

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/cli/output"
)

// configEnv isolates a config test: no real config file, no WIDCTL_*
// variables, and a default admin socket that is under the test's control.
func configEnv(t *testing.T) (dir string) {
	t.Helper()
	dir = t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	for _, k := range []string{KeyAdminSocket, KeyAuth, KeyCAPin, KeyIdentity, KeyFormat, KeyDebug, "config"} {
		t.Setenv(EnvVar(k), "")
	}
	old := defaultAdminSocket
	defaultAdminSocket = func() string { return filepath.Join(dir, "data", "admin.sock") }
	t.Cleanup(func() { defaultAdminSocket = old })
	return dir
}

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "config", "widctl", "config.yaml")
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, args ...string) (*Config, error) {
	t.Helper()
	fs := NewGlobalFlags()
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return LoadConfig(fs)
}

func TestConfigPrecedence(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		env   map[string]string
		flags []string
		want  output.Format
		debug bool
	}{
		{name: "defaults", want: output.Text},
		{name: "file", file: "format: json\ndebug: true\n", want: output.JSON, debug: true},
		{name: "env over file", file: "format: json\ndebug: true\n", env: map[string]string{"WIDCTL_FORMAT": "yaml", "WIDCTL_DEBUG": "false"}, want: output.YAML},
		{name: "flag over env", file: "format: json\n", env: map[string]string{"WIDCTL_FORMAT": "yaml"}, flags: []string{"--format", "text", "--debug"}, want: output.Text, debug: true},
		{name: "empty env is unset", file: "format: json\n", env: map[string]string{"WIDCTL_FORMAT": ""}, want: output.JSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := configEnv(t)
			if tt.file != "" {
				writeConfig(t, dir, tt.file)
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg, err := load(t, tt.flags...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Format != tt.want || cfg.Debug != tt.debug {
				t.Errorf("format %q debug %v, want %q %v", cfg.Format, cfg.Debug, tt.want, tt.debug)
			}
		})
	}
}

func TestConfigTarget(t *testing.T) {
	tests := []struct {
		name         string
		file         string
		env          map[string]string
		flags        []string
		socketExists bool
		wantSocket   string
		wantAuth     string
		wantErr      string
	}{
		{name: "default socket found", socketExists: true, wantSocket: "DEFAULT"},
		{name: "nothing found"},
		{name: "env socket", env: map[string]string{"WIDCTL_ADMIN_SOCKET": "/env.sock"}, wantSocket: "/env.sock"},
		{name: "auth flag beats default socket", flags: []string{"--auth", "auth:3025"}, socketExists: true, wantAuth: "auth:3025"},
		{name: "auth flag beats env socket", flags: []string{"--auth", "auth:3025"}, env: map[string]string{"WIDCTL_ADMIN_SOCKET": "/env.sock"}, wantAuth: "auth:3025"},
		{name: "socket flag beats env auth", flags: []string{"--admin-socket", "/flag.sock"}, env: map[string]string{"WIDCTL_AUTH": "auth:3025"}, wantSocket: "/flag.sock"},
		{name: "env auth beats file socket", file: "admin_socket: /file.sock\n", env: map[string]string{"WIDCTL_AUTH": "auth:3025"}, wantAuth: "auth:3025"},
		{name: "file auth", file: "auth: auth:3025\nca_pin: sha256:" + strings.Repeat("ab", 32) + "\n", wantAuth: "auth:3025"},
		{name: "both flags", flags: []string{"--admin-socket", "/flag.sock", "--auth", "auth:3025"}, wantErr: "both an admin socket (/flag.sock) and an auth address (auth:3025) are set in the flags: use only one of them"},
		{name: "both in env", env: map[string]string{"WIDCTL_ADMIN_SOCKET": "/env.sock", "WIDCTL_AUTH": "auth:3025"}, wantErr: "are set in the environment: use only one"},
		{name: "both in file", file: "admin_socket: /f.sock\nauth: a:1\n", wantErr: "are set in the config file: use only one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := configEnv(t)
			if tt.file != "" {
				writeConfig(t, dir, tt.file)
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			def := defaultAdminSocket()
			if tt.socketExists {
				if err := os.MkdirAll(filepath.Dir(def), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(def, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := load(t, tt.flags...)
			if tt.wantErr != "" {
				assertInputError(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantSocket == "DEFAULT" {
				tt.wantSocket = def
			}
			if cfg.AdminSocket != tt.wantSocket || cfg.Auth != tt.wantAuth {
				t.Errorf("socket %q auth %q, want %q %q", cfg.AdminSocket, cfg.Auth, tt.wantSocket, tt.wantAuth)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		env     map[string]string
		flags   []string
		wantErr string
	}{
		{name: "unknown key", file: "format: json\ncolour: blue\n", wantErr: `line 2: unknown key "colour": the known keys are admin_socket, auth, ca_pin, debug, format, identity`},
		{name: "nested value", file: "auth:\n  host: x\n", wantErr: "line 1: auth must be a single value"},
		{name: "not a mapping", file: "- a\n- b\n", wantErr: "must be a mapping of keys"},
		{name: "bad yaml", file: "format: [json\n", wantErr: "is not valid YAML"},
		{name: "debug not a boolean in file", file: "debug: sometimes\n", wantErr: `line 1: debug is "sometimes": set it to true or false`},
		{name: "debug not a boolean in env", env: map[string]string{"WIDCTL_DEBUG": "sometimes"}, wantErr: `WIDCTL_DEBUG="sometimes" is not a boolean`},
		{name: "bad format in file", file: "format: xml\n", wantErr: `unknown output format "xml": use text, json or yaml`},
		{name: "bad format flag", flags: []string{"--format", "table"}, wantErr: `unknown output format "table"`},
		{name: "bad pin", flags: []string{"--auth", "a:1", "--ca-pin", "sha256:zz"}, wantErr: `CA pin "sha256:zz" is malformed`},
		{name: "missing explicit config", flags: []string{"--config", "/nonexistent/widctl.yaml"}, wantErr: "config file /nonexistent/widctl.yaml does not exist: check --config or WIDCTL_CONFIG"},
		{name: "missing config from env", env: map[string]string{"WIDCTL_CONFIG": "/nonexistent/w.yaml"}, wantErr: "config file /nonexistent/w.yaml does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := configEnv(t)
			if tt.file != "" {
				writeConfig(t, dir, tt.file)
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := load(t, tt.flags...)
			assertInputError(t, err, tt.wantErr)
		})
	}
}

func TestConfigFileFromFlagAndHome(t *testing.T) {
	dir := configEnv(t)
	other := filepath.Join(dir, "other.yaml")
	if err := os.WriteFile(other, []byte("identity: ~/ids/bot\nformat: yaml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := load(t, "--config", other)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != other || cfg.Format != output.YAML || cfg.Identity != filepath.Join(dir, "ids", "bot") {
		t.Errorf("got file %q format %q identity %q", cfg.File, cfg.Format, cfg.Identity)
	}
	// An absent default config file is fine: widctl works without one.
	cfg, err = load(t)
	if err != nil || cfg.File != "" {
		t.Errorf("without a config file: %+v, %v", cfg, err)
	}
}

func assertInputError(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != ExitBadInput {
		t.Errorf("error %v is not bad input (exit 2)", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err.Error(), want)
	}
	if strings.Count(strings.TrimSpace(err.Error()), "\n") > 0 {
		t.Errorf("error is more than one line: %q", err.Error())
	}
}

// widctl's config file and logins live in one dir, $XDG_CONFIG_HOME/widctl
// or ~/.config/widctl, which docs/ and the man pages name.
func TestConfigDir(t *testing.T) {
	x := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", x)
	if got, want := ConfigDir(), filepath.Join(x, "widctl"); got != want {
		t.Errorf("with XDG_CONFIG_HOME: %s, want %s", got, want)
	}
	if got, want := DefaultConfigFile(), filepath.Join(x, "widctl", "config.yaml"); got != want {
		t.Errorf("config file %s, want %s", got, want)
	}
	home := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("HOME", home)
	if got, want := ConfigDir(), filepath.Join(home, ".config", "widctl"); got != want {
		t.Errorf("without XDG_CONFIG_HOME: %s, want %s", got, want)
	}
}
