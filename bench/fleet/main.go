// Command fleet measures how the auth service keeps a fleet of agents up to
// date: N simulated agents (goroutines, each with its own gRPC connection,
// bot certificate and host name; many hosts of a few bots) follow a real
// auth service, started here as a widagent process on loopback and a temp
// dir, that holds M workload identities.
//
//	go run ./bench/fleet -agents 1000 -identities 10000 -sync incremental
//
// It measures the join storm (all agents connecting at once), one identity
// change reaching every agent (p50, p99, max; each change after a quiet
// second), a burst of 100 changes until
// every agent converged, a bundle change (a spiffe CA rotation's init) to
// every agent, and the auth service's CPU seconds per change, peak RSS and
// bytes sent per change. Progress goes to stderr; the last line on stdout is
// one JSON object of the figures. -sync full runs the auth service with the
// whole-state push of before, for the comparison.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/bench/fleet/sim"
	"github.com/wid-project/wid/bench/proc"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// result is the JSON line.
type result struct {
	Agents             int     `json:"agents"`
	Identities         int     `json:"identities"`
	Sync               string  `json:"sync"`
	JoinStormS         float64 `json:"join_storm_s"`
	ChangeP50Ms        float64 `json:"change_p50_ms"`
	ChangeP99Ms        float64 `json:"change_p99_ms"`
	ChangeMaxMs        float64 `json:"change_max_ms"`
	BurstConvergeMs    float64 `json:"burst_converge_ms"`
	BundleP99Ms        float64 `json:"bundle_p99_ms"`
	AuthCPUSPerChange  float64 `json:"auth_cpu_s_per_change"`
	AuthRSSMB          float64 `json:"auth_rss_mb"`
	BytesPerChange     float64 `json:"bytes_per_change"`
	SnapshotsAfterJoin int     `json:"snapshots_after_join"`
}

type options struct {
	agents, identities, bots, shared, changes, burst int
	sync, widBin                                     string
	timeout                                          time.Duration
	bundle                                           bool
}

