package handover

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkHandoverEndToEnd: two Services over loopback HTTP, durable on
// both sides (badger with SyncWrites(true) plus group commit), N
// concurrent senders. One op is one handover: sealed, stored in A's
// outbox (synced), delivered, opened and stored in B's inbox (synced),
// receipt verified and stored by A (synced). Reports handovers/s until the
// last receipt is stored, and fsyncs per handover.
func BenchmarkHandoverEndToEnd(b *testing.B) {
	for _, senders := range []int{1, 16, 64} {
		for _, syncWrites := range []bool{true, false} {
			mode := "syncwrites"
			if !syncWrites {
				mode = "explicit-sync"
			}
			b.Run(fmt.Sprintf("senders=%d/%s", senders, mode), func(b *testing.B) {
				reg := newRegistry()
				cfg := func(c *Config) { c.Workers = 64; c.AuditInterval = time.Second }
				a := newNodeSync(b, reg, orgA, cfg, syncWrites)
				bn := newNodeSync(b, reg, orgB, cfg, syncWrites)
				ctx := context.Background()
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for range senders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for int(next.Add(1)) <= b.N {
							if _, err := a.s().SendHandover(ctx, caseRequest(orgB, 1)); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				for a.s().Stats().Delivered < uint64(b.N) {
					time.Sleep(200 * time.Microsecond)
				}
				elapsed := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "handovers/s")
				commits := a.s().Stats().Commits + bn.s().Stats().Commits
				b.ReportMetric(float64(commits)/float64(b.N), "commits/handover")
			})
		}
	}
}
