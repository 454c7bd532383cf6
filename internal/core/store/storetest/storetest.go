// Package storetest is the conformance suite every store.Backend must pass:
// the contract in package store, written down as tests, so that the SQLite
// and PostgreSQL backends behave the same for the auth service.
package storetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/store"
)

// Run runs the whole suite. open must return an empty backend for each call;
// Run closes it.
func Run(t *testing.T, open func(t *testing.T) store.Backend) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, b store.Backend)
	}{
		{"CRUD", testCRUD},
		{"ListOrderAndKinds", testList},
		{"CompareAndSet", testCAS},
		{"ApplyIsAtomic", testApplyAtomic},
		{"ApplySameItemTwice", testApplySameItemTwice},
		{"Meta", testMeta},
		{"AuditAppendAndHead", testAuditAppend},
		{"AuditChainChecks", testAuditChain},
		{"AuditQuery", testAuditQuery},
		{"AuditScanPages", testAuditScan},
		{"ConcurrentApply", testConcurrentApply},
		{"ConcurrentAuditAppend", testConcurrentAudit},
		{"ChangeLogOrder", testChangeLogOrder},
		{"ChangeLogAtomicWithApply", testChangeLogAtomic},
		{"ChangeLogPaging", testChangeLogPaging},
		{"ChangeLogPrune", testChangeLogPrune},
		{"ChangeLogFollowerMissesNothing", testChangeLogFollower},
		{"WatchChanges", testWatchChanges},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := open(t)
			t.Cleanup(func() {
				if err := b.Close(); err != nil {
					t.Errorf("closing backend: %v", err)
				}
			})
			tc.fn(t, b)
		})
	}
}

func apply(t *testing.T, b store.Backend, ops ...store.Op) []int64 {
	t.Helper()
	revs, err := b.Apply(t.Context(), ops...)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(revs) != len(ops) {
		t.Fatalf("Apply returned %d revisions for %d ops", len(revs), len(ops))
	}
	return revs
}

func item(kind, name, data string) store.Item {
	return store.Item{Kind: kind, Name: name, Data: []byte(data)}
}

func wantItem(t *testing.T, b store.Backend, kind, name string, rev int64, data string) {
	t.Helper()
	got, err := b.Get(t.Context(), kind, name)
	if err != nil {
		t.Fatalf("Get(%s/%s): %v", kind, name, err)
	}
	if got.Kind != kind || got.Name != name || got.Revision != rev || string(got.Data) != data {
		t.Fatalf("Get(%s/%s) = %s/%s rev %d %q, want rev %d %q", kind, name, got.Kind, got.Name, got.Revision, got.Data, rev, data)
	}
}

func wantMissing(t *testing.T, b store.Backend, kind, name string) {
	t.Helper()
	_, err := b.Get(t.Context(), kind, name)
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(%s/%s) error = %v, want ErrNotFound", kind, name, err)
	}
}

// wantErr checks the sentinel and that the message says which item failed.
func wantErr(t *testing.T, err, sentinel error, mentions string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("error = %v, want %v", err, sentinel)
	}
	if !strings.Contains(err.Error(), mentions) {
		t.Fatalf("error %q does not mention %q", err, mentions)
	}
}

