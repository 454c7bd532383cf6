package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/audit"
)

// TestAuditAnswerPagesBySize: an answer keeps the newest events that fit,
// says where to page back from, and paging returns every event once, in
// order; a field written before events were bounded is cut on the wire.
func TestAuditAnswerPagesBySize(t *testing.T) {
	var evs []audit.Event
	for i := 1; i <= 10; i++ {
		evs = append(evs, audit.Event{Seq: int64(i), Time: time.Unix(int64(i), 0), Type: "t", Actor: "a", Reason: strings.Repeat("r", 1000)})
	}
	var got []int64
	before := int64(0)
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		var window []audit.Event
		for _, e := range evs {
			if before == 0 || e.Seq < before {
				window = append(window, e)
			}
		}
		resp := auditAnswer(window, 3500)
		if len(resp.Events) == 0 || len(resp.Events) > 3 {
			t.Fatalf("page of %d events for a 3500-byte budget", len(resp.Events))
		}
		var page []int64
		for _, e := range resp.Events {
			page = append(page, e.Seq)
		}
		got = append(page, got...)
		if resp.NextBeforeSeq == 0 {
			break
		}
		if resp.NextBeforeSeq != page[0] {
			t.Fatalf("next_before_seq %d, want the oldest answered, %d", resp.NextBeforeSeq, page[0])
		}
		before = resp.NextBeforeSeq
	}
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("paged seqs %v, want 1..10 once each", got)
		}
	}

	huge := auditAnswer([]audit.Event{{Seq: 1, Host: strings.Repeat("h", 3<<20), Details: map[string]string{"k": strings.Repeat("v", 1<<20)}}}, maxAuditAnswer)
	if len(huge.Events) != 1 || len(huge.Events[0].Host) != maxWireAuditField || len(huge.Events[0].Details["k"]) != maxWireAuditField ||
		huge.Events[0].Details["wire_truncated"] == "" {
		t.Errorf("an event with a 3 MB host was not cut and marked: host %d bytes, details %d", len(huge.Events[0].Host), len(huge.Events[0].Details))
	}
}
