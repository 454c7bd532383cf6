// Package pgtest runs a private PostgreSQL server for tests and benchmarks:
// initdb and postgres in a temp dir, on a free loopback port, with the
// server's unix socket in that dir too, so that nothing outside the test
// can reach it or be reached by it. PostgreSQL refuses to run as root, so
// under root the server runs as the postgres user.
//
// Tests share one server per test binary and get a fresh database each
// (Database); TestMain stops the server with Main.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// startTimeout bounds initdb plus the server becoming ready. Both are
// quick on an idle machine, but tests run on loaded ones.
const startTimeout = 3 * time.Minute

// Options tune the server.
type Options struct {
	// Durable keeps fsync on, as in production: for benchmarks. Tests run
	// without it, which is faster and loses nothing they look at.
	Durable bool
}

// Server is a running private PostgreSQL.
type Server struct {
	dir      string
	port     int
	password string
	cmd      *exec.Cmd
	exited   chan struct{}
	logPath  string
	admin    *pgxpool.Pool
	next     atomic.Int64
	stopOnce sync.Once
	stopErr  error
}

// Start runs initdb and postgres in a new temp dir and waits until the
// server accepts logins.
func Start(ctx context.Context, opts Options) (_ *Server, err error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	initdb, postgres, err := binaries(postgresDirs)
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "wid-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("creating the PostgreSQL test dir: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	pw := make([]byte, 16)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	s := &Server{dir: dir, password: hex.EncodeToString(pw), logPath: filepath.Join(dir, "postgres.log")}
	pwFile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwFile, []byte(s.password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if cred != nil {
		for _, p := range []string{dir, pwFile} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, fmt.Errorf("handing %s to the postgres user: %w", p, err)
			}
		}
	}

	// Logins over TCP need the password, as a real deployment's would;
	// the unix socket in the private dir trusts its (private) users.
	cmd := exec.CommandContext(ctx, initdb, "-D", filepath.Join(dir, "data"), "-U", "postgres",
		"--pwfile", pwFile, "--auth-local=trust", "--auth-host=scram-sha-256",
		"-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("running initdb: %w\n%s", err, out)
	}
	if err := os.Remove(pwFile); err != nil {
		return nil, err
	}

	// A free port can be taken by someone else before postgres binds it:
	// try a few.
	for attempt := 1; ; attempt++ {
		err := s.start(ctx, postgres, cred, opts)
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || attempt == 5 {
			return nil, err
		}
	}
	if s.admin, err = pgxpool.New(ctx, s.URL("postgres")); err != nil {
		s.Stop()
		return nil, fmt.Errorf("connecting to the test PostgreSQL: %w", err)
	}
	return s, nil
}

var errPortTaken = errors.New("port taken")

func (s *Server) start(ctx context.Context, postgres string, cred *syscall.Credential, opts Options) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	s.port = port
	logFile, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	args := []string{"-D", filepath.Join(s.dir, "data"), "-p", strconv.Itoa(port), "-k", s.dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "shared_buffers=64MB"}
	if !opts.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	// Not CommandContext: the server outlives Start's context.
	cmd := exec.Command(postgres, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: cred,
		Setpgid:    true,
		// A test binary that dies (a timeout, kill -9) takes its server
		// with it: SIGQUIT is PostgreSQL's immediate shutdown.
		Pdeathsig: syscall.SIGQUIT,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() { cmd.Wait(); close(s.exited) }()

	// Ready when a real login on the TCP port works, as the code under
	// test will log in.
	for {
		select {
		case <-s.exited:
			log := s.Log()
			if strings.Contains(log, "could not bind") || strings.Contains(log, "Address already in use") {
				return errPortTaken
			}
			return fmt.Errorf("postgres exited while starting:\n%s", log)
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.Connect(cctx, s.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-ctx.Done():
			s.Stop()
			return fmt.Errorf("the test PostgreSQL on port %d was not ready within %s: %v\n%s", port, startTimeout, err, s.Log())
		case <-s.exited:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// URL is the postgres:// URL of database db, over TCP with the password.
func (s *Server) URL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword("postgres", s.password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Password is the postgres user's password.
func (s *Server) Password() string { return s.password }

// Log is what the server has logged so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// CreateDatabase creates a new empty database and returns its name and URL.
func (s *Server) CreateDatabase(ctx context.Context) (name, dbURL string, err error) {
	name = fmt.Sprintf("wid_test_%d", s.next.Add(1))
	if _, err := s.admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", "", fmt.Errorf("creating test database %s: %w", name, err)
	}
	return name, s.URL(name), nil
}

// DropDatabase drops a database, closing any connection left to it.
func (s *Server) DropDatabase(ctx context.Context, name string) error {
	_, err := s.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

// Exec runs SQL in database db as the superuser, for tests that need to
// change what the code under test finds.
func (s *Server) Exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, s.URL(db))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// Stop shuts the server down (fast shutdown, then SIGKILL of its process
// group if it hangs) and removes its dir.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		if s.admin != nil {
			s.admin.Close()
		}
		if s.cmd != nil {
			_ = s.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-s.exited:
			case <-time.After(30 * time.Second):
				_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
				<-s.exited
				s.stopErr = errors.New("the test PostgreSQL did not stop within 30s of SIGINT")
			}
		}
		if err := os.RemoveAll(s.dir); err != nil && s.stopErr == nil {
			s.stopErr = err
		}
	})
	return s.stopErr
}

