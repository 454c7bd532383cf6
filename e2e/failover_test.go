package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/wid-project/wid/internal/core/store/postgres/pgtest"
	"github.com/wid-project/wid/internal/testkit"
)

// replicaSet is several auth replicas of one trust domain on one
// PostgreSQL database, each with its own data dir and a fixed address, so
// that a replica killed can come back where the agents look for it.
type replicaSet struct {
	t     *testing.T
	store string
	td    string
	kek   string
	dirs  []string
	addrs []string
	r     []*agent
}

// startReplicas starts n replicas: the first creates the trust domain, the
// others join it with a copy of its key encryption key.
func startReplicas(t *testing.T, n int, extra ...string) *replicaSet {
	t.Helper()
	rs := &replicaSet{t: t, store: pgtest.Database(t), td: "ha.example"}
	for i := range n {
		rs.dirs = append(rs.dirs, newDataDir(t))
		rs.addrs = append(rs.addrs, testkit.ClosedAddr(t))
		rs.r = append(rs.r, nil)
		if i == 0 {
			rs.start(0, extra...)
			rs.kek = filepath.Join(t.TempDir(), "kek")
			b, err := os.ReadFile(filepath.Join(rs.dirs[0], "keys", "ca.key"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(rs.kek, b, 0o600); err != nil {
				t.Fatal(err)
			}
			continue
		}
		rs.start(i, extra...)
	}
	return rs
}

// start (re)starts replica i on its data dir and address.
func (rs *replicaSet) start(i int, extra ...string) *agent {
	rs.t.Helper()
	args := []string{"--roles", "auth", "--store", rs.store, "--auth-listen", rs.addrs[i]}
	if i == 0 {
		args = append(args, "--trust-domain", rs.td)
	} else {
		args = append(args, "--kek-file", rs.kek)
	}
	a := startAgent(rs.t, rs.dirs[i], append(args, extra...)...)
	if a.td != rs.td || a.addr != rs.addrs[i] {
		rs.t.Fatalf("replica %d serves %s at %s, want %s at %s", i, a.td, a.addr, rs.td, rs.addrs[i])
	}
	if i > 0 && a.pin != rs.r[0].pin {
		rs.t.Fatalf("replica %d has CA pin %s, replica 0 %s: not one trust domain", i, a.pin, rs.r[0].pin)
	}
	rs.r[i] = a
	return a
}

// list is the replicas' addresses as --auth takes them.
func (rs *replicaSet) list() string { return strings.Join(rs.addrs, ",") }

// startFails runs widagent start with args, which must fail with exit code
// 1 and exactly one error line starting with want; it returns that line.
func startFails(t *testing.T, want string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := newDataDir(t)
	all := append([]string{"start", "--data-dir", dir, "--auth-listen", "127.0.0.1:0", "--workload-socket", filepath.Join(dir, "workload.sock")}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "widagent"), all...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("widagent %s: %v, want exit 1\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var errLines []string
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if strings.HasPrefix(l, "error:") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 || !strings.HasPrefix(errLines[0], want) {
		t.Fatalf("error lines %q, want one starting %q\nstderr:\n%s", errLines, want, stderr.String())
	}
	return errLines[0]
}

// TestReplicasShareOneTrustDomain: a second and third replica on the
// first one's database, with a copy of its key encryption key, serve the
// same trust domain, restart as themselves, and see what the others
// write; a replica without the key, with another key, with a key file
// others can read, or with another --trust-domain refuses to start with
// one sentence.
func TestReplicasShareOneTrustDomain(t *testing.T) {
	t.Parallel()
	rs := startReplicas(t, 3)
	// Each replica's data dir anchors the shared store from now on.
	for i, dir := range rs.dirs {
		if fi, err := os.Stat(filepath.Join(dir, "keys", "anchor")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("replica %d's anchor: %v %v", i, err, fi)
		}
	}
	if _, err := os.Stat(filepath.Join(rs.dirs[1], "keys", "ca.key")); !os.IsNotExist(err) {
		t.Fatalf("a joining replica wrote a key of its own: %v", err)
	}
	// A change through one replica is read through another.
	rs.r[1].widctl("role", "create", "made-on-1", "--spiffe-path", "/svc/*").must(t)
	if out := rs.r[2].widctl("role", "ls").must(t).stdout; !strings.Contains(out, "made-on-1") {
		t.Fatalf("replica 2 does not list the role made through replica 1:\n%s", out)
	}
	// Restarted, a joined replica checks the store against its own anchor.
	rs.r[1].stop()
	rs.start(1)
	// Another replica may rotate a CA all the way through while one is
	// down: its anchor names none of the keys now in use, and it starts.
	rs.r[2].stop()
	_, seq := caState(t, rs.r[0], "spiffe")
	for _, phase := range []string{"init", "update_clients", "update_servers", "standby"} {
		rotateTo(t, rs.r[0], "spiffe", phase)
	}
	rs.start(2)
	if phase, after := caState(t, rs.r[2], "spiffe"); phase != "standby" || after <= seq {
		t.Fatalf("after a rotation made while it was down, replica 2 sees the spiffe CA in %s at sequence %d (was %d)", phase, after, seq)
	}
	for i := range rs.r {
		rs.r[i].widctl("audit", "verify").must(t)
	}
	// An agent joins through the first replica of its list that answers.
	tok := tokenFrom(t, rs.r[2].widctl("bot", "add", "joiner", "--roles", "local-agent").must(t))
	rs.r[2].widctl("workload-identity", "create", "joined", "--spiffe-id", "/svc/joined", "--rule", "workload.unix.uid="+uid).must(t)
	ag := startAgent(t, newDataDir(t), "--roles", "agent", "--auth", testkit.ClosedAddr(t)+","+rs.addrs[2], "--join-token", tok, "--ca-pin", rs.r[0].pin)
	fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if svid, err := workloadapi.FetchX509SVID(fctx, workloadapi.WithAddr("unix://"+ag.workload)); err != nil || svid.ID.String() != "spiffe://ha.example/svc/joined" {
		t.Fatalf("an agent joined past a dead replica serves %v, %v\n%s", svid, err, ag.out)
	}

	// A replica's data dir refuses a database that is not the one it
	// anchored: an empty one, as a restore to the wrong database gives.
	rs.r[1].stop()
	empty := pgtest.Database(t)
	startFails(t, "error: data dir "+rs.dirs[1]+` has the keys of trust domain "ha.example" (keys/) but its store (the database) is empty`,
		"--roles", "auth", "--data-dir", rs.dirs[1], "--store", empty, "--kek-file", rs.kek)

	wrong := filepath.Join(t.TempDir(), "wrong-kek")
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(wrong, key, 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(t.TempDir(), "open-kek")
	b, _ := os.ReadFile(rs.kek)
	if err := os.WriteFile(open, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, want string
		args       []string
	}{
		{"no key", `error: the store holds trust domain "ha.example", whose CA keys open only with the key encryption key of the replica that created it: pass --kek-file`, nil},
		{"wrong key", "error: the key encryption key " + wrong + ` does not open the CA keys of trust domain "ha.example" in the store`, []string{"--kek-file", wrong}},
		{"key readable by others", "error: key encryption key " + open + " has mode 0644, readable by other users", []string{"--kek-file", open}},
		{"missing key file", "error: the key encryption key file " + open + ".gone does not exist", []string{"--kek-file", open + ".gone"}},
		{"other trust domain", `error: the store holds trust domain "ha.example", not "other.example"`, []string{"--kek-file", rs.kek, "--trust-domain", "other.example"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			startFails(t, c.want, append([]string{"--roles", "auth", "--store", rs.store}, c.args...)...)
		})
	}
}

var followingRE = regexp.MustCompile(`msg="following the auth service"[^\n]* auth=(\S+)`)

// followed is the replica the agent followed last, from its log, and how
// many times it has begun following one.
func (a *agent) followed() (addr string, n int) {
	m := followingRE.FindAllStringSubmatch(a.out.String(), -1)
	if len(m) == 0 {
		return "", 0
	}
	return m[len(m)-1][1], len(m)
}

// waitFollowing waits until the agent follows a replica other than the
// one it followed after its n-th "following" line, and returns it.
func (a *agent) waitFollowing(t *testing.T, after int, within time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	var addr string
	if !testkit.Within(within, func() bool {
		var n int
		addr, n = a.followed()
		return n > after
	}) {
		t.Fatalf("the agent followed no other replica within %s; its log:\n%s", within, a.out)
	}
	return addr, time.Since(start)
}

// issueJWT asks the agent for a JWT-SVID with an audience it never saw,
// which it must have the auth service issue, and validates it.
func issueJWT(ctx context.Context, socket, audience string) error {
	c, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		return err
	}
	defer c.Close()
	svid, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience})
	if err != nil {
		return err
	}
	bundles, err := c.FetchJWTBundles(ctx)
	if err != nil {
		return err
	}
	_, err = jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{audience})
	return err
}

