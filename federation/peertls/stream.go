package peertls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// RaftALPN is the TLS application protocol of Raft connections. Both ends
// insist on it, so a Raft peer cannot talk to a node's HTTP port or an
// HTTP client to its Raft port.
const RaftALPN = "verbund-raft/1"

// DefaultHandshakeTimeout bounds the TLS handshake of an accepted
// connection and, if Raft passes no timeout, of a dialled one.
const DefaultHandshakeTimeout = 10 * time.Second

// maxPendingHandshakes bounds the concurrent server-side handshakes of a
// StreamLayer; further connections wait in the listener's backlog.
const maxPendingHandshakes = 64

// Option configures NewStreamLayer and NewRaftTransport.
type Option func(*options)

type options struct {
	authorize        func(peerNodeID string) error
	handshakeTimeout time.Duration
	logger           hclog.Logger
	allowPublic      bool
}

// WithAuthorize sets a hook that decides, after the peer's certificate has
// been verified against the CA, whether the node it names may connect
// (Accept) or be connected to (Dial), e.g. "is this a known server?". A
// non-nil error fails the handshake.
func WithAuthorize(fn func(peerNodeID string) error) Option {
	return func(o *options) { o.authorize = fn }
}

// WithHandshakeTimeout sets the handshake timeout of accepted connections
// (default DefaultHandshakeTimeout).
func WithHandshakeTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.handshakeTimeout = d
		}
	}
}

// WithLogger sets the logger for rejected connections (default: none).
func WithLogger(l hclog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithAllowPublic lets NewRaftTransport bind a non-loopback address (see
// CheckBind). It has no effect on NewStreamLayer.
func WithAllowPublic(allow bool) Option {
	return func(o *options) { o.allowPublic = allow }
}

func buildOptions(opts []Option) options {
	o := options{handshakeTimeout: DefaultHandshakeTimeout, logger: hclog.NewNullLogger()}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// StreamLayer is a raft.StreamLayer that runs Raft over mutual TLS.
// Accept returns only connections whose TLS handshake has completed:
// the peer presented a certificate chaining to the CA that names a node
// (and passed the Authorize hook); rejected connections are logged and
// closed, never returned. Handshakes run concurrently, each bounded by
// the handshake timeout, so a slow or silent peer cannot stall Accept.
type StreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
	bundle    *Bundle
	opts      options

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	ready  chan net.Conn
	done   chan struct{}

	failed    chan struct{} // closed when the listener failed
	acceptErr error         // why; written before failed is closed

	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// NewStreamLayer returns a raft.StreamLayer that accepts TLS connections on
// ln (a plain TCP listener, which it takes over and closes on Close) and
// dials peers with TLS, both authenticated with b. advertise is the
// address other nodes dial (nil: ln's address); peers verify this node's
// certificate against the host part of the address they dial, so the
// certificate must cover it.
func NewStreamLayer(ln net.Listener, advertise net.Addr, b *Bundle, opts ...Option) *StreamLayer {
	o := buildOptions(opts)
	verify := func(cs tls.ConnectionState) error {
		if cs.NegotiatedProtocol != RaftALPN {
			return fmt.Errorf("peertls: peer did not negotiate %s", RaftALPN)
		}
		return requireNodeID(o.authorize)(cs)
	}
	server := b.ServerConfig()
	server.NextProtos = []string{RaftALPN}
	server.VerifyConnection = verify
	client := b.ClientConfig("")
	client.NextProtos = []string{RaftALPN}
	client.VerifyConnection = verify

	ctx, cancel := context.WithCancel(context.Background())
	s := &StreamLayer{
		ln: ln, advertise: advertise, server: server, client: client, bundle: b, opts: o,
		ctx: ctx, cancel: cancel,
		ready: make(chan net.Conn), done: make(chan struct{}), failed: make(chan struct{}),
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

func (s *StreamLayer) acceptLoop() {
	defer s.wg.Done()
	sem := make(chan struct{}, maxPendingHandshakes)
	var delay time.Duration
	for {
		raw, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				s.acceptErr = err
				close(s.failed)
				return
			}
			// Possibly temporary (e.g. out of file descriptors): back off.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.opts.logger.Error("accept failed", "error", err, "retry-in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-s.done:
				return
			}
		}
		delay = 0
		select {
		case sem <- struct{}{}:
		case <-s.done:
			raw.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-sem }()
			s.handshake(raw)
		}()
	}
}

func (s *StreamLayer) handshake(raw net.Conn) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.handshakeTimeout)
	defer cancel()
	conn := tls.Server(raw, s.server)
	if err := conn.HandshakeContext(ctx); err != nil {
		conn.Close()
		select {
		case <-s.done:
		default:
			s.opts.logger.Warn("rejected raft connection", "remote-address", raw.RemoteAddr().String(), "error", err)
		}
		return
	}
	select {
	case s.ready <- conn:
	case <-s.done:
		conn.Close()
	}
}