// postgresDirs is where Debian's postgresql-N packages put the server's
// programs.
const postgresDirs = "/usr/lib/postgresql/*/bin"

// binaries finds initdb and postgres: on PATH, or in the newest of dirs (a
// glob). It never installs them: scripts/deps.sh installs the system parts
// the tests need, and `make test` runs it first.
func binaries(dirs string) (initdb, postgres string, err error) {
	i, err1 := exec.LookPath("initdb")
	p, err2 := exec.LookPath("postgres")
	if err1 == nil && err2 == nil {
		return i, p, nil
	}
	found, _ := filepath.Glob(dirs)
	// The newest version: glob order is lexical, so sort by number.
	slices.SortFunc(found, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range found {
		i, p := filepath.Join(d, "initdb"), filepath.Join(d, "postgres")
		if isFile(i) && isFile(p) {
			return i, p, nil
		}
	}
	return "", "", fmt.Errorf("PostgreSQL's initdb and postgres are neither on PATH nor in %s: run scripts/deps.sh to install them", dirs)
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// credential is who the server runs as: the postgres user under root (the
// server refuses root), else the current user.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root and there is no postgres user to run it as: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// The test binary's shared servers, one per Options, started on first use.
var shared struct {
	mu   sync.Mutex
	srvs map[Options]*Server
	errs map[Options]error
}

// Shared returns the test binary's server, starting it on first use.
func Shared(t testing.TB) *Server {
	t.Helper()
	return SharedWith(t, Options{})
}

// SharedWith is Shared for a server with opts.
func SharedWith(t testing.TB, opts Options) *Server {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srvs == nil {
		shared.srvs, shared.errs = map[Options]*Server{}, map[Options]error{}
	}
	srv, err := shared.srvs[opts], shared.errs[opts]
	if srv == nil && err == nil {
		srv, err = Start(context.Background(), opts)
		shared.srvs[opts], shared.errs[opts] = srv, err
	}
	if err != nil {
		t.Fatalf("starting the test PostgreSQL: %v", err)
	}
	return srv
}

// Database returns the URL of a new empty database on the shared server,
// dropped when the test ends.
func Database(t testing.TB) string {
	t.Helper()
	_, u := NamedDatabase(t)
	return u
}

// NamedDatabase is Database that also returns the database's name.
func NamedDatabase(t testing.TB) (name, dbURL string) {
	t.Helper()
	srv := Shared(t)
	name, dbURL, err := srv.CreateDatabase(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.DropDatabase(context.Background(), name); err != nil {
			t.Errorf("dropping test database %s: %v", name, err)
		}
	})
	return name, dbURL
}

// Main runs the tests and then stops the shared server if they started it:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	for opts, srv := range shared.srvs {
		if srv == nil {
			continue
		}
		if err := srv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the test PostgreSQL:", err)
			if code == 0 {
				code = 1
			}
		}
		delete(shared.srvs, opts)
	}
	return code
}
