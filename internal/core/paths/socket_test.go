package paths

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newSocket(dir string) Socket {
	return Socket{Path: filepath.Join(dir, "workload.sock"), Name: "workload socket", Flag: "--workload-socket"}
}

// TestSocketPrepareDirectory: a socket directory that another user could
// write to, or that is a link, is refused with a sentence that says why and
// names the flag; a fresh one is created and accepted.
func TestSocketPrepareDirectory(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, dir string) // dir does not exist yet
		want  string                         // "" means accepted
		root  bool
	}{
		{name: "created", setup: func(*testing.T, string) {}},
		{name: "own 0755", setup: func(t *testing.T, dir string) { mkdir(t, dir, 0o755) }},
		{name: "own 0700", setup: func(t *testing.T, dir string) { mkdir(t, dir, 0o700) }},
		{name: "world-writable", setup: func(t *testing.T, dir string) { mkdir(t, dir, 0o777) }, want: "has mode 0777, so other users could replace the socket"},
		{name: "group-writable", setup: func(t *testing.T, dir string) { mkdir(t, dir, 0o775) }, want: "has mode 0775"},
		{name: "sticky world-writable", setup: func(t *testing.T, dir string) { mkdir(t, dir, 0o777|os.ModeSticky) }, want: "has mode 0777"},
		{name: "symlink", setup: func(t *testing.T, dir string) {
			target := dir + "-target"
			mkdir(t, target, 0o755)
			if err := os.Symlink(target, dir); err != nil {
				t.Fatal(err)
			}
		}, want: "is a symbolic link"},
		{name: "dangling symlink", setup: func(t *testing.T, dir string) {
			if err := os.Symlink(dir+"-nowhere", dir); err != nil {
				t.Fatal(err)
			}
		}, want: "creating the workload socket's directory"},
		{name: "file", setup: func(t *testing.T, dir string) {
			if err := os.WriteFile(dir, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, want: "creating the workload socket's directory"},
		{name: "another uid", root: true, setup: func(t *testing.T, dir string) {
			mkdir(t, dir, 0o755)
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, want: "belongs to uid 65534, not to uid 0 that runs widagent"},
		{name: "another uid 0777", root: true, setup: func(t *testing.T, dir string) {
			mkdir(t, dir, 0o777)
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, want: "belongs to uid 65534"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root && os.Geteuid() != 0 {
				t.Skip("chown to another uid needs root")
			}
			dir := filepath.Join(t.TempDir(), "wid-1000")
			tt.setup(t, dir)
			s := newSocket(dir)
			err := s.Prepare(0o755)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Prepare: %v", err)
				}
				fi, err := os.Lstat(dir)
				if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 {
					t.Fatalf("directory after Prepare: %v, %v", fi, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Prepare accepted the directory, want an error saying %q", tt.want)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || !strings.Contains(msg, "--workload-socket") || strings.Count(msg, ". ") > 0 {
				t.Fatalf("Prepare: %q, want one sentence saying %q and naming --workload-socket", msg, tt.want)
			}
		})
	}
}

// TestSocketPrepareStale: a socket nobody answers on is replaced; a live
// one and a file that is not a socket are left alone and refused.
func TestSocketPrepareStale(t *testing.T) {
	dir := t.TempDir()
	s := newSocket(dir)

	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.Path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Prepare(0o755); err == nil || !strings.Contains(err.Error(), "another process serves the workload socket") {
		t.Fatalf("Prepare with a live socket: %v, want a refusal", err)
	}
	lis.SetUnlinkOnClose(false)
	lis.Close()
	if _, err := os.Lstat(s.Path); err != nil {
		t.Fatalf("the dead socket should still be there: %v", err)
	}
	if err := s.Prepare(0o755); err != nil {
		t.Fatalf("Prepare with a dead socket: %v", err)
	}
	if _, err := os.Lstat(s.Path); !os.IsNotExist(err) {
		t.Fatalf("the dead socket was not removed: %v", err)
	}

	if err := os.WriteFile(s.Path, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Prepare(0o755); err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
		t.Fatalf("Prepare with a regular file: %v, want a refusal", err)
	}
	if b, err := os.ReadFile(s.Path); err != nil || string(b) != "keep" {
		t.Fatalf("the regular file was touched: %q, %v", b, err)
	}
}

func mkdir(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Chmod, not Mkdir's mode: the umask would clear the bits under test.
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
}

// TestSocketAnswers: only a socket someone listens on answers; a socket left
// by a process that is gone, a plain file and nothing at all do not.
func TestSocketAnswers(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	stale := filepath.Join(dir, "stale.sock")
	ls, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ls.(*net.UnixListener).SetUnlinkOnClose(false)
	ls.Close()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{live: true, stale: false, file: false, filepath.Join(dir, "none"): false} {
		if got := SocketAnswers(path); got != want {
			t.Errorf("SocketAnswers(%s) = %v, want %v", filepath.Base(path), got, want)
		}
	}
}
