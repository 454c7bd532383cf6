package pgtest

import (
	"os"
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
