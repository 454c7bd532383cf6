package main

import (
	"context"
	"fmt"
	"github.com/wid-project/wid/bench/workloadapi/load"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/wid-project/wid/bench/workloadapi/system"
)

// figures are one system's results; zero where a step did not run.
type figures struct {
	name      string
	first     firstSVID
	load      load.Result
	watch     watchResult
	bulk      bulkResult
	rssBefore rssReading
	rssAfter  rssReading
}

// firstSVID is the time from starting the system on a fresh data dir to the
// first successful FetchX509SVID; start is how long Start took of it.
type firstSVID struct {
	total, start time.Duration
}

func (r *firstSVID) measure(ctx context.Context, s agentSystem) error {
	t0 := time.Now()
	if err := s.Start(ctx); err != nil {
		return err
	}
	r.start = time.Since(t0)
	want := s.UIDSPIFFEID()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		// A new client each try: a client whose first dial failed would
		// wait out gRPC's reconnect backoff.
		svid, err := fetchOnce(ctx, "unix://"+s.SocketPath())
		if err == nil {
			if svid != want {
				return fmt.Errorf("first SVID is %s, want %s", svid, want)
			}
			r.total = time.Since(t0)
			return nil
		}
		last = err
		if err := s.Running(); err != nil {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("no SVID within 60s of starting: %v", last)
}

func fetchOnce(ctx context.Context, addr string) (spiffeid.ID, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return spiffeid.ID{}, err
	}
	defer c.Close()
	svid, err := c.FetchX509SVID(ctx)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return svid.ID, nil
}

// watchResult is, per trial, the time from running the create command to
// the watching workload's update that carries the new SPIFFE ID, and how
// long the command itself took of it.
type watchResult struct {
	trials, commands []time.Duration
}

func (r watchResult) median() time.Duration {
	s := slices.Clone(r.trials)
	slices.Sort(s)
	return load.Percentile(s, 0.5)
}

func (r watchResult) String() string {
	var parts []string
	for i := range r.trials {
		parts = append(parts, fmt.Sprintf("%s (command %s)", roundDur(r.trials[i]), roundDur(r.commands[i])))
	}
	return fmt.Sprintf("new identity to watching workload: median %s; trials %s", roundDur(r.median()), strings.Join(parts, ", "))
}

// watcher keeps the SPIFFE IDs of the latest X509 context and when it came.
type watcher struct {
	mu      sync.Mutex
	ids     map[spiffeid.ID]bool
	at      time.Time
	changed chan struct{}
}

func newWatcher() *watcher { return &watcher{changed: make(chan struct{}, 1)} }

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	ids := make(map[spiffeid.ID]bool, len(c.SVIDs))
	for _, s := range c.SVIDs {
		ids[s.ID] = true
	}
	w.mu.Lock()
	w.ids, w.at = ids, time.Now()
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *watcher) OnX509ContextWatchError(error) {}

// waitFor returns when an update carries id, and that update's time.
func (w *watcher) waitFor(ctx context.Context, id spiffeid.ID) (time.Time, error) {
	for {
		w.mu.Lock()
		ok, at := w.ids[id], w.at
		w.mu.Unlock()
		if ok {
			return at, nil
		}
		select {
		case <-w.changed:
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("waiting for %s: %w", id, ctx.Err())
		}
	}
}

func (r *watchResult) measure(ctx context.Context, s agentSystem, addr string, trials int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return err
	}
	defer c.Close()
	w := newWatcher()
	done := make(chan error, 1)
	go func() { done <- c.WatchX509Context(ctx, w) }()
	defer func() { cancel(); <-done }()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = w.waitFor(wctx, s.UIDSPIFFEID())
	wcancel()
	if err != nil {
		return err
	}
	for i := range trials {
		tctx, tcancel := context.WithTimeout(ctx, 60*time.Second)
		t0 := time.Now()
		id, err := s.CreateIdentity(tctx, fmt.Sprintf("watch-%d", i))
		cmd := time.Since(t0)
		if err != nil {
			tcancel()
			return err
		}
		at, err := w.waitFor(tctx, id)
		tcancel()
		if err != nil {
			return err
		}
		r.trials = append(r.trials, at.Sub(t0))
		r.commands = append(r.commands, cmd)
	}
	return nil
}

// bulkResult is the time from running the command that creates n
// identities to a FetchX509SVID response that carries all of them.
type bulkResult struct {
	n         int
	total     time.Duration
	command   time.Duration
	svids     int
	fetchTime time.Duration
}

func (r bulkResult) String() string {
	return fmt.Sprintf("%d identities to one FetchX509SVID: %s (command %s; the response has %d SVIDs and took %s)",
		r.n, roundDur(r.total), roundDur(r.command), r.svids, roundDur(r.fetchTime))
}

