// Package clitest helps test widctl commands: factories on test streams,
// a client factory that fails the test if a command reaches for the network,
// golden files, and Widctl, the one runner of widctl in-process against a
// real auth service. Only tests import it.
package clitest

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/core/client"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// Streams are the buffers behind a test factory.
type Streams struct {
	In, Out, ErrOut *bytes.Buffer
}

// Factory returns a factory on test streams whose Client fails the test:
// the command under test must not call the auth service.
func Factory(t testing.TB) (*cmdutil.Factory, *Streams) {
	t.Helper()
	ios, in, out, errOut := iostreams.Test()
	f := cmdutil.NewFactory(ios)
	f.Client = NoClient(t)
	return f, &Streams{In: in, Out: out, ErrOut: errOut}
}

// ErrClientCalled is what NoClient returns after failing the test.
var ErrClientCalled = errors.New("the command called the auth service")

// NoClient is a client factory that fails the test when called.
func NoClient(t testing.TB) func(context.Context) (*client.Client, error) {
	return func(context.Context) (*client.Client, error) {
		t.Helper()
		t.Errorf("the command called the auth service; it should have stopped before")
		return nil, ErrClientCalled
	}
}

// Isolate points every place widctl reads settings from at an empty temp
// dir, so that the developer's own config and environment do not leak in.
func Isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	// As root the default data dir is /var/lib/wid, which XDG_DATA_HOME
	// does not move: a trust domain running on the machine would answer
	// on its admin socket in place of the test's.
	t.Setenv("WID_DATA_DIR", filepath.Join(dir, "data", "wid"))
	for _, k := range []string{"WIDCTL_ADMIN_SOCKET", "WIDCTL_AUTH", "WIDCTL_CA_PIN", "WIDCTL_IDENTITY", "WIDCTL_FORMAT", "WIDCTL_DEBUG", "WIDCTL_CONFIG", "WID_DEBUG"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	return dir
}

// Golden compares got with testdata/<test name>.golden; -update rewrites it.
func Golden(t *testing.T, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", filepath.FromSlash(t.Name())+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run go test -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run go test -update if the change is intended)\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}