func testCRUD(t *testing.T, b store.Backend) {
	ctx := t.Context()
	wantMissing(t, b, "role", "web")

	if revs := apply(t, b, store.Op{Type: store.OpCreate, Item: item("role", "web", `{"v":1}`)}); revs[0] != 1 {
		t.Fatalf("create revision = %d, want 1", revs[0])
	}
	wantItem(t, b, "role", "web", 1, `{"v":1}`)

	_, err := b.Apply(ctx, store.Op{Type: store.OpCreate, Item: item("role", "web", `{"v":9}`)})
	wantErr(t, err, store.ErrAlreadyExists, "role/web")
	wantItem(t, b, "role", "web", 1, `{"v":1}`)

	if revs := apply(t, b, store.Op{Type: store.OpUpdate, Item: item("role", "web", `{"v":2}`)}); revs[0] != 2 {
		t.Fatalf("update revision = %d, want 2", revs[0])
	}
	wantItem(t, b, "role", "web", 2, `{"v":2}`)

	_, err = b.Apply(ctx, store.Op{Type: store.OpUpdate, Item: item("role", "nope", `{}`)})
	wantErr(t, err, store.ErrNotFound, "role/nope")
	wantMissing(t, b, "role", "nope")

	if revs := apply(t, b, store.Op{Type: store.OpUpsert, Item: item("role", "web", `{"v":3}`)}); revs[0] != 3 {
		t.Fatalf("upsert of existing revision = %d, want 3", revs[0])
	}
	if revs := apply(t, b, store.Op{Type: store.OpUpsert, Item: item("role", "db", `{"v":1}`)}); revs[0] != 1 {
		t.Fatalf("upsert of new revision = %d, want 1", revs[0])
	}
	wantItem(t, b, "role", "web", 3, `{"v":3}`)
	wantItem(t, b, "role", "db", 1, `{"v":1}`)

	if revs := apply(t, b, store.Op{Type: store.OpDelete, Item: store.Item{Kind: "role", Name: "web"}}); revs[0] != 0 {
		t.Fatalf("delete revision = %d, want 0", revs[0])
	}
	wantMissing(t, b, "role", "web")
	_, err = b.Apply(ctx, store.Op{Type: store.OpDelete, Item: store.Item{Kind: "role", Name: "web"}})
	wantErr(t, err, store.ErrNotFound, "role/web")

	// A deleted item starts again at revision 1.
	if revs := apply(t, b, store.Op{Type: store.OpCreate, Item: item("role", "web", `{}`)}); revs[0] != 1 {
		t.Fatalf("re-create revision = %d, want 1", revs[0])
	}

	// Documents are opaque bytes, not text.
	bin := []byte{0, 1, 2, 0xff, 0xfe, 0, '\n'}
	apply(t, b, store.Op{Type: store.OpCreate, Item: store.Item{Kind: "ca", Name: "spiffe", Data: bin}})
	got, err := b.Get(ctx, "ca", "spiffe")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Data, bin) {
		t.Fatalf("binary data = %x, want %x", got.Data, bin)
	}

	// Missing kind or name is a caller bug, not a row.
	if _, err := b.Apply(ctx, store.Op{Type: store.OpCreate, Item: item("", "x", `{}`)}); err == nil {
		t.Fatal("Apply with empty kind succeeded")
	}
	if _, err := b.Apply(ctx, store.Op{Type: store.OpType(99), Item: item("role", "x", `{}`)}); err == nil {
		t.Fatal("Apply with unknown op type succeeded")
	}
	wantMissing(t, b, "role", "x")

	if revs, err := b.Apply(ctx); err != nil || len(revs) != 0 {
		t.Fatalf("empty Apply = %v, %v; want no revisions and no error", revs, err)
	}
}

func testList(t *testing.T, b store.Backend) {
	ctx := t.Context()
	items, err := b.List(ctx, "role")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 0 {
		t.Fatalf("List on empty store = %d items", len(items))
	}
	apply(t, b,
		store.Op{Type: store.OpCreate, Item: item("role", "c", "3")},
		store.Op{Type: store.OpCreate, Item: item("role", "a", "1")},
		store.Op{Type: store.OpCreate, Item: item("bot", "a", "x")},
		store.Op{Type: store.OpCreate, Item: item("role", "b", "2")},
	)
	apply(t, b, store.Op{Type: store.OpUpdate, Item: item("role", "b", "22")})
	items, err = b.List(ctx, "role")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		if it.Kind != "role" {
			t.Fatalf("List(role) returned kind %q", it.Kind)
		}
		got = append(got, fmt.Sprintf("%s:%d:%s", it.Name, it.Revision, it.Data))
	}
	if want := "a:1:1 b:2:22 c:1:3"; strings.Join(got, " ") != want {
		t.Fatalf("List(role) = %v, want %s", got, want)
	}
}