func (r *bulkResult) measure(ctx context.Context, s agentSystem, addr string, n int) error {
	r.n = n
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("bulk-%04d", i)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return err
	}
	defer c.Close()
	t0 := time.Now()
	ids, err := s.CreateIdentities(ctx, names)
	r.command = time.Since(t0)
	if err != nil {
		return err
	}
	var missing int
	for ctx.Err() == nil {
		f0 := time.Now()
		svids, err := c.FetchX509SVIDs(ctx)
		done := time.Now()
		if err != nil {
			if err := s.Running(); err != nil {
				return err
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		got := make(map[spiffeid.ID]bool, len(svids))
		for _, s := range svids {
			got[s.ID] = true
		}
		missing = 0
		for _, id := range ids {
			if !got[id] {
				missing++
			}
		}
		if missing == 0 {
			r.total, r.svids, r.fetchTime = done.Sub(t0), len(svids), done.Sub(f0)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("after %s, FetchX509SVID still lacks %d of the %d: %w", time.Since(t0).Round(time.Second), missing, n, ctx.Err())
}

// rssReading is the VmRSS of each of a system's processes, in KiB.
type rssReading []processRSS

type processRSS struct {
	role    string
	rss     int64
	hwm     int64
	readErr error
}

func (r rssReading) String() string {
	var parts []string
	for _, p := range r {
		if p.readErr != nil {
			parts = append(parts, fmt.Sprintf("%s: %v", p.role, p.readErr))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %s (peak %s)", p.role, mib(p.rss), mib(p.hwm)))
	}
	return strings.Join(parts, ", ")
}

// agent is the reading of the process that serves the Workload API.
func (r rssReading) agent() (processRSS, bool) {
	for _, p := range r {
		if strings.Contains(p.role, "agent") && p.readErr == nil {
			return p, true
		}
	}
	return processRSS{}, false
}

func readRSS(ps []system.Process) rssReading {
	var r rssReading
	for _, p := range ps {
		rss, hwm, err := procStatus(p.PID)
		r = append(r, processRSS{role: p.Role, rss: rss, hwm: hwm, readErr: err})
	}
	return r
}

// procStatus reads VmRSS and VmHWM (peak RSS), in KiB, from /proc/PID/status.
func procStatus(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &rss
		case "VmHWM":
			dst = &hwm
		default:
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("reading %s of pid %d: %w", k, pid, err)
		}
		*dst = n
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("pid %d has no VmRSS", pid)
	}
	return rss, hwm, nil
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func roundDur(d time.Duration) time.Duration { return load.Round(d) }

// printTable prints the figures side by side, one column per system.
func printTable(out io.Writer, all []*figures, o options) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	row := func(label string, cell func(f *figures) string) {
		cells := []string{label}
		for _, f := range all {
			cells = append(cells, cell(f))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	or := func(ok bool, s func() string) string {
		if !ok {
			return "-"
		}
		return s()
	}
	row("figure", func(f *figures) string { return f.name })
	row("fresh data dir to first SVID", func(f *figures) string {
		return or(f.first.total > 0, func() string { return roundDur(f.first.total).String() })
	})
	row(fmt.Sprintf("FetchX509SVID/s, %d clients", o.clients), func(f *figures) string {
		return or(f.load.Fetches > 0, func() string { return fmt.Sprintf("%.0f", f.load.Rate()) })
	})
	row("  p50 / p99 / max", func(f *figures) string {
		return or(f.load.Fetches > 0, func() string {
			return fmt.Sprintf("%s / %s / %s", roundDur(f.load.P50), roundDur(f.load.P99), roundDur(f.load.Max))
		})
	})
	row("  errors", func(f *figures) string {
		return or(f.load.Fetches > 0, func() string { return strconv.Itoa(f.load.Errors) })
	})
	row("new identity to watching workload", func(f *figures) string {
		return or(len(f.watch.trials) > 0, func() string {
			return fmt.Sprintf("%s (median of %d)", roundDur(f.watch.median()), len(f.watch.trials))
		})
	})
	row(fmt.Sprintf("%d identities to one FetchX509SVID", o.bulk), func(f *figures) string {
		return or(f.bulk.total > 0, func() string { return roundDur(f.bulk.total).String() })
	})
	row("agent RSS before bulk", func(f *figures) string {
		p, ok := f.rssBefore.agent()
		return or(ok, func() string { return p.role + " " + mib(p.rss) })
	})
	row(fmt.Sprintf("agent RSS with %d more SVIDs", o.bulk), func(f *figures) string {
		p, ok := f.rssAfter.agent()
		return or(ok, func() string { return p.role + " " + mib(p.rss) })
	})
	row("  every process", func(f *figures) string {
		return or(len(f.rssAfter) > 0, func() string { return f.rssAfter.String() })
	})
}