func main() {
	var o options
	flag.IntVar(&o.agents, "agents", 1000, "simulated agents")
	flag.IntVar(&o.identities, "identities", 10000, "workload identities")
	flag.StringVar(&o.sync, "sync", "incremental", "the auth service's agent sync: incremental or full")
	flag.StringVar(&o.widBin, "wid-bin", "", "directory holding widagent (built into a temp dir when empty)")
	flag.IntVar(&o.bots, "bots", 10, "bots the agents are spread over; each selects its share of the identities and the shared ones")
	flag.IntVar(&o.shared, "shared", 10, "identities every bot selects")
	flag.IntVar(&o.changes, "changes", 5, "single changes to time")
	flag.IntVar(&o.burst, "burst", 100, "changes in the burst (0 skips it: burst_converge_ms is then -1)")
	flag.BoolVar(&o.bundle, "bundle", true, "time a bundle change (false skips it: bundle_p99_ms is then -1)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "longest wait for the agents to converge, per step")
	flag.Parse()
	if o.sync != "incremental" && o.sync != "full" {
		fmt.Fprintf(os.Stderr, "fleet: -sync %q is unknown: use incremental or full\n", o.sync)
		os.Exit(2)
	}
	if o.agents < 1 || o.identities < o.shared || o.bots < 1 || o.shared < 1 || o.changes < 1 || o.burst < 0 {
		fmt.Fprintln(os.Stderr, "fleet: -agents, -bots, -shared and -changes must be positive, -burst not negative, and -identities at least -shared")
		os.Exit(2)
	}
	o.bots = min(o.bots, o.agents)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

func run(ctx context.Context, o options) (*result, error) {
	dir, err := os.MkdirTemp("", "wid-fleet-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := o.widBin
	if bin == "" {
		bin = filepath.Join(dir, "bin")
		logf("building widagent")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./cmd/widagent")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return nil, fmt.Errorf("building widagent (run from the repository's root, or give -wid-bin): %w", err)
		}
	}
	a, err := startAuth(ctx, bin, dir, o.sync)
	if err != nil {
		return nil, err
	}
	defer a.stop()
	logf("auth service (%s sync) pid %d at %s", o.sync, a.Pid(), a.addr)
	admin, err := client.Dial(client.Config{AdminSocket: a.socket})
	if err != nil {
		return nil, err
	}
	defer admin.Close()

	tokens, err := setup(ctx, admin, o)
	if err != nil {
		return nil, err
	}
	agents, err := joinAll(ctx, a, tokens, o)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, ag := range agents {
			ag.c.Close()
		}
	}()
	res := &result{Agents: o.agents, Identities: o.identities, Sync: o.sync}
	rss, _ := a.rss()
	logf("auth RSS after setup and joins: %.1f MB", rss)

	// 1. Join storm.
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	start := time.Now()
	for _, ag := range agents {
		wg.Go(func() { ag.Run(runCtx) })
	}
	if err := waitAll(ctx, agents, o.timeout, func(ag *fleetAgent) bool {
		select {
		case <-ag.Followed():
			return true
		default:
			return false
		}
	}); err != nil {
		return nil, fmt.Errorf("join storm: %w", err)
	}
	var last time.Time
	for _, ag := range agents {
		if at := ag.FirstAt(); at.After(last) {
			last = at
		}
	}
	res.JoinStormS = round(last.Sub(start).Seconds(), 3)
	perBot := o.shared + (o.identities-o.shared+o.bots-1)/o.bots
	for _, ag := range agents {
		if n := len(ag.Holds()); n < o.shared || n > perBot {
			return nil, fmt.Errorf("agent %s holds %d identities, want %d to %d", ag.Host, n, o.shared, perBot)
		}
	}
	rss, _ = a.rss()
	logf("join storm: %d agents following in %.2fs; auth RSS %.1f MB", o.agents, res.JoinStormS, rss)

	// 2. One change at a time, to an identity every agent holds.
	var (
		lat          []time.Duration
		cpu, sent    float64
		upd          = 0
		updateShared = func(i int, label string) (time.Time, error) {
			upd++
			return time.Now(), putIdentity(ctx, admin, identity(i, o), map[string]string{"change": label + strconv.Itoa(upd)})
		}
	)
	for k := range o.changes {
		if k > 0 {
			// Each change comes after a quiet second, as a single change
			// does: a burst is measured below.
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Second):
			}
		}
		cpu0, b0 := a.cpu(), totalBytes(agents)
		t0, err := updateShared(0, "single")
		if err != nil {
			return nil, err
		}
		want, err := hashOf(ctx, admin, identityName(0))
		if err != nil {
			return nil, err
		}
		if err := waitHolds(ctx, agents, o.timeout, map[string]uint64{identityName(0): want}); err != nil {
			return nil, fmt.Errorf("change %d: %w", k+1, err)
		}
		cpu += a.cpu() - cpu0
		sent += float64(totalBytes(agents) - b0)
		for _, ag := range agents {
			h, _ := ag.Get(identityName(0))
			lat = append(lat, h.At.Sub(t0))
		}
		logf("change %d reached every agent in %s", k+1, slices.Max(lat[len(lat)-len(agents):]).Round(time.Millisecond))
	}
	slices.Sort(lat)
	res.ChangeP50Ms, res.ChangeP99Ms, res.ChangeMaxMs = ms(pct(lat, 0.50)), ms(pct(lat, 0.99)), ms(lat[len(lat)-1])
	res.AuthCPUSPerChange = round(cpu/float64(o.changes), 4)
	res.BytesPerChange = round(sent/float64(o.changes), 0)
	logf("one change to all: p50 %.1fms p99 %.1fms max %.1fms; auth CPU %.3fs and %.0f bytes sent per change",
		res.ChangeP50Ms, res.ChangeP99Ms, res.ChangeMaxMs, res.AuthCPUSPerChange, res.BytesPerChange)

	res.BurstConvergeMs, res.BundleP99Ms = -1, -1
	if o.burst > 0 {
		if err := burst(ctx, a, admin, agents, o, res); err != nil {
			return nil, err
		}
	}
	if o.bundle {
		if err := bundleChange(ctx, admin, agents, o, res); err != nil {
			return nil, err
		}
	}

	rss, peak := a.rss()
	res.AuthRSSMB = round(peak, 1)
	snaps, resyncs := 0, 0
	for _, ag := range agents {
		s, r := ag.Counts()
		snaps, resyncs = snaps+s-1, resyncs+r
	}
	res.SnapshotsAfterJoin = snaps
	logf("auth RSS %.1f MB now, %.1f MB peak; snapshots after the join: %d, deltas doubted: %d", rss, peak, snaps, resyncs)
	return res, nil
}