func testCAS(t *testing.T, b store.Backend) {
	ctx := t.Context()
	apply(t, b, store.Op{Type: store.OpCreate, Item: item("user", "alice", "v1")})
	apply(t, b, store.Op{Type: store.OpUpdate, Item: item("user", "alice", "v2"), ExpectRevision: 1})

	_, err := b.Apply(ctx, store.Op{Type: store.OpUpdate, Item: item("user", "alice", "stale"), ExpectRevision: 1})
	wantErr(t, err, store.ErrConflict, "user/alice")
	wantItem(t, b, "user", "alice", 2, "v2")

	_, err = b.Apply(ctx, store.Op{Type: store.OpUpsert, Item: item("user", "alice", "stale"), ExpectRevision: 1})
	wantErr(t, err, store.ErrConflict, "user/alice")
	wantItem(t, b, "user", "alice", 2, "v2")

	_, err = b.Apply(ctx, store.Op{Type: store.OpDelete, Item: store.Item{Kind: "user", Name: "alice"}, ExpectRevision: 1})
	wantErr(t, err, store.ErrConflict, "user/alice")
	wantItem(t, b, "user", "alice", 2, "v2")

	// Expecting a revision of an item that is gone is a conflict: someone
	// deleted what the caller read.
	_, err = b.Apply(ctx, store.Op{Type: store.OpUpsert, Item: item("user", "bob", "x"), ExpectRevision: 3})
	wantErr(t, err, store.ErrConflict, "user/bob")
	wantMissing(t, b, "user", "bob")

	if revs := apply(t, b, store.Op{Type: store.OpUpsert, Item: item("user", "alice", "v3"), ExpectRevision: 2}); revs[0] != 3 {
		t.Fatalf("CAS upsert revision = %d, want 3", revs[0])
	}
	apply(t, b, store.Op{Type: store.OpDelete, Item: store.Item{Kind: "user", Name: "alice"}, ExpectRevision: 3})
	wantMissing(t, b, "user", "alice")
}

func testApplyAtomic(t *testing.T, b store.Backend) {
	ctx := t.Context()
	apply(t, b, store.Op{Type: store.OpCreate, Item: item("role", "existing", "orig")})

	// failing is the index of the op that fails, which the error carries
	// so that a batch's caller can say which document it was.
	cases := []struct {
		name     string
		ops      []store.Op
		sentinel error
		failing  int
	}{
		{"create then duplicate", []store.Op{
			{Type: store.OpCreate, Item: item("role", "new", "x")},
			{Type: store.OpCreate, Item: item("role", "existing", "dup")},
		}, store.ErrAlreadyExists, 1},
		{"duplicate then create", []store.Op{
			{Type: store.OpCreate, Item: item("role", "existing", "dup")},
			{Type: store.OpCreate, Item: item("role", "new", "x")},
		}, store.ErrAlreadyExists, 0},
		{"update then missing", []store.Op{
			{Type: store.OpUpdate, Item: item("role", "existing", "changed")},
			{Type: store.OpUpdate, Item: item("role", "other", "x")},
			{Type: store.OpUpdate, Item: item("role", "ghost", "x")},
		}, store.ErrNotFound, 1},
		{"delete then conflict", []store.Op{
			{Type: store.OpDelete, Item: store.Item{Kind: "role", Name: "existing"}},
			{Type: store.OpCreate, Item: item("role", "other", "x")},
			{Type: store.OpUpsert, Item: item("role", "new", "x"), ExpectRevision: 7},
		}, store.ErrConflict, 2},
		{"no name", []store.Op{
			{Type: store.OpCreate, Item: item("role", "new", "x")},
			{Type: store.OpCreate, Item: item("role", "", "x")},
		}, nil, 1},
	}
	for _, tc := range cases {
		revs, err := b.Apply(ctx, tc.ops...)
		if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
			t.Fatalf("%s: error = %v, want %v", tc.name, err, tc.sentinel)
		}
		var oe *store.OpError
		if !errors.As(err, &oe) || oe.Index != tc.failing {
			t.Fatalf("%s: error = %#v, want a store.OpError of op %d", tc.name, err, tc.failing)
		}
		if revs != nil {
			t.Fatalf("%s: failed Apply returned revisions %v", tc.name, revs)
		}
		wantItem(t, b, "role", "existing", 1, "orig")
		wantMissing(t, b, "role", "new")
	}

	revs := apply(t, b,
		store.Op{Type: store.OpCreate, Item: item("role", "new", "x")},
		store.Op{Type: store.OpUpdate, Item: item("role", "existing", "y"), ExpectRevision: 1},
		store.Op{Type: store.OpDelete, Item: store.Item{Kind: "role", Name: "new"}},
	)
	if fmt.Sprint(revs) != "[1 2 0]" {
		t.Fatalf("revisions = %v, want [1 2 0]", revs)
	}
}

