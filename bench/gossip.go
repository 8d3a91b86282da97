package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/verbund/verbund/federation/membership"
)

// GossipResult is one in-process gossip measurement of n members on
// loopback with the project's production gossip settings (membership's
// LAN profile, encrypted, labelled).
type GossipResult struct {
	Members int
	// Converge is how long it took from one new member's Join until every
	// member saw it alive (dissemination of a join).
	Converge time.Duration
	// BytesPerNode is the mean bytes sent per node and second in a quiet
	// window of Window (no joins): probes, acks and push/pull syncs.
	BytesPerNode float64
	Window       time.Duration
	// ModelBytes is the model's steady-state estimate for the same n.
	ModelBytes float64
}

// GossipProjection is the model at a size not measured.
type GossipProjection struct {
	Members          int
	Converge         time.Duration // fitted a + b*log(n) from the measurements
	ConvergeModel    time.Duration // gossip rounds x interval (the epidemic model)
	BytesPerNode     float64
	PushPullInterval time.Duration
	SuspicionMin     time.Duration
	SuspicionMax     time.Duration
}

// countingTransport counts the bytes a member sends (packets and streams,
// both directions of its streams' writes).
type countingTransport struct {
	memberlist.NodeAwareTransport
	sent    *atomic.Int64
	streams chan net.Conn
}

func newCountingTransport(inner memberlist.NodeAwareTransport, sent *atomic.Int64) *countingTransport {
	t := &countingTransport{NodeAwareTransport: inner, sent: sent, streams: make(chan net.Conn)}
	go func() {
		for c := range inner.StreamCh() {
			t.streams <- countingConn{Conn: c, sent: sent}
		}
		close(t.streams)
	}()
	return t
}

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.sent.Add(int64(len(b)))
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *countingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	t.sent.Add(int64(len(b)))
	return t.NodeAwareTransport.WriteToAddress(b, a)
}

func (t *countingTransport) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	c, err := t.NodeAwareTransport.DialTimeout(addr, d)
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: c, sent: t.sent}, nil
}

func (t *countingTransport) DialAddressTimeout(a memberlist.Address, d time.Duration) (net.Conn, error) {
	c, err := t.NodeAwareTransport.DialAddressTimeout(a, d)
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: c, sent: t.sent}, nil
}

func (t *countingTransport) StreamCh() <-chan net.Conn { return t.streams }

type countingConn struct {
	net.Conn
	sent *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.sent.Add(int64(n))
	return n, err
}

// gossipMember is one in-process member.
type gossipMember struct {
	m    *membership.Membership
	sent atomic.Int64
	addr string
}

func startMember(i int, key []byte, seed string) (*gossipMember, error) {
	g := &gossipMember{}
	nt, err := membership.NewNetTransport("127.0.0.1", 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	ip, port, err := nt.FinalAdvertiseAddr("127.0.0.1", 0)
	if err != nil {
		return nil, err
	}
	_ = ip
	port = nt.GetAutoBindPort()
	g.addr = fmt.Sprintf("127.0.0.1:%d", port)
	cfg := membership.DefaultConfig()
	cfg.NodeName = fmt.Sprintf("g%04d", i)
	cfg.Meta = membership.Meta{NodeID: cfg.NodeName, OrgID: fmt.Sprintf("0916%08d", i), Role: membership.RoleMember,
		APIAddr: "https://" + g.addr, Version: "bench"}
	cfg.Keyring = [][]byte{key}
	cfg.Label = "verbund-bench"
	cfg.Transport = newCountingTransport(nt, &g.sent)
	cfg.BindAddr, cfg.BindPort, cfg.AdvertiseAddr, cfg.AdvertisePort = "127.0.0.1", port, "127.0.0.1", port
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if seed != "" {
		cfg.Join = []string{seed}
	}
	if g.m, err = membership.New(cfg, nil); err != nil {
		return nil, err
	}
	if seed != "" {
		// A join is one TCP state exchange; on a loaded machine it can
		// time out: try three times.
		var err error
		for range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			_, err = g.m.Join(ctx, []string{seed})
			cancel()
			if err == nil {
				return g, nil
			}
		}
		_ = g.m.Shutdown()
		return nil, err
	}
	return g, nil
}