// burst writes o.burst changes to the shared identities, from as many
// writers, and times until every agent holds the last of each.
func burst(ctx context.Context, a *authProc, admin *client.Client, agents []*fleetAgent, o options, res *result) error {
	var err error
	writers := min(o.shared, o.burst)
	var (
		wwg  sync.WaitGroup
		werr = make(chan error, writers)
	)
	t0, burstCPU := time.Now(), a.cpu()
	for w := range writers {
		wwg.Go(func() {
			for k := w; k < o.burst; k += writers {
				if err := putIdentity(ctx, admin, identity(w, o), map[string]string{"burst": strconv.Itoa(k)}); err != nil {
					werr <- err
					return
				}
			}
		})
	}
	wwg.Wait()
	close(werr)
	if err := <-werr; err != nil {
		return fmt.Errorf("burst: %w", err)
	}
	wrote := time.Since(t0)
	want := map[string]uint64{}
	for w := range writers {
		if want[identityName(w)], err = hashOf(ctx, admin, identityName(w)); err != nil {
			return err
		}
	}
	if err := waitHolds(ctx, agents, o.timeout, want); err != nil {
		return fmt.Errorf("burst: %w", err)
	}
	var conv time.Duration
	for _, ag := range agents {
		for n := range want {
			h, _ := ag.Get(n)
			conv = max(conv, h.At.Sub(t0))
		}
	}
	res.BurstConvergeMs = ms(conv)
	logf("burst of %d changes (written in %s by %d writers): every agent converged in %.0fms; auth CPU %.2fs",
		o.burst, wrote.Round(time.Millisecond), writers, res.BurstConvergeMs, a.cpu()-burstCPU)
	return nil
}

// bundleChange starts a spiffe CA rotation (init: the bundle gains a key)
// and times until every agent holds the new bundle.
func bundleChange(ctx context.Context, admin *client.Client, agents []*fleetAgent, o options, res *result) error {
	seq0, _ := agents[0].Bundle()
	t0 := time.Now()
	if _, err := admin.RotateCA(ctx, &authv1.RotateCARequest{Type: "spiffe", Phase: "init", Mode: "manual"}); err != nil {
		return fmt.Errorf("starting a rotation: %w", err)
	}
	if err := waitAll(ctx, agents, o.timeout, func(ag *fleetAgent) bool { s, _ := ag.Bundle(); return s > seq0 }); err != nil {
		return fmt.Errorf("bundle change: %w", err)
	}
	var blat []time.Duration
	for _, ag := range agents {
		_, at := ag.Bundle()
		blat = append(blat, at.Sub(t0))
	}
	slices.Sort(blat)
	res.BundleP99Ms = ms(pct(blat, 0.99))
	logf("bundle change to all: p50 %.1fms p99 %.1fms max %.1fms", ms(pct(blat, 0.5)), res.BundleP99Ms, ms(blat[len(blat)-1]))
	return nil
}

// fleetAgent is a simulated agent with its connection.
type fleetAgent struct {
	*sim.Agent
	c *client.Client
}

