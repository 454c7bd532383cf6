package auth

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/login"
	"golang.org/x/time/rate"
)

// Denial audit rate per source: refusals are audited one by one up to this
// rate, and counted past it, so that a flood of refused requests cannot fill
// the disk with audit events. The count is written as one summary event
// per denialSummaryEvery.
const (
	denialRate         = rate.Limit(10) // events per second, per source
	denialBurst        = 50
	denialSummaryEvery = time.Minute
	// maxDenialSources bounds the sources followed; past it the table starts
	// over, which lets at most one more burst per source through.
	maxDenialSources = 10000
	// maxSummarySources bounds the sources named in one summary event.
	maxSummarySources = 20
)

// denialLimiter rate-limits denial audit events per source.
type denialLimiter struct {
	mu      sync.Mutex
	now     func() time.Time
	sources map[string]*rate.Limiter
	dropped map[string]int64
}

func newDenialLimiter(now func() time.Time) *denialLimiter {
	return &denialLimiter{now: now, sources: map[string]*rate.Limiter{}, dropped: map[string]int64{}}
}

// denialSource names the sender of a denial as login.Source does: the
// address without the port (each connection has its own), an IPv6 /64, or
// "uid:N" on the admin socket.
func denialSource(remote string) string { return login.Source(remote) }

// allow reports whether a denial from remote may be audited now, and
// counts it when not.
func (d *denialLimiter) allow(remote string) bool {
	src := denialSource(remote)
	d.mu.Lock()
	defer d.mu.Unlock()
	l, ok := d.sources[src]
	if !ok {
		if len(d.sources) >= maxDenialSources {
			clear(d.sources)
		}
		l = rate.NewLimiter(denialRate, denialBurst)
		d.sources[src] = l
	}
	if l.AllowN(d.now(), 1) {
		return true
	}
	if _, ok := d.dropped[src]; ok || len(d.dropped) < maxDenialSources {
		d.dropped[src]++
	} else {
		d.dropped["other"]++
	}
	return false
}

// takeSummary returns the summary event of the denials dropped since the
// last call, or false when none were.
func (d *denialLimiter) takeSummary() (audit.Event, bool) {
	d.mu.Lock()
	dropped := d.dropped
	d.dropped = map[string]int64{}
	d.mu.Unlock()
	if len(dropped) == 0 {
		return audit.Event{}, false
	}
	type count struct {
		src string
		n   int64
	}
	var all []count
	var total int64
	for src, n := range dropped {
		all = append(all, count{src, n})
		total += n
	}
	slices.SortFunc(all, func(a, b count) int { return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.src, b.src)) })
	details := map[string]string{"dropped": strconv.FormatInt(total, 10), "sources": strconv.Itoa(len(all))}
	for _, c := range all[:min(len(all), maxSummarySources)] {
		details["source:"+c.src] = strconv.FormatInt(c.n, 10)
	}
	return audit.Event{
		Type: audit.TypeDenialsDropped, Actor: "auth", Outcome: audit.OutcomeDenied,
		Reason: strconv.FormatInt(total, 10) + " refusals were not recorded one by one: their sources sent more than " +
			strconv.Itoa(int(denialRate)) + " a second",
		Details: details,
	}, true
}

// runDenialSummaries writes the summary of dropped denials periodically,
// and once more when stopping.
func (s *Server) runDenialSummaries(ctx context.Context) error {
	t := time.NewTicker(denialSummaryEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flushDenialSummary(context.WithoutCancel(ctx))
			return nil
		case <-t.C:
			s.flushDenialSummary(ctx)
		}
	}
}

func (s *Server) flushDenialSummary(ctx context.Context) {
	ev, ok := s.denials.takeSummary()
	if !ok {
		return
	}
	ev.Host = s.host
	if _, err := s.audit.Emit(ctx, ev); err != nil {
		s.log.Error("recording the count of unrecorded refusals", "dropped", ev.Details["dropped"], "error", err)
	}
}
