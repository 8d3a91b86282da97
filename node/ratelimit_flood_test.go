package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// floodFactor is the documented bound: with the default rate limits, a
// well-behaved client's FindProviders p99 under a flood from 200 others
// stays within floodFactor times its p99 alone (or within floodFloor,
// whichever is larger: on a loaded 2-core machine a p99 of a millisecond
// or two alone says little about scheduling noise).
const (
	floodFactor  = 15
	floodFloor   = 50 * time.Millisecond
	floodClients = 200
	// The well-behaved side: goodClients clients on their own addresses,
	// each asking goodRate queries a second (within the default budget of
	// 5/s), so that a short run has enough samples for a p99.
	goodClients = 10
	goodRate    = 1.5
)

// TestRateLimitFlood measures a well-behaved client's FindProviders
// latency against a node holding the sample data (11,004 municipalities):
// alone, then under a flood from 200 clients on 200 other loopback
// addresses (127.0.0.2-201, each one HTTP/2 connection, each calling in a
// tight loop and ignoring Retry-After), first with rate limits off, then
// with the default limits on. The well-behaved side is 10 clients on
// 127.0.1.1-10, each keeping to its budget (1.5 queries/s against the
// default 5/s); their latencies are pooled. It prints a table and asserts,
// with limits on, that the flooders are refused with ResourceExhausted,
// the well-behaved clients never are, and their p99 stays within
// floodFactor of their p99 alone. The latency bound is not asserted when
// the machine is overloaded by others (load average over twice the CPUs):
// the flood's clients share the node's CPU, and a starved process says
// nothing about the node.
//
// Short by default (5 s per phase); VERBUND_FLOOD_SECONDS=N runs N seconds
// per phase:
//
//	VERBUND_FLOOD_SECONDS=30 go test -count=1 -run TestRateLimitFlood -v ./node
func TestRateLimitFlood(t *testing.T) {
	if raceEnabled {
		t.Skip("a timing test: under the race detector the node serves about a tenth of its rate, and 200 flooders cannot reach their budgets")
	}
	phase := 5 * time.Second
	if s := os.Getenv("VERBUND_FLOOD_SECONDS"); s != "" {
		var secs int
		if _, err := fmt.Sscan(s, &secs); err != nil || secs < 1 {
			t.Fatalf("VERBUND_FLOOD_SECONDS=%q: want a number of seconds", s)
		}
		phase = time.Duration(secs) * time.Second
	}
	cfg := testConfig(t, t.TempDir())
	cfg.RateLimits = DefaultRateLimits()
	n := startNode(t, cfg)
	ImportSampleData(t, n, n)
	if n.limiter.Load() == nil {
		t.Fatal("default config has no rate limiter")
	}

	req := &registryv1.FindProvidersRequest{LeikaKey: gewerbe, Area: munichARS}
	var good []registryv1connect.QueryServiceClient
	for i := range goodClients {
		good = append(good, registryv1connect.NewQueryServiceClient(clientFrom(fmt.Sprintf("127.0.1.%d", 1+i)), n.APIURL()))
	}
	if res, err := good[0].FindProviders(context.Background(), connect.NewRequest(req)); err != nil || len(res.Msg.GetProviders()) == 0 {
		t.Fatalf("FindProviders: %v; want an answer with providers", err)
	}

	// measure runs the well-behaved clients for d.
	measure := func(d time.Duration) (lat []time.Duration, refused int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		end := time.Now().Add(d)
		for i, c := range good {
			wg.Add(1)
			go func() {
				defer wg.Done()
				every := time.Second * 2 / 3                       // goodRate: 1.5 a second
				time.Sleep(every * time.Duration(i) / goodClients) // spread the clients
				tick := time.NewTicker(every)
				defer tick.Stop()
				for time.Now().Before(end) {
					start := time.Now()
					_, err := c.FindProviders(context.Background(), connect.NewRequest(req))
					took := time.Since(start)
					mu.Lock()
					switch {
					case connect.CodeOf(err) == connect.CodeResourceExhausted:
						refused++
					case err != nil:
						t.Errorf("well-behaved client: %v", err)
					default:
						lat = append(lat, took)
					}
					mu.Unlock()
					<-tick.C
				}
			}()
		}
		wg.Wait()
		return lat, refused
	}
	// flood runs 200 flooders while the well-behaved clients measure.
	flood := func() (lat []time.Duration, refused int, ok, exhausted, other int64) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var nOK, nExh, nOther atomic.Int64
		for i := range floodClients {
			c := registryv1connect.NewQueryServiceClient(clientFrom(fmt.Sprintf("127.0.0.%d", 2+i)), n.APIURL())
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					_, err := c.FindProviders(ctx, connect.NewRequest(req))
					switch {
					case err == nil:
						nOK.Add(1)
					case connect.CodeOf(err) == connect.CodeResourceExhausted:
						nExh.Add(1)
					case ctx.Err() == nil:
						nOther.Add(1)
					}
				}
			}()
		}
		time.Sleep(2 * time.Second) // past the flooders' bursts: the steady state
		ok0, exh0 := nOK.Load(), nExh.Load()
		lat, refused = measure(phase)
		ok, exhausted = nOK.Load()-ok0, nExh.Load()-exh0
		cancel()
		wg.Wait()
		return lat, refused, ok, exhausted, nOther.Load()
	}

	type row struct {
		name               string
		lat                []time.Duration
		refused            int
		ok, exhausted, bad int64
	}
	var rows []row
	load0 := loadAverage()
	lat, refused := measure(phase)
	rows = append(rows, row{name: "alone", lat: lat, refused: refused})

	n.limiter.Store(nil) // limits off
	lat, refused, ok, exh, bad := flood()
	rows = append(rows, row{"200 flooders, limits off", lat, refused, ok, exh, bad})

	n.limiter.Store(newRateLimiter(cfg.RateLimits.withDefaults(), n.metrics)) // the default limits, fresh buckets
	lat, refused, ok, exh, bad = flood()
	rows = append(rows, row{"200 flooders, default limits", lat, refused, ok, exh, bad})
	load1 := loadAverage()

	pct := func(l []time.Duration, p float64) time.Duration {
		if len(l) == 0 {
			return 0
		}
		s := slices.Clone(l)
		slices.Sort(s)
		return s[min(len(s)-1, int(float64(len(s))*p))]
	}
	secs := phase.Seconds()
	t.Logf("FindProviders %s in %s (sample data), well-behaved: %d clients × %.1f/s; %v per phase; load average %.1f → %.1f on %d CPUs",
		gewerbe, munichARS, goodClients, goodRate, phase, load0, load1, runtime.NumCPU())
	t.Logf("| %-28s | %7s | %9s | %9s | %7s | %7s | %10s | %11s |", "phase", "samples", "p50", "p99", "×alone", "refused", "flood ok/s", "flood 429/s")
	alone := pct(rows[0].lat, 0.99)
	for _, r := range rows {
		p99 := pct(r.lat, 0.99)
		t.Logf("| %-28s | %7d | %9v | %9v | %7.1f | %7d | %10.0f | %11.0f |", r.name, len(r.lat), pct(r.lat, 0.5).Round(10*time.Microsecond),
			p99.Round(10*time.Microsecond), float64(p99)/float64(alone), r.refused, float64(r.ok)/secs, float64(r.exhausted)/secs)
	}

	on := rows[2]
	if on.exhausted == 0 {
		t.Error("with limits on, no flooder request was refused with ResourceExhausted")
	}
	if on.refused != 0 {
		t.Errorf("the well-behaved clients were refused %d times", on.refused)
	}
	if on.bad != 0 || rows[1].bad != 0 {
		t.Errorf("flooders saw errors other than ResourceExhausted: %d with limits off, %d on", rows[1].bad, on.bad)
	}
	// The latency bound is asserted in the measurement run only
	// (VERBUND_FLOOD_SECONDS set, on an otherwise quiet machine): the
	// short run inside make test shares the machine with other packages'
	// tests, and a p99 of 75 samples there is the slowest of them.
	got, bound := pct(on.lat, 0.99), max(floodFactor*alone, floodFloor)
	switch {
	case got <= bound:
	case os.Getenv("VERBUND_FLOOD_SECONDS") == "":
		t.Logf("p99 under the flood with limits on %v, over %d × %v alone (floor %v): asserted only with VERBUND_FLOOD_SECONDS", got, floodFactor, alone, floodFloor)
	case max(load0, load1) > 2*float64(runtime.NumCPU()):
		t.Logf("p99 under the flood with limits on %v, over %d × %v alone (floor %v), but the machine is overloaded: not asserted", got, floodFactor, alone, floodFloor)
	default:
		t.Errorf("p99 under the flood with limits on %v, over %d × %v alone (floor %v)", got, floodFactor, alone, floodFloor)
	}
}

// loadAverage is the 1-minute load average (0 where unknown).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	fmt.Sscan(string(b), &l)
	return l
}

// clientFrom is an HTTP/2 (h2c) client whose connections leave from the
// loopback address ip, so the node sees a distinct source address.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}}
}
