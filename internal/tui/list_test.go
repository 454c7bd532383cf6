package tui

import (
	"fmt"
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	authv1 "github.com/wid-project/wid/api/auth/v1"
)

// TestEventListBounded: the list keeps the newest maxEvents, newest first,
// filtered incrementally the same as from scratch, and the selection stays
// on its event as new ones arrive.
func TestEventListBounded(t *testing.T) {
	l := newEventList(newKeyMap(), newStyles(asciiRenderer()), svidColumns(newMarks()))
	l.SetSize(80, 20)
	l.filter.SetValue("/svc/odd")
	for i := 1; i <= maxEvents+100; i++ {
		id := "/svc/even"
		if i%2 == 1 {
			id = "/svc/odd"
		}
		l.add(&authv1.AuditEvent{Seq: int64(i), Type: "svid.x509.issued", SpiffeId: "spiffe://example.org" + id + fmt.Sprint(i)})
		if i == maxEvents {
			l.Update(keyMsg("down"))
			l.Update(keyMsg("down"))
		}
	}
	if len(l.events) != maxEvents || l.events[0].Seq != 101 {
		t.Fatalf("kept %d events from seq %d, want %d from 101", len(l.events), l.events[0].Seq, maxEvents)
	}
	incremental := append([]*authv1.AuditEvent(nil), l.shown...)
	l.refilter()
	if len(incremental) != len(l.shown) || len(incremental) != maxEvents/2 {
		t.Fatalf("incremental filter shows %d, from scratch %d, want %d", len(incremental), len(l.shown), maxEvents/2)
	}
	for i := range incremental {
		if incremental[i] != l.shown[i] {
			t.Fatalf("at %d incremental shows seq %d, from scratch %d", i, incremental[i].Seq, l.shown[i].Seq)
		}
	}
	if got := l.selected().Seq; got != maxEvents-5 {
		t.Errorf("selection moved to seq %d, want it to stay on %d", got, maxEvents-5)
	}
}

func TestAttestationWhere(t *testing.T) {
	var where column
	for _, c := range attestColumns() {
		if c.title == "PATH / POD" {
			where = c
		}
	}
	st := newStyles(asciiRenderer())
	for _, tc := range []struct {
		attrs map[string]string
		want  string
	}{
		{map[string]string{"workload.unix.path": "/usr/bin/web"}, "/usr/bin/web"},
		{map[string]string{"workload.kubernetes.namespace": "prod", "workload.kubernetes.pod_name": "web-7d9", "workload.kubernetes.service_account": "web", "workload.unix.path": "/app"}, "prod/web-7d9 sa:web /app"},
	} {
		if got := where.cell(&authv1.AuditEvent{Attributes: tc.attrs}, fixedNow, st); got != tc.want {
			t.Errorf("attributes %v show as %q, want %q", tc.attrs, got, tc.want)
		}
	}
}

// TestDetailShowsEverything: a long value wraps and a long event scrolls,
// so every field can be read at 80x24.
func TestDetailShowsEverything(t *testing.T) {
	l := newEventList(newKeyMap(), newStyles(asciiRenderer()), svidColumns(newMarks()))
	l.SetSize(80, 10)
	attrs := map[string]string{}
	for i := range 20 {
		attrs[fmt.Sprintf("workload.kubernetes.label.l%02d", i)] = fmt.Sprint(i)
	}
	long := strings.Repeat("0123456789", 12)
	l.add(&authv1.AuditEvent{Seq: 7, Type: "svid.denied", Reason: long, Attributes: attrs, Hash: "h-last"})
	l.Update(keyMsg("enter"))
	var seen strings.Builder
	for range 40 {
		v := l.View(fixedNow)
		if n := strings.Count(v, "\n") + 1; n != 10 {
			t.Fatalf("detail pane is %d lines, want 10:\n%s", n, v)
		}
		seen.WriteString(v)
		l.Update(keyMsg("down"))
	}
	all := strings.ReplaceAll(seen.String(), " ", "")
	for _, want := range []string{"workload.kubernetes.label.l19", "h-last"} {
		if !strings.Contains(all, want) {
			t.Errorf("scrolling the detail pane never shows %q", want)
		}
	}
	if !strings.Contains(seen.String(), long[:50]) || !strings.Contains(seen.String(), long[100:]) {
		t.Errorf("the reason is cut instead of wrapped")
	}
}

// TestWaitForBatches: what is queued comes in one message, in order, up to
// maxBatch, so that a backlog is drawn in a few frames rather than one each.
func TestWaitForBatches(t *testing.T) {
	ch := make(chan tea.Msg, 2*maxBatch)
	for i := range maxBatch + 44 {
		ch <- EventMsg{Event: &authv1.AuditEvent{Seq: int64(i + 1)}}
	}
	var seqs []int64
	for _, want := range []int{maxBatch, 44} {
		b, ok := waitFor(ch)().(feedMsg)
		if !ok || len(b) != want {
			t.Fatalf("batch of %d, want %d", len(b), want)
		}
		for _, m := range b {
			seqs = append(seqs, m.(EventMsg).Event.Seq)
		}
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("batches out of order at %d: %d", i, s)
		}
	}
	close(ch)
	if m := waitFor(ch)(); m != nil {
		t.Errorf("a closed feed gave %v, want nothing", m)
	}
}
