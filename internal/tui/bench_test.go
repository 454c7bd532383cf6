package tui

import (
	"fmt"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	authv1 "github.com/wid-project/wid/api/auth/v1"
)

// fullModel is a dashboard holding as many SVID events as it ever keeps.
func fullModel(b *testing.B) *Model {
	m := newTestModel(asciiRenderer())
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	for i := range maxEvents {
		m.Update(EventMsg{Event: &authv1.AuditEvent{Seq: int64(i + 1), Time: at(time.Duration(maxEvents-i) * time.Millisecond),
			Type: "svid.x509.issued", SpiffeId: fmt.Sprintf("spiffe://example.org/svc/web/%d", i), SvidType: "x509",
			Actor: "bot:local-agent", Serial: fmt.Sprintf("%032x", i), TtlSeconds: 3600,
			Attributes: map[string]string{"workload.unix.pid": "4242", "workload.unix.uid": "1000", "workload.unix.path": "/usr/bin/web"}}})
	}
	return m
}

// BenchmarkKeyToRedraw is a key press and the redraw that follows, with the
// list full (the issue asks for under 50 ms).
func BenchmarkKeyToRedraw(b *testing.B) {
	m := fullModel(b)
	down := keyMsg("down")
	for b.Loop() {
		m.Update(down)
		_ = m.View()
	}
}

// BenchmarkEventToRedraw is one live event arriving and the redraw, with the
// list full and a filter set (500 events/s must leave time for keys).
func BenchmarkEventToRedraw(b *testing.B) {
	m := fullModel(b)
	m.svids.filter.SetValue("web/1")
	m.svids.refilter()
	seq := int64(maxEvents)
	for b.Loop() {
		seq++
		m.Update(EventMsg{Event: &authv1.AuditEvent{Seq: seq, Time: at(0), Type: "svid.x509.issued",
			SpiffeId: fmt.Sprintf("spiffe://example.org/svc/web/%d", seq), TtlSeconds: 3600}})
		_ = m.View()
	}
}

// BenchmarkFirstScreen is a backlog of 500 events and the first screen.
func BenchmarkFirstScreen(b *testing.B) {
	for b.Loop() {
		m := newTestModel(asciiRenderer())
		m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
		for i := range Backlog {
			m.Update(EventMsg{Event: &authv1.AuditEvent{Seq: int64(i + 1), Time: at(0), Type: "svid.x509.issued",
				SpiffeId: fmt.Sprintf("spiffe://example.org/svc/web/%d", i), TtlSeconds: 3600}})
		}
		_ = m.View()
	}
}
