package peertls

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testPKI is one network's CA.
type testPKI struct {
	cert, key []byte
}

func newPKI(t *testing.T, cn string) *testPKI {
	t.Helper()
	// Valid from two days ago, so that expired node certificates can be
	// issued.
	c, k, err := newCA(cn, time.Now().Add(-48*time.Hour), 72*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{cert: c, key: k}
}

var testHosts = []string{"127.0.0.1", "localhost"}

// issue returns the PEM certificate and key of a node.
func (p *testPKI) issue(t *testing.T, id string) (cert, key []byte) {
	t.Helper()
	c, k, err := IssueNodeCert(p.cert, p.key, id, testHosts, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

// bundle returns a node's Bundle trusting this CA.
func (p *testPKI) bundle(t *testing.T, id string) *Bundle {
	t.Helper()
	c, k := p.issue(t, id)
	b, err := FromPEM(p.cert, c, k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// foreignBundle returns a node certificate from p that also trusts
// other's CA: it accepts other's nodes, but they do not accept it.
func (p *testPKI) foreignBundle(t *testing.T, id string, other *testPKI) *Bundle {
	t.Helper()
	c, k := p.issue(t, id)
	b, err := FromPEM(bytes.Join([][]byte{other.cert, p.cert}, nil), c, k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// expiredBundle returns a node's Bundle whose certificate expired a day ago.
func (p *testPKI) expiredBundle(t *testing.T, id string) *Bundle {
	t.Helper()
	then := time.Now().Add(-2 * time.Hour)
	c, k, err := issueNodeCert(p.cert, p.key, id, testHosts, then, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := FromPEM(p.cert, c, k); err == nil {
		t.Fatal("FromPEM accepted an expired certificate")
	}
	b, err := fromPEM(p.cert, c, k, then)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeFiles writes the node's files into a temporary directory.
func (p *testPKI) writeFiles(t *testing.T, id string) Files {
	t.Helper()
	dir := t.TempDir()
	c, k := p.issue(t, id)
	f := Files{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, id+".pem"),
		KeyFile:  filepath.Join(dir, id+"-key.pem"),
	}
	for path, data := range map[string][]byte{f.CAFile: p.cert, f.CertFile: c} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(f.KeyFile, k, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// listenLayer starts a StreamLayer on a loopback port and collects the
// connections it accepts.
func listenLayer(t *testing.T, b *Bundle, opts ...Option) (*StreamLayer, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl := NewStreamLayer(ln, nil, b, opts...)
	t.Cleanup(func() { sl.Close() })
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := sl.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	return sl, accepted
}

// dialLayer dials addr with a client StreamLayer for b.
func dialLayer(t *testing.T, b *Bundle, addr string, opts ...Option) (net.Conn, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl := NewStreamLayer(ln, nil, b, opts...)
	t.Cleanup(func() { sl.Close() })
	c, err := sl.Dial(raft.ServerAddress(addr), 5*time.Second)
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// noAccept fails the test if the layer accepted a connection.
func noAccept(t *testing.T, accepted <-chan net.Conn) {
	t.Helper()
	select {
	case c := <-accepted:
		c.Close()
		t.Error("server accepted a connection it should have rejected")
	case <-time.After(100 * time.Millisecond):
	}
}

// roundTrip writes a byte and expects the server side to echo it.
func roundTrip(c net.Conn) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{42}); err != nil {
		return err
	}
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err != nil {
		return err
	}
	return nil
}