// Accept returns the next connection whose TLS handshake succeeded.
func (s *StreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.ready:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	case <-s.failed:
		return nil, s.acceptErr
	}
}

// Dial connects to a peer's Raft address over TLS within timeout (0:
// the handshake timeout), verifying its certificate against the CA for the
// address's host and checking the Authorize hook.
func (s *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(address))
	if err != nil {
		return nil, fmt.Errorf("peertls: dial %s: %w", address, err)
	}
	if timeout <= 0 {
		timeout = s.opts.handshakeTimeout
	}
	cfg := s.client.Clone()
	cfg.RootCAs = s.bundle.current().roots // the CA file may have changed
	cfg.ServerName = host
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("peertls: dial %s: %w", address, err)
	}
	return c, nil
}

// Close stops accepting, closes the listener and aborts pending
// handshakes. Established connections are not affected.
func (s *StreamLayer) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.cancel()
		s.closeErr = s.ln.Close()
		s.wg.Wait()
	})
	return s.closeErr
}

// Addr returns the advertised address, or the listener's.
func (s *StreamLayer) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.ln.Addr()
}

// NewRaftTransport listens on bind and returns a raft.NetworkTransport
// over a TLS StreamLayer (see NewStreamLayer; opts are passed on).
// Unless WithAllowPublic(true) is given, bind must be a loopback address
// (CheckBind). advertise is the address other nodes dial, host:port with
// an IP address or a DNS name covered by the node certificate; empty
// means bind's address, which then must not be 0.0.0.0 or [::]. logger
// may be nil (raft's default logger).
func NewRaftTransport(bind string, advertise string, b *Bundle, maxPool int, timeout time.Duration, logger hclog.Logger, opts ...Option) (*raft.NetworkTransport, error) {
	if b == nil {
		return nil, errors.New("peertls: raft transport without TLS bundle")
	}
	o := buildOptions(opts)
	if err := CheckBind(bind, o.allowPublic); err != nil {
		return nil, fmt.Errorf("peertls: raft transport: %w", err)
	}
	var adv net.Addr
	if advertise != "" {
		a, err := parseAdvertise(advertise)
		if err != nil {
			return nil, err
		}
		adv = a
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("peertls: raft transport: %w", err)
	}
	if adv == nil {
		a, ok := ln.Addr().(*net.TCPAddr)
		if !ok || a.IP == nil || a.IP.IsUnspecified() {
			ln.Close()
			return nil, fmt.Errorf("peertls: raft transport: bind address %s is not advertisable; set an advertise address", ln.Addr())
		}
	}
	if logger != nil {
		opts = append([]Option{WithLogger(logger.Named("tls"))}, opts...)
	}
	stream := NewStreamLayer(ln, adv, b, opts...)
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: maxPool, Timeout: timeout, Logger: logger,
	}), nil
}

// hostAddr is an advertise address with a DNS name, kept as given so that
// peers verify the certificate against the name.
type hostAddr string

func (a hostAddr) Network() string { return "tcp" }
func (a hostAddr) String() string  { return string(a) }

func parseAdvertise(s string) (net.Addr, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return nil, fmt.Errorf("peertls: advertise address %q: %w", s, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return nil, fmt.Errorf("peertls: advertise address %q: port must be a number from 1 to 65535", s)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsUnspecified() {
			return nil, fmt.Errorf("peertls: advertise address %q is not advertisable", s)
		}
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(p))), nil
	}
	if err := checkDNSName(host); err != nil {
		return nil, fmt.Errorf("peertls: advertise address %q: %w", s, err)
	}
	return hostAddr(s), nil
}