// TestAgentFailsOverBetweenReplicas is the high-availability promise with
// real processes: three replicas on one PostgreSQL database and an agent
// given all three. While two go-spiffe workloads make an mTLS handshake
// every 50 ms (and a third validates a JWT-SVID as often), each replica in
// turn is killed with SIGKILL and restarted, and then the replica the
// agent follows is stopped (SIGSTOP) for 20 s. No handshake fails; after
// each fault the agent follows another replica within seconds, without
// restarting, and issues through it; the workload identity created before
// the faults is served throughout, one made during them through a replica
// the agent does not follow is served too, and the audit log verifies on
// every replica.
func TestAgentFailsOverBetweenReplicas(t *testing.T) {
	t.Parallel()
	rs := startReplicas(t, 3)
	r0 := rs.r[0]
	tok := tokenFrom(t, r0.widctl("bot", "add", "edge", "--roles", "local-agent").must(t))
	r0.widctl("workload-identity", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid="+uid).must(t)

	ag := startAgent(t, newDataDir(t), "--roles", "agent", "--auth", rs.list(), "--join-token", tok, "--ca-pin", r0.pin)
	first, _ := ag.waitFollowing(t, 0, 30*time.Second)
	_, n := ag.followed()
	td := spiffeid.RequireTrustDomainFromString(rs.td)
	tr := startTraffic(t, ag.workload, td)
	defer tr.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := issueJWT(ctx, ag.workload, "before-faults"); err != nil {
		t.Fatalf("issuing before the faults: %v", err)
	}
	indexOf := func(addr string) int {
		for i, a := range rs.addrs {
			if a == addr {
				return i
			}
		}
		t.Fatalf("the agent follows %s, which is none of the replicas %s", addr, rs.list())
		return -1
	}
	following := indexOf(first)

	// Kill -9 each replica in turn, the followed one first, restarting each.
	firstFollowed := following
	for k := range 3 {
		victim := (firstFollowed + k) % 3
		_, before := ag.followed()
		rs.r[victim].kill()
		if victim == following {
			addr, took := ag.waitFollowing(t, before, 15*time.Second)
			following = indexOf(addr)
			if following == victim {
				t.Fatalf("the agent follows the killed replica %s", addr)
			}
			t.Logf("kill -9 of the followed replica %d: the agent followed replica %d %s later", victim, following, took.Round(time.Millisecond))
		}
		if err := issueJWT(ctx, ag.workload, fmt.Sprintf("after-kill-%d", victim)); err != nil {
			t.Fatalf("issuing after replica %d was killed: %v\nagent log:\n%s", victim, err, ag.out)
		}
		// Workloads keep handshaking while the replica is down.
		tr.waitHandshakes(10)
		rs.start(victim)
		tr.check(fmt.Sprintf("kill -9 of replica %d", victim))
	}

	// Freeze the followed replica: its connections stay open and silent.
	_, before := ag.followed()
	frozen := rs.r[following]
	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			frozen.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer resume()
	addr, took := ag.waitFollowing(t, before, 20*time.Second)
	if indexOf(addr) == following {
		t.Fatalf("the agent went back to the stopped replica %s", addr)
	}
	t.Logf("SIGSTOP of the followed replica %d: the agent followed replica %d %s later", following, indexOf(addr), took.Round(time.Millisecond))
	if err := issueJWT(ctx, ag.workload, "while-stopped"); err != nil {
		t.Fatalf("issuing while replica %d is stopped: %v\nagent log:\n%s", following, err, ag.out)
	}
	// A workload identity made meanwhile through the third replica, which
	// the agent does not follow, reaches the agent through the store.
	third := 3 - following - indexOf(addr)
	rs.r[third].widctl("workload-identity", "create", "during", "--spiffe-id", "/svc/during", "--rule", "workload.unix.uid="+uid).must(t)
	made := time.Now()
	testkit.Eventually(t, 10*time.Second, func() bool {
		x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+ag.workload))
		if err != nil {
			t.Fatalf("fetching while replica %d is stopped: %v", following, err)
		}
		for _, svid := range x.SVIDs {
			if svid.ID.String() == "spiffe://"+rs.td+"/svc/during" {
				return true
			}
		}
		return false
	}, "a workload identity made through replica %d is not served by the agent following replica %d", third, indexOf(addr))
	t.Logf("a workload identity made through replica %d was served by the agent following replica %d %s later", third, indexOf(addr), time.Since(made).Round(time.Millisecond))
	// The replica stays stopped for 20s in all: the length of the fault is
	// what is tested, so this waits on the clock.
	time.Sleep(time.Until(stopped.Add(20 * time.Second)))
	resume()
	tr.check("SIGSTOP of the followed replica for 20s")

	// The agent never restarted, and the identity made before is served.
	select {
	case <-ag.exited:
		t.Fatalf("the agent exited:\n%s", ag.out)
	default:
	}
	x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+ag.workload))
	if err != nil {
		t.Fatalf("fetching after the faults: %v", err)
	}
	var ids []string
	for _, svid := range x.SVIDs {
		ids = append(ids, svid.ID.String())
	}
	slices.Sort(ids)
	if want := []string{"spiffe://" + rs.td + "/svc/during", "spiffe://" + rs.td + "/svc/web"}; !slices.Equal(ids, want) {
		t.Fatalf("after the faults the workload gets %v, want %v", ids, want)
	}
	if _, m := ag.followed(); m < n+2 {
		t.Fatalf("the agent began following a replica %d times, want at least %d", m, n+2)
	}
	for i := range rs.r {
		rs.r[i].widctl("audit", "verify").must(t)
	}
	tr.check("after the faults")
}

