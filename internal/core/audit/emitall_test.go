package audit_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/store"
)

// countingBackend counts AppendAudit calls: one per commit.
type countingBackend struct {
	store.Backend
	mu      sync.Mutex
	appends int
}

func (c *countingBackend) AppendAudit(ctx context.Context, rows []store.AuditRow) error {
	c.mu.Lock()
	c.appends++
	c.mu.Unlock()
	return c.Backend.AppendAudit(ctx, rows)
}

func TestEmitAllCommitsInFewBatchesInOrder(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "wid.db"))
	defer db.Close()
	cb := &countingBackend{Backend: db}
	tl := startLog(t, cb)
	defer tl.stop()

	const n = 1200 // over two full batches of 512
	evs := make([]audit.Event, n)
	for i := range evs {
		evs[i] = event(i)
	}
	got, err := tl.EmitAll(context.Background(), evs)
	if err != nil {
		t.Fatalf("EmitAll: %v", err)
	}
	if len(got) != n {
		t.Fatalf("EmitAll returned %d events, want %d", len(got), n)
	}
	for i, ev := range got {
		if ev.Seq != int64(i+1) || ev.Reason != evs[i].Reason || ev.Hash == "" {
			t.Fatalf("event %d came back as seq %d reason %q: want seq %d in order", i, ev.Seq, ev.Reason, i+1)
		}
	}
	cb.mu.Lock()
	commits := cb.appends
	cb.mu.Unlock()
	if commits != 3 {
		t.Errorf("%d events took %d commits, want 3 (batches of at most 512)", n, commits)
	}
	wantClean(t, tl.Log, n)
}

func TestEmitAllRejectsAnIncompleteEventBeforeRecordingAny(t *testing.T) {
	tl := newTestLog(t)
	evs := []audit.Event{event(0), {Type: audit.TypeJoin}}
	if _, err := tl.EmitAll(context.Background(), evs); err == nil || !strings.Contains(err.Error(), "outcome") {
		t.Fatalf("EmitAll with an event lacking an outcome: %v", err)
	}
	wantClean(t, tl.Log, 0)
	if got, err := tl.EmitAll(context.Background(), nil); err != nil || got != nil {
		t.Fatalf("EmitAll(nil) = %v, %v", got, err)
	}
}
