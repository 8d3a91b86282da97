package node_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/node"
	"github.com/verbund/verbund/node/nodetest"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// h2cFrom is an HTTP/2 client without TLS calling from source address ip,
// with receive windows of rcvBuf bytes (0: the defaults).
func h2cFrom(ip string, rcvBuf int) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		Protocols:   &p,
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext,
	}
	if rcvBuf > 0 {
		tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerConnection: rcvBuf, MaxReceiveBufferPerStream: rcvBuf}
	}
	return &http.Client{Transport: tr}
}

func heapInuse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func terms(c *nodetest.Cluster) []string {
	var out []string
	for _, m := range c.Nodes {
		out = append(out, m.Node().Raft().Stats()["term"])
	}
	return out
}

// TestWatchLimits: 300 change feed streams from index 0 (38 source
// addresses, 8 each, over the per-caller cap of 6, against a node cap of
// 160) against the leader of three voters: the caps refuse the excess with
// ResourceExhausted, snapshot transfers run a few at a time, the heap
// grows by a bounded amount, no election happens and another client's
// queries keep their p99. Then a client that never reads is cut off after
// the write timeout and its snapshot slot is freed.
func TestWatchLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("300 streams against three voters")
	}
	const (
		perCaller   = 6
		nodeCap     = 160
		addrs       = 38
		perAddr     = 8
		writeTimout = 2 * time.Second
	)
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Configure: func(i int, cfg *node.Config) {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
		cfg.RateLimits = node.DefaultRateLimits().Scale(1000) // budgets out of the way: the caps are tested
		cfg.RateLimits.MaxStreams, cfg.RateLimits.MaxStreamsPerCaller = nodeCap, perCaller
		cfg.RateLimits.MaxSnapshotTransfers, cfg.RateLimits.MaxSnapshotTransfersPerCaller = 1, 1
		cfg.RateLimits.SnapshotWait = 20 * time.Second
		cfg.RateLimits.WatchWriteTimeout = writeTimout
	}})
	defer c.Shutdown()
	leader := c.WaitLeader(10 * time.Second)
	node.ImportSampleData(t, c.Nodes[0].Node(), leader.Node())
	if err := c.WaitCaughtUp(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	api := leader.API()
	termsBefore := terms(c)
	runtime.GC()
	heap0 := heapInuse()

	// Another client's queries, throughout.
	q := registryv1connect.NewQueryServiceClient(h2cFrom("127.0.9.1", 0), api)
	var (
		latMu sync.Mutex
		lat   []time.Duration
	)
	stopQ := make(chan struct{})
	var qwg sync.WaitGroup
	qwg.Add(1)
	go func() {
		defer qwg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopQ:
				return
			case <-tick.C:
			}
			start := time.Now()
			qctx, qcancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := q.FindProviders(qctx, connect.NewRequest(&registryv1.FindProvidersRequest{LeikaKey: "99050012104000", Area: "091620000000"}))
			qcancel()
			if err != nil {
				t.Errorf("query during the flood: %v", err)
				return
			}
			latMu.Lock()
			lat = append(lat, time.Since(start))
			latMu.Unlock()
		}
	}()

	// The flood: streams from 0, values and raw writes, read slowly.
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg                                     sync.WaitGroup
		admitted, snapshots, callerCap, nodeCp atomic.Int64
		cut, snapRefused, open, peakOpen       atomic.Int64
		otherErr                               atomic.Value
		snapBytes                              atomic.Int64
		peakHeap                               atomic.Uint64
	)
	start := time.Now()
	for a := range addrs {
		hc := h2cFrom(fmt.Sprintf("127.0.2.%d", a+1), 0)
		w := registryv1connect.NewWatchServiceClient(hc, api)
		for range perAddr {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := w.Watch(ctx, connect.NewRequest(&registryv1.WatchRequest{IncludeStateWrites: true}))
				if err != nil {
					otherErr.Store(err)
					return
				}
				defer st.Close()
				first := true
				for st.Receive() {
					if first {
						admitted.Add(1)
						if o := open.Add(1); o > peakOpen.Load() {
							peakOpen.Store(o) // racy max, good enough: checked against a cap
						}
						defer open.Add(-1)
						first = false
					}
					m := st.Msg()
					if m.GetSnapshot() {
						for _, wr := range m.GetWrites() {
							snapBytes.Add(int64(len(wr.GetKey()) + len(wr.GetValue())))
						}
					}
					if m.GetSnapshotDone() {
						snapshots.Add(1)
					}
				}
				err = st.Err()
				switch {
				case err == nil || ctx.Err() != nil:
				case connect.CodeOf(err) == connect.CodeInternal && strings.Contains(err.Error(), "INTERNAL_ERROR"):
					cut.Add(1) // too slow a reader (a starved client goroutine): cut by the write timeout
				case connect.CodeOf(err) == connect.CodeResourceExhausted && strings.Contains(err.Error(), "snapshot transfers"):
					snapRefused.Add(1)
				case connect.CodeOf(err) == connect.CodeResourceExhausted && strings.Contains(err.Error(), "per caller"):
					callerCap.Add(1)
				case connect.CodeOf(err) == connect.CodeResourceExhausted && strings.Contains(err.Error(), "this node serves"):
					nodeCp.Add(1)
				default:
					otherErr.Store(err)
				}
			}()
		}
	}
	// Sample the heap until every admitted stream has its snapshot.
	deadline := time.Now().Add(60 * time.Second)
	var lastProfile time.Time
	var live uint64 // live heap mid-flood, after a forced GC
	for time.Now().Before(deadline) {
		if h := heapInuse(); h > peakHeap.Load() {
			peakHeap.Store(h)
			if path := os.Getenv("VERBUND_WATCH_HEAPPROFILE"); path != "" && time.Since(lastProfile) > time.Second {
				lastProfile = time.Now()
				f, err := os.Create(path)
				if err == nil {
					_ = pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
			}
		}
		if snapshots.Load()+cut.Load()+snapRefused.Load()+callerCap.Load()+nodeCp.Load() == addrs*perAddr {
			break
		}
		if live == 0 && time.Since(start) > 8*time.Second {
			runtime.GC()
			live = heapInuse()
		}
		time.Sleep(100 * time.Millisecond)
	}
	allSnaps := time.Since(start)
	time.Sleep(2 * time.Second) // streams open, heartbeats flowing
	if h := heapInuse(); h > peakHeap.Load() {
		peakHeap.Store(h)
	}
	close(stopQ)
	qwg.Wait()
	termsAfter := terms(c)
	if e := otherErr.Load(); e != nil {
		t.Errorf("a stream failed otherwise than by a cap: %v", e)
	}
	t.Logf("%d streams admitted (got a first message)", admitted.Load())
	t.Logf("%d streams from index 0 from %d addresses: %d refused per caller, %d refused per node, %d refused a snapshot slot, %d cut as too slow; %d snapshots (%d KiB of state writes each) in %v",
		addrs*perAddr, addrs, callerCap.Load(), nodeCp.Load(), snapRefused.Load(), cut.Load(), snapshots.Load(), snapBytes.Load()/max(1, snapshots.Load())/1024, allSnaps.Round(time.Millisecond))
	t.Logf("at most %d streams were open at once (node cap %d)", peakOpen.Load(), nodeCap)
	if callerCap.Load() == 0 || nodeCp.Load() == 0 || peakOpen.Load() > nodeCap {
		t.Errorf("caps not held: %d refused per caller, %d per node, %d open at once (cap %d)", callerCap.Load(), nodeCp.Load(), peakOpen.Load(), nodeCap)
	}
	growth := int64(live) - int64(heap0)
	t.Logf("heap in use (3 nodes and the clients in this process): %d MiB before, %d MiB live mid-flood after a GC (%+d MiB), peak %d MiB before collection",
		heap0>>20, live>>20, growth>>20, peakHeap.Load()>>20)
	if growth > 128<<20 {
		t.Errorf("live heap grew by %d MiB under the flood; want a bounded growth (< 128 MiB)", growth>>20)
	}
	if !slices.Equal(termsBefore, termsAfter) {
		t.Errorf("Raft terms changed under the flood: %v -> %v (an election)", termsBefore, termsAfter)
	}
	latMu.Lock()
	if len(lat) == 0 {
		lat = append(lat, time.Hour) // no query answered
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	latMu.Unlock()
	t.Logf("another client's queries during the flood: %d, p50 %v, p99 %v; Raft terms %v unchanged", len(lat), p50, p99, termsAfter)
	if p99 > time.Second {
		t.Errorf("query p99 %v under the flood; want < 1s", p99)
	}
	cancel()
	wg.Wait()

	// A client that never reads, with small receive windows: the server's
	// writes block, and after the write timeout the stream is cut and its
	// snapshot slot (per caller: 1) is free again.
	slow := registryv1connect.NewWatchServiceClient(h2cFrom("127.0.3.1", 64<<10), api)
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	st, err := slow.Watch(sctx, connect.NewRequest(&registryv1.WatchRequest{IncludeStateWrites: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !st.Receive() { // the response started; now stop reading
		t.Fatalf("never-reading client: %v", st.Err())
	}
	time.Sleep(300 * time.Millisecond)
	second := registryv1connect.NewWatchServiceClient(h2cFrom("127.0.3.1", 0), api)
	tryAgain := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := second.Watch(ctx, connect.NewRequest(&registryv1.WatchRequest{}))
		if err != nil {
			return err
		}
		defer st.Close()
		for st.Receive() {
			if st.Msg().GetSnapshotDone() {
				return nil
			}
		}
		return st.Err()
	}
	// While the never-reader holds its snapshot slot: refused.
	if err := tryAgain(); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("second snapshot stream of the same caller while the first is stuck: %v; want resource_exhausted (the first holds the slot)", err)
	}
	// After the write timeout: cut, slot free.
	cutAt := time.Now()
	var freedAfter time.Duration
	for time.Since(cutAt) < 10*writeTimout {
		if err := tryAgain(); err == nil {
			freedAfter = time.Since(cutAt)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if freedAfter == 0 {
		t.Fatalf("the never-reading client's stream was not cut within %v", 10*writeTimout)
	}
	// The never-reader, reading again, finds its stream ended by a reset.
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	go func() { <-rctx.Done(); scancel() }()
	for st.Receive() {
	}
	if err := st.Err(); err == nil || errors.Is(err, context.Canceled) || rctx.Err() != nil {
		t.Fatalf("never-reading client's stream: %v; want it ended by the server", err)
	} else {
		t.Logf("never-reading client cut within %v of being stuck (write timeout %v); its stream ended with %v", freedAfter.Round(10*time.Millisecond), writeTimout, err)
	}
}
