package agent_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/testkit"
)

// otherUID is a uid no test process runs as: identities whose rules want
// it are held by the agent but select no workload on this host.
const otherUID = "4294967294"

// heldIdentities are held identities of which selecting match this
// process: held-selecting others want otherUID, as identities of workloads
// that run on other hosts of the same bot.
func heldIdentities(held, selecting int) [][]byte {
	docs := make([][]byte, 0, held)
	for i := 0; i < held; i++ {
		want := otherUID
		if i < selecting {
			want = uid
		}
		name := fmt.Sprintf("svc-%05d", i)
		wi := identity(name, "/svc/"+name+"/{{ workload.unix.uid }}", name, eq("workload.unix.uid", want))
		wi.Spec.X509.TTL = resource.Duration(time.Hour)
		doc, err := resource.MarshalJSON(wi)
		if err != nil {
			panic(err)
		}
		docs = append(docs, doc)
	}
	return docs
}

// agentHeapMB is the live heap allocated with the agent's code on the
// stack, in MB, from the heap profile (set runtime.MemProfileRate before
// the agent starts): the auth service shares the process, and the process's
// heap also moves with the auth service's garbage.
func agentHeapMB() float64 {
	runtime.GC()
	runtime.GC() // the profile is as of the last completed collection
	var recs []runtime.MemProfileRecord
	for {
		n, ok := runtime.MemProfile(recs, false)
		if ok {
			recs = recs[:n]
			break
		}
		recs = make([]runtime.MemProfileRecord, n+64)
	}
	rate := float64(runtime.MemProfileRate)
	total := 0.0
	for _, r := range recs {
		if r.InUseObjects() == 0 || !agentOnStack(r.Stack()) {
			continue
		}
		// A sampled allocation stands for 1/(1-e^(-size/rate)) of its kind.
		bytes, objs := float64(r.InUseBytes()), float64(r.InUseObjects())
		total += bytes / (1 - math.Exp(-bytes/objs/rate))
	}
	return total / (1 << 20)
}

func agentOnStack(stk []uintptr) bool {
	frames := runtime.CallersFrames(stk)
	for {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, "github.com/wid-project/wid/internal/core/agent.") {
			return true
		}
		if !more {
			return false
		}
	}
}

// rssMB is this process's resident memory, in MB.
func rssMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkAgentHeldIdentities: one agent whose bot may issue held workload
// identities, of which 1,000 select the calling process, at 1,000 and at
// 10,000 held. The identities exist before the agent starts; the agent's
// heap is what the heap profile says is live and was allocated under the
// agent's code, once it has joined, fetched the state and issued the 1,000
// SVIDs; the process's RSS (auth service included) is reported beside it.
// Then 4 go-spiffe clients call FetchX509SVID (each response carries all
// 1,000 SVIDs) b.N times in all; p50 and p99 are reported.
// What a new process costs, matched against every held identity, is
// BenchmarkEntitleHeld.
func BenchmarkAgentHeldIdentities(b *testing.B) {
	const selecting = 1000
	for _, held := range []int{1000, 10000} {
		b.Run("held="+strconv.Itoa(held), func(b *testing.B) {
			srv := authtest.Start(b)
			admin := srv.AdminClient(b)
			ctx := context.Background()
			docs := heldIdentities(held, selecting)
			for i := 0; i < len(docs); i += 500 {
				if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: docs[i:min(i+500, len(docs))]}); err != nil {
					b.Fatalf("creating workload identities: %v", err)
				}
			}
			defer func(r int) { runtime.MemProfileRate = r }(runtime.MemProfileRate)
			runtime.MemProfileRate = 4096
			e := startAgentOn(b, srv, admin)
			clients := make([]*workloadapi.Client, 4)
			for i := range clients {
				c, err := workloadapi.New(ctx, workloadapi.WithAddr(e.addr))
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				clients[i] = c
			}
			ready := time.Now()
			testkit.Succeeds(b, 2*time.Minute, func() error {
				svids, err := clients[0].FetchX509SVIDs(ctx)
				if err == nil && len(svids) != selecting {
					err = fmt.Errorf("got %d", len(svids))
				}
				return err
			}, "the workload never got its %d SVIDs", selecting)
			// ResetTimer drops metrics reported before it: kept for the end.
			readyS, agentHeap, rssReady := time.Since(ready).Seconds(), agentHeapMB(), rssMB()

			var mu sync.Mutex
			lat := make([]time.Duration, 0, b.N)
			var wg sync.WaitGroup
			next := make(chan struct{})
			b.ResetTimer()
			for _, c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range next {
						t0 := time.Now()
						_, err := c.FetchX509SVID(ctx)
						d := time.Since(t0)
						if err != nil {
							b.Error(err)
							continue
						}
						mu.Lock()
						lat = append(lat, d)
						mu.Unlock()
					}
				}()
			}
			for i := 0; i < b.N; i++ {
				next <- struct{}{}
			}
			close(next)
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
			b.ReportMetric(readyS, "ready-s")
			b.ReportMetric(agentHeap, "agent-heap-MB")
			b.ReportMetric(rssReady, "process-rss-MB")
			b.ReportMetric(rssMB(), "process-rss-after-MB")
		})
	}
}
