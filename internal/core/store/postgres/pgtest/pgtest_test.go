package pgtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestServerIsPrivateAndStops: the server listens on loopback only, keeps
// its socket in its own dir, runs as the postgres user under root, and
// Stop ends it and removes the dir.
func TestServerIsPrivateAndStops(t *testing.T) {
	ctx := t.Context()
	srv, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	conn, err := pgx.Connect(ctx, srv.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	var listen, sockets, fsync string
	if err := conn.QueryRow(ctx, `SELECT current_setting('listen_addresses'), current_setting('unix_socket_directories'), current_setting('fsync')`).Scan(&listen, &sockets, &fsync); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if listen != "127.0.0.1" || sockets != srv.dir || fsync != "off" {
		t.Errorf("listen_addresses %q, unix_socket_directories %q, fsync %s; want 127.0.0.1, %q, off", listen, sockets, fsync, srv.dir)
	}
	if os.Geteuid() == 0 {
		cred, err := credential()
		if err != nil {
			t.Fatal(err)
		}
		status, err := os.ReadFile("/proc/" + strconv.Itoa(srv.cmd.Process.Pid) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		want := "Uid:\t" + strconv.Itoa(int(cred.Uid)) + "\t"
		if !strings.Contains(string(status), want) {
			t.Errorf("the server does not run as the postgres user:\n%s", status)
		}
	}
	// A fresh database per test, and dropping it again.
	name, u, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.DropDatabase(ctx, name); err != nil {
		t.Fatalf("dropping a database with a connection left: %v", err)
	}
	c2.Close(ctx)

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.exited:
	default:
		t.Fatal("the server still runs after Stop")
	}
	if _, err := os.Stat(srv.dir); !os.IsNotExist(err) {
		t.Fatalf("the server's dir is still there: %v", err)
	}
}

// TestBinariesAreFoundNotInstalled: initdb and postgres come from PATH or
// the newest /usr/lib/postgresql/N/bin; when they are in neither, the error
// is one sentence naming scripts/deps.sh, and nothing is installed.
func TestBinariesAreFoundNotInstalled(t *testing.T) {
	root := t.TempDir()
	t.Setenv("PATH", filepath.Join(root, "empty"))
	dirs := filepath.Join(root, "*", "bin")

	_, _, err := binaries(dirs)
	if err == nil || !strings.Contains(err.Error(), "run scripts/deps.sh") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("no PostgreSQL: err = %v; want one sentence naming scripts/deps.sh", err)
	}

	for _, v := range []string{"9", "15", "13"} {
		bin := filepath.Join(root, v, "bin")
		if err := os.MkdirAll(bin, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"initdb", "postgres"} {
			if err := os.WriteFile(filepath.Join(bin, name), nil, 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	initdb, postgres, err := binaries(dirs)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "15", "bin"); filepath.Dir(initdb) != want || filepath.Dir(postgres) != want {
		t.Errorf("found %s and %s, want the newest version's, in %s", initdb, postgres, want)
	}

	// On PATH wins over the version dirs.
	t.Setenv("PATH", filepath.Join(root, "9", "bin"))
	if initdb, _, err := binaries(dirs); err != nil || filepath.Dir(initdb) != filepath.Join(root, "9", "bin") {
		t.Errorf("with initdb on PATH: %s, %v", initdb, err)
	}
}
