package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// The "pass --force" that role create, bot create and user create advise on a name
// that exists is a flag each of them takes, and it replaces what was there.
func TestForceReplaces(t *testing.T) {
	w := start(t)
	w.OK("role", "create", "web", "--spiffe-path", "/svc/web")
	w.OK("role", "create", "api", "--spiffe-path", "/svc/api")

	cases := []struct {
		name        string
		first, then []string
		get         []string
		want        string
	}{
		{"role create", []string{"role", "create", "svc", "--spiffe-path", "/svc/a"}, []string{"role", "create", "svc", "--spiffe-path", "/svc/b"},
			[]string{"get", "role/svc", "--format", "yaml"}, "/svc/b"},
		{"bot create", []string{"bot", "create", "robot", "--roles", "web"}, []string{"bot", "create", "robot", "--roles", "api"},
			[]string{"get", "bot/robot", "--format", "yaml"}, "- api"},
		{"user create", []string{"user", "create", "carol", "--roles", "web"}, []string{"user", "create", "carol", "--roles", "api"},
			[]string{"get", "user/carol", "--format", "yaml"}, "- api"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			first := w.OK(tc.first...)
			code, _, errOut := w.Run(tc.then...)
			if code == 0 || !strings.Contains(errOut, "already exists") || !strings.Contains(errOut, "--force") {
				t.Fatalf("%s on an existing name: exit %d, %q; want a refusal advising --force", tc.name, code, errOut)
			}
			again := w.OK(append(tc.then, "--force")...)
			if got := w.OK(tc.get...); !strings.Contains(got, tc.want) {
				t.Errorf("after --force, %s:\n%s\nwant %q", strings.Join(tc.get, " "), got, tc.want)
			}
			if tc.name != "role create" {
				// A replaced bot gets a new join token, a replaced user a new invite.
				if !strings.HasPrefix(again, "Replaced ") || again == first {
					t.Errorf("--force printed:\n%s", again)
				}
			}
		})
	}

	// The replaced user's first invite no longer works; the new one is the invite.
	var inv struct {
		Invite string `json:"invite"`
	}
	if err := json.Unmarshal([]byte(w.OK("user", "create", "dave", "--roles", "web", "--format", "json")), &inv); err != nil {
		t.Fatal(err)
	}
	var inv2 struct {
		Invite string `json:"invite"`
	}
	if err := json.Unmarshal([]byte(w.OK("user", "create", "dave", "--roles", "api", "--force", "--format", "json")), &inv2); err != nil {
		t.Fatal(err)
	}
	if inv.Invite == "" || inv.Invite == inv2.Invite {
		t.Errorf("invites %q then %q: want a new one", inv.Invite, inv2.Invite)
	}
}

// role rm of a role a bot holds says to take it away first: bot update does.
func TestBotUpdateFreesARole(t *testing.T) {
	w := start(t)
	w.OK("role", "create", "old", "--spiffe-path", "/svc/old")
	w.OK("role", "create", "new", "--spiffe-path", "/svc/new")
	w.OK("bot", "create", "robot", "--roles", "old")
	code, _, errOut := w.Run("role", "rm", "old")
	if code == 0 || !strings.Contains(errOut, "robot") || !strings.Contains(errOut, "widctl bot update") {
		t.Fatalf("role rm of a held role: exit %d, %q; want a refusal naming the bot and widctl bot update", code, errOut)
	}
	if got := w.OK("bot", "update", "robot", "--roles", "new"); got != "bot robot now holds new\n" {
		t.Errorf("bot update printed %q", got)
	}
	w.OK("role", "rm", "old")
	if got := w.OK("get", "bot/robot", "--format", "yaml"); !strings.Contains(got, "- new") || strings.Contains(got, "- old") {
		t.Errorf("bot after update:\n%s", got)
	}
	if code, _, errOut := w.Run("bot", "update", "nobody", "--roles", "new"); code == 0 || !strings.Contains(errOut, "does not exist") {
		t.Errorf("bot update of a missing bot: exit %d, %q", code, errOut)
	}
}
