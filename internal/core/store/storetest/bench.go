package storetest

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/wid-project/wid/internal/core/store"
)

// BenchApply measures one-op Apply transactions (an upsert of a 1 KiB
// document, as a resource write is) from parallel writers, the way the
// auth service's request handlers write.
func BenchApply(b *testing.B, open func(b *testing.B) store.Backend) {
	db := open(b)
	defer db.Close()
	doc := bytes.Repeat([]byte("x"), 1024)
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := next.Add(1)
		for i := 0; pb.Next(); i++ {
			// A hundred items per writer, so that most upserts update.
			it := store.Item{Kind: "bench", Name: fmt.Sprintf("w%d-%d", w, i%100), Data: doc}
			if _, err := db.Apply(b.Context(), store.Op{Type: store.OpUpsert, Item: it}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchAppendAudit measures audit appends of batch rows each, one after
// the other: the audit log has one writer per process that commits a
// group of events at a time.
func BenchAppendAudit(b *testing.B, batch int, open func(b *testing.B) store.Backend) {
	db := open(b)
	defer db.Close()
	var seq int64
	var hash string
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rs := rows(seq, hash, batch)
		if err := db.AppendAudit(b.Context(), rs); err != nil {
			b.Fatal(err)
		}
		seq, hash = rs[len(rs)-1].Seq, rs[len(rs)-1].Hash
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "rows/s")
}