// setup creates the roles, bots, join tokens and identities.
func setup(ctx context.Context, admin *client.Client, o options) ([]string, error) {
	readRole := role("fleet-reader", nil)
	readRole.Spec.Allow.Rules = []resource.Rule{{Resources: []string{resource.KindWorkloadIdentity}, Verbs: []string{"read", "list"}}}
	docs := []resource.Resource{readRole, role("fleet-shared", map[string][]string{"shared": {"yes"}})}
	for b := range o.bots {
		docs = append(docs, role(fmt.Sprintf("fleet-team-%d", b), map[string][]string{"team": {team(b)}}))
	}
	if err := create(ctx, admin, docs); err != nil {
		return nil, fmt.Errorf("creating roles: %w", err)
	}
	var tokens []string
	for b := range o.bots {
		name := fmt.Sprintf("fleet-%d", b)
		if _, err := admin.CreateBot(ctx, &authv1.CreateBotRequest{Name: name, Roles: []string{"fleet-reader", "fleet-shared", fmt.Sprintf("fleet-team-%d", b)}}); err != nil {
			return nil, fmt.Errorf("creating bot %s: %w", name, err)
		}
		uses := (o.agents + o.bots - 1 - b) / o.bots
		tok, err := admin.CreateJoinToken(ctx, &authv1.CreateJoinTokenRequest{Bot: name, Uses: int32(uses), TtlSeconds: 3600})
		if err != nil {
			return nil, fmt.Errorf("creating a join token for %s: %w", name, err)
		}
		tokens = append(tokens, tok.Token)
	}
	t0 := time.Now()
	const batch = 1000
	for i := 0; i < o.identities; i += batch {
		var docs []resource.Resource
		for j := i; j < min(i+batch, o.identities); j++ {
			docs = append(docs, identity(j, o))
		}
		if err := create(ctx, admin, docs); err != nil {
			return nil, fmt.Errorf("creating identities: %w", err)
		}
	}
	logf("created %d roles, %d bots and %d workload identities (%s)", o.bots+2, o.bots, o.identities, time.Since(t0).Round(time.Millisecond))
	return tokens, nil
}

// joinAll joins every agent: agent i is host-i of bot i%bots. Each bot's
// agents join one after another, since joins with one token are counted
// with compare-and-set and concurrent ones fail.
func joinAll(ctx context.Context, a *authProc, tokens []string, o options) ([]*fleetAgent, error) {
	t0 := time.Now()
	agents := make([]*fleetAgent, o.agents)
	errs := make(chan error, o.agents)
	var wg sync.WaitGroup
	for b := range o.bots {
		wg.Go(func() {
			for i := b; i < o.agents; i += o.bots {
				host := fmt.Sprintf("host-%05d", i)
				id, err := sim.Join(ctx, a.addr, a.pin, tokens[i%len(tokens)], host)
				if err != nil {
					errs <- err
					continue
				}
				c, err := client.Dial(client.Config{Auth: a.addr, Identity: id})
				if err != nil {
					errs <- err
					continue
				}
				agents[i] = &fleetAgent{Agent: sim.NewAgent(c, host), c: c}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		for _, ag := range agents {
			if ag != nil {
				ag.c.Close()
			}
		}
		return nil, err
	}
	logf("joined %d agents of %d bots (%s)", o.agents, o.bots, time.Since(t0).Round(time.Millisecond))
	return agents, nil
}

func team(b int) string { return "t" + strconv.Itoa(b) }

func role(name string, labels map[string][]string) *resource.Role {
	r := &resource.Role{Header: resource.Header{Kind: resource.KindRole, Version: resource.V1, Metadata: resource.Metadata{Name: name}}}
	r.Spec.Allow.WorkloadIdentityLabels = labels
	return r
}

func identityName(i int) string { return fmt.Sprintf("wi-%05d", i) }

// identity i: the first o.shared are selected by every bot, the others by
// bot i%bots.
func identity(i int, o options) *resource.WorkloadIdentity {
	name := identityName(i)
	labels := map[string]string{"team": team(i % o.bots)}
	if i < o.shared {
		labels = map[string]string{"shared": "yes"}
	}
	uid := strconv.Itoa(1000 + i%100)
	return &resource.WorkloadIdentity{
		Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{Name: name, Labels: labels}},
		Spec: resource.WorkloadIdentitySpec{
			SPIFFE: resource.WorkloadSPIFFE{ID: "/svc/" + name + "/{{ workload.unix.uid }}", Hint: name},
			X509:   resource.WorkloadX509{DNSSANs: []string{name + ".svc.internal"}, TTL: resource.Duration(time.Hour)},
			Rules: resource.WorkloadRules{Allow: []resource.WorkloadRule{{Conditions: []resource.Condition{
				{Attribute: "workload.unix.uid", Eq: &uid},
			}}}},
		},
	}
}

func create(ctx context.Context, admin *client.Client, docs []resource.Resource) error {
	var raw [][]byte
	for _, d := range docs {
		b, err := resource.MarshalJSON(d)
		if err != nil {
			return err
		}
		raw = append(raw, b)
	}
	_, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: raw})
	return err
}

