package node_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/node/nodetest"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
)

type withToken struct {
	tok   string
	inner http.RoundTripper
}

func (w withToken) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+w.tok)
	return w.inner.RoundTrip(r)
}

// TestNodeCertificatesAreNotAdmins: the two attacks of the issue, on a
// cluster over mutual TLS. A member's (and a voter's) certificate of the
// network CA no longer moves leadership away from the leader nor installs
// a gossip key on it; the network operator's admin does both, directly
// on the public listener or relayed by a node on the peer listener. A
// certificate of a node outside the cluster gets no read index; the peer
// listener serves no console, user management or inbox, whatever the
// calling node holds.
func TestNodeCertificatesAreNotAdmins(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Members: 1, TLS: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l := c.WaitLeader(10 * time.Second)
	member, voter := c.Nodes[3], c.Nodes[(l.Index+1)%3]
	gossipKey := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	for _, from := range []*nodetest.Member{member, voter} {
		hc := from.Node().Config().TLS.HTTPClient()
		cl := nodev1connect.NewClusterServiceClient(hc, l.Node().PeerURL())
		_, err := cl.TransferLeadership(ctx, connect.NewRequest(&nodev1.TransferLeadershipRequest{}))
		if code := connect.CodeOf(err); code != connect.CodeUnauthenticated && code != connect.CodePermissionDenied {
			t.Fatalf("%s's certificate transfers leadership: %v", from.ID, err)
		}
		_, err = cl.RotateGossipKey(ctx, connect.NewRequest(&nodev1.RotateGossipKeyRequest{Operation: nodev1.KeyOperation_KEY_OPERATION_INSTALL, Key: gossipKey}))
		if code := connect.CodeOf(err); code != connect.CodeUnauthenticated && code != connect.CodePermissionDenied {
			t.Fatalf("%s's certificate installs a gossip key: %v", from.ID, err)
		}
		// The node's own people are no cluster admins either: its harness
		// user (ADMIN of org-nX, not the operator) on the leader's public
		// listener.
		tok, err := from.Token()
		if err != nil {
			t.Fatal(err)
		}
		pub := nodev1connect.NewClusterServiceClient(&http.Client{Transport: withToken{tok, http.DefaultTransport}}, l.API())
		if _, err := pub.TransferLeadership(ctx, connect.NewRequest(&nodev1.TransferLeadershipRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("%s's admin (not the operator's) transfers leadership on %s: %v", from.ID, l.ID, err)
		}
		// On its own node, too, only the network operator's admin
		// administers the cluster.
		own := nodev1connect.NewClusterServiceClient(&http.Client{Transport: withToken{tok, http.DefaultTransport}}, from.API())
		if _, err := own.TransferLeadership(ctx, connect.NewRequest(&nodev1.TransferLeadershipRequest{})); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("%s's own admin transfers leadership: %v", from.ID, err)
		}
		if _, err := own.RotateGossipKey(ctx, connect.NewRequest(&nodev1.RotateGossipKeyRequest{Operation: nodev1.KeyOperation_KEY_OPERATION_INSTALL, Key: gossipKey})); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("%s's own admin installs a gossip key: %v", from.ID, err)
		}
		// Nor does the peer listener serve the people's API to a node.
		if _, err := nodev1connect.NewConsoleServiceClient(hc, l.Node().PeerURL()).Submit(ctx, connect.NewRequest(&nodev1.SubmitRequest{})); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("console on the peer listener: %v", err)
		}
		if _, err := nodev1connect.NewAuthServiceClient(hc, l.Node().PeerURL()).ListUsers(ctx, connect.NewRequest(&nodev1.ListUsersRequest{})); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("user management on the peer listener: %v", err)
		}
		withClerk := &http.Client{Transport: withToken{tok, hc.Transport}}
		if _, err := federationv1connect.NewHandoverServiceClient(withClerk, from.Node().PeerURL()).ListInbox(ctx, connect.NewRequest(&federationv1.ListInboxRequest{})); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("inbox on the peer listener with a clerk's token: %v", err)
		}
	}
	if now := c.WaitLeader(10 * time.Second); now.Index != l.Index {
		t.Fatalf("leadership moved from %s to %s", l.ID, now.ID)
	}
	if n := len(l.Node().Config().GossipKeys); n != 0 {
		t.Fatalf("gossip keys configured: %d", n)
	}

	// Read index: the member (a node of this cluster) gets one, a node
	// outside it does not.
	if _, err := nodev1connect.NewClusterServiceClient(member.Node().Config().TLS.HTTPClient(), l.Node().PeerURL()).ReadIndex(ctx, connect.NewRequest(&nodev1.ReadIndexRequest{})); err != nil {
		t.Fatalf("member's read index: %v", err)
	}
	intruder, err := c.IssueCert("intruder")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodev1connect.NewClusterServiceClient(intruder.HTTPClient(), l.Node().PeerURL()).ReadIndex(ctx, connect.NewRequest(&nodev1.ReadIndexRequest{})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("read index for a node outside the cluster: %v", err)
	}

	// The operator's admin may: on the leader's public listener ...
	res, err := nodev1connect.NewClusterServiceClient(c.OperatorHTTPClient(), l.API()).TransferLeadership(ctx, connect.NewRequest(&nodev1.TransferLeadershipRequest{}))
	if err != nil {
		t.Fatalf("the operator's admin transfers leadership: %v", err)
	}
	if res.Msg.GetLeaderId() == l.ID {
		t.Fatalf("leadership stayed on %s", l.ID)
	}
	// ... and on a follower, which relays the call with the admin's token
	// to the leader's peer listener, where it is judged again.
	l2 := c.WaitLeader(10 * time.Second)
	f := c.Nodes[(l2.Index+1)%3]
	var callErr error
	if err := c.WaitFor(10*time.Second, func() error { // until the follower knows the new leader
		res, callErr = nodev1connect.NewClusterServiceClient(c.OperatorHTTPClient(), f.API()).TransferLeadership(ctx, connect.NewRequest(&nodev1.TransferLeadershipRequest{}))
		if connect.CodeOf(callErr) == connect.CodeUnavailable {
			return callErr
		}
		return nil
	}); err != nil {
		callErr = err
	}
	if err := callErr; err != nil {
		t.Fatalf("the operator's admin on follower %s: %v", f.ID, err)
	}
	if res.Msg.GetLeaderId() == l2.ID {
		t.Fatalf("relayed transfer: leadership stayed on %s", l2.ID)
	}
	// A relay needs the token: a node certificate alone is refused by the
	// leader even when a node relays.
	l3 := c.WaitLeader(10 * time.Second)
	relay := voter.Node().Config().TLS.HTTPClient()
	if _, err := nodev1connect.NewClusterServiceClient(relay, l3.Node().PeerURL()).TransferLeadership(ctx, connect.NewRequest(&nodev1.TransferLeadershipRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("relay without a token: %v", err)
	}
}

