package node

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/federation/membership"
	"github.com/verbund/verbund/node/connecterr"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

// TestPeerFailureWording checks what a client is told when a forwarded
// write gets no answer: a refused connection is "not applied"
// (ErrUnavailable), a connection reset after the request was sent is
// ErrIndeterminate with the retry hint, and neither names the peer's
// address.
func TestPeerFailureWording(t *testing.T) {
	// A port nothing listens on: dial refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()
	// A server that reads the request and drops the connection.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.(*net.TCPConn).SetLinger(0) // RST
			c.Close()
		}
	}))
	defer srv.Close()

	call := func(base string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := registryv1connect.NewPublishServiceClient(http.DefaultClient, base).Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: []string{"x"}}))
		if err == nil || connect.IsWireError(err) {
			t.Fatalf("want a transport error, got %v", err)
		}
		return err
	}

	notSent := peerFailure("n3", call(refused))
	if !errors.Is(notSent, registry.ErrUnavailable) || errors.Is(notSent, errSent) {
		t.Errorf("refused connection: %v, want ErrUnavailable without errSent", notSent)
	}
	sent := peerFailure("n3", call(srv.URL))
	if !errors.Is(sent, errSent) {
		t.Errorf("dropped connection: %v, want errSent", sent)
	}
	for _, e := range []error{notSent, sent} {
		for _, addr := range []string{"127.0.0.1", strings.TrimPrefix(refused, "http://"), srv.URL} {
			if strings.Contains(e.Error(), addr) {
				t.Errorf("%q names the internal address %s", e, addr)
			}
		}
		if !strings.Contains(e.Error(), "leader (node n3)") {
			t.Errorf("%q does not say which node failed", e)
		}
	}
	// At the client's edge: indeterminate says that retrying is safe.
	ind := connecterr.ToConnect(errors.Join(registry.ErrIndeterminate, sent))
	if connect.CodeOf(ind) != connect.CodeUnknown || !strings.Contains(ind.Error(), connecterr.IndeterminateHint) {
		t.Errorf("indeterminate at the edge: %v", ind)
	}
}

// TestPeerBookKeptAcrossRestarts checks that the addresses learnt from
// gossip are written to the data dir and read back at the next start.
func TestPeerBookKeptAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	b := loadPeerBook(dir, log)
	b.learn([]membership.Member{
		{Meta: membership.Meta{NodeID: "n1", Role: membership.RoleVoter, APIAddr: "https://127.0.0.1:17201"}, GossipAddr: "127.0.0.1:17101", State: membership.StateAlive},
		{Meta: membership.Meta{NodeID: "n2", Role: membership.RoleVoter, APIAddr: "https://127.0.0.1:17202"}, GossipAddr: "127.0.0.1:17102", State: membership.StateAlive},
		{Meta: membership.Meta{NodeID: "n4", Role: membership.RoleMember, APIAddr: "https://127.0.0.1:17204"}, GossipAddr: "127.0.0.1:17104", State: membership.StateAlive},
		{Meta: membership.Meta{NodeID: "n9", Role: membership.RoleVoter, APIAddr: "https://127.0.0.1:17209"}, GossipAddr: "127.0.0.1:17109", State: membership.StateDead},
	})
	again := loadPeerBook(dir, log)
	if got := again.api("n1"); got != "https://127.0.0.1:17201" {
		t.Errorf("n1's API after a restart: %q", got)
	}
	if got := again.api("n9"); got != "" {
		t.Errorf("a member never seen alive was recorded: %q", got)
	}
	seeds := again.gossipSeeds("n2")
	if len(seeds) != 1 || seeds[0] != "127.0.0.1:17101" {
		t.Errorf("gossip seeds for n2: %v, want n1's only (servers other than itself)", seeds)
	}
}
