// Package load drives a Workload API with go-spiffe clients fetching
// X509-SVIDs back to back, for the benchmarks under bench/.
package load

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// Result is one load run: every fetch is one RPC answered by its first
// response, as go-spiffe's Client.FetchX509SVID does it.
type Result struct {
	Clients         int
	Elapsed         time.Duration
	Fetches, Errors int
	P50, P99, Max   time.Duration
	FirstError      error
}

// Rate is fetches per second.
func (r Result) Rate() float64 {
	if r.Elapsed == 0 {
		return 0
	}
	return float64(r.Fetches) / r.Elapsed.Seconds()
}

func (r Result) String() string {
	s := fmt.Sprintf("FetchX509SVID: %d clients, %s: %d fetches, %.0f/s, p50 %s, p99 %s, max %s, errors %d",
		r.Clients, r.Elapsed.Round(time.Millisecond), r.Fetches, r.Rate(), Round(r.P50), Round(r.P99), Round(r.Max), r.Errors)
	if r.FirstError != nil {
		s += fmt.Sprintf(" (first: %v)", r.FirstError)
	}
	return s
}

// FetchX509 runs clients goroutines, each with its own connected client,
// fetching back to back for d or until stop is closed (nil: never).
func FetchX509(ctx context.Context, addr string, clients int, d time.Duration, stop <-chan struct{}) (Result, error) {
	cs := make([]*workloadapi.Client, clients)
	for i := range cs {
		c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
		if err != nil {
			return Result{}, fmt.Errorf("client %d: %w", i, err)
		}
		defer c.Close()
		// Connect before the clock starts.
		if _, err := c.FetchX509SVID(ctx); err != nil {
			return Result{}, fmt.Errorf("client %d's first fetch: %w", i, err)
		}
		cs[i] = c
	}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		r         = Result{Clients: clients}
		wg        sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for _, c := range cs {
		wg.Go(func() {
			local := make([]time.Duration, 0, 1<<14)
			var errs int
			var first error
			for time.Now().Before(deadline) && ctx.Err() == nil && !stopped() {
				t0 := time.Now()
				if _, err := c.FetchX509SVID(ctx); err != nil {
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			defer mu.Unlock()
			latencies = append(latencies, local...)
			r.Errors += errs
			if r.FirstError == nil {
				r.FirstError = first
			}
		})
	}
	wg.Wait()
	r.Elapsed = time.Since(start)
	if err := ctx.Err(); err != nil {
		return r, err
	}
	slices.Sort(latencies)
	r.Fetches = len(latencies)
	r.P50, r.P99, r.Max = Percentile(latencies, 0.50), Percentile(latencies, 0.99), Percentile(latencies, 1)
	if r.Fetches == 0 {
		return r, fmt.Errorf("no fetch succeeded: %v", r.FirstError)
	}
	return r, nil
}

// Percentile is the p-th (0..1) of sorted durations; 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p)]
}

// Round keeps a duration's figures readable: ms above a second, 10 µs above
// a millisecond, µs below.
func Round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
