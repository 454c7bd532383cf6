package agent_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/wid-project/wid/internal/core/agent"
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

	const conns, streams = 4, 2000
	var opened sync.WaitGroup
	var cancels []context.CancelFunc
	for c := 0; c < conns; c++ {
		// The smallest windows gRPC allows: the client's buffers fill at
		// once and everything more waits on the agent's side.
		conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		raw := workload.NewSpiffeWorkloadAPIClient(conn)
		for i := 0; i < streams/conns; i++ {
			sctx, cancel := context.WithCancel(withHeader(ctx))
			cancels = append(cancels, cancel)
			opened.Add(1)
			go func() {
				defer opened.Done()
				if _, err := raw.FetchX509SVID(sctx, &workload.X509SVIDRequest{}); err != nil {
					t.Errorf("opening a stream: %v", err)
				}
			}()
		}
	}
	opened.Wait()
	t.Cleanup(func() {
		for _, c := range cancels {
			c()
		}
	})
	// Every stream has been sent its first response once the agent counts
	// it as served... wait until the agent has at least started them all.
	for deadline := time.Now().Add(30 * time.Second); metric(t, e, "wid_agent_workload_request_duration_seconds_count", "FetchX509SVID") < streams; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %v of %d streams got a first response", metric(t, e, "wid_agent_workload_request_duration_seconds_count", "FetchX509SVID"), streams)
		}
	}

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
	for ; k < 10 || (k < 40 && dropped() < streams); k++ {
		n := k + 1
		e.create(t, identity(fmt.Sprintf("me-%d", n), fmt.Sprintf("/uid/{{ workload.unix.uid }}/%d", n), fmt.Sprintf("me-%d", n), eq("workload.unix.uid", uid)))
		t0 := time.Now()
		for {
			x, err := good.FetchX509Context(ctx)
			if err == nil && len(x.SVIDs) == n+1 {
				break
			}
			if time.Since(t0) > 10*time.Second {
				t.Fatalf("change %d: a reading client did not get %d SVIDs within 10s (err %v)", n, n+1, err)
			}
			time.Sleep(20 * time.Millisecond)
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
	for deadline := time.Now().Add(60 * time.Second); dropped() < streams; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v of %d never-read streams were dropped", dropped(), streams)
		}
	}
	// The clients' own unread buffers live in this process too: close
	// them, then what is left must be near where it started.
	for _, c := range cancels {
		c()
	}
	var after uint64
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if after = heap(); after < 100<<20 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("peak heap in use (agent, auth service and clients in one process): %d MB; after the drops and the clients' cancels: %d MB", peak>>20, after>>20)
	if after > 100<<20 {
		t.Fatalf("heap in use is still %d MB after the never-read streams were dropped", after>>20)
	}
}
