package user

import (
	"reflect"
	"testing"

	"github.com/wid-project/wid/internal/cli/clitest"
)

func TestCreateAndUpdateParseRoles(t *testing.T) {
	f, _ := clitest.Factory(t)
	var add *CreateOptions
	cmd := NewCmdCreate(f, func(o *CreateOptions) error { add = o; return nil })
	cmd.SetArgs([]string{"alice", "--roles", "dev,editor"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	u, err := add.User()
	if err != nil {
		t.Fatal(err)
	}
	if u.Metadata.Name != "alice" || !reflect.DeepEqual(u.Spec.Roles, []string{"dev", "editor"}) {
		t.Errorf("user = %+v", u)
	}

	var upd *UpdateOptions
	cmd = NewCmdUpdate(f, func(o *UpdateOptions) error { upd = o; return nil })
	cmd.SetArgs([]string{"alice", "--roles", "dev"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if upd.Name != "alice" || !reflect.DeepEqual(upd.Roles, []string{"dev"}) {
		t.Errorf("update options = %+v", upd)
	}
}

func TestRolesMayNotRepeat(t *testing.T) {
	if _, err := newUser("alice", []string{"dev", "dev"}); err == nil {
		t.Error("a user holding a role twice was accepted")
	}
}