// putIdentity replaces wi, with extra labels that no role selects on.
func putIdentity(ctx context.Context, admin *client.Client, wi *resource.WorkloadIdentity, extra map[string]string) error {
	for k, v := range extra {
		wi.Metadata.Labels[k] = v
	}
	b, err := resource.MarshalJSON(wi)
	if err != nil {
		return err
	}
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{b}, Force: true}); err != nil {
		return fmt.Errorf("replacing %s: %w", wi.Metadata.Name, err)
	}
	return nil
}

// hashOf is the hash of the document agents get for an identity.
func hashOf(ctx context.Context, admin *client.Client, name string) (uint64, error) {
	r, err := admin.GetResource(ctx, &authv1.GetResourceRequest{Kind: resource.KindWorkloadIdentity, Name: name})
	if err != nil {
		return 0, err
	}
	return sim.Hash(r.Resource), nil
}

func waitHolds(ctx context.Context, agents []*fleetAgent, timeout time.Duration, want map[string]uint64) error {
	return waitAll(ctx, agents, timeout, func(ag *fleetAgent) bool {
		for n, h := range want {
			if got, ok := ag.Get(n); !ok || got.Hash != h {
				return false
			}
		}
		return true
	})
}

// waitAll waits until ok holds for every agent.
func waitAll(ctx context.Context, agents []*fleetAgent, timeout time.Duration, ok func(*fleetAgent) bool) error {
	deadline := time.Now().Add(timeout)
	pending := slices.Clone(agents)
	for {
		pending = slices.DeleteFunc(pending, ok)
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d agents did not converge within %s (%s among them)", len(pending), len(agents), timeout, pending[0].Host)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func totalBytes(agents []*fleetAgent) int64 {
	var n int64
	for _, ag := range agents {
		n += ag.Bytes()
	}
	return n
}

func pct(d []time.Duration, p float64) time.Duration { return d[int(float64(len(d)-1)*p)] }

func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 1) }

func round(v float64, digits int) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'f', digits, 64), 64)
	return f
}

var (
	addrRE = regexp.MustCompile(`auth address:\s+(\S+)`)
	pinRE  = regexp.MustCompile(`CA pin:\s+(sha256:\S+)`)
	sockRE = regexp.MustCompile(`admin socket:\s+(\S+)`)
)

// authProc is the auth service's process and the addresses its banner named.
type authProc struct {
	*proc.Proc
	addr, pin, socket string
}

func startAuth(ctx context.Context, bin, dir, syncMode string) (*authProc, error) {
	p, got, err := proc.Start(ctx, bin, nil, []*regexp.Regexp{addrRE, pinRE, sockRE},
		"start", "--roles", "auth", "--data-dir", filepath.Join(dir, "data"),
		"--auth-listen", "127.0.0.1:0", "--agent-sync", syncMode, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	return &authProc{Proc: p, addr: got[0], pin: got[1], socket: got[2]}, nil
}

func (a *authProc) stop() { a.Stop(10 * time.Second) }

// cpu is the auth process's user and system CPU seconds so far.
func (a *authProc) cpu() float64 { return proc.CPU(a.Pid()) }

// rss is the auth process's resident and peak resident memory, in MB.
func (a *authProc) rss() (now, peak float64) {
	now, peak, _ = proc.Memory(a.Pid())
	return now, peak
}
