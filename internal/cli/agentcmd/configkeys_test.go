package agentcmd

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The config file takes the flags' names in snake case, as docs/start.md
// says: server_name and sds_spiffe_validator too, beside server_names and
// sds.spiffe_validator; flags still win over the file.
func TestConfigTakesFlagNames(t *testing.T) {
	o, err := loadConfig(t, "server_name: [auth.example.com, 10.0.0.7]\nsds_spiffe_validator: true\n")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.ServerNames, []string{"auth.example.com", "10.0.0.7"}) || !o.SDS.SPIFFEValidator {
		t.Fatalf("server names %q, spiffe validator %v", o.ServerNames, o.SDS.SPIFFEValidator)
	}
	o, err = loadConfig(t, "server_name: auth.example.com\n")
	if err != nil || !slices.Equal(o.ServerNames, []string{"auth.example.com"}) {
		t.Fatalf("one server_name: %q, %v", o.ServerNames, err)
	}

	f := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(f, []byte("server_name: [from-file.example.com]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := newStartCmd()
	if err := cmd.Flags().Parse([]string{"--server-name", "from-flag.example.com"}); err != nil {
		t.Fatal(err)
	}
	if o, err := loadStartOptions(cmd.Flags(), f); err != nil || !slices.Equal(o.ServerNames, []string{"from-flag.example.com"}) {
		t.Fatalf("flag over file: %q, %v", o.ServerNames, err)
	}

	_, err = loadConfig(t, "server_name: [a.example.com]\nserver_names: [b.example.com]\n")
	if err == nil || !strings.Contains(err.Error(), `both "server_name" and "server_names"`) {
		t.Fatalf("both spellings: %v, want a refusal naming both", err)
	}
}