// readyz returns /readyz's status code and body.
func (a *agent) readyz() (int, string) {
	a.t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + a.diag + "/readyz")
	if err != nil {
		a.t.Fatalf("%v; widagent's log:\n%s", err, a.out)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReadyz waits until /readyz answers code.
func (a *agent) waitReadyz(code int, within time.Duration) string {
	t := a.t
	t.Helper()
	var got int
	var body string
	if !testkit.Within(within, func() bool { got, body = a.readyz(); return got == code }) {
		t.Fatalf("/readyz still answers %d %q after %s, want %d", got, body, within, code)
	}
	return body
}

// TestReplicaReadyzFollowsTheDatabase: a replica's /readyz is ready while
// it reaches its database, not ready (saying why) within seconds of the
// database refusing it, and ready again once it accepts it, without a
// restart.
func TestReplicaReadyzFollowsTheDatabase(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t)
	name, dbURL := pgtest.NamedDatabase(t)
	r := startAgent(t, newDataDir(t), "--roles", "auth", "--store", dbURL, "--diag-addr", "127.0.0.1:0")
	r.waitReadyz(http.StatusOK, 10*time.Second)
	// Settled: the replica has recorded its start (which it must, to serve).
	testkit.EventuallyEvery(t, 20*time.Second, 50*time.Millisecond, func() bool {
		return strings.Contains(r.widctl("audit", "ls", "--type", "auth.started", "--format", "json").must(t).stdout, "auth.started")
	}, "the replica did not record its start")

	// The database goes away for this replica: new connections are
	// refused and the open ones are ended, as when its server restarts.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pgx.Identifier{name}.Sanitize()
	if err := srv.Exec(ctx, "postgres", "ALTER DATABASE "+db+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Exec(ctx, "postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name); err != nil {
		t.Fatal(err)
	}
	body := r.waitReadyz(http.StatusServiceUnavailable, 10*time.Second)
	if !strings.Contains(body, "not ready: the store") || strings.Contains(body, srv.Password()) {
		t.Fatalf("/readyz with the database gone says %q", body)
	}
	// A request meanwhile fails, saying why, and writes nothing.
	res := r.widctl("role", "create", "while-gone", "--spiffe-path", "/x/*")
	t.Logf("widctl role create with the database gone: exit %d: %s", res.code, strings.TrimSpace(res.stderr))
	if res.code == 0 || !strings.Contains(res.stderr, "cannot reach its database") || strings.Contains(res.stderr, srv.Password()) {
		t.Fatalf("role create with the database gone: exit %d, %s", res.code, res.stderr)
	}
	if err := srv.Exec(ctx, "postgres", "ALTER DATABASE "+db+" ALLOW_CONNECTIONS true"); err != nil {
		t.Fatal(err)
	}
	r.waitReadyz(http.StatusOK, 15*time.Second)
	if out := r.widctl("role", "ls").must(t).stdout; strings.Contains(out, "while-gone") {
		t.Fatalf("a role created while the database was gone is listed:\n%s", out)
	}
}

// waitHandshakes waits until n more handshakes have been made.
func (tr *traffic) waitHandshakes(n int64) {
	tr.t.Helper()
	want := tr.handshakes.Load() + n
	testkit.Eventually(tr.t, 30*time.Second, func() bool { return tr.handshakes.Load() >= want },
		"fewer than %d handshakes", n)
}
