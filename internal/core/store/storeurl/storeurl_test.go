package storeurl

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/core/store"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		raw, kind, path, str string
	}{
		{"", "sqlite", "/data/wid.db", "sqlite:///data/wid.db"},
		{"sqlite:///var/lib/wid/state.db", "sqlite", "/var/lib/wid/state.db", "sqlite:///var/lib/wid/state.db"},
		{"sqlite://rel/wid.db", "sqlite", "rel/wid.db", "sqlite://rel/wid.db"},
		{"postgres://wid:hunter2@db:5432/wid?sslmode=verify-full", "postgres", "", "postgres://wid:xxxxx@db:5432/wid?sslmode=verify-full"},
		{"postgresql://wid@db/wid", "postgres", "", "postgresql://wid@db/wid"},
	} {
		s, err := Parse(c.raw, "/data")
		if err != nil {
			t.Errorf("Parse(%q): %v", c.raw, err)
			continue
		}
		if s.Kind != c.kind || s.Path != c.path || s.String() != c.str {
			t.Errorf("Parse(%q) = %s %q %q, want %s %q %q", c.raw, s.Kind, s.Path, s.String(), c.kind, c.path, c.str)
		}
	}
	for raw, want := range map[string]string{
		"mysql://root:hunter2@db/wid": `scheme "mysql" is unknown`,
		"db:5432":                     "takes a URL",
		"hunter2":                     "takes a URL",
		"sqlite://":                   "needs a file path",
	} {
		_, err := Parse(raw, "/data")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q): %v, want %q", raw, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Parse(%q): error %q holds the password", raw, err)
		}
	}
}

func TestOpenSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.db")
	s, err := Parse("sqlite://"+path, "/unused")
	if err != nil {
		t.Fatal(err)
	}
	db, err := s.Open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.PutMetaOnce(t.Context(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the store is not at the URL's path: %v", err)
	}
	if _, err := db.GetMeta(t.Context(), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetMeta of a missing key: %v", err)
	}
}
