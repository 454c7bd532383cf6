package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/wid-project/wid/internal/testkit"
)

// procMemKB reads one field (VmRSS, VmHWM) of /proc/PID/status in kB.
func procMemKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	kb, err := readProcMemKB(pid, field)
	if err != nil {
		t.Fatal(err)
	}
	return kb
}

func readProcMemKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing %s of /proc/%d/status: %w", field, pid, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// metricsText fetches the agent's metrics page.
func metricsText(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metricOf sums the samples of one metric whose labels contain label.
func metricOf(t *testing.T, addr, name, label string) float64 {
	t.Helper()
	total := 0.0
	for _, line := range strings.Split(metricsText(t, addr), "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, label) {
			if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
				total += v
			}
		}
	}
	return total
}

// Issue 15 item 8: 2,000 Workload API streams that never read, each on a
// connection of its own as 2,000 stuck workloads would hold them, and 10
// changes that each push a larger response to all of them. The real
// widagent's resident memory stays under 200 MB throughout: its kernel
// high-water mark (VmHWM) is what is checked, so no peak between samples
// escapes. A reading client gets every change meanwhile. (That streams
// behind by more than gRPC's queue are ended and counted is
// TestNeverReadStreamsStayBounded in internal/core/agent, which can
// shorten the send timeout.) It takes about 10 s.
func TestNeverReadStreamsKeepAgentUnder200MB(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 2,000 Workload API connections")
	}
	const streams, changes, limitMB = 2000, 10, 200
	a := startAgent(t, newDataDir(t), "--diag-addr", "127.0.0.1:0")
	pid := a.cmd.Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Sampled as well as read from VmHWM, so the log shows the curve.
	var peakRSS atomic.Int64
	sampled := make(chan struct{})
	sctx, stopSampling := context.WithCancel(ctx)
	go func() {
		defer close(sampled)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if kb, err := readProcMemKB(pid, "VmRSS"); err == nil && kb > peakRSS.Load() {
				peakRSS.Store(kb)
			}
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { stopSampling(); <-sampled }()
	t.Logf("agent RSS at start: %d MB", procMemKB(t, pid, "VmRSS")>>10)

	// The smallest windows gRPC allows: each client's buffers fill at once
	// and everything more waits on the agent's side, the worst case for it.
	hctx := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	var opened sync.WaitGroup
	errs := make(chan error, streams)
	for range streams {
		conn, err := grpc.NewClient("unix://"+a.workload, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		opened.Add(1)
		go func() {
			defer opened.Done()
			if _, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(hctx, &workload.X509SVIDRequest{}); err != nil {
				errs <- err
			}
		}()
	}
	opened.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("opening a never-read stream: %v", err)
	}
	first := func() float64 {
		return metricOf(t, a.diag, "wid_agent_workload_request_duration_seconds_count", `method="FetchX509SVID"`)
	}
	testkit.EventuallyEvery(t, 60*time.Second, 50*time.Millisecond, func() bool { return first() >= streams },
		"not all %d never-read streams got their first response", streams)
	t.Logf("agent RSS with %d never-read streams open: %d MB", streams, procMemKB(t, pid, "VmRSS")>>10)

	good, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+a.workload))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	base, err := good.FetchX509Context(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Each change adds an SVID for this uid, so each response pushed to
	// every stream is larger than the last.
	for n := 1; n <= changes; n++ {
		a.widctl("workload-identity", "create", fmt.Sprintf("wi-%02d", n), "--spiffe-id", fmt.Sprintf("/svc/%02d", n), "--rule", "workload.unix.uid="+uid).must(t)
		t0 := time.Now()
		testkit.Succeeds(t, 20*time.Second, func() error {
			x, err := good.FetchX509Context(ctx)
			if err == nil && len(x.SVIDs) != len(base.SVIDs)+n {
				err = fmt.Errorf("%d SVIDs", len(x.SVIDs))
			}
			return err
		}, "change %d: a reading client did not get %d SVIDs", n, len(base.SVIDs)+n)
		t.Logf("change %d reached a reading client in %s; agent RSS %d MB", n, time.Since(t0).Round(time.Millisecond), procMemKB(t, pid, "VmRSS")>>10)
	}

	hwm := procMemKB(t, pid, "VmHWM")
	t.Logf("agent peak RSS: %d MB (VmHWM), %d MB sampled", hwm>>10, peakRSS.Load()>>10)
	if hwm > limitMB<<10 {
		t.Fatalf("the agent's resident memory reached %d MB with %d never-read streams and %d changes, want under %d MB", hwm>>10, streams, changes, limitMB)
	}
}
