package node

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/federation/peertls"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
)

// syncBuffer is a log sink safe for the node's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// expiringNode starts a node over TLS with a network CA valid for 10 days
// and a node certificate valid for 2, on a clock the test moves.
func expiringNode(t *testing.T, adjust func(*Config)) (*Node, *atomic.Int64, *syncBuffer) {
	t.Helper()
	caPEM, caKey, err := peertls.NewCA("Verbund test network CA", 10*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := peertls.IssueNodeCert(caPEM, caKey, "test-operator", []string{"127.0.0.1"}, 2*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := peertls.FromPEM(caPEM, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, t.TempDir())
	cfg.TLS, cfg.PeerAddr = b, "127.0.0.1:0"
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	cfg.Clock = func() time.Time { return time.Unix(0, now.Load()) }
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if adjust != nil {
		adjust(&cfg)
	}
	return startNode(t, cfg), &now, logs
}

func nodeStatus(t *testing.T, n *Node) *nodev1.GetStatusResponse {
	t.Helper()
	res, err := nodev1connect.NewNodeServiceClient(h2cClient(), n.APIURL()).GetStatus(context.Background(), connect.NewRequest(&nodev1.GetStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg
}

func warningsByWhat(ws []*nodev1.ExpiryWarning) map[string][]*nodev1.ExpiryWarning {
	out := map[string][]*nodev1.ExpiryWarning{}
	for _, w := range ws {
		out[w.GetWhat()] = append(out[w.GetWhat()], w)
	}
	return out
}

// TestExpiryWarnings: GetStatus lists the node certificate and the network
// CA expiring within 30 days and the keys a rotation retired (not_after
// within 7 days), soonest first with the time left; the log warns about
// them; as the clock moves on, an expired certificate stays listed (with
// negative time left) and an expired retiring key drops out after a week.
func TestExpiryWarnings(t *testing.T) {
	n, now, logs := expiringNode(t, nil)
	ws := nodeStatus(t, n).GetExpiryWarnings()
	by := warningsByWhat(ws)
	if len(by[expiryNodeCert]) != 1 || len(by[expiryNetworkCA]) != 1 || len(by[expirySigningKey]) != 0 {
		t.Fatalf("warnings before rotation: %v", ws)
	}
	if w := by[expiryNodeCert][0]; w.GetId() != "test-operator" || w.GetRemainingSeconds() < 47*3600 || w.GetRemainingSeconds() > 48*3600 {
		t.Fatalf("node certificate warning %v: want test-operator, about 48 h left", w)
	}
	if w := by[expiryNetworkCA][0]; w.GetId() != "Verbund test network CA" || w.GetRemainingSeconds() < 9*86400 {
		t.Fatalf("CA warning %v", w)
	}
	if !strings.Contains(logs.String(), "expires soon") || !strings.Contains(logs.String(), "what=node_certificate") {
		t.Fatalf("no expiry warning logged at start:\n%s", logs.String())
	}

	// A rotation retires the old keys for an hour.
	old := n.keys.current()
	if _, err := n.RotateKeys(context.Background(), time.Hour, false); err != nil {
		t.Fatal(err)
	}
	ws = nodeStatus(t, n).GetExpiryWarnings()
	by = warningsByWhat(ws)
	if len(by[expirySigningKey]) != 1 || by[expirySigningKey][0].GetId() != old.sig.KeyID ||
		len(by[expiryEncryptionKey]) != 1 || by[expiryEncryptionKey][0].GetId() != old.enc.KeyID {
		t.Fatalf("warnings after rotation: %v; want the retired keys %s and %s", ws, old.sig.KeyID, old.enc.KeyID)
	}
	if ws[0].GetWhat() != expirySigningKey && ws[0].GetWhat() != expiryEncryptionKey || ws[0].GetRemainingSeconds() > 3600 {
		t.Fatalf("not soonest first: %v", ws)
	}

	// Three days on: the node certificate expired, the keys a while ago.
	now.Add(int64(3 * 24 * time.Hour))
	by = warningsByWhat(nodeStatus(t, n).GetExpiryWarnings())
	if len(by[expiryNodeCert]) != 1 || by[expiryNodeCert][0].GetRemainingSeconds() > -23*3600 {
		t.Fatalf("expired node certificate: %v", by[expiryNodeCert])
	}
	if len(by[expirySigningKey]) != 1 {
		t.Fatalf("a key expired 3 days ago should still be listed: %v", by)
	}
	n.logExpiryWarnings(n.cfg.Clock())
	if !strings.Contains(logs.String(), "msg=expired") {
		t.Fatalf("expired certificate not logged:\n%s", logs.String())
	}
	// Ten days on: the keys are gone from the list, the certificates stay.
	now.Add(int64(7 * 24 * time.Hour))
	by = warningsByWhat(nodeStatus(t, n).GetExpiryWarnings())
	if len(by[expirySigningKey])+len(by[expiryEncryptionKey]) != 0 || len(by[expiryNodeCert]) != 1 || len(by[expiryNetworkCA]) != 1 {
		t.Fatalf("ten days on: %v", by)
	}
}

// TestExpiryWindows: certificates further out than the configured window
// are not listed (but still exported as metrics).
func TestExpiryWindows(t *testing.T) {
	n, _, _ := expiringNode(t, func(c *Config) { c.ExpiryWarnCerts = 24 * time.Hour })
	if ws := nodeStatus(t, n).GetExpiryWarnings(); len(ws) != 0 {
		t.Fatalf("with a 1-day window: %v", ws)
	}
	if len(n.expiryItems()) != 2 {
		t.Fatalf("expiry items %v: want the certificate and the CA", n.expiryItems())
	}
}
