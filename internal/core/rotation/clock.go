package rotation

import (
	"sync"
	"time"

	"github.com/wid-project/wid/internal/core/ca"
)

// monotonicClock reads the time elapsed since start on the monotonic
// clock, which a change of the wall clock (NTP stepping it, an admin
// setting it, a VM resumed) does not move.
func monotonicClock() func() time.Duration {
	start := time.Now()
	return func() time.Duration { return time.Since(start) }
}

// StepSchedule times the steps of automatic rotations on the monotonic
// clock. A CA's document keeps when its phase started as a wall-clock time,
// for display, for a restarted auth service and for the replica that takes
// the lease over; that time is read once, when the driver first sees a
// phase, to learn how much of the phase is left, and
// from then on only monotonic time counts, so a wall-clock jump neither
// fires a step early nor holds one back.
type StepSchedule struct {
	wall   func() time.Time
	mono   func() time.Duration
	phases map[ca.Type]phaseDue
}

// phaseDue is when (on the monotonic clock) the phase a CA took at one
// generation is over.
type phaseDue struct {
	generation int64
	at         time.Duration
}

// NewStepSchedule returns a schedule reading the wall and monotonic clocks.
func NewStepSchedule(wall func() time.Time, mono func() time.Duration) *StepSchedule {
	return &StepSchedule{wall: wall, mono: mono, phases: map[ca.Type]phaseDue{}}
}

// Due reports whether doc's automatic rotation may move on from its
// current phase now.
func (s *StepSchedule) Due(doc ca.Document) bool {
	next := doc.NextStepAt()
	if next.IsZero() || doc.Rotation == nil {
		delete(s.phases, doc.Type)
		return false
	}
	p, ok := s.phases[doc.Type]
	if !ok || p.generation != doc.Generation {
		// What is left of the phase, by the wall clock this once; never
		// more than the whole phase, so that a clock behind the one that
		// started it (another replica's, or this one's before a jump back
		// and a restart) cannot stretch it.
		length := next.Sub(doc.Rotation.PhaseStarted)
		left := min(max(next.Sub(s.wall()), 0), length)
		p = phaseDue{generation: doc.Generation, at: s.mono() + left}
		s.phases[doc.Type] = p
	}
	return s.mono() >= p.at
}

// settleTimes times the settle an agent's workloads get after it renewed
// (WorkloadSettle) on this process's monotonic clock. The renewal's time
// is stored as wall-clock time, possibly by another replica; it is read
// once, when this process first sees it, to learn what is left of the
// settle (never more than all of it), and from then on only monotonic
// time counts.
type settleTimes struct {
	wall func() time.Time
	mono func() time.Duration

	mu sync.Mutex
	// due is, by agent and CA type, the renewal time seen and when (on the
	// monotonic clock) its settle ends.
	due map[string]settleDue
}

type settleDue struct {
	since time.Time
	at    time.Duration
}

func newSettleTimes(wall func() time.Time, mono func() time.Duration) *settleTimes {
	return &settleTimes{wall: wall, mono: mono, due: map[string]settleDue{}}
}

// settled reports whether WorkloadSettle has passed since the renewal at
// since of what key names.
func (s *settleTimes) settled(key string, since time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.mono()
	d, ok := s.due[key]
	if !ok || !d.since.Equal(since) {
		left := min(max(WorkloadSettle-s.wall().Sub(since), 0), WorkloadSettle)
		d = settleDue{since: since, at: now + left}
		s.due[key] = d
		// Entries long settled are of no more use; dropping them keeps the
		// map to the agents that renewed lately.
		for k, o := range s.due {
			if now-o.at > time.Hour {
				delete(s.due, k)
			}
		}
	}
	return now >= d.at
}
