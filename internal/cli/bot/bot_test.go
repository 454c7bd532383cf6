package bot

import (
	"reflect"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/cli/clitest"
	"github.com/wid-project/wid/internal/core/resource"
)

func TestCreateParsesFlags(t *testing.T) {
	f, _ := clitest.Factory(t)
	var got *CreateOptions
	cmd := NewCmdCreate(f, func(o *CreateOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"ci", "--roles", "deploy, web", "--roles", "audit", "--token-ttl", "10m"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.Name != "ci" || got.TokenTTL != resource.Duration(10*time.Minute) {
		t.Errorf("options = %+v", got)
	}
	b, err := got.Bot()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"deploy", "web", "audit"}; !reflect.DeepEqual(b.Spec.Roles, want) {
		t.Errorf("roles = %q, want %q", b.Spec.Roles, want)
	}
}
