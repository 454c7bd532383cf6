package audit_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/store"
)

// TestVerifyFindsTampering edits the database file the way an operator with
// the sqlite3 shell would, and checks that Verify names what was done.
func TestVerifyFindsTampering(t *testing.T) {
	type want struct {
		seq      int64
		kind     string
		mentions []string
	}
	cases := []struct {
		name   string
		tamper func(t *testing.T, db *sql.DB)
		want   []want
	}{
		{"actor column edited", execSQL(`UPDATE audit_events SET actor = 'mallory' WHERE seq = 5`),
			[]want{{5, audit.ProblemEdited, []string{"event 5 (svid.denied)", "actor", "mallory", "bot:agent-0"}}}},
		{"type column edited", execSQL(`UPDATE audit_events SET type = 'nothing' WHERE seq = 5`),
			[]want{{5, audit.ProblemEdited, []string{"event 5 (svid.denied)", "type"}}}},
		{"outcome column edited", execSQL(`UPDATE audit_events SET outcome = 'success' WHERE seq = 4`),
			[]want{{4, audit.ProblemEdited, []string{"event 4 (svid.x509.issued)", "outcome"}}}},
		{"spiffe_id column edited", execSQL(`UPDATE audit_events SET spiffe_id = 'spiffe://evil.org/x' WHERE seq = 3`),
			[]want{{3, audit.ProblemEdited, []string{"event 3", "spiffe_id"}}}},
		{"time column edited", execSQL(`UPDATE audit_events SET time = '2020-01-01T00:00:00.000000000Z' WHERE seq = 5`),
			[]want{{5, audit.ProblemEdited, []string{"event 5", "time", "2020-01-01T00:00:00Z"}}}},
		{"time column made unreadable", execSQL(`UPDATE audit_events SET time = 'yesterday' WHERE seq = 5`),
			[]want{{5, audit.ProblemEdited, []string{"event 5", "time"}}}},
		{"data edited", execSQL(`UPDATE audit_events SET data = CAST(replace(CAST(data AS TEXT), 'reason 4', 'all fine') AS BLOB) WHERE seq = 5`),
			[]want{{5, audit.ProblemEdited, []string{"event 5 (svid.denied)", "no longer match its hash"}}}},
		{"data destroyed", execSQL(`UPDATE audit_events SET data = X'00' WHERE seq = 5`),
			[]want{{5, audit.ProblemEdited, []string{"event 5", "data"}}}},
		{"hash column edited", execSQL(`UPDATE audit_events SET hash = 'f00d' WHERE seq = 5`),
			[]want{{5, audit.ProblemEdited, []string{"event 5"}}}},
		{"prev_hash edited", execSQL(`UPDATE audit_events SET prev_hash = 'f00d' WHERE seq = 5`),
			[]want{{5, audit.ProblemEdited, nil}, {5, audit.ProblemBrokenLink, []string{"event 5", "event 4"}}}},
		{"middle event deleted", execSQL(`DELETE FROM audit_events WHERE seq = 5`),
			[]want{{5, audit.ProblemGap, []string{"event 5 is missing"}}}},
		{"several events deleted", execSQL(`DELETE FROM audit_events WHERE seq BETWEEN 4 AND 6`),
			[]want{{4, audit.ProblemGap, []string{"events 4 to 6 are missing"}}}},
		{"first event deleted", execSQL(`DELETE FROM audit_events WHERE seq = 1`),
			[]want{{1, audit.ProblemGap, []string{"event 1 is missing"}}}},
		{"newest event deleted", execSQL(`DELETE FROM audit_events WHERE seq = 10`),
			[]want{{10, audit.ProblemTruncated, []string{"event 10", "newest"}}}},
		{"newest events deleted", execSQL(`DELETE FROM audit_events WHERE seq >= 8`),
			[]want{{8, audit.ProblemTruncated, []string{"events 8 to 10"}}}},
		{"every event deleted", execSQL(`DELETE FROM audit_events`),
			[]want{{1, audit.ProblemTruncated, []string{"events 1 to 10"}}}},
		{"head edited", execSQL(`UPDATE audit_head SET hash = 'f00d'`),
			[]want{{10, audit.ProblemEdited, []string{"head", "event 10"}}}},
		{"event added past the head", execSQL(`INSERT INTO audit_events SELECT seq + 1, time, type, actor, spiffe_id, outcome, data, hash, hash FROM audit_events WHERE seq = 10`),
			[]want{{11, audit.ProblemEdited, []string{"event 11", "head"}}}},
		{"newest event forged with a fresh hash", forgeNewest,
			[]want{{10, audit.ProblemEdited, []string{"event 10", "actor", "forged"}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "wid.db")
			db := openDB(t, path)
			tl := startLog(t, db)
			emitN(t, tl.Log, 10)
			tl.stop()
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}

			raw, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			tc.tamper(t, raw)
			if err := raw.Close(); err != nil {
				t.Fatal(err)
			}

			db = openDB(t, path)
			defer db.Close()
			l, err := audit.Open(t.Context(), db, nil)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := l.Verify(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) != len(tc.want) {
				t.Fatalf("problems = %+v, want %d", rep.Problems, len(tc.want))
			}
			for i, w := range tc.want {
				p := rep.Problems[i]
				if p.Seq != w.seq || p.Kind != w.kind {
					t.Errorf("problem %d = seq %d %s (%q), want seq %d %s", i, p.Seq, p.Kind, p.Message, w.seq, w.kind)
				}
				for _, m := range w.mentions {
					if !strings.Contains(p.Message, m) {
						t.Errorf("message %q does not mention %q", p.Message, m)
					}
				}
				if !strings.HasSuffix(p.Message, ".") || strings.Count(p.Message, ". ") > 0 {
					t.Errorf("message %q is not one sentence", p.Message)
				}
			}
		})
	}
}

