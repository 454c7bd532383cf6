package auth

import (
	"context"
	"fmt"
	"time"

	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/lease"
	"github.com/wid-project/wid/internal/core/login"
	"github.com/wid-project/wid/internal/core/rotation"
	"golang.org/x/sync/errgroup"
)

// periodicLease names the lease whose holder does the work that must run
// on exactly one replica of a trust domain.
const periodicLease = "periodic"

// sweepEvery is how often the lease holder forgets stale records.
const sweepEvery = time.Hour

// runPeriodic runs, until ctx ends, what every replica does in the
// background (heartbeats of the agents it serves) and contends for the
// periodic-work lease, doing that work while it holds it: automatic CA
// rotations and sweeps of stale records.
func (s *Server) runPeriodic(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		beat := time.NewTicker(rotation.HeartbeatInterval)
		defer beat.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-beat.C:
				s.agents.Heartbeat(ctx)
			}
		}
	})
	l := lease.New(s.db, periodicLease, s.replica, s.cfg.LeaseTTL, s.log)
	g.Go(func() error {
		return l.Run(ctx, func(ctx context.Context) {
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.runSweeps(ctx)
			}()
			fedDone := make(chan struct{})
			go func() {
				defer close(fedDone)
				s.runFederationRefresh(ctx)
			}()
			s.runRotations(ctx)
			<-done
			<-fedDone
		})
	})
	return g.Wait()
}

// runSweeps forgets what nobody needs any more, at once and then every
// sweepEvery, until ctx ends.
func (s *Server) runSweeps(ctx context.Context) {
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		login.ForgetIdleUnknown(ctx, s.db, s.clock(), s.log)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// refreshCAs reloads the CAs when the store holds a step or key change
// that this replica has not loaded, made by another replica.
func (s *Server) refreshCAs(ctx context.Context) error {
	items, err := s.db.List(ctx, ca.StoreKind)
	if err != nil {
		return fmt.Errorf("reading the CAs: %w", err)
	}
	for _, it := range items {
		stored, err := ca.DecodeDocument(it)
		if err != nil {
			return err
		}
		loaded, err := s.cas.Document(stored.Type)
		if err != nil || loaded.Generation != stored.Generation || loaded.Sequence != stored.Sequence || loaded.Phase != stored.Phase {
			return s.cas.Reload(ctx)
		}
	}
	return nil
}
