package audit_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/store/postgres"
	"github.com/wid-project/wid/internal/core/store/postgres/pgtest"
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

// BenchmarkEmitReplicasPostgres measures durable audit throughput on a
// PostgreSQL with fsync on, with the same 32 emitters spread over one
// writer or three (replicas on one database): every commit of one writer
// may push another's off the chain head, and the figure says what the
// re-chaining costs against group commit on one writer.
func BenchmarkEmitReplicasPostgres(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			srv := pgtest.SharedWith(b, pgtest.Options{Durable: true})
			name, dbURL, err := srv.CreateDatabase(b.Context())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { srv.DropDatabase(context.Background(), name) })
			logs := make([]*audit.Log, n)
			for i := range logs {
				db, err := postgres.Open(b.Context(), dbURL)
				if err != nil {
					b.Fatal(err)
				}
				tl := startLog(b, db)
				b.Cleanup(func() {
					tl.stop()
					db.Close()
				})
				logs[i] = tl.Log
			}
			ev := event(1)
			var next atomic.Int64
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				l := logs[int(next.Add(1))%n]
				for pb.Next() {
					if _, err := l.Emit(context.Background(), ev); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