// TestClerkActionsAttributed: a case worker's send and accept are recorded
// in the audit chains of both organisations under the person's name; the
// node's own work (taking a delivery in) names nobody; the chains verify.
func TestClerkActionsAttributed(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Voters: 3})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const a, b = 1, 2
	for _, i := range []int{a, b} {
		if _, err := c.Onboard(ctx, i, "Gemeinde "+c.Nodes[i].ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitCaughtUp(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	res, err := c.Handover(a).SendHandover(ctx, connect.NewRequest(&federationv1.SendHandoverRequest{
		RecipientOrganisationId: c.Nodes[b].Node().Config().OrgID,
		CaseJson:                `{"applicant":"Erika Mustermann","subject":"Ummeldung"}`,
		Reason:                  "Umzug", LeikaKey: "99115005000000", IdempotencyKey: "attributed-handover-0001",
	}))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.GetHandoverId()
	if err := c.WaitFor(20*time.Second, func() error {
		_, err := c.Handover(b).AcceptCase(ctx, connect.NewRequest(&federationv1.AcceptCaseRequest{HandoverId: id}))
		return err
	}); err != nil {
		t.Fatalf("accept: %v", err)
	}
	actor := func(i int) string { return fmt.Sprintf("Test Harness (%s@%s)", nodetest.HarnessUser, c.Nodes[i].ID) }
	find := func(i int, kind string) handover.AuditEntry {
		t.Helper()
		log, err := c.Nodes[i].Node().HandoverService().AuditLog(0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range log {
			if e.Kind == kind {
				return e
			}
		}
		t.Fatalf("%s: no %s entry in %v", c.Nodes[i].ID, kind, log)
		return handover.AuditEntry{}
	}
	if e := find(a, handover.AuditHandoverSent); e.Actor != actor(a) || e.ID != id {
		t.Fatalf("sent entry %+v, want actor %q", e, actor(a))
	}
	if e := find(b, handover.AuditEventSent); e.Actor != actor(b) {
		t.Fatalf("accept entry %+v, want actor %q", e, actor(b))
	}
	if e := find(b, handover.AuditHandoverReceived); e.Actor != "" {
		t.Fatalf("the node's own delivery names %q", e.Actor)
	}
	for _, i := range []int{a, b} {
		if _, err := c.Nodes[i].Node().HandoverService().VerifyAudit(ctx); err != nil && !strings.Contains(err.Error(), "published") {
			t.Fatalf("%s audit: %v", c.Nodes[i].ID, err)
		}
	}
}