func execSQL(q string) func(t *testing.T, db *sql.DB) {
	return func(t *testing.T, db *sql.DB) {
		t.Helper()
		res, err := db.Exec(q)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			t.Fatalf("%s changed nothing", q)
		}
	}
}

// forgeNewest rewrites the newest row's actor and recomputes its hash, as
// someone who knows the hash function would.
func forgeNewest(t *testing.T, db *sql.DB) {
	var r store.AuditRow
	var ts string
	if err := db.QueryRow(`SELECT seq, time, type, actor, spiffe_id, outcome, data, prev_hash FROM audit_events WHERE seq = 10`).
		Scan(&r.Seq, &ts, &r.Type, &r.Actor, &r.SPIFFEID, &r.Outcome, &r.Data, &r.PrevHash); err != nil {
		t.Fatal(err)
	}
	var err error
	if r.Time, err = parseTime(ts); err != nil {
		t.Fatal(err)
	}
	r.Actor = "mallory"
	if _, err := db.Exec(`UPDATE audit_events SET actor = ?, hash = ? WHERE seq = 10`, r.Actor, audit.HashRow(r)); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyEmptyLog(t *testing.T) {
	tl := newTestLog(t)
	rep := wantClean(t, tl.Log, 0)
	if rep.HeadHash != "" {
		t.Fatalf("empty log head hash = %q", rep.HeadHash)
	}
}

func TestVerifyReportsEveryProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wid.db")
	db := openDB(t, path)
	tl := startLog(t, db)
	emitN(t, tl.Log, 20)
	tl.stop()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`UPDATE audit_events SET actor = 'x' WHERE seq = 3`,
		`DELETE FROM audit_events WHERE seq = 7`,
		`UPDATE audit_events SET outcome = 'success' WHERE seq = 12`,
		`DELETE FROM audit_events WHERE seq = 20`,
	} {
		execSQL(q)(t, raw)
	}
	raw.Close()

	db = openDB(t, path)
	defer db.Close()
	l, err := audit.Open(t.Context(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := l.Verify(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range rep.Problems {
		got = append(got, fmt.Sprintf("%d:%s", p.Seq, p.Kind))
	}
	if want := "3:edited 7:gap 12:edited 20:truncated"; strings.Join(got, " ") != want {
		t.Fatalf("problems %v, want %s", got, want)
	}
	if rep.Events != 18 {
		t.Fatalf("checked %d events, want 18", rep.Events)
	}
}

func parseTime(s string) (time.Time, error) { return time.Parse(time.RFC3339Nano, s) }

// Issue 14 Low 10: rows removed from the end and the head row rewritten to
// match leave a chain that checks out by itself; a head recorded outside
// the store (the anchor, an exported head) still finds the loss.
func TestVerifyAgainstAnOutsideHead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wid.db")
	db := openDB(t, path)
	tl := startLog(t, db)
	emitN(t, tl.Log, 10)
	tl.stop()
	seq, hash, err := db.AuditHead(t.Context())
	if err != nil || seq != 10 {
		t.Fatalf("head %d, %v", seq, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	execSQL(`DELETE FROM audit_events WHERE seq >= 8`)(t, raw)
	execSQL(`UPDATE audit_head SET seq = 7, hash = (SELECT hash FROM audit_events WHERE seq = 7)`)(t, raw)
	raw.Close()

	db = openDB(t, path)
	defer db.Close()
	l, err := audit.Open(t.Context(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := l.Verify(t.Context()); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("without an outside head the cut is invisible (this is the limitation): %+v, %v", rep.Problems, err)
	}
	rep, err := l.Verify(t.Context(), audit.Head{Seq: seq, Hash: hash, Source: "the exported head"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != audit.ProblemTruncated || rep.Problems[0].Seq != 8 ||
		!strings.Contains(rep.Problems[0].Message, "events 8 to 10") || !strings.Contains(rep.Problems[0].Message, "the exported head") {
		t.Fatalf("problems %+v, want events 8 to 10 truncated, naming the exported head", rep.Problems)
	}

	// A head whose event is there but is another event: the history was
	// replaced from that point.
	rep, err = l.Verify(t.Context(), audit.Head{Seq: 5, Hash: hash, Source: "the anchor"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != audit.ProblemEdited || rep.Problems[0].Seq != 5 || !strings.Contains(rep.Problems[0].Message, "the anchor") {
		t.Fatalf("problems %+v, want event 5 edited, naming the anchor", rep.Problems)
	}
}
