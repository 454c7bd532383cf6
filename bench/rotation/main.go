// Command rotation measures what a CA rotation costs the workloads of a
// trust domain: how fast a bundle change reaches a watching workload (go-spiffe
// WatchX509Context), how long re-issuing N cached SVIDs takes on entering
// update_clients, and the Workload API's p99 during that burst against the
// same load before it.
//
//	go run ./bench/rotation -wid-bin .bin/wid -changes 20 -svids 1000 -clients 16
//
// It runs widagent's auth service and a separate agent (joined with a token)
// on loopback and a temp dir, as bench/workloadapi does.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"github.com/wid-project/wid/bench/workloadapi/load"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/bench/workloadapi/system"
	"github.com/wid-project/wid/internal/core/client"
)

func main() {
	var (
		bin     = flag.String("wid-bin", ".bin/wid", "directory holding widagent and widctl")
		changes = flag.Int("changes", 20, "bundle changes to time")
		svids   = flag.Int("svids", 1000, "cached SVIDs to re-issue")
		clients = flag.Int("clients", 16, "Workload API clients of the load")
		hold    = flag.String("hold", "", "internal: watch SVIDs on this socket and print each update")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *hold != "" {
		if err := holdSVIDs(ctx, *hold); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "holder:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, *bin, *changes, *svids, *clients); err != nil {
		fmt.Fprintln(os.Stderr, "rotation bench:", err)
		os.Exit(1)
	}
}

// holdSVIDs is the workload that holds the many SVIDs: it prints, per update,
// the time, the number of SVIDs and the distinct keys that signed them.
func holdSVIDs(ctx context.Context, socket string) error {
	c, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		return err
	}
	defer c.Close()
	return c.WatchX509Context(ctx, printer{})
}

type printer struct{}

func (printer) OnX509ContextUpdate(x *workloadapi.X509Context) {
	signers := map[string]bool{}
	for _, s := range x.SVIDs {
		signers[hex.EncodeToString(s.Certificates[0].AuthorityKeyId)] = true
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range signers {
			if !yield(k) {
				return
			}
		}
	})
	fmt.Printf("%d %d %s\n", time.Now().UnixNano(), len(x.SVIDs), strings.Join(keys, ","))
}
func (printer) OnX509ContextWatchError(error) {}

type holderUpdate struct {
	at      time.Time
	n       int
	signers []string
}