func testApplySameItemTwice(t *testing.T, b store.Backend) {
	revs := apply(t, b,
		store.Op{Type: store.OpCreate, Item: item("token", "t", "a")},
		store.Op{Type: store.OpUpdate, Item: item("token", "t", "b"), ExpectRevision: 1},
		store.Op{Type: store.OpUpsert, Item: item("token", "t", "c")},
	)
	if fmt.Sprint(revs) != "[1 2 3]" {
		t.Fatalf("revisions = %v, want [1 2 3]", revs)
	}
	wantItem(t, b, "token", "t", 3, "c")
}

func testMeta(t *testing.T, b store.Backend) {
	ctx := t.Context()
	if _, err := b.GetMeta(ctx, "trust_domain"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetMeta of unset key error = %v, want ErrNotFound", err)
	}
	if err := b.PutMetaOnce(ctx, "trust_domain", "example.org"); err != nil {
		t.Fatal(err)
	}
	if err := b.PutMetaOnce(ctx, "trust_domain", "example.org"); err != nil {
		t.Fatalf("PutMetaOnce with the same value: %v", err)
	}
	err := b.PutMetaOnce(ctx, "trust_domain", "evil.org")
	wantErr(t, err, store.ErrConflict, "trust_domain")
	v, err := b.GetMeta(ctx, "trust_domain")
	if err != nil || v != "example.org" {
		t.Fatalf("GetMeta = %q, %v; want example.org", v, err)
	}
	if err := b.PutMetaOnce(ctx, "other", ""); err != nil {
		t.Fatal(err)
	}
	if v, err := b.GetMeta(ctx, "other"); err != nil || v != "" {
		t.Fatalf("GetMeta(other) = %q, %v; want empty value", v, err)
	}
}

// chainHash is a stand-in for audit.HashRow: the store treats hashes as
// opaque and only checks that they link.
func chainHash(r store.AuditRow) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%d|%s|%s|%s|%s", r.Seq, r.Time.UTC().Format(time.RFC3339Nano), r.Type, r.Data, r.PrevHash))
	return hex.EncodeToString(sum[:])
}

var baseTime = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// rows makes n chained rows following (seq, hash).
func rows(seq int64, hash string, n int) []store.AuditRow {
	out := make([]store.AuditRow, n)
	for i := range out {
		seq++
		r := store.AuditRow{
			Seq:      seq,
			Time:     baseTime.Add(time.Duration(seq) * time.Second),
			Type:     []string{"svid.x509.issued", "svid.denied", "bot.join"}[seq%3],
			Actor:    fmt.Sprintf("bot:%d", seq%2),
			SPIFFEID: fmt.Sprintf("spiffe://example.org/svc/%d", seq%4),
			Outcome:  []string{"success", "denied"}[seq%2],
			Data:     fmt.Appendf(nil, `{"n":%d}`, seq),
			PrevHash: hash,
		}
		r.Hash = chainHash(r)
		hash = r.Hash
		out[i] = r
	}
	return out
}

func appendRows(t *testing.T, b store.Backend, rs []store.AuditRow) {
	t.Helper()
	if err := b.AppendAudit(t.Context(), rs); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
}

