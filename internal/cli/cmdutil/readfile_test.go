package cmdutil

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/cli/iostreams"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small.pem")
	big := filepath.Join(dir, "big.pem")
	if err := os.WriteFile(small, []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, []byte(strings.Repeat("x", 11)), 0o600); err != nil {
		t.Fatal(err)
	}
	ios, in, _, _ := iostreams.Test()
	in.WriteString("from stdin")

	if b, err := ReadFile(ios, "--cert", small, 10); err != nil || string(b) != "abc" {
		t.Fatalf("ReadFile(small) = %q, %v", b, err)
	}
	if b, err := ReadFile(ios, "--cert", "-", 10); err != nil || string(b) != "from stdin" {
		t.Fatalf("ReadFile(-) = %q, %v", b, err)
	}
	for name, c := range map[string]struct{ path, want string }{
		"missing":    {filepath.Join(dir, "nope.pem"), "--cert " + filepath.Join(dir, "nope.pem") + " does not exist: check the path"},
		"over limit": {big, "--cert " + big + " is over the limit of 10 bytes"},
		"directory":  {dir, "cannot read --cert " + dir},
	} {
		_, err := ReadFile(ios, "--cert", c.path, 10)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", name, err, c.want)
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != ExitBadInput {
			t.Errorf("%s: %v is not an input error (exit 2)", name, err)
		}
	}
}