func run(ctx context.Context, bin string, changes, svids, clients int) error {
	w := system.NewWid(bin)
	if err := w.Start(ctx); err != nil {
		return fmt.Errorf("starting wid: %w", err)
	}
	defer w.Stop()
	admin, err := client.Dial(client.Config{AdminSocket: w.AdminSocket()})
	if err != nil {
		return err
	}
	defer admin.Close()
	socket := w.SocketPath()

	// The holder is a copy of this binary, so that its own path selects
	// the N identities and the load below gets one SVID per fetch.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	holder := filepath.Join(w.Dir(), "holder")
	if err := copyFile(self, holder); err != nil {
		return err
	}
	names := make([]string, svids)
	for i := range names {
		names[i] = fmt.Sprintf("held-%04d", i)
	}
	t0 := time.Now()
	if _, err := w.CreateIdentitiesFor(ctx, names, "workload.unix.path", holder); err != nil {
		return fmt.Errorf("creating %d identities: %w", svids, err)
	}
	fmt.Printf("created %d workload identities in %s\n", svids, time.Since(t0).Round(time.Millisecond))
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	cmd := exec.CommandContext(hctx, holder, "-hold", socket)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { hcancel(); _ = cmd.Wait() }()
	updates := make(chan holderUpdate, 1024)
	go readUpdates(out, updates)
	if _, err := waitHolder(ctx, updates, func(u holderUpdate) bool { return u.n >= svids }, 60*time.Second); err != nil {
		return fmt.Errorf("the holder never got its %d SVIDs: %w", svids, err)
	}

	// 1. Bundle changes to a watching workload.
	watch := newBundleWatch()
	wc, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		return err
	}
	defer wc.Close()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() { _ = wc.WatchX509Context(wctx, watch) }()
	if _, err := watch.waitCount(ctx, 1, 10*time.Second); err != nil {
		return fmt.Errorf("the watcher got no bundle: %w", err)
	}
	var lat []time.Duration
	for i := range changes {
		phase, want := "init", 2
		if i%2 == 1 {
			phase, want = "rollback", 1
		}
		start := time.Now()
		if err := rotate(ctx, admin, "spiffe", phase); err != nil {
			return err
		}
		at, err := watch.waitCount(ctx, want, 5*time.Second)
		if err != nil {
			return fmt.Errorf("bundle change %d (%s) never reached the watcher: %w", i+1, phase, err)
		}
		lat = append(lat, at.Sub(start))
	}
	slices.Sort(lat)
	fmt.Printf("bundle change -> WatchX509Context: median %s, max %s over %d changes (from the RotateCA call)\n",
		round(lat[len(lat)/2]), round(lat[len(lat)-1]), len(lat))
	if changes%2 == 1 {
		if err := rotate(ctx, admin, "spiffe", "rollback"); err != nil {
			return err
		}
	}

	// 2. Re-issuing the held SVIDs on entering update_clients, under load.
	procs := map[string]int{"holder": cmd.Process.Pid, "bench (load clients)": os.Getpid()}
	for _, p := range w.Processes() {
		procs[p.Role] = p.PID
	}
	baseStart, baseCPU := time.Now(), cpuTimes(procs)
	base, err := load.FetchX509(ctx, "unix://"+socket, clients, 3*time.Second, nil)
	baseCPUAfter, baseWall := cpuTimes(procs), time.Since(baseStart)
	if err != nil {
		return fmt.Errorf("baseline load: %w", err)
	}
	if err := rotate(ctx, admin, "spiffe", "init"); err != nil {
		return err
	}
	stopLoad := make(chan struct{})
	loadDone := make(chan load.Result, 1)
	go func() {
		r, _ := load.FetchX509(ctx, "unix://"+socket, clients, time.Hour, stopLoad)
		loadDone <- r
	}()
	time.Sleep(500 * time.Millisecond)
	drain(updates)
	cpuBefore := cpuTimes(procs)
	start := time.Now()
	if err := rotate(ctx, admin, "spiffe", "update_clients"); err != nil {
		return err
	}
	newSigner, err := activeSigner(ctx, admin, "spiffe")
	if err != nil {
		return err
	}
	u, err := waitHolder(ctx, updates, func(u holderUpdate) bool {
		return u.n >= svids && len(u.signers) == 1 && u.signers[0] == newSigner
	}, 60*time.Second)
	if err != nil {
		close(stopLoad)
		return fmt.Errorf("the held SVIDs were not all re-issued: %w", err)
	}
	reissue := u.at.Sub(start)
	cpuAfter := cpuTimes(procs)
	time.Sleep(500 * time.Millisecond)
	close(stopLoad)
	burst := <-loadDone
	fmt.Printf("re-issue of %d cached SVIDs on entering update_clients: %s (RotateCA call to the holder's update with every SVID from the new key)\n", u.n, round(reissue))
	fmt.Printf("Workload API FetchX509SVID, %d clients: before p50 %s p99 %s (%d fetches); during the re-issue p50 %s p99 %s (%d fetches, %d errors)\n",
		clients, round(base.P50), round(base.P99), base.Fetches, round(burst.P50), round(burst.P99), burst.Fetches, burst.Errors)
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(procs)) {
		during := cpuAfter[name] - cpuBefore[name]
		before := time.Duration(float64(baseCPUAfter[name]-baseCPU[name]) * float64(reissue) / float64(baseWall))
		parts = append(parts, fmt.Sprintf("%s %s (load alone: %s)", name, round(during), round(before)))
	}
	fmt.Printf("CPU used during the re-issue (%s of wall time, 2 cores): %s\n", round(reissue), strings.Join(parts, ", "))
	for _, p := range []string{"update_servers", "standby"} {
		if err := rotate(ctx, admin, "spiffe", p); err != nil {
			return err
		}
	}
	return nil
}

