package rotation

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/store/sqlite"
)

// jumpyClock is a wall clock that an admin, NTP or a resumed VM may set
// anywhere, and the monotonic clock that only moves forward with time.
type jumpyClock struct {
	base    time.Time
	elapsed time.Duration // monotonic
	offset  time.Duration // how far the wall clock was set off
}

func (c *jumpyClock) wall() time.Time         { return c.base.Add(c.elapsed + c.offset) }
func (c *jumpyClock) mono() time.Duration     { return c.elapsed }
func (c *jumpyClock) advance(d time.Duration) { c.elapsed += d }
func (c *jumpyClock) jump(d time.Duration)    { c.offset += d }

// An automatic rotation of 3 hours has three phases of an hour each. The
// wall clock jumps a day ahead during init, a day back (before the rotation
// started) during update_clients, and ahead again during update_servers:
// every step still comes exactly an hour after the one before, as the
// driver's minute ticks see it.
func TestAutomaticRotationStepsIgnoreWallClockJumps(t *testing.T) {
	c := &jumpyClock{base: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	sched := NewStepSchedule(c.wall, c.mono)
	const grace, phase = 3 * time.Hour, time.Hour
	doc := ca.Document{Type: ca.TypeSPIFFE, Mode: ca.ModeAuto, Phase: ca.PhaseInit, Generation: 1,
		Rotation: &ca.Rotation{Started: c.wall(), PhaseStarted: c.wall(), GracePeriod: grace, Tail: rotationTailFor(grace)}}
	if got := doc.NextStepAt().Sub(doc.Rotation.PhaseStarted); got != phase {
		t.Fatalf("init lasts %s, want %s", got, phase)
	}
	jumps := map[time.Duration]time.Duration{
		20 * time.Minute:  24 * time.Hour,  // during init
		80 * time.Minute:  -48 * time.Hour, // during update_clients: a day before the start
		150 * time.Minute: 36 * time.Hour,  // during update_servers
	}
	var steps []time.Duration
	phaseStart := c.mono()
	for c.mono() <= 4*time.Hour && doc.Phase != ca.PhaseStandby {
		if d, ok := jumps[c.mono()]; ok {
			c.jump(d)
		}
		if sched.Due(doc) {
			if took := c.mono() - phaseStart; took != phase {
				t.Fatalf("%s moved on after %s (wall clock %s), want %s", doc.Phase, took, c.wall().Format(time.RFC3339), phase)
			}
			steps = append(steps, c.mono())
			r := *doc.Rotation
			r.PhaseStarted = c.wall() // stored as wall-clock time, as the CA manager does
			doc.Phase, doc.Generation, doc.Rotation = ca.NextPhase(doc.Phase), doc.Generation+1, &r
			phaseStart = c.mono()
		}
		c.advance(time.Minute)
	}
	if len(steps) != 3 || steps[2] != grace {
		t.Fatalf("steps at %v, want three, the last at %s", steps, grace)
	}
}

// rotationTailFor is the Tail the CA manager gives a rotation whose
// issuances live no longer than two thirds of it.
func rotationTailFor(grace time.Duration) time.Duration { return grace * 2 / 3 }

// A restarted auth service learns what is left of a phase from the stored
// wall-clock time, once: a clock behind the one that started the phase
// cannot make the phase longer than it is, and a jump after that moves
// nothing.
func TestAutomaticRotationStepAfterRestartWithClockBehind(t *testing.T) {
	started := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	doc := ca.Document{Type: ca.TypeSPIFFE, Mode: ca.ModeAuto, Phase: ca.PhaseInit, Generation: 4,
		Rotation: &ca.Rotation{Started: started, PhaseStarted: started, GracePeriod: 3 * time.Hour, Tail: 2 * time.Hour}}
	// This process's clock is a day behind the one that stored the phase.
	c := &jumpyClock{base: started.Add(-24 * time.Hour)}
	sched := NewStepSchedule(c.wall, c.mono)
	if sched.Due(doc) {
		t.Fatal("a step fired at once")
	}
	c.advance(time.Hour - time.Second)
	c.jump(-time.Hour)
	if sched.Due(doc) {
		t.Fatal("a step fired before the phase's length had passed")
	}
	c.advance(time.Second)
	if !sched.Due(doc) {
		t.Fatal("no step once the phase's length had passed on this process's clock")
	}

	// Started 40 minutes ago by the stored time: 20 minutes are left.
	c = &jumpyClock{base: started.Add(40 * time.Minute)}
	sched = NewStepSchedule(c.wall, c.mono)
	sched.Due(doc)
	c.jump(12 * time.Hour)
	c.advance(20*time.Minute - time.Second)
	if sched.Due(doc) {
		t.Fatal("a step fired early after a jump ahead")
	}
	c.advance(time.Second)
	if !sched.Due(doc) {
		t.Fatal("no step when the rest of the phase had passed")
	}
}

// The 2 s an agent's workloads get to take renewed SVIDs up before a step
// drops a key are measured on the monotonic clock from when this process
// first sees the renewal: a wall clock set back a day does not hold the step
// for a day, nor does one set ahead end the wait early.
func TestWorkloadSettleIgnoresWallClockJumps(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "wid.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := &jumpyClock{base: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	tr := NewTracker(db, c.wall, slog.New(slog.DiscardHandler), "replica-a")
	tr.mono, tr.settles = c.mono, newSettleTimes(c.wall, c.mono)
	defer tr.Connect(ctx, "edge", "host-a")()
	typ := string(ca.TypeSPIFFE)
	if ok, err := tr.Report(ctx, "edge", "host-a", map[string]int64{typ: 2}, map[string]string{typ: "new"}, map[string]int64{typ: 3}); !ok || err != nil {
		t.Fatalf("the report was refused: %v", err)
	}
	g := Gate{Generation: 3, Sequence: 2, Signer: "new"}
	settling := func() string {
		agents, err := tr.Live(ctx, time.Hour)
		if err != nil || len(agents) != 1 {
			t.Fatalf("live agents: %v, %v", agents, err)
		}
		return tr.SettleReason(ca.TypeSPIFFE, g, agents[0])
	}

	// The report wakes the rotation loop, which sees the renewal at once.
	if settling() == "" {
		t.Fatal("no settle right after the agent renewed")
	}
	c.jump(24 * time.Hour)
	if settling() == "" {
		t.Fatal("a wall clock set a day ahead ended the settle at once")
	}
	c.jump(-48 * time.Hour)
	c.advance(WorkloadSettle - time.Millisecond)
	if settling() == "" {
		t.Fatal("the settle ended early")
	}
	c.advance(time.Millisecond)
	if why := settling(); why != "" {
		t.Fatalf("a wall clock set a day back holds the step: %s", why)
	}
}