// MeasureGossip starts n members (each joining through a random earlier one), waits
// until all see all, measures the bytes each sends in a quiet window and
// then the time one more member's join takes to reach everyone.
func MeasureGossip(ctx context.Context, n int, window time.Duration) (GossipResult, error) {
	res := GossipResult{Members: n, Window: window}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	var ms []*gossipMember
	defer func() {
		for _, g := range ms {
			_ = g.m.Shutdown()
		}
	}()
	for i := range n {
		// Each joins through a random member already started (one seed
		// for all would make it the hot spot of every state exchange).
		seed := ""
		if i > 0 {
			seed = ms[mrand.IntN(len(ms))].addr
		}
		g, err := startMember(i, key, seed)
		if err != nil {
			return res, fmt.Errorf("gossip member %d: %w", i, err)
		}
		ms = append(ms, g)
		time.Sleep(5 * time.Millisecond) // pace the joins' broadcasts
	}
	// allKnow reports whether every member knows want members (in any
	// state: on a loaded machine some are always briefly suspect). A
	// member found knowing them is not asked again during the same wait
	// (Members decodes every member's meta: asking all members every few
	// milliseconds would starve the gossip being measured).
	var seen []bool
	check := func(ok func(g *gossipMember) bool) bool {
		for i, g := range ms {
			if !seen[i] {
				if !ok(g) {
					return false
				}
				seen[i] = true
			}
		}
		return true
	}
	wait := func(what string, limit time.Duration, ok func(g *gossipMember) bool) error {
		seen = make([]bool, len(ms))
		deadline := time.Now().Add(limit)
		for !check(ok) {
			if time.Now().After(deadline) {
				done := 0
				for _, s := range seen {
					if s {
						done++
					}
				}
				return fmt.Errorf("after %s only %d of %d members %s", limit, done, len(ms), what)
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			time.Sleep(10 * time.Millisecond)
		}
		return nil
	}
	// Settle: n joins in a burst overflow the broadcast queues, and
	// memberlist leaves what gossip missed to the push/pull syncs (every
	// 30 s and more). A member that does not know everyone after a few
	// seconds syncs with the first member at once (a Join is a push/pull).
	knowsAll := func(g *gossipMember) bool { return len(g.m.Members()) >= n }
	for range 20 {
		if err := wait(fmt.Sprintf("knew all %d", n), 3*time.Second, knowsAll); err == nil {
			break
		}
		for i, g := range ms[1:] {
			if !seen[i+1] && !knowsAll(g) {
				jctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				_, _ = g.m.Join(jctx, []string{ms[0].addr})
				cancel()
			}
		}
	}
	if err := wait(fmt.Sprintf("knew all %d", n), time.Minute, knowsAll); err != nil {
		return res, err
	}
	// Quiet window: let the joins' broadcasts drain first.
	time.Sleep(2 * time.Second)
	before := make([]int64, n)
	for i, g := range ms {
		before[i] = g.sent.Load()
	}
	t0 := time.Now()
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	el := time.Since(t0)
	var total int64
	for i, g := range ms {
		total += g.sent.Load() - before[i]
	}
	res.BytesPerNode = float64(total) / float64(n) / el.Seconds()
	res.ModelBytes = GossipModelBytes(n)
	// One more member joins through a member other than the seed.
	t1 := time.Now()
	g, err := startMember(n, key, ms[n-1].addr)
	if err != nil {
		return res, err
	}
	ms = append(ms, g)
	name := g.m.Local().Name
	if err := wait("saw the new member alive", time.Minute, func(g *gossipMember) bool {
		return slices.ContainsFunc(g.m.Alive(), func(m membership.Member) bool { return m.Name == name })
	}); err != nil {
		return res, err
	}
	res.Converge = time.Since(t1)
	return res, nil
}

// The model: memberlist's LAN defaults (membership's ProfileLAN uses
// memberlist.DefaultLANConfig unchanged) and the formulas of memberlist's
// util.go.
const (
	lanProbeInterval  = time.Second
	lanGossipInterval = 200 * time.Millisecond
	lanGossipNodes    = 3
	lanPushPull       = 30 * time.Second
	lanSuspicionMult  = 4
	lanSuspicionMax   = 6
	lanRetransmitMult = 4
	// Bytes on the wire, measured shapes (encrypted with AES-GCM: 1 version
	// byte, 12 nonce, 16 tag; label header): a ping or ack packet, and one
	// node's entry in a push/pull state exchange with our metadata.
	probeBytes    = 2 * 120 // ping + ack (this member sends both, on average)
	pushPullEntry = 170
)

// pushPullInterval is memberlist's pushPullScale: the 30 s interval grows
// by one step per doubling beyond 32 members.
func pushPullInterval(n int) time.Duration {
	if n <= 32 {
		return lanPushPull
	}
	m := math.Ceil(math.Log2(float64(n))-math.Log2(32)) + 1
	return time.Duration(m) * lanPushPull
}

// suspicion is memberlist's suspicionTimeout with its maximum.
func suspicion(n int) (lo, hi time.Duration) {
	scale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	lo = time.Duration(float64(lanSuspicionMult) * scale * float64(lanProbeInterval))
	return lo, lo * lanSuspicionMax
}

// GossipModelBytes is the steady-state bytes per node and second in a
// quiet cluster of n: one probe round per probe interval, and push/pull
// syncs (each node starts one per interval and is, on average, the other
// side of one: 2 syncs, each sending the full state of n entries both
// ways, counted once per side).
func GossipModelBytes(n int) float64 {
	probes, pp := gossipModelParts(n)
	return probes + pp
}

// gossipModelParts splits GossipModelBytes into probes and push/pull.
func gossipModelParts(n int) (probes, pushPull float64) {
	return float64(probeBytes) / lanProbeInterval.Seconds(), 2 * float64(n*pushPullEntry) / pushPullInterval(n).Seconds()
}

// GossipModelConverge is the epidemic estimate of a join's dissemination:
// every gossip interval each informed member tells GossipNodes others, so
// about log_{1+k}(n) rounds reach everyone, plus the same again for the
// stragglers' tail (ln n / k rounds).
func GossipModelConverge(n int) time.Duration {
	rounds := math.Log(float64(n))/math.Log(1+lanGossipNodes) + math.Log(float64(n))/lanGossipNodes
	return time.Duration(math.Ceil(rounds) * float64(lanGossipInterval))
}

// Project fits the measured convergence as a + b*ln(n) (least squares)
// and projects it and the model to size n.
func Project(ms []GossipResult, n int) GossipProjection {
	p := GossipProjection{Members: n, ConvergeModel: GossipModelConverge(n), BytesPerNode: GossipModelBytes(n),
		PushPullInterval: pushPullInterval(n)}
	p.SuspicionMin, p.SuspicionMax = suspicion(n)
	var sx, sy, sxx, sxy float64
	k := 0
	for _, m := range ms {
		if m.Converge <= 0 {
			continue
		}
		x, y := math.Log(float64(m.Members)), m.Converge.Seconds()
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
		k++
	}
	if k >= 2 && float64(k)*sxx-sx*sx != 0 {
		b := (float64(k)*sxy - sx*sy) / (float64(k)*sxx - sx*sx)
		a := (sy - b*sx) / float64(k)
		p.Converge = time.Duration((a + b*math.Log(float64(n))) * float64(time.Second))
	} else if k == 1 {
		p.Converge = time.Duration(sy * float64(time.Second))
	}
	return p
}