// rotate asks for phase until the gate lets it through (agents catching up).
func rotate(ctx context.Context, admin *client.Client, typ, phase string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := admin.RotateCA(ctx, &authv1.RotateCARequest{Type: typ, Phase: phase})
		if err == nil {
			return nil
		}
		if !strings.Contains(err.Error(), "lag") || time.Now().After(deadline) {
			return fmt.Errorf("rotating %s to %s: %w", typ, phase, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func activeSigner(ctx context.Context, admin *client.Client, typ string) (string, error) {
	resp, err := admin.ListCAs(ctx, &authv1.ListCAsRequest{})
	if err != nil {
		return "", err
	}
	for _, c := range resp.Cas {
		if c.Type != typ {
			continue
		}
		for _, k := range c.Keys {
			if k.State == "active" {
				return k.SignerId, nil
			}
		}
	}
	return "", fmt.Errorf("no active %s key", typ)
}

func readUpdates(r io.Reader, out chan<- holderUpdate) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		ns, _ := strconv.ParseInt(f[0], 10, 64)
		n, _ := strconv.Atoi(f[1])
		u := holderUpdate{at: time.Unix(0, ns), n: n}
		if len(f) > 2 {
			u.signers = strings.Split(f[2], ",")
		}
		out <- u
	}
	close(out)
}

func waitHolder(ctx context.Context, updates <-chan holderUpdate, ok func(holderUpdate) bool, within time.Duration) (holderUpdate, error) {
	t := time.NewTimer(within)
	defer t.Stop()
	for {
		select {
		case u, open := <-updates:
			if !open {
				return holderUpdate{}, errors.New("the holder exited")
			}
			if ok(u) {
				return u, nil
			}
		case <-t.C:
			return holderUpdate{}, fmt.Errorf("not within %s", within)
		case <-ctx.Done():
			return holderUpdate{}, ctx.Err()
		}
	}
}

func drain(updates <-chan holderUpdate) {
	for {
		select {
		case <-updates:
		default:
			return
		}
	}
}

// bundleWatch records when the X.509 bundle's authority count changes.
type bundleWatch struct {
	mu      sync.Mutex
	count   int
	at      time.Time
	changed chan struct{}
}

func newBundleWatch() *bundleWatch { return &bundleWatch{changed: make(chan struct{}, 1)} }

func (b *bundleWatch) OnX509ContextUpdate(x *workloadapi.X509Context) {
	n := 0
	for _, bundle := range x.Bundles.Bundles() {
		n += len(bundle.X509Authorities())
	}
	b.mu.Lock()
	if n != b.count {
		b.count, b.at = n, time.Now()
	}
	b.mu.Unlock()
	select {
	case b.changed <- struct{}{}:
	default:
	}
}
func (b *bundleWatch) OnX509ContextWatchError(error) {}

func (b *bundleWatch) waitCount(ctx context.Context, n int, within time.Duration) (time.Time, error) {
	t := time.NewTimer(within)
	defer t.Stop()
	for {
		b.mu.Lock()
		count, at := b.count, b.at
		b.mu.Unlock()
		if count == n {
			return at, nil
		}
		select {
		case <-b.changed:
		case <-t.C:
			return time.Time{}, fmt.Errorf("the bundle holds %d authorities, not %d, after %s", count, n, within)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// cpuTimes reads each process's user+system CPU time from /proc.
func cpuTimes(procs map[string]int) map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, pid := range procs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out[name] = time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
	}
	return out
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o700)
}

func round(d time.Duration) time.Duration { return load.Round(d) }
