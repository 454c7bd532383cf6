package sqlite

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/store"
)

// crashHelperEnv makes the test binary act as the writer process that
// TestSurvivesKill9 kills; its value is the database path.
const crashHelperEnv = "WID_SQLITE_CRASH_HELPER_DB"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashHelperEnv); path != "" {
		if err := crashHelper(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func crashHash(seq int64, prev string) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%d|%s", seq, prev))
	return hex.EncodeToString(sum[:])
}

// crashHelper writes until it is killed: each round appends a small batch
// of audit rows and bumps a resource in one Apply, then reports on stdout
// what is now committed.
func crashHelper(path string) error {
	ctx := context.Background()
	db, err := Open(ctx, path)
	if err != nil {
		return err
	}
	// Carry on from where the previous, killed, helper stopped.
	seq, hash, err := db.AuditHead(ctx)
	if err != nil {
		return err
	}
	var round int64
	if it, err := db.Get(ctx, "counter", "rounds"); err == nil {
		round, _ = strconv.ParseInt(string(it.Data), 10, 64)
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	for {
		round++
		batch := make([]store.AuditRow, 1+round%7)
		for i := range batch {
			seq++
			batch[i] = store.AuditRow{
				Seq: seq, Time: time.Now(), Type: "crash.test", Actor: "helper",
				Outcome: "success", Data: []byte(strings.Repeat("x", 200)), PrevHash: hash,
			}
			batch[i].Hash = crashHash(seq, hash)
			hash = batch[i].Hash
		}
		if err := db.AppendAudit(ctx, batch); err != nil {
			return err
		}
		if _, err := db.Apply(ctx,
			store.Op{Type: store.OpUpsert, Item: store.Item{Kind: "counter", Name: "rounds", Data: []byte(strconv.FormatInt(round, 10))}},
			store.Op{Type: store.OpCreate, Item: store.Item{Kind: "round", Name: strconv.FormatInt(round, 10), Data: []byte(strings.Repeat("y", 500))}},
		); err != nil {
			return err
		}
		fmt.Printf("committed %d %d\n", round, seq)
	}
}

func TestSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a writer process and kills it")
	}
	path := filepath.Join(t.TempDir(), "wid.db")

	for run := range 3 {
		round, seq := killWriterMidway(t, path, 100+run*50)
		checkAfterCrash(t, path, round, seq)
	}
}

// killWriterMidway starts the helper, waits until it reports at least
// minRounds committed rounds, SIGKILLs it while it keeps writing, and
// returns the last round and seq it reported as committed.
func killWriterMidway(t *testing.T, path string, minRounds int) (round, seq int64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var base int64 = -1
	for sc.Scan() {
		var r, s int64
		if _, err := fmt.Sscanf(sc.Text(), "committed %d %d", &r, &s); err != nil {
			t.Fatalf("helper said %q", sc.Text())
		}
		if base < 0 {
			base = r
		}
		round, seq = r, s
		if r-base >= int64(minRounds) {
			break
		}
	}
	if round == 0 {
		_ = cmd.Wait()
		t.Fatalf("helper committed nothing: %s", stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Everything the helper printed before the signal landed is still in
	// the pipe: read it all, so round and seq are the last commit it
	// reported, not merely the last one this loop happened to read.
	for sc.Scan() {
		var r, s int64
		if _, err := fmt.Sscanf(sc.Text(), "committed %d %d", &r, &s); err != nil {
			continue // a line cut by the kill
		}
		round, seq = r, s
	}
	_, _ = io.Copy(io.Discard, out)
	err = cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v, want killed by SIGKILL: %s", err, stderr.String())
	}
	return round, seq
}

func checkAfterCrash(t *testing.T, path string, round, seq int64) {
	t.Helper()
	ctx := t.Context()
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("reopening after kill -9: %v", err)
	}
	defer db.Close()

	var ok string
	if err := db.writer.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&ok); err != nil {
		t.Fatal(err)
	}
	if ok != "ok" {
		t.Fatalf("integrity_check = %q", ok)
	}

	headSeq, headHash, err := db.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Everything reported committed is there; at most the round in flight
	// when the signal landed is also there.
	if headSeq < seq {
		t.Fatalf("audit head at %d, but the writer had committed up to %d", headSeq, seq)
	}
	var n int64
	prev := ""
	if err := db.ScanAudit(ctx, 0, func(r store.AuditRow) error {
		n++
		if r.Seq != n {
			return fmt.Errorf("seq %d at position %d", r.Seq, n)
		}
		if r.PrevHash != prev || r.Hash != crashHash(r.Seq, prev) {
			return fmt.Errorf("row %d breaks the chain", r.Seq)
		}
		prev = r.Hash
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != headSeq || prev != headHash {
		t.Fatalf("head says %d %s, last row is %d %s", headSeq, headHash, n, prev)
	}

	counter, err := db.Get(ctx, "counter", "rounds")
	if err != nil {
		t.Fatal(err)
	}
	rounds, err := db.List(ctx, "round")
	if err != nil {
		t.Fatal(err)
	}
	got, err := strconv.ParseInt(string(counter.Data), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	// Durability promises that nothing reported committed is lost. A round
	// can commit and be killed before its report is printed, so the store
	// may hold one round more than the last report, never fewer.
	if got < round {
		t.Fatalf("rounds counter = %d, but the writer reported round %d committed: a commit was lost", got, round)
	}
	if got > round+1 {
		t.Fatalf("rounds counter = %d, but the writer reported only up to round %d and commits one round at a time", got, round)
	}
	// One Apply writes the counter and the round's item: they must agree.
	if int64(len(rounds)) != got || counter.Revision != got {
		t.Fatalf("counter = %d (revision %d) but %d round items: Apply was not atomic", got, counter.Revision, len(rounds))
	}
}
