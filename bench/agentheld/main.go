// Command agentheld measures one agent holding many workload identities, of
// which some select the calling workload, with the real binaries: the auth
// service and the agent run as separate processes, so the agent's resident
// memory is its own (the in-process BenchmarkAgentHeldIdentities shares one
// heap between the two).
//
//	go build -o .bin/wid ./cmd/widagent ./cmd/widctl
//	go run ./bench/agentheld -identities 10000 -selecting 1000 -wid-bin .bin/wid
//
// The identities exist before the agent joins: the first -selecting want
// this process's uid, the others a uid nobody runs as (identities of
// workloads on other hosts of the same bot). Once a go-spiffe client has
// all its SVIDs, it calls FetchX509SVID -fetches times; the agent's VmRSS
// and VmHWM come from /proc/PID/status, its Go heap from its /metrics and
// its live heap from the last collection its GODEBUG=gctrace=1 reported.
// Progress goes to stderr, one JSON line to stdout.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/wid-project/wid/bench/proc"
)

// otherUID is a uid nobody runs as: identities wanting it select nothing here.
const otherUID = "4294967294"

func main() {
	var (
		bin        = flag.String("wid-bin", ".bin/wid", "directory holding widagent and widctl")
		identities = flag.Int("identities", 1000, "workload identities the agent holds")
		selecting  = flag.Int("selecting", 1000, "of those, how many select this process")
		fetches    = flag.Int("fetches", 200, "FetchX509SVID calls timed")
	)
	flag.Parse()
	if *selecting < 1 || *selecting > *identities || *fetches < 1 {
		fmt.Fprintln(os.Stderr, "agentheld bench: want 1 <= -selecting <= -identities and -fetches >= 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := run(ctx, *bin, *identities, *selecting, *fetches)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentheld bench:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

type result struct {
	Identities    int     `json:"identities"`
	Selecting     int     `json:"selecting"`
	Fetches       int     `json:"fetches"`
	SVIDs         int     `json:"svids_per_fetch"`
	ReadyS        float64 `json:"ready_s"`
	FetchP50Ms    float64 `json:"fetch_p50_ms"`
	FetchP99Ms    float64 `json:"fetch_p99_ms"`
	AgentRSSMB    float64 `json:"agent_rss_mb"`
	AgentHWMMB    float64 `json:"agent_hwm_mb"`
	AgentReadyRSS float64 `json:"agent_rss_ready_mb"`
	AgentLiveMB   int     `json:"agent_live_heap_mb"`
	AgentHeapMB   float64 `json:"agent_heap_alloc_mb"`
	AgentHeapSys  float64 `json:"agent_heap_sys_mb"`
	AuthRSSMB     float64 `json:"auth_rss_mb"`
}

var (
	pinRE   = regexp.MustCompile(`CA pin:\s+(sha256:[0-9a-f]{64})`)
	sockRE  = regexp.MustCompile(`admin socket:\s+(\S+)`)
	authRE  = regexp.MustCompile(`auth address:\s+(\S+)`)
	tokenRE = regexp.MustCompile(`WID_JOIN_TOKEN=(\S+)`)
	diagRE  = regexp.MustCompile(`diagnostics:\s+http://(\S+?)/`)
	wlRE    = regexp.MustCompile(`workload API:\s+unix://(\S+)`)
	gcRE    = regexp.MustCompile(`(?m)^gc \d+ .* \d+->\d+->(\d+) MB`)
)

// metric reads one unlabelled gauge from a /metrics page.
func metric(page, name string) float64 {
	for _, l := range strings.Split(page, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return 0
}

func yamlDocs(from, to, selecting int, uid string) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		want := otherUID
		if i < selecting {
			want = uid
		}
		name := fmt.Sprintf("svc-%05d", i)
		fmt.Fprintf(&b, `---
kind: workload_identity
version: v1
metadata:
  name: %s
spec:
  spiffe:
    id: /svc/%s/{{ workload.unix.uid }}
    hint: %s
  x509:
    ttl: 1h
  rules:
    allow:
      - conditions:
          - attribute: workload.unix.uid
            eq: "%s"
`, name, name, name, want)
	}
	return b.String()
}

func run(ctx context.Context, bin string, identities, selecting, fetches int) (*result, error) {
	root, err := os.MkdirTemp("", "wid-agentheld-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)
	authDir, agentDir := filepath.Join(root, "auth"), filepath.Join(root, "agent")

	auth, got, err := proc.Start(ctx, bin, nil, []*regexp.Regexp{pinRE, sockRE, authRE},
		"start", "--roles", "auth", "--data-dir", authDir, "--auth-listen", "127.0.0.1:0", "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	defer auth.Kill()
	pin, admin, authAddr := got[0], got[1], got[2]

	widctl := func(stdin string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "widctl"), args...)
		cmd.Env = append(os.Environ(), "WIDCTL_ADMIN_SOCKET="+admin)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("widctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	uid := strconv.Itoa(os.Getuid())
	const batch = 500
	for i := 0; i < identities; i += batch {
		if _, err := widctl(yamlDocs(i, min(i+batch, identities), selecting, uid), "create", "-f", "-"); err != nil {
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "created %d/%d workload identities\n", min(i+batch, identities), identities)
	}
	out, err := widctl("", "bot", "add", "bench", "--roles", "local-agent")
	if err != nil {
		return nil, err
	}
	m := tokenRE.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("no join token in:\n%s", out)
	}

	joined := time.Now()
	// gctrace: the live heap after each collection, which /metrics does not
	// tell apart from garbage not yet collected.
	ag, got, err := proc.Start(ctx, bin, []string{"GODEBUG=gctrace=1"}, []*regexp.Regexp{wlRE, diagRE},
		"start", "--roles", "agent", "--data-dir", agentDir, "--workload-socket", filepath.Join(agentDir, "workload.sock"),
		"--auth", authAddr, "--join-token", m[1], "--ca-pin", pin, "--diag-addr", "127.0.0.1:0", "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	defer ag.Kill()
	socket, diag := got[0], got[1]
	fmt.Fprintf(os.Stderr, "agent joined (pid %d); waiting for the %d SVIDs\n", ag.Pid(), selecting)

	wl, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		return nil, err
	}
	defer wl.Close()
	for deadline := time.Now().Add(5 * time.Minute); ; {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		svids, err := wl.FetchX509SVIDs(cctx)
		cancel()
		if err == nil && len(svids) == selecting {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("the workload never got its %d SVIDs: got %d, %v\n%s", selecting, len(svids), err, ag)
		}
		select {
		case <-time.After(100 * time.Millisecond): // polling: the agent announces no "all issued"
		case <-ctx.Done():
		}
	}
	res := &result{Identities: identities, Selecting: selecting, Fetches: fetches, ReadyS: time.Since(joined).Seconds()}
	if res.AgentReadyRSS, _, err = proc.Memory(ag.Pid()); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "ready after %.1fs; timing %d FetchX509SVID\n", res.ReadyS, fetches)

	took := make([]time.Duration, 0, fetches)
	for range fetches {
		at := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		svids, err := wl.FetchX509SVIDs(cctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("FetchX509SVID: %w", err)
		}
		took = append(took, time.Since(at))
		res.SVIDs = len(svids)
	}
	slices.Sort(took)
	q := func(p float64) float64 {
		return float64(took[min(len(took)-1, int(p*float64(len(took))))]) / float64(time.Millisecond)
	}
	res.FetchP50Ms, res.FetchP99Ms = q(0.50), q(0.99)

	if res.AgentRSSMB, res.AgentHWMMB, err = proc.Memory(ag.Pid()); err != nil {
		return nil, err
	}
	if res.AuthRSSMB, _, err = proc.Memory(auth.Pid()); err != nil {
		return nil, err
	}
	resp, err := http.Get("http://" + diag + "/metrics")
	if err != nil {
		return nil, err
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	res.AgentHeapMB = metric(string(page), "go_memstats_heap_alloc_bytes") / (1 << 20)
	if m := gcRE.FindAllStringSubmatch(ag.String(), -1); len(m) > 0 {
		res.AgentLiveMB, _ = strconv.Atoi(m[len(m)-1][1])
	}
	res.AgentHeapSys = metric(string(page), "go_memstats_heap_sys_bytes") / (1 << 20)
	return res, nil
}
