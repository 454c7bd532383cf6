package login

import (
	"strings"
	"testing"
)

// A new password the policy refuses is refused after it is typed once, not
// after it is typed twice.
func TestShortPasswordRefusedAtOnce(t *testing.T) {
	var prompts []string
	opts := &Options{User: "alice", Invite: "invite", ReadPassword: func(p string) (string, error) {
		prompts = append(prompts, p)
		return "short", nil
	}}
	_, err := opts.password()
	if err == nil || !strings.Contains(err.Error(), "too short") {
		t.Fatalf("err = %v, want the password refused as too short", err)
	}
	if len(prompts) != 1 || !strings.Contains(prompts[0], "at least 12 characters") {
		t.Errorf("prompts %q, want one", prompts)
	}
}
