package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/testkit"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// startRefused runs `widagent start` on dataDir and expects it to refuse:
// to exit non-zero within 20 s. It returns what the process printed.
func startRefused(t *testing.T, dataDir string, extra ...string) result {
	t.Helper()
	args := append([]string{"start", "--data-dir", dataDir, "--auth-listen", "127.0.0.1:0",
		"--workload-socket", filepath.Join(dataDir, "workload2.sock")}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "widagent"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ctx.Err() != nil {
		t.Fatalf("widagent start %v was not refused (err %v)\nstdout:\n%s\nstderr:\n%s", extra, err, out.String(), errb.String())
	}
	return result{stdout: out.String(), stderr: errb.String(), code: ee.ExitCode()}
}

// Issue 15 Medium 7: the admin socket is no guard; after it is removed a
// second widagent on the same data dir is still refused, naming the first.
func TestSecondProcessOnADataDirIsRefused(t *testing.T) {
	dir := newDataDir(t)
	a := startAgent(t, dir)
	if err := os.Remove(a.socket); err != nil {
		t.Fatal(err)
	}
	r := startRefused(t, dir)
	want := "in use by widagent pid " + strconv.Itoa(a.cmd.Process.Pid)
	if !strings.Contains(r.stderr, want) {
		t.Fatalf("second widagent's refusal does not say %q:\n%s", want, r.stderr)
	}
	if strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Errorf("refusal is more than one line:\n%s", r.stderr)
	}
	// The first still serves over TLS, untouched by the attempt.
	c, err := client.Dial(client.Config{Auth: a.addr, CAPin: a.pin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Ping(context.Background(), &authv1.PingRequest{}); err != nil {
		t.Fatalf("first widagent stopped serving: %v", err)
	}
}

// Issue 15 Medium 5: SIGTERM under a load of JWT-SVID mints. A mint the
// auth service accepted (its handler ran: the answer is a success or an
// error the service itself marked, see authv1.ErrorDomain) must succeed;
// a call that never reached a handler because the listener had closed may
// fail with Unavailable from the transport, and the client retries it
// elsewhere. So: zero failures that carry the auth service's mark.
func TestSIGTERMDrainsInFlightMints(t *testing.T) {
	dir := newDataDir(t)
	a := startAgent(t, dir)
	type outcome struct {
		jti string
		err error
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const workers = 64
	wg := startLoad(ctx, t, a, workers, func(ctx context.Context, c *client.Client) error {
		resp, err := c.SignJWTSVID(ctx, &authv1.SignJWTSVIDRequest{SpiffeId: "/svc/load", Audience: []string{"e2e"}})
		mu.Lock()
		outcomes = append(outcomes, outcome{jti: resp.GetJti(), err: err})
		mu.Unlock()
		return err // refused or gone: this worker is done
	})
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(outcomes)
	}
	// Load first, however busy the machine: 200 outcomes, or 20s of trying.
	testkit.Within(20*time.Second, func() bool { return count() >= 200 })
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("widagent did not stop within 15 s of SIGTERM")
	}
	wg.Wait()

	var ok, refused int
	var jtis []string
	for _, o := range outcomes {
		switch {
		case o.err == nil:
			ok++
			jtis = append(jtis, o.jti)
		default:
			if msg, _, marked := client.ServerAnswer(o.err); marked {
				t.Errorf("a mint the auth service accepted failed during the stop: %s", msg)
				continue
			}
			if c := status.Code(o.err); c != codes.Unavailable {
				t.Errorf("a mint failed with %s, want only Unavailable for calls that reached no handler: %v", c, o.err)
			}
			refused++
		}
	}
	if ok < 200 {
		t.Fatalf("only %d mints succeeded before the stop; the test needs load", ok)
	}
	t.Logf("%d mints succeeded, %d calls refused by the closed listener", ok, refused)

	// Every mint answered is audited: the drain committed them.
	b := startAgent(t, dir)
	evs, err := b.admin().ListAuditEvents(context.Background(), &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{Types: []string{"svid.jwt.issued"}}})
	if err != nil {
		t.Fatal(err)
	}
	audited := map[string]bool{}
	for _, e := range evs.Events {
		audited[e.Serial] = true
	}
	for _, j := range jtis {
		if !audited[j] {
			t.Fatalf("JWT-SVID %s was answered but has no audit event", j)
		}
	}
}

// verification is `widctl audit verify --format json`.
type verification struct {
	OK          bool   `json:"ok"`
	Events      int64  `json:"events"`
	HeadSeq     int64  `json:"head_seq"`
	Head        string `json:"head"`
	AnchoredSeq int64  `json:"anchored_seq"`
	Problems    []struct {
		Seq     int64  `json:"seq"`
		Kind    string `json:"kind"`
		Message string `json:"message"`
	} `json:"problems"`
}

