package peertls

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// echo answers roundTrip on every accepted connection.
func echo(accepted <-chan net.Conn) {
	go func() {
		for c := range accepted {
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

func TestStreamLayerAccepts(t *testing.T) {
	p := newPKI(t, "Test CA")
	server := p.bundle(t, "n1")
	sl, accepted := listenLayer(t, server)
	echo(accepted)
	c, err := dialLayer(t, p.bundle(t, "n2"), sl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(c); err != nil {
		t.Fatal(err)
	}
	cs := c.(*tls.Conn).ConnectionState()
	if id, err := PeerNodeID(cs); err != nil || id != "n1" {
		t.Errorf("PeerNodeID = %q, %v; want n1", id, err)
	}
	if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != RaftALPN {
		t.Errorf("version %x, protocol %q", cs.Version, cs.NegotiatedProtocol)
	}
	// "localhost" is in the certificate too.
	_, port, _ := net.SplitHostPort(sl.Addr().String())
	c, err = dialLayer(t, p.bundle(t, "n2"), net.JoinHostPort("localhost", port))
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(c); err != nil {
		t.Fatal(err)
	}
}

// TestStreamLayerRejects checks that a handshake fails, and the server
// never hands out the connection, for every kind of bad peer.
func TestStreamLayerRejects(t *testing.T) {
	p := newPKI(t, "Network CA")
	other := newPKI(t, "Other CA")
	known := func(id string) error {
		if id == "n1" || id == "n2" {
			return nil
		}
		return errors.New("unknown node")
	}

	for _, tc := range []struct {
		name       string
		server     *Bundle
		serverOpts []Option
		client     *Bundle
		clientOpts []Option
		wantErr    string
	}{
		{name: "client cert from another CA", server: p.bundle(t, "n1"), client: other.foreignBundle(t, "n2", p), wantErr: "unknown certificate authority"},
		{name: "server cert from another CA", server: other.foreignBundle(t, "n1", p), client: p.bundle(t, "n2"), wantErr: "signed by unknown authority"},
		{name: "expired client cert", server: p.bundle(t, "n1"), client: p.expiredBundle(t, "n2"), wantErr: "expired certificate"},
		{name: "expired server cert", server: p.expiredBundle(t, "n1"), client: p.bundle(t, "n2"), wantErr: "certificate has expired"},
		{name: "server does not authorize client", server: p.bundle(t, "n1"), serverOpts: []Option{WithAuthorize(known)}, client: p.bundle(t, "n3"), wantErr: "bad certificate"},
		{name: "client does not authorize server", server: p.bundle(t, "n3"), client: p.bundle(t, "n2"), clientOpts: []Option{WithAuthorize(known)}, wantErr: `node "n3" not authorized`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sl, accepted := listenLayer(t, tc.server, tc.serverOpts...)
			// In TLS 1.3 the client finishes its handshake before the
			// server has checked the client certificate: a rejection by
			// the server shows on the first read.
			c, err := dialLayer(t, tc.client, sl.Addr().String(), tc.clientOpts...)
			if err == nil {
				err = roundTrip(c)
			}
			if err == nil {
				t.Fatal("connection succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("client error %q, want %q", err, tc.wantErr)
			}
			noAccept(t, accepted)
		})
	}

	t.Run("authorized client", func(t *testing.T) {
		sl, accepted := listenLayer(t, p.bundle(t, "n1"), WithAuthorize(known))
		echo(accepted)
		c, err := dialLayer(t, p.bundle(t, "n2"), sl.Addr().String(), WithAuthorize(known))
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(c); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("client without certificate", func(t *testing.T) {
		sl, accepted := listenLayer(t, p.bundle(t, "n1"))
		c, err := tls.Dial("tcp", sl.Addr().String(), &tls.Config{
			RootCAs: p.bundle(t, "n2").CertPool(), NextProtos: []string{RaftALPN}, ServerName: "127.0.0.1",
		})
		if err == nil {
			defer c.Close()
			err = roundTrip(c)
		}
		if err == nil {
			t.Fatal("connection succeeded")
		}
		t.Logf("client error: %v", err)
		noAccept(t, accepted)
	})

	t.Run("client without ALPN", func(t *testing.T) {
		sl, accepted := listenLayer(t, p.bundle(t, "n1"))
		cfg := p.bundle(t, "n2").ClientConfig("127.0.0.1")
		c, err := tls.Dial("tcp", sl.Addr().String(), cfg)
		if err == nil {
			defer c.Close()
			err = roundTrip(c)
		}
		if err == nil {
			t.Fatal("connection succeeded")
		}
		noAccept(t, accepted)
	})

	t.Run("HTTP client on the raft port", func(t *testing.T) {
		sl, accepted := listenLayer(t, p.bundle(t, "n1"))
		resp, err := p.bundle(t, "n2").HTTPClient().Get("https://" + sl.Addr().String() + "/")
		if err == nil {
			resp.Body.Close()
			t.Fatal("HTTP request to the raft port succeeded")
		}
		noAccept(t, accepted)
	})

	t.Run("plain TCP client", func(t *testing.T) {
		sl, accepted := listenLayer(t, p.bundle(t, "n1"))
		c, err := net.Dial("tcp", sl.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		// The server answers with an alert (or nothing) and hangs up.
		if _, err := io.ReadAll(c); isTimeout(err) {
			t.Fatalf("server did not close the connection: %v", err)
		}
		noAccept(t, accepted)
	})
}

// A silent client is disconnected after the handshake timeout and does
// not keep other clients from being accepted.
func TestStreamLayerHandshakeTimeout(t *testing.T) {
	p := newPKI(t, "Test CA")
	sl, accepted := listenLayer(t, p.bundle(t, "n1"), WithHandshakeTimeout(200*time.Millisecond))
	echo(accepted)
	silent, err := net.Dial("tcp", sl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	c, err := dialLayer(t, p.bundle(t, "n2"), sl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(c); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("silent connection: read = %v, want it closed by the server", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("silent connection closed after %v", d)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestStreamLayerClose(t *testing.T) {
	p := newPKI(t, "Test CA")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl := NewStreamLayer(ln, nil, p.bundle(t, "n1"))
	errc := make(chan error, 1)
	go func() {
		_, err := sl.Accept()
		errc <- err
	}()
	if err := sl.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
	sl.Close() // idempotent
	if _, err := sl.Dial(raft.ServerAddress(ln.Addr().String()), time.Second); err == nil {
		t.Error("Dial after Close succeeded")
	}
}

// rpcServer answers the RPCs of a raft transport and records them.
type rpcServer struct {
	mu       sync.Mutex
	got      []any
	snapshot []byte
	count    atomic.Int64
}

func serveRPCs(t *testing.T, trans raft.Transport) *rpcServer {
	s := &rpcServer{}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-done:
				return
			case rpc := <-trans.Consumer():
				s.count.Add(1)
				s.mu.Lock()
				s.got = append(s.got, rpc.Command)
				s.mu.Unlock()
				switch cmd := rpc.Command.(type) {
				case *raft.AppendEntriesRequest:
					rpc.Respond(&raft.AppendEntriesResponse{Term: cmd.Term, LastLog: cmd.PrevLogEntry + uint64(len(cmd.Entries)), Success: true}, nil)
				case *raft.RequestVoteRequest:
					rpc.Respond(&raft.RequestVoteResponse{Term: cmd.Term, Granted: true}, nil)
				case *raft.RequestPreVoteRequest:
					rpc.Respond(&raft.RequestPreVoteResponse{Term: cmd.Term, Granted: true}, nil)
				case *raft.InstallSnapshotRequest:
					data, err := io.ReadAll(rpc.Reader)
					s.mu.Lock()
					s.snapshot = data
					s.mu.Unlock()
					rpc.Respond(&raft.InstallSnapshotResponse{Term: cmd.Term, Success: err == nil}, err)
				case *raft.TimeoutNowRequest:
					rpc.Respond(&raft.TimeoutNowResponse{RPCHeader: raft.RPCHeader{ID: cmd.ID}}, nil)
				default:
					rpc.Respond(nil, fmt.Errorf("unexpected %T", cmd))
				}
			}
		}
	}()
	return s
}

func newTestTransport(t *testing.T, b *Bundle, opts ...Option) *raft.NetworkTransport {
	t.Helper()
	trans, err := NewRaftTransport("127.0.0.1:0", "", b, 2, 5*time.Second, hclog.NewNullLogger(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trans.Close() })
	return trans
}

func TestRaftTransportRPCs(t *testing.T) {
	p := newPKI(t, "Test CA")
	a := newTestTransport(t, p.bundle(t, "n1"))
	b := newTestTransport(t, p.bundle(t, "n2"))
	srv := serveRPCs(t, b)
	target, id := b.LocalAddr(), raft.ServerID("n2")

	t.Run("AppendEntries", func(t *testing.T) {
		req := &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ID: []byte("n1"), Addr: []byte(a.LocalAddr())},
			Term:      7, PrevLogEntry: 10, PrevLogTerm: 6, LeaderCommitIndex: 9,
			Entries: []*raft.Log{{Index: 11, Term: 7, Type: raft.LogCommand, Data: []byte("hello")}},
		}
		var resp raft.AppendEntriesResponse
		if err := a.AppendEntries(id, target, req, &resp); err != nil {
			t.Fatal(err)
		}
		if !resp.Success || resp.Term != 7 || resp.LastLog != 11 {
			t.Errorf("response %+v", resp)
		}
		srv.mu.Lock()
		got := srv.got[len(srv.got)-1].(*raft.AppendEntriesRequest)
		srv.mu.Unlock()
		if got.Term != 7 || len(got.Entries) != 1 || string(got.Entries[0].Data) != "hello" || string(got.ID) != "n1" {
			t.Errorf("server got %+v", got)
		}
	})

	t.Run("AppendEntriesPipeline", func(t *testing.T) {
		pipe, err := a.AppendEntriesPipeline(id, target)
		if err != nil {
			t.Fatal(err)
		}
		defer pipe.Close()
		for i := range 3 {
			req := &raft.AppendEntriesRequest{Term: 8, PrevLogEntry: uint64(20 + i)}
			if _, err := pipe.AppendEntries(req, &raft.AppendEntriesResponse{}); err != nil {
				t.Fatal(err)
			}
			select {
			case f := <-pipe.Consumer():
				if err := f.Error(); err != nil || !f.Response().Success {
					t.Fatalf("pipeline response %+v, %v", f.Response(), err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no pipeline response")
			}
		}
	})

	t.Run("RequestVote", func(t *testing.T) {
		var resp raft.RequestVoteResponse
		if err := a.RequestVote(id, target, &raft.RequestVoteRequest{Term: 9, LastLogIndex: 11, LastLogTerm: 7}, &resp); err != nil {
			t.Fatal(err)
		}
		if !resp.Granted || resp.Term != 9 {
			t.Errorf("response %+v", resp)
		}
	})

	t.Run("RequestPreVote", func(t *testing.T) {
		var resp raft.RequestPreVoteResponse
		if err := a.RequestPreVote(id, target, &raft.RequestPreVoteRequest{Term: 10, LastLogIndex: 11, LastLogTerm: 7}, &resp); err != nil {
			t.Fatal(err)
		}
		if !resp.Granted || resp.Term != 10 {
			t.Errorf("response %+v", resp)
		}
	})

	t.Run("InstallSnapshot", func(t *testing.T) {
		data := bytes.Repeat([]byte("snapshot "), 100_000) // 900 kB
		req := &raft.InstallSnapshotRequest{Term: 11, LastLogIndex: 100, LastLogTerm: 10, Size: int64(len(data)), SnapshotVersion: raft.SnapshotVersionMax}
		var resp raft.InstallSnapshotResponse
		if err := a.InstallSnapshot(id, target, req, &resp, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if !resp.Success || resp.Term != 11 {
			t.Errorf("response %+v", resp)
		}
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if !bytes.Equal(srv.snapshot, data) {
			t.Errorf("server got %d snapshot bytes, want %d", len(srv.snapshot), len(data))
		}
	})

	t.Run("TimeoutNow", func(t *testing.T) {
		var resp raft.TimeoutNowResponse
		if err := a.TimeoutNow(id, target, &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ID: []byte("n1")}}, &resp); err != nil {
			t.Fatal(err)
		}
		if string(resp.ID) != "n1" {
			t.Errorf("response %+v", resp)
		}
	})
}

// A raft transport with a certificate from another CA cannot reach, or
// be reached by, the network's transports; the RPC never arrives.
func TestRaftTransportRejectsForeignCA(t *testing.T) {
	p := newPKI(t, "Network CA")
	other := newPKI(t, "Other CA")
	good := newTestTransport(t, p.bundle(t, "n1"))
	goodSrv := serveRPCs(t, good)
	evil := newTestTransport(t, other.foreignBundle(t, "n1", p))
	evilSrv := serveRPCs(t, evil)
	peer := newTestTransport(t, p.bundle(t, "n2"))

	var resp raft.AppendEntriesResponse
	if err := evil.AppendEntries("n1", good.LocalAddr(), &raft.AppendEntriesRequest{Term: 1}, &resp); err == nil {
		t.Error("foreign client: AppendEntries succeeded")
	}
	var vresp raft.RequestVoteResponse
	if err := peer.RequestVote("n1", evil.LocalAddr(), &raft.RequestVoteRequest{Term: 1}, &vresp); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("dial to foreign server: err = %v, want a certificate error", err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := goodSrv.count.Load() + evilSrv.count.Load(); n != 0 {
		t.Errorf("%d RPCs got through", n)
	}
	// The network's own peers still talk.
	if err := peer.RequestVote("n1", good.LocalAddr(), &raft.RequestVoteRequest{Term: 1}, &vresp); err != nil || !vresp.Granted {
		t.Errorf("RequestVote between peers: %+v, %v", vresp, err)
	}
}

func TestNewRaftTransportAddresses(t *testing.T) {
	p := newPKI(t, "Test CA")
	b := p.bundle(t, "n1")
	for _, tc := range []struct {
		name, bind, advertise string
		opts                  []Option
		wantErr               string // "" = ok
		wantAddr              string // "" = don't check
	}{
		{name: "public bind refused", bind: "0.0.0.0:0", wantErr: "non-loopback"},
		{name: "public bind allowed needs advertise", bind: "0.0.0.0:0", opts: []Option{WithAllowPublic(true)}, wantErr: "not advertisable"},
		{name: "public bind allowed with advertise", bind: "0.0.0.0:0", advertise: "127.0.0.1:7000", opts: []Option{WithAllowPublic(true)}, wantAddr: "127.0.0.1:7000"},
		{name: "advertise host name kept", bind: "127.0.0.1:0", advertise: "node1.example.org:7000", wantAddr: "node1.example.org:7000"},
		{name: "unspecified advertise", bind: "127.0.0.1:0", advertise: "0.0.0.0:7000", wantErr: "not advertisable"},
		{name: "advertise without port", bind: "127.0.0.1:0", advertise: "127.0.0.1", wantErr: "advertise"},
		{name: "advertise port 0", bind: "127.0.0.1:0", advertise: "127.0.0.1:0", wantErr: "port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trans, err := NewRaftTransport(tc.bind, tc.advertise, b, 2, time.Second, hclog.NewNullLogger(), tc.opts...)
			if tc.wantErr != "" {
				if err == nil {
					trans.Close()
					t.Fatalf("no error, want %q", tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer trans.Close()
			if tc.wantAddr != "" && string(trans.LocalAddr()) != tc.wantAddr {
				t.Errorf("LocalAddr = %q, want %q", trans.LocalAddr(), tc.wantAddr)
			}
		})
	}
	if _, err := NewRaftTransport("127.0.0.1:0", "", nil, 2, time.Second, nil); err == nil {
		t.Error("nil bundle accepted")
	}
}
