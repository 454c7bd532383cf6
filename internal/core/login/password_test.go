package login

import (
	"strings"
	"testing"
)

func TestPasswordPolicy(t *testing.T) {
	tests := []struct {
		user, password, want string
	}{
		{"alice", "correct horse battery", ""},
		{"alice", "short", "at least 12 characters"},
		{"alice", "ééééééééééé", "at least 12 characters"}, // 11 runes, 22 bytes
		{"alice", "xxALICE-is-great", "contains the user name"},
		{"alice", "            ", "only blanks"},
		{"alice", strings.Repeat("x", MaxPasswordLength+1), "too long"},
	}
	for _, tt := range tests {
		err := CheckPasswordPolicy(tt.user, tt.password)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("CheckPasswordPolicy(%q, %.20q) = %v, want %q", tt.user, tt.password, err, tt.want)
		}
	}
}

func TestPasswordHash(t *testing.T) {
	h, err := HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=1,p=4$") {
		t.Fatalf("hash %q does not carry its parameters", h)
	}
	h2, _ := HashPassword("correct horse battery")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: no random salt")
	}
	if ok, err := CheckPassword(h, "correct horse battery"); !ok || err != nil {
		t.Fatalf("right password: %v %v", ok, err)
	}
	if ok, err := CheckPassword(h, "correct horse batterx"); ok || err != nil {
		t.Fatalf("wrong password: %v %v", ok, err)
	}
	// The dummy hash answers unknown users in the time of a real check: it
	// must parse, carry today's parameters and match nothing.
	if ok, err := CheckPassword(DummyHash(), "wid-dummy-password-never-matches"); ok || err != nil {
		t.Fatalf("dummy hash: %v %v; want a well-formed hash that does not match", ok, err)
	}
	if !strings.HasPrefix(DummyHash(), h[:strings.LastIndex(h[:strings.LastIndex(h, "$")], "$")+1]) {
		t.Fatalf("dummy hash %q does not carry the parameters of %q", DummyHash(), h)
	}
	parts := strings.Split(h, "$")
	for _, bad := range []string{
		"", "$bcrypt$x", strings.Replace(h, "v=19", "v=16", 1),
		strings.Replace(h, "m=65536", "m=99999999", 1), strings.Replace(h, "t=1", "t=0", 1),
		strings.Join(append(parts[:5:5], "!!"), "$"),
	} {
		if ok, err := CheckPassword(bad, "correct horse battery"); ok || err == nil {
			t.Errorf("CheckPassword(%q) = %v, %v; want an error", bad, ok, err)
		}
	}
}

// BenchmarkPasswordCheck is the argon2id cost a login pays.
func BenchmarkPasswordCheck(b *testing.B) {
	h, _ := HashPassword("correct horse battery")
	for b.Loop() {
		CheckPassword(h, "correct horse battery")
	}
}
