package principal

import (
	"reflect"
	"strings"
	"testing"
)

func TestRolesTrimsAndRefusesNone(t *testing.T) {
	got, err := Roles("bot", "ci", []string{" deploy", "", "web "})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"deploy", "web"}; !reflect.DeepEqual(got, want) {
		t.Errorf("roles = %q, want %q", got, want)
	}
	_, err = Roles("user", "alice", []string{" ", ""})
	if err == nil || !strings.Contains(err.Error(), `user "alice" needs roles: pass --roles`) {
		t.Errorf("no roles: err = %v, want one naming the user and --roles", err)
	}
}
