package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/wid-project/wid/internal/core/store"
)

// Problem kinds.
const (
	// ProblemEdited: a stored event (or the head) no longer matches what
	// was recorded.
	ProblemEdited = "edited"
	// ProblemGap: events are missing from the middle of the log.
	ProblemGap = "gap"
	// ProblemBrokenLink: an event does not refer to the one before it.
	ProblemBrokenLink = "broken_link"
	// ProblemTruncated: the newest events are missing.
	ProblemTruncated = "truncated"
)

// Report is the outcome of Verify. The log is intact when Problems is empty.
type Report struct {
	// Events is how many stored events were checked.
	Events int64
	// HeadSeq and HeadHash are the log's head as the store records it: the
	// newest event. Export them (widctl audit verify prints them) to check
	// the log against them later.
	HeadSeq  int64
	HeadHash string
	Problems []Problem
}

// Head is an event a log must contain, recorded outside the store (the
// trust domain's anchor, or a head an operator exported): a store rewritten
// whole, head included, still cannot forge it.
type Head struct {
	Seq  int64
	Hash string
	// Source names where the head came from, for messages ("the anchor").
	Source string
}

// Problem is one thing wrong with the log.
type Problem struct {
	// Seq is the event concerned; for a gap or a truncation, the first
	// missing one.
	Seq int64
	// Kind is one of the Problem* constants.
	Kind string
	// Message says what is wrong in one sentence.
	Message string
}

// errStopScan ends a scan early without being an error.
var errStopScan = errors.New("stop scan")

