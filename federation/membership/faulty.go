package membership

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// NewNetTransport returns memberlist's UDP+TCP transport bound to
// bindAddr:bindPort. With port 0 it picks a free port (the same for TCP and
// UDP), retrying on conflicts. Use it to wrap the real transport, e.g. with
// NewFaultyTransport; memberlist's own logs go to logger at debug level.
func NewNetTransport(bindAddr string, bindPort int, logger *slog.Logger) (*memberlist.NetTransport, error) {
	if logger == nil {
		logger = slog.Default()
	}
	cfg := &memberlist.NetTransportConfig{
		BindAddrs: []string{bindAddr},
		BindPort:  bindPort,
		Logger:    newStdLogger(logger),
	}
	tries := 1
	if bindPort == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var t *memberlist.NetTransport
		if t, err = memberlist.NewNetTransport(cfg); err == nil {
			return t, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, fmt.Errorf("membership: gossip transport on %s:%d: %w", bindAddr, bindPort, err)
}

// FaultyTransport wraps a memberlist transport to inject network faults in
// tests: traffic to and from blocked gossip addresses (host:port) is dropped.
//
// Packets (UDP) are dropped in both directions: outgoing by destination,
// incoming by source (memberlist sends from its gossip port). Outgoing
// stream connections (TCP) to a blocked address fail at once; connections
// open when the address gets blocked fail on their next read or write.
// Incoming stream connections cannot be attributed (they come from an
// ephemeral port), so they are let through: for a full partition, block on
// both sides, which Partition does.
type FaultyTransport struct {
	inner memberlist.NodeAwareTransport

	mu      sync.RWMutex
	blocked map[string]struct{}

	packets  chan *memberlist.Packet
	done     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	droppedPackets atomic.Uint64
	refusedDials   atomic.Uint64
}

var _ memberlist.NodeAwareTransport = (*FaultyTransport)(nil)

// NewFaultyTransport wraps inner; nothing is blocked until Block.
func NewFaultyTransport(inner memberlist.NodeAwareTransport) *FaultyTransport {
	t := &FaultyTransport{
		inner:   inner,
		blocked: make(map[string]struct{}),
		packets: make(chan *memberlist.Packet),
		done:    make(chan struct{}),
	}
	t.wg.Add(1)
	go t.pump()
	return t
}

func normAddr(a string) string {
	if ap, err := netip.ParseAddrPort(a); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	}
	return a
}

// Block drops all traffic to and from the given gossip addresses.
func (t *FaultyTransport) Block(addrs ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range addrs {
		t.blocked[normAddr(a)] = struct{}{}
	}
}

// Unblock lets traffic to and from the given addresses through again.
func (t *FaultyTransport) Unblock(addrs ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range addrs {
		delete(t.blocked, normAddr(a))
	}
}

// Heal unblocks every address.
func (t *FaultyTransport) Heal() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.blocked)
}

// IsBlocked reports whether traffic to and from addr is dropped.
func (t *FaultyTransport) IsBlocked(addr string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	_, ok := t.blocked[normAddr(addr)]
	return ok
}

// Dropped returns how many packets were dropped and dials refused so far.
func (t *FaultyTransport) Dropped() (packets, dials uint64) {
	return t.droppedPackets.Load(), t.refusedDials.Load()
}

// Partition splits nodes into groups that cannot reach each other: every
// transport in a group blocks the addresses of all other groups. Each group
// maps gossip addresses to that node's transport.
func Partition(groups ...map[string]*FaultyTransport) {
	for i, g := range groups {
		for j, other := range groups {
			if i == j {
				continue
			}
			for _, t := range g {
				for addr := range other {
					t.Block(addr)
				}
			}
		}
	}
}

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *FaultyTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

// WriteTo implements memberlist.Transport.
func (t *FaultyTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.IsBlocked(addr) {
		t.droppedPackets.Add(1)
		return time.Now(), nil
	}
	return t.inner.WriteTo(b, addr)
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *FaultyTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.IsBlocked(a.Addr) {
		t.droppedPackets.Add(1)
		return time.Now(), nil
	}
	return t.inner.WriteToAddress(b, a)
}

// PacketCh implements memberlist.Transport.
func (t *FaultyTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *FaultyTransport) pump() {
	defer t.wg.Done()
	in := t.inner.PacketCh()
	for {
		select {
		case <-t.done:
			return
		case p := <-in:
			if p.From != nil && t.IsBlocked(p.From.String()) {
				t.droppedPackets.Add(1)
				continue
			}
			select {
			case t.packets <- p:
			case <-t.done:
				return
			}
		}
	}
}

// DialTimeout implements memberlist.Transport.
func (t *FaultyTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.IsBlocked(addr) {
		t.refusedDials.Add(1)
		return nil, fmt.Errorf("faulty transport: %s is blocked", addr)
	}
	c, err := t.inner.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &faultyConn{Conn: c, t: t, addr: addr}, nil
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *FaultyTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.IsBlocked(a.Addr) {
		t.refusedDials.Add(1)
		return nil, fmt.Errorf("faulty transport: %s is blocked", a.Addr)
	}
	c, err := t.inner.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	return &faultyConn{Conn: c, t: t, addr: a.Addr}, nil
}

// StreamCh implements memberlist.Transport.
func (t *FaultyTransport) StreamCh() <-chan net.Conn { return t.inner.StreamCh() }

// Shutdown implements memberlist.Transport.
func (t *FaultyTransport) Shutdown() error {
	err := t.inner.Shutdown()
	t.stopOnce.Do(func() { close(t.done) })
	t.wg.Wait()
	return err
}

// faultyConn fails reads and writes once its peer is blocked.
type faultyConn struct {
	net.Conn
	t    *FaultyTransport
	addr string
}

func (c *faultyConn) Read(p []byte) (int, error) {
	if c.t.IsBlocked(c.addr) {
		_ = c.Conn.Close()
		return 0, fmt.Errorf("faulty transport: %s is blocked", c.addr)
	}
	return c.Conn.Read(p)
}

func (c *faultyConn) Write(p []byte) (int, error) {
	if c.t.IsBlocked(c.addr) {
		_ = c.Conn.Close()
		return 0, fmt.Errorf("faulty transport: %s is blocked", c.addr)
	}
	return c.Conn.Write(p)
}
