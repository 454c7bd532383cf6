package agent_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/wid-project/wid/internal/core/agent"
	"github.com/wid-project/wid/internal/testkit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestNeverReadStreamsStayBounded opens 2,000 FetchX509SVID streams that
// never read, then makes 10 changes that each grow what they are sent. The
// agent must neither hold a queue of responses per stream nor keep the
// streams once they fall behind, and a client that reads must still get
// the newest SVIDs promptly.
func TestNeverReadStreamsStayBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 2,000 streams")
	}
	e := start(t, func(c *agent.Config) { c.StreamSendTimeout = 3 * time.Second })
	e.create(t, identity("me", "/uid/{{ workload.unix.uid }}", "me", eq("workload.unix.uid", uid)))
	ctx := ctxT(t, 3*time.Minute)

	// The never-read clients run in a process of their own, so that this
	// process's heap is the agent's (and the auth service's) alone.
	const streams = 2000
	clients := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestNeverReadClients$")
	clients.Env = append(os.Environ(), "WID_TEST_NEVER_READ_ADDR="+e.addr, "WID_TEST_NEVER_READ_STREAMS="+strconv.Itoa(streams))
	clients.Stderr = os.Stderr
	stdin, err := clients.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := clients.Start(); err != nil {
		t.Fatal(err)
	}
	stopClients := func() {
		stdin.Close()
		clients.Wait()
	}
	t.Cleanup(stopClients)
	// Every stream has been sent its first response once the agent counts
	// it as served... wait until the agent has at least started them all.
	testkit.Eventually(t, 30*time.Second, func() bool {
		return metric(t, e, "wid_agent_workload_request_duration_seconds_count", "FetchX509SVID") >= streams
	}, "not all %d streams got a first response", streams)

	good, err := workloadapi.New(ctx, workloadapi.WithAddr(e.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()

	var peak uint64
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapInuse)
		return ms.HeapInuse
	}
	t.Logf("heap in use with %d streams open: %d MB", streams, heap()>>20)
	// Each change adds an SVID, so each response is larger than the last:
	// changes go on until the never-read streams have fallen behind by
	// more than gRPC's own per-stream queue holds, and are ended.
	dropped := func() float64 { return metric(t, e, "wid_agent_streams_dropped_total", "FetchX509SVID") }
	k := 0
	var peak10 uint64
	for ; k < 10 || (k < 40 && dropped() < streams); k++ {
		n := k + 1
		e.create(t, identity(fmt.Sprintf("me-%d", n), fmt.Sprintf("/uid/{{ workload.unix.uid }}/%d", n), fmt.Sprintf("me-%d", n), eq("workload.unix.uid", uid)))
		t0 := time.Now()
		testkit.Succeeds(t, 10*time.Second, func() error {
			x, err := good.FetchX509Context(ctx)
			if err == nil && len(x.SVIDs) != n+1 {
				err = fmt.Errorf("%d SVIDs", len(x.SVIDs))
			}
			return err
		}, "change %d: a reading client did not get %d SVIDs", n, n+1)
		if n == 10 {
			peak10 = peak
		}
		t.Logf("change %d served to a reading client in %s; heap in use %d MB; %v streams dropped", n, time.Since(t0).Round(time.Millisecond), heap()>>20, dropped())
	}
	// A watching client sees the newest state, over a stream of its own.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	ch := make(chan *workloadapi.X509Context, 1)
	go good.WatchX509Context(wctx, watcher{ch})
	select {
	case x := <-ch:
		if len(x.SVIDs) != k+1 {
			t.Fatalf("a watching client got %d SVIDs, want %d", len(x.SVIDs), k+1)
		}
	case <-wctx.Done():
		t.Fatal("a watching client got nothing among the never-read streams")
	}

	// Streams that read nothing for the send timeout are ended and
	// counted, and what they held is released at once.
	testkit.Eventually(t, 60*time.Second, func() bool { return dropped() >= streams },
		"not all %d never-read streams were dropped", streams)
	stopClients()
	var after uint64
	// Not Eventually: a heap that stays high is reported below with its size.
	testkit.Within(20*time.Second, func() bool { after = heap(); return after < 100<<20 })
	t.Logf("peak heap in use (agent and auth service): %d MB over the first 10 changes, %d MB over all %d; after the drops: %d MB", peak10>>20, peak>>20, k, after>>20)
	if peak10 > 200<<20 {
		t.Fatalf("heap in use reached %d MB with %d never-read streams after 10 changes, want under 200 MB", peak10>>20, streams)
	}
	if after > 100<<20 {
		t.Fatalf("heap in use is still %d MB after the never-read streams were dropped", after>>20)
	}
}

// TestNeverReadClients is the client process of TestNeverReadStreamsStayBounded:
// it opens the streams, never reads them, and holds them until its stdin
// closes.
func TestNeverReadClients(t *testing.T) {
	addr := os.Getenv("WID_TEST_NEVER_READ_ADDR")
	if addr == "" {
		t.Skip("run by TestNeverReadStreamsStayBounded")
	}
	streams, _ := strconv.Atoi(os.Getenv("WID_TEST_NEVER_READ_STREAMS"))
	const conns = 4
	ctx, cancel := context.WithCancel(withHeader(context.Background()))
	defer cancel()
	var opened sync.WaitGroup
	for c := 0; c < conns; c++ {
		// The smallest windows gRPC allows: the client's buffers fill at
		// once and everything more waits on the agent's side.
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		raw := workload.NewSpiffeWorkloadAPIClient(conn)
		for i := 0; i < streams/conns; i++ {
			opened.Add(1)
			go func() {
				defer opened.Done()
				if _, err := raw.FetchX509SVID(ctx, &workload.X509SVIDRequest{}); err != nil {
					t.Errorf("opening a stream: %v", err)
				}
			}()
		}
	}
	opened.Wait()
	io.Copy(io.Discard, os.Stdin)
}