// Verify reads the whole log and checks that every event still hashes to
// its recorded hash, that each refers to the one before it, that no seq is
// missing, that the newest event is the one the head records, and that
// every indexed column agrees with the event it was derived from.
//
// Each of heads must be in the log: an event with that seq and hash. One
// missing means the newest events were removed (truncated) or the history
// was replaced (edited), even when the store's own head was rewritten to
// match.
func (l *Log) Verify(ctx context.Context, heads ...Head) (Report, error) {
	// Take the head first: events appended while we scan lie beyond it and
	// are left for the next run rather than mistaken for tampering.
	headSeq, headHash, err := l.backend.AuditHead(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("verifying audit log: %w", err)
	}
	rep := Report{HeadSeq: headSeq, HeadHash: headHash}
	// want maps each seq a head names to its heads, checked as the scan passes.
	want := map[int64][]Head{}
	for _, h := range heads {
		if h.Seq > 0 {
			want[h.Seq] = append(want[h.Seq], h)
		}
	}
	var (
		prevSeq         int64
		prevStoredHash  string
		prevDerivedHash string
		lastEdited      bool
		beyond          int64
	)
	err = l.backend.ScanAudit(ctx, 0, func(r store.AuditRow) error {
		if r.Seq > headSeq {
			beyond = r.Seq
			return errStopScan
		}
		rep.Events++
		derived := HashRow(r)
		for _, h := range want[r.Seq] {
			if h.Hash != r.Hash || h.Hash != derived {
				rep.Problems = append(rep.Problems, Problem{
					Seq: r.Seq, Kind: ProblemEdited,
					Message: fmt.Sprintf("event %d is not the one %s records: the log's history was replaced from there on.", r.Seq, h.Source),
				})
			}
		}
		delete(want, r.Seq)
		lastEdited = false
		if p, ok := checkRow(r, derived); !ok {
			rep.Problems = append(rep.Problems, p)
			lastEdited = true
		}
		switch {
		case r.Seq > prevSeq+1:
			rep.Problems = append(rep.Problems, Problem{
				Seq: prevSeq + 1, Kind: ProblemGap, Message: missing(prevSeq+1, r.Seq-1),
			})
		case r.Seq == 1 && r.PrevHash != "":
			rep.Problems = append(rep.Problems, Problem{
				Seq: 1, Kind: ProblemBrokenLink, Message: "event 1 should start the chain but refers to an earlier event.",
			})
		// A previous event whose own hash column was edited is reported as
		// edited; its successor still links to what it really hashes to.
		case r.Seq > 1 && r.PrevHash != prevStoredHash && r.PrevHash != prevDerivedHash:
			rep.Problems = append(rep.Problems, Problem{
				Seq: r.Seq, Kind: ProblemBrokenLink,
				Message: fmt.Sprintf("event %d does not link to event %d: its prev_hash is not event %d's hash.", r.Seq, prevSeq, prevSeq),
			})
		}
		prevSeq, prevStoredHash, prevDerivedHash = r.Seq, r.Hash, derived
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return Report{}, fmt.Errorf("verifying audit log: %w", err)
	}

	switch {
	case prevSeq < headSeq:
		rep.Problems = append(rep.Problems, Problem{
			Seq: prevSeq + 1, Kind: ProblemTruncated,
			Message: truncated(prevSeq+1, headSeq),
		})
	case headSeq > 0 && prevStoredHash != headHash && prevDerivedHash != headHash && !lastEdited:
		rep.Problems = append(rep.Problems, Problem{
			Seq: headSeq, Kind: ProblemEdited,
			Message: fmt.Sprintf("the log's head was edited: it records a different hash for event %d than the event has.", headSeq),
		})
	}
	// Heads beyond what the scan reached: the newest events are gone, even
	// if the store's head was rewritten to hide it.
	// (Up to the store's head, a missing event is already a gap or a
	// truncation above; past it, rows the scan left are reported below.)
	for _, seq := range slices.Sorted(maps.Keys(want)) {
		if seq <= headSeq || (beyond > 0 && seq >= beyond) {
			continue
		}
		for _, h := range want[seq] {
			rep.Problems = append(rep.Problems, Problem{
				Seq: headSeq + 1, Kind: ProblemTruncated,
				Message: anchoredTruncation(headSeq+1, seq, h.Source),
			})
		}
	}
	if beyond > 0 {
		// Appends that raced the scan move the head past them; anything
		// still beyond it was written around the log.
		nowSeq, _, err := l.backend.AuditHead(ctx)
		if err != nil {
			return Report{}, fmt.Errorf("verifying audit log: %w", err)
		}
		if beyond > nowSeq {
			rep.Problems = append(rep.Problems, Problem{
				Seq: beyond, Kind: ProblemEdited,
				Message: fmt.Sprintf("event %d lies past the log's head (event %d): it was added outside wid or the head was edited.", beyond, nowSeq),
			})
		}
	}
	return rep, nil
}

// checkRow reports whether r is as it was recorded: its hash is derived
// from its content and its indexed columns agree with its data.
func checkRow(r store.AuditRow, derived string) (Problem, bool) {
	edited := func(format string, args ...any) Problem {
		return Problem{Seq: r.Seq, Kind: ProblemEdited, Message: fmt.Sprintf(format, args...)}
	}
	var ev Event
	if err := json.Unmarshal(r.Data, &ev); err != nil {
		return edited("event %d was edited: its data is no longer a readable event.", r.Seq), false
	}
	name := fmt.Sprintf("event %d (%s)", r.Seq, ev.Type)
	if ev.Type == "" {
		name = fmt.Sprintf("event %d", r.Seq)
	}
	column, stored, recorded := mismatchedColumn(r, ev)
	switch {
	case column == "time" && r.Time.IsZero():
		return edited("%s was edited: its time column no longer holds a valid time.", name), false
	case derived != r.Hash && column != "":
		return edited("%s was edited: its %s column reads %q but the event recorded %q.", name, column, stored, recorded), false
	case derived != r.Hash:
		return edited("%s was edited: its contents no longer match its hash.", name), false
	case column != "":
		// The hash holds, so the row was forged whole, hash included.
		return edited("%s is forged: its %s column reads %q but its data says %q.", name, column, stored, recorded), false
	}
	return Problem{}, true
}

// mismatchedColumn returns the first indexed column of r that disagrees
// with the event in its data, and both values.
func mismatchedColumn(r store.AuditRow, ev Event) (column, stored, recorded string) {
	switch {
	case !r.Time.Equal(ev.Time):
		return "time", r.Time.UTC().Format(time.RFC3339Nano), ev.Time.UTC().Format(time.RFC3339Nano)
	case r.Type != ev.Type:
		return "type", r.Type, ev.Type
	case r.Actor != ev.Actor:
		return "actor", r.Actor, ev.Actor
	case r.SPIFFEID != ev.SPIFFEID:
		return "spiffe_id", r.SPIFFEID, ev.SPIFFEID
	case r.Outcome != ev.Outcome:
		return "outcome", r.Outcome, ev.Outcome
	}
	return "", "", ""
}

func missing(from, to int64) string {
	if from == to {
		return fmt.Sprintf("event %d is missing: it was deleted from the log.", from)
	}
	return fmt.Sprintf("events %d to %d are missing: they were deleted from the log.", from, to)
}

func truncated(from, to int64) string {
	if from == to {
		return fmt.Sprintf("event %d, the newest, is missing: the log's head records it but it was deleted.", from)
	}
	return fmt.Sprintf("events %d to %d, the newest, are missing: the log's head records them but they were deleted.", from, to)
}

func anchoredTruncation(from, to int64, source string) string {
	if from == to {
		return fmt.Sprintf("event %d, recorded by %s, is missing: the newest events were removed.", to, source)
	}
	return fmt.Sprintf("events %d to %d are missing: %s records event %d, so the newest events were removed.", from, to, source, to)
}
