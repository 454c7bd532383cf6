package audit_test

import (
	"context"
	"testing"
)

// BenchmarkEmitParallel measures durable audit throughput: every Emit
// returns only after its event is committed with synchronous=FULL, so the
// figure rests on group commit.
func BenchmarkEmitParallel(b *testing.B) {
	tl := newTestLog(b)
	ev := event(1)
	// Many more emitters than cores, like the auth service under load with
	// one goroutine per in-flight RPC.
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := tl.Emit(context.Background(), ev); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkEmitSerial is the cost with no concurrency to batch: one commit
// per event.
func BenchmarkEmitSerial(b *testing.B) {
	tl := newTestLog(b)
	ev := event(1)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := tl.Emit(context.Background(), ev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