func wantHead(t *testing.T, b store.Backend, seq int64, hash string) {
	t.Helper()
	gotSeq, gotHash, err := b.AuditHead(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if gotSeq != seq || gotHash != hash {
		t.Fatalf("AuditHead = %d %q, want %d %q", gotSeq, gotHash, seq, hash)
	}
}

func testAuditAppend(t *testing.T, b store.Backend) {
	ctx := t.Context()
	wantHead(t, b, 0, "")
	if err := b.AppendAudit(ctx, nil); err != nil {
		t.Fatalf("appending nothing: %v", err)
	}
	wantHead(t, b, 0, "")

	first := rows(0, "", 3)
	// Times must come back as the same instant, in UTC, to the nanosecond,
	// whatever zone they were written in.
	first[1].Time = time.Date(2030, 6, 1, 12, 0, 0, 123456789, time.FixedZone("X", 5*3600))
	first[1].Data = []byte{0, 0xff, '"'}
	first[1].Hash = chainHash(first[1])
	first[2].PrevHash = first[1].Hash
	first[2].Hash = chainHash(first[2])
	appendRows(t, b, first)
	wantHead(t, b, 3, first[2].Hash)

	second := rows(3, first[2].Hash, 2)
	appendRows(t, b, second)
	wantHead(t, b, 5, second[1].Hash)

	got, err := b.QueryAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	want := append(first, second...)
	if len(got) != len(want) {
		t.Fatalf("QueryAudit returned %d rows, want %d", len(got), len(want))
	}
	for i := range want {
		if !sameRow(got[i], want[i]) {
			t.Fatalf("row %d = %+v, want %+v", i, got[i], want[i])
		}
		if got[i].Time.Location() != time.UTC {
			t.Fatalf("row %d time zone = %v, want UTC", i, got[i].Time.Location())
		}
	}
}

func sameRow(a, b store.AuditRow) bool {
	return a.Seq == b.Seq && a.Time.Equal(b.Time) && a.Type == b.Type && a.Actor == b.Actor &&
		a.SPIFFEID == b.SPIFFEID && a.Outcome == b.Outcome && bytes.Equal(a.Data, b.Data) &&
		a.PrevHash == b.PrevHash && a.Hash == b.Hash
}

func testAuditChain(t *testing.T, b store.Backend) {
	ctx := t.Context()
	good := rows(0, "", 2)
	appendRows(t, b, good)
	head := good[1]

	skip := rows(head.Seq+1, head.Hash, 1) // seq 4 after head 2
	wrongPrev := rows(head.Seq, "not-the-head", 1)
	replay := rows(0, "", 1) // seq 1 again
	broken := rows(head.Seq, head.Hash, 3)
	broken[2].PrevHash = "mismatch"
	gapInBatch := rows(head.Seq, head.Hash, 3)
	gapInBatch[2].Seq++

	for name, rs := range map[string][]store.AuditRow{
		"skipped seq":          skip,
		"wrong prev hash":      wrongPrev,
		"replayed seq":         replay,
		"broken link in batch": broken,
		"seq gap in batch":     gapInBatch,
	} {
		err := b.AppendAudit(ctx, rs)
		if !errors.Is(err, store.ErrAuditChain) {
			t.Fatalf("%s: error = %v, want ErrAuditChain", name, err)
		}
		wantHead(t, b, head.Seq, head.Hash)
		all, err := b.QueryAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 2 {
			t.Fatalf("%s: %d rows stored after a rejected append, want 2", name, len(all))
		}
	}
}

func testAuditQuery(t *testing.T, b store.Backend) {
	ctx := t.Context()
	all := rows(0, "", 12) // seq 1..12, times base+1s..base+12s
	appendRows(t, b, all)

	seqs := func(f store.AuditFilter) string {
		t.Helper()
		got, err := b.QueryAudit(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, r := range got {
			s = append(s, fmt.Sprint(r.Seq))
		}
		return strings.Join(s, ",")
	}
	at := func(seq int) time.Time { return baseTime.Add(time.Duration(seq) * time.Second) }
	cases := []struct {
		name string
		f    store.AuditFilter
		want string
	}{
		{"everything", store.AuditFilter{}, "1,2,3,4,5,6,7,8,9,10,11,12"},
		{"one type", store.AuditFilter{Types: []string{"bot.join"}}, "2,5,8,11"},
		{"two types", store.AuditFilter{Types: []string{"bot.join", "svid.denied"}}, "1,2,4,5,7,8,10,11"},
		{"actor", store.AuditFilter{Actor: "bot:0"}, "2,4,6,8,10,12"},
		{"spiffe id", store.AuditFilter{SPIFFEID: "spiffe://example.org/svc/1"}, "1,5,9"},
		{"outcome", store.AuditFilter{Outcome: "denied"}, "1,3,5,7,9,11"},
		{"since inclusive", store.AuditFilter{Since: at(10)}, "10,11,12"},
		{"until exclusive", store.AuditFilter{Until: at(3)}, "1,2"},
		{"time window", store.AuditFilter{Since: at(4), Until: at(7)}, "4,5,6"},
		{"since in another zone", store.AuditFilter{Since: at(11).In(time.FixedZone("W", -7*3600))}, "11,12"},
		// Nanosecond boundaries must compare as times, not as trimmed text.
		{"since just after", store.AuditFilter{Since: at(11).Add(time.Nanosecond)}, "12"},
		{"after seq", store.AuditFilter{AfterSeq: 9}, "10,11,12"},
		{"newest three, oldest first", store.AuditFilter{Limit: 3}, "10,11,12"},
		{"before seq", store.AuditFilter{BeforeSeq: 4}, "1,2,3"},
		{"newest two before seq", store.AuditFilter{BeforeSeq: 10, Limit: 2}, "8,9"},
		{"newest two denied", store.AuditFilter{Outcome: "denied", Limit: 2}, "9,11"},
		{"limit over count", store.AuditFilter{Types: []string{"bot.join"}, Limit: 100}, "2,5,8,11"},
		{"combined", store.AuditFilter{Types: []string{"svid.denied"}, Actor: "bot:0", AfterSeq: 4}, "10"},
		{"no match", store.AuditFilter{Actor: "nobody"}, ""},
	}
	for _, tc := range cases {
		if got := seqs(tc.f); got != tc.want {
			t.Errorf("%s: seqs = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func testAuditScan(t *testing.T, b store.Backend) {
	ctx := t.Context()
	// More than one page of any sensible page size, appended in batches.
	const total = 2503
	var seq int64
	var hash string
	for seq < total {
		rs := rows(seq, hash, min(500, total-int(seq)))
		appendRows(t, b, rs)
		seq, hash = rs[len(rs)-1].Seq, rs[len(rs)-1].Hash
	}

	var got []int64
	prev := ""
	err := b.ScanAudit(ctx, 0, func(r store.AuditRow) error {
		if r.PrevHash != prev {
			return fmt.Errorf("row %d does not chain", r.Seq)
		}
		if r.Hash != chainHash(r) {
			return fmt.Errorf("row %d came back altered", r.Seq)
		}
		prev = r.Hash
		got = append(got, r.Seq)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != total {
		t.Fatalf("scanned %d rows, want %d", len(got), total)
	}
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("scan position %d has seq %d", i, s)
		}
	}

	var after []int64
	if err := b.ScanAudit(ctx, total-2, func(r store.AuditRow) error {
		after = append(after, r.Seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(after) != fmt.Sprintf("[%d %d]", total-1, total) {
		t.Fatalf("scan after %d = %v", total-2, after)
	}

	stop := errors.New("stop")
	n := 0
	err = b.ScanAudit(ctx, 0, func(store.AuditRow) error {
		n++
		if n == 1500 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 1500 {
		t.Fatalf("scan stopped by callback: err = %v after %d rows, want stop after 1500", err, n)
	}
}

func testConcurrentApply(t *testing.T, b store.Backend) {
	ctx := t.Context()
	apply(t, b, store.Op{Type: store.OpCreate, Item: item("counter", "c", "0")})

	const workers, perWorker = 16, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				// Each worker also writes items of its own, two per Apply.
				if _, err := b.Apply(ctx,
					store.Op{Type: store.OpCreate, Item: item("own", fmt.Sprintf("w%d-%d", w, i), "x")},
					store.Op{Type: store.OpUpsert, Item: item("own", fmt.Sprintf("w%d-last", w), fmt.Sprint(i))},
				); err != nil {
					errs <- fmt.Errorf("worker %d: %w", w, err)
					return
				}
				// And increments the shared counter with compare-and-set.
				for {
					cur, err := b.Get(ctx, "counter", "c")
					if err != nil {
						errs <- fmt.Errorf("worker %d: %w", w, err)
						return
					}
					_, err = b.Apply(ctx, store.Op{Type: store.OpUpdate, Item: item("counter", "c", "x"), ExpectRevision: cur.Revision})
					if errors.Is(err, store.ErrConflict) {
						continue // another worker got there first; reread
					}
					if err != nil {
						errs <- fmt.Errorf("worker %d: %w", w, err)
						return
					}
					break
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	c, err := b.Get(ctx, "counter", "c")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(1 + workers*perWorker); c.Revision != want {
		t.Fatalf("counter revision = %d, want %d: an update was lost", c.Revision, want)
	}
	own, err := b.List(ctx, "own")
	if err != nil {
		t.Fatal(err)
	}
	if want := workers*perWorker + workers; len(own) != want {
		t.Fatalf("%d own items, want %d", len(own), want)
	}
	for _, it := range own {
		if strings.HasSuffix(it.Name, "-last") && (it.Revision != perWorker || string(it.Data) != fmt.Sprint(perWorker-1)) {
			t.Fatalf("%s = rev %d %q, want rev %d %q", it.Name, it.Revision, it.Data, perWorker, fmt.Sprint(perWorker-1))
		}
	}
}

func testConcurrentAudit(t *testing.T, b store.Backend) {
	ctx := t.Context()
	const workers, perWorker = 16, 5
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for range perWorker {
				for {
					seq, hash, err := b.AuditHead(ctx)
					if err != nil {
						errs <- err
						return
					}
					err = b.AppendAudit(ctx, rows(seq, hash, 2))
					if errors.Is(err, store.ErrAuditChain) {
						continue
					}
					if err != nil {
						errs <- fmt.Errorf("worker %d: %w", w, err)
						return
					}
					break
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	const total = workers * perWorker * 2
	var n int64
	prev := ""
	if err := b.ScanAudit(ctx, 0, func(r store.AuditRow) error {
		n++
		if r.Seq != n || r.PrevHash != prev {
			return fmt.Errorf("row %d breaks the chain", r.Seq)
		}
		prev = r.Hash
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != total {
		t.Fatalf("%d rows, want %d", n, total)
	}
	wantHead(t, b, total, prev)
}

// AppendAroundTheHead checks a backend in which the caller has planted
// audit row 2 (hash "h2") behind the head's back, as an operator's SQL
// shell could: an append of rows 1 and 2 must fail with ErrAuditChain and
// leave the head and the rows as they were. Planting takes each backend's
// own SQL, so the caller does it.
func AppendAroundTheHead(t *testing.T, db store.Backend) {
	t.Helper()
	ctx := t.Context()
	rows := []store.AuditRow{
		{Seq: 1, Type: "t", Outcome: "success", Hash: "h1"},
		{Seq: 2, Type: "t", Outcome: "success", PrevHash: "h1", Hash: "x2"},
	}
	err := db.AppendAudit(ctx, rows)
	if !errors.Is(err, store.ErrAuditChain) {
		t.Fatalf("AppendAudit over an existing seq: %v, want ErrAuditChain", err)
	}
	if seq, _, _ := db.AuditHead(ctx); seq != 0 {
		t.Fatalf("head moved to %d after a failed append", seq)
	}
	got, err := db.QueryAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Hash != "h2" {
		t.Fatalf("rows after failed append = %+v, want only the planted one", got)
	}
}