func (a *agent) verifyAudit(args ...string) (verification, result) {
	a.t.Helper()
	r := a.widctl(append([]string{"audit", "verify", "--format", "json"}, args...)...)
	var v verification
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		a.t.Fatalf("audit verify --format json: %v\n%s%s", err, r.stdout, r.stderr)
	}
	return v, r
}

// waitAnchored waits until the anchor records the audit log's head.
func (a *agent) waitAnchored() verification {
	a.t.Helper()
	var v verification
	if !testkit.WithinEvery(10*time.Second, 20*time.Millisecond, func() bool {
		v, _ = a.verifyAudit()
		return v.HeadSeq > 0 && v.AnchoredSeq == v.HeadSeq
	}) {
		a.t.Fatalf("the anchor stayed at event %d while the log's head is %d", v.AnchoredSeq, v.HeadSeq)
	}
	return v
}

// copyDir copies a stopped data dir, as a backup would.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, info.Mode().Perm())
		case info.Mode().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, info.Mode().Perm())
		}
		return nil // sockets
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Issue 15 High 1: a damaged store is refused with the anchor's sentence,
// never started as a new trust domain; a restore from a backup starts as
// the same trust domain.
func TestDamagedStoreIsRefused(t *testing.T) {
	// session runs widagent on a data dir that already went through one
	// clean stop (so the WAL then holds only this session's frames), makes
	// some changes, and kills it once the anchor has caught up.
	session := func(t *testing.T) (dir, pin string) {
		dir = newDataDir(t)
		a := startAgent(t, dir)
		a.widctl("role", "create", "first", "--spiffe-path", "/svc/first").must(t)
		pin = a.pin
		a.stop()
		b := startAgent(t, dir)
		for _, n := range []string{"a", "b", "c", "d", "e"} {
			b.widctl("role", "create", "r-"+n, "--spiffe-path", "/svc/"+n).must(t)
		}
		b.waitAnchored()
		b.kill()
		return dir, pin
	}
	stopped := func(t *testing.T) (dir, pin string) {
		dir = newDataDir(t)
		a := startAgent(t, dir)
		a.widctl("role", "create", "first", "--spiffe-path", "/svc/first").must(t)
		a.waitAnchored()
		a.stop()
		return dir, a.pin
	}
	sqlOn := func(dir, stmt string) {
		h, err := sql.Open("sqlite", filepath.Join(dir, "wid.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if _, err := h.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	cases := []struct {
		name   string
		damage func(t *testing.T) (dir, pin string)
		says   []string
	}{
		{"WAL byte flipped", func(t *testing.T) (string, string) {
			dir, pin := session(t)
			wal := filepath.Join(dir, "wid.db-wal")
			b, err := os.ReadFile(wal)
			if err != nil || len(b) < 4096 {
				t.Fatalf("the killed store has no WAL to damage (%d bytes, %v)", len(b), err)
			}
			b[32+24+100] ^= 0x01 // inside the first frame's page
			if err := os.WriteFile(wal, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return dir, pin
		}, []string{"does not match the trust domain's anchor", "lost its newest changes"}},
		{"WAL truncated", func(t *testing.T) (string, string) {
			dir, pin := session(t)
			if err := os.Truncate(filepath.Join(dir, "wid.db-wal"), 32+1000); err != nil {
				t.Fatal(err)
			}
			return dir, pin
		}, []string{"does not match the trust domain's anchor", "lost its newest changes"}},
		{"CA rows deleted", func(t *testing.T) (string, string) {
			dir, pin := stopped(t)
			sqlOn(dir, "DELETE FROM resources WHERE kind = 'cert_authority'")
			return dir, pin
		}, []string{"does not match the trust domain's anchor", "CA but the anchor records one"}},
		{"wid.db deleted", func(t *testing.T) (string, string) {
			dir, pin := stopped(t)
			for _, f := range []string{"wid.db", "wid.db-wal", "wid.db-shm"} {
				os.Remove(filepath.Join(dir, f))
			}
			return dir, pin
		}, []string{"has the keys of a trust domain (keys/) but no store (wid.db is missing)", "--init"}},
		{"wid.db emptied", func(t *testing.T) (string, string) {
			dir, pin := stopped(t)
			for _, f := range []string{"wid.db", "wid.db-wal", "wid.db-shm"} {
				os.Remove(filepath.Join(dir, f))
			}
			if err := os.WriteFile(filepath.Join(dir, "wid.db"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return dir, pin
		}, []string{`has the keys of trust domain "example.org" (keys/) but its store wid.db is empty`, "--init"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, pin := tc.damage(t)
			r := startRefused(t, dir)
			msg := strings.TrimSpace(r.stderr)
			t.Logf("refused: %s", msg)
			for _, s := range append(tc.says, "docs/operations.md") {
				if !strings.Contains(msg, s) {
					t.Errorf("refusal does not say %q:\n%s", s, msg)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("refusal is more than one line:\n%s", msg)
			}
			if strings.Contains(r.stdout, "CA pin") && !strings.Contains(r.stdout, pin) {
				t.Errorf("a new CA was made:\n%s", r.stdout)
			}
		})
	}
}

// The way out of a refusal: restore the data dir from a backup (same trust
// domain, same pin), or, deliberately, --init (a new one).
func TestRestoreFromBackupAndInit(t *testing.T) {
	dir := newDataDir(t)
	a := startAgent(t, dir)
	a.widctl("role", "create", "kept", "--spiffe-path", "/svc/kept").must(t)
	a.stop()
	backup := newDataDir(t)
	copyDir(t, dir, backup)

	for _, f := range []string{"wid.db", "wid.db-wal", "wid.db-shm"} {
		os.Remove(filepath.Join(dir, f))
	}
	startRefused(t, dir)

	// Restore: wid.db and keys/ from the same backup.
	os.RemoveAll(filepath.Join(dir, "keys"))
	copyDir(t, backup, dir)
	b := startAgent(t, dir)
	if b.pin != a.pin {
		t.Fatalf("restored data dir serves pin %s, want the backup's %s", b.pin, a.pin)
	}
	b.widctl("get", "role/kept").must(t)
	b.widctl("audit", "verify").must(t)
	b.stop()

	// --init on a data dir that holds a trust domain is refused...
	r := startRefused(t, dir, "--init")
	if !strings.Contains(r.stderr, "already holds example.org") {
		t.Fatalf("--init on a live store: %s", r.stderr)
	}
	// ...and on one whose store is gone it makes a new one, on purpose.
	for _, f := range []string{"wid.db", "wid.db-wal", "wid.db-shm"} {
		os.Remove(filepath.Join(dir, f))
	}
	c := startAgent(t, dir, "--init")
	if c.pin == a.pin {
		t.Fatal("--init kept the old CA")
	}
}

// Issue 14 Low 10: newest events removed and the head row rewritten to
// match: the anchored head, and a head exported earlier, still find it.
func TestAuditVerifyFindsACutTailWithARewrittenHead(t *testing.T) {
	a := startAgent(t, newDataDir(t))
	for _, n := range []string{"a", "b", "c", "d"} {
		a.widctl("role", "create", "r-"+n, "--spiffe-path", "/svc/"+n).must(t)
	}
	exported := a.waitAnchored()
	if exported.Head == "" {
		t.Fatalf("verify printed no head to export: %+v", exported)
	}
	text := a.widctl("audit", "verify").must(t)
	if !strings.Contains(text.stdout, exported.Head) {
		t.Fatalf("verify's text output does not show the head to export (%s):\n%s", exported.Head, text.stdout)
	}
	cut := exported.HeadSeq - 2
	db := filepath.Join(a.dataDir, "wid.db")
	sqlExec(t, db, "DELETE FROM audit_events WHERE seq > "+strconv.FormatInt(cut, 10))
	sqlExec(t, db, "UPDATE audit_head SET seq = "+strconv.FormatInt(cut, 10)+", hash = (SELECT hash FROM audit_events WHERE seq = "+strconv.FormatInt(cut, 10)+")")

	v, r := a.verifyAudit()
	if r.code == 0 || v.OK || len(v.Problems) == 0 || v.Problems[0].Kind != "truncated" || !strings.Contains(v.Problems[0].Message, "anchor") {
		t.Fatalf("verify after a cut tail with a rewritten head: exit %d %+v", r.code, v)
	}
	v, r = a.verifyAudit("--head", exported.Head)
	found := false
	for _, p := range v.Problems {
		found = found || (p.Kind == "truncated" && strings.Contains(p.Message, "the head you gave"))
	}
	if r.code == 0 || !found {
		t.Fatalf("verify --head %s does not report the cut: exit %d %+v", exported.Head, r.code, v)
	}
	if r := a.widctl("audit", "verify", "--head", "12"); r.code != 2 || !strings.Contains(r.stderr, "SEQ:HASH") {
		t.Fatalf("a malformed --head: exit %d %s", r.code, r.stderr)
	}
}

// Issue 15 Medium 6: a data dir on a read-only file system is refused with
// what to do. Needs a read-only mount, which only root can make here.
func TestReadOnlyDataDirSaysWhatToDo(t *testing.T) {
	dir := newDataDir(t)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a read-only file system here: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	r := startRefused(t, dir, "--workload-socket", filepath.Join(os.TempDir(), "wid-ro-"+strconv.Itoa(os.Getpid())+".sock"))
	for _, want := range []string{"read-only file system", "mount it read-write", "--data-dir"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("refusal does not say %q:\n%s", want, r.stderr)
		}
	}
}
