package anchor_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/core/anchor"
	"github.com/wid-project/wid/internal/core/ca"
)

func kek(t *testing.T, dir string) *ca.KEK {
	t.Helper()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	k, err := ca.LoadOrCreateKEK(dir)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestWriteReadAndSealing(t *testing.T) {
	dir := t.TempDir()
	k := kek(t, dir)
	a := anchor.Anchor{TrustDomain: "example.org", CAKeys: map[string][]string{"spiffe": {"a1"}}, AuditSeq: 9, AuditHash: "h9"}
	if err := anchor.Write(dir, k, a); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(anchor.Path(dir))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("anchor file: %v, mode %v", err, fi.Mode())
	}
	got, err := anchor.Read(dir, k)
	if err != nil || got.TrustDomain != "example.org" || got.AuditSeq != 9 || got.CAKeys["spiffe"][0] != "a1" {
		t.Fatalf("read back %+v, %v", got, err)
	}
	// Another data dir's key does not open it: keys/ came from two backups.
	other := kek(t, t.TempDir())
	if _, err := anchor.Read(dir, other); err == nil || !strings.Contains(err.Error(), "one backup") {
		t.Fatalf("opened with another key: %v", err)
	}
	b, _ := os.ReadFile(anchor.Path(dir))
	b[len(b)-1] ^= 1
	os.WriteFile(anchor.Path(dir), b, 0o600)
	if _, err := anchor.Read(dir, k); err == nil {
		t.Fatal("an altered anchor was read")
	}
	if _, err := anchor.Read(filepath.Join(dir, "none"), k); !os.IsNotExist(err) {
		t.Fatalf("missing anchor: %v", err)
	}
}

func TestCheck(t *testing.T) {
	hashes := map[int64]string{5: "h5", 9: "h9", 12: "h12"}
	hashAt := func(seq int64) (string, bool, error) { h, ok := hashes[seq]; return h, ok, nil }
	a := anchor.Anchor{TrustDomain: "example.org", CAKeys: map[string][]string{"spiffe": {"old", "new"}, "host": {"h1"}}, AuditSeq: 9, AuditHash: "h9"}
	state := func(mod func(*anchor.State)) anchor.State {
		s := anchor.State{TrustDomain: "example.org", CAKeys: map[string][]string{"spiffe": {"new"}, "host": {"h1"}}, AuditSeq: 12, HashAt: hashAt}
		if mod != nil {
			mod(&s)
		}
		return s
	}
	cases := []struct {
		name string
		s    anchor.State
		want string // "" agrees
	}{
		{"chain extends the anchored head, one rotation step on", state(nil), ""},
		{"exactly at the head", state(func(s *anchor.State) { s.AuditSeq = 9 }), ""},
		{"behind the head", state(func(s *anchor.State) { s.AuditSeq = 5 }), "ends at event 5 but the anchor recorded event 9"},
		{"history replaced", state(func(s *anchor.State) {
			s.HashAt = func(int64) (string, bool, error) { return "other", true, nil }
		}), "is not the one the anchor recorded"},
		{"event gone", state(func(s *anchor.State) {
			s.HashAt = func(int64) (string, bool, error) { return "", false, nil }
		}), "has no event 9"},
		{"CAs made anew", state(func(s *anchor.State) { s.CAKeys["spiffe"] = []string{"fresh"} }), "were replaced"},
		{"CA gone", state(func(s *anchor.State) { delete(s.CAKeys, "host") }), "no host CA"},
		{"other trust domain", state(func(s *anchor.State) { s.TrustDomain = "evil.org" }), `"evil.org"`},
		// Another replica rotated the CA right through while this one was down.
		{"CA rotated after the anchored event, as the log records", state(func(s *anchor.State) {
			s.CAKeys["spiffe"] = []string{"fresh"}
			s.RotatedAfter = func(seq int64) (map[string]bool, error) { return map[string]bool{"spiffe": seq == 9}, nil }
		}), ""},
		{"log records another CA's rotation", state(func(s *anchor.State) {
			s.CAKeys["spiffe"] = []string{"fresh"}
			s.RotatedAfter = func(int64) (map[string]bool, error) { return map[string]bool{"host": true}, nil }
		}), "were replaced"},
		{"log after the anchored event broken", state(func(s *anchor.State) {
			s.CAKeys["spiffe"] = []string{"fresh"}
			s.RotatedAfter = func(int64) (map[string]bool, error) { return nil, errors.New("event 11 does not follow event 10") }
		}), "event 11 does not follow"},
		{"CA rotated per the log, but the anchored event is gone", state(func(s *anchor.State) {
			s.CAKeys["spiffe"] = []string{"fresh"}
			s.HashAt = func(int64) (string, bool, error) { return "", false, nil }
			s.RotatedAfter = func(int64) (map[string]bool, error) { return map[string]bool{"spiffe": true}, nil }
		}), "were replaced"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := a.Check(tc.s)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
