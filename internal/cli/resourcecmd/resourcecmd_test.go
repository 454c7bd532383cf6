package resourcecmd

import (
	"bytes"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/cli/clitest"
)

func TestGetTarget(t *testing.T) {
	for arg, want := range map[string][2]string{
		"roles": {"role", ""}, "role/web": {"role", "web"}, "wi/api": {"workload_identity", "api"}, "tokens": {"token", ""},
	} {
		f, _ := clitest.Factory(t)
		var got *GetOptions
		cmd := NewCmdGet(f, func(o *GetOptions) error { got = o; return nil })
		cmd.SetArgs([]string{arg})
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
		if got.Kind != want[0] || got.Name != want[1] {
			t.Errorf("%s: kind %q name %q, want %q", arg, got.Kind, got.Name, want)
		}
	}
}

func TestReadResourcesFromStdin(t *testing.T) {
	in := bytes.NewBufferString("kind: user\nversion: v1\nmetadata: {name: alice}\nspec: {roles: [dev]}\n---\nkind: bot\nversion: v1\nmetadata: {name: ci}\nspec: {roles: [dev]}\n")
	rs, err := readResources(in, "-")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].GetKind() != "user" || rs[1].GetMetadata().Name != "ci" {
		t.Errorf("read %d resources", len(rs))
	}
	_, err = readResources(bytes.NewBufferString("kind: user\nversion: v1\nmetadata: {name: alice}\nspec: {roles: [dev], admin: true}\n"), "-")
	if err == nil || !strings.HasPrefix(err.Error(), "stdin: ") || !strings.Contains(err.Error(), `"admin"`) {
		t.Errorf("unknown key: %v", err)
	}
}
