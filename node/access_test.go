package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/verbund/verbund/federation/peertls"
	"github.com/verbund/verbund/keys"
	"github.com/verbund/verbund/node/auth"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// policyNode starts the network operator's node with mutual TLS for peers
// (the production shape: nodes call each other on the peer listener) and
// returns it with the CA's certificate bundles for node ids.
func policyNode(t *testing.T) (*Node, func(nodeID string) *tls.ConnectionState) {
	t.Helper()
	caCert, caKey, err := peertls.NewCA("policy test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bundle := func(id string) *peertls.Bundle {
		certPEM, keyPEM, err := peertls.IssueNodeCert(caCert, caKey, id, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		b, err := peertls.FromPEM(caCert, certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cfg := testConfig(t, t.TempDir())
	cfg.NodeID = "op-node"
	cfg.TLS = bundle(cfg.NodeID)
	cfg.PeerAddr = "127.0.0.1:0"
	n := startNode(t, cfg)
	peer := func(id string) *tls.ConnectionState {
		leaf := bundle(id).Leaf()
		return &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}, PeerCertificates: []*x509.Certificate{leaf}}
	}
	return n, peer
}

// addUser creates a user of n with roles and returns a token for it.
func addUser(t *testing.T, n *Node, name string, roles ...nodev1.Role) string {
	t.Helper()
	if _, _, err := n.Users().Create(&nodev1.User{Username: name, DisplayName: "Test " + name, Roles: roles}, ""); err != nil {
		t.Fatal(err)
	}
	tok, _, err := n.IssueToken(name)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestAccessPolicy sends requests as they arrive on each listener, with
// and without credentials of every kind, through the policy in front of
// the node's real routes: refused requests get Unauthenticated (HTTP 401:
// no or no valid credential) or PermissionDenied (HTTP 403: a valid
// credential the rule does not let through) before any handler runs;
// allowed ones reach their handler (whatever it answers).
func TestAccessPolicy(t *testing.T) {
	n, peer := policyNode(t)
	api, adminMux := n.routes(), n.adminRoutes()
	const (
		local  = "127.0.0.1:40000"
		remote = "192.0.2.7:40000" // documentation range: never dialled
	)
	clerkTok := addUser(t, n, "clerk", nodev1.Role_ROLE_CLERK)
	adminTok := addUser(t, n, "boss", nodev1.Role_ROLE_ADMIN)
	pubTok := addUser(t, n, "pub", nodev1.Role_ROLE_PUBLISHER)
	goneTok := addUser(t, n, "gone", nodev1.Role_ROLE_CLERK, nodev1.Role_ROLE_ADMIN)
	if _, err := n.Users().Update(&nodev1.UpdateUserRequest{Username: "gone", Disabled: true, SetDisabled: true}); err != nil {
		t.Fatal(err)
	}
	clerk, _ := n.Users().Get("clerk")
	// Client certificates for programs (public listener with
	// Config.PublicTLS): one registered to the clerk, one to the disabled
	// user, one to nobody.
	certOf := func(id string) (*tls.ConnectionState, string) {
		cs := peer(id)
		cs.VerifiedChains = nil // the public listener does not verify them against the network CA
		sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
		return cs, hex.EncodeToString(sum[:])
	}
	clerkCert, clerkFP := certOf("clerk-program")
	goneCert, goneFP := certOf("gone-program")
	strangerCert, _ := certOf("stranger")
	if _, err := n.Users().Update(&nodev1.UpdateUserRequest{Username: "clerk", AddCertificateSha256: []string{clerkFP}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Users().Update(&nodev1.UpdateUserRequest{Username: "gone", AddCertificateSha256: []string{goneFP}}); err != nil {
		t.Fatal(err)
	}
	now := n.cfg.Clock()
	sign := func(key *jose.JSONWebKey, org, node string, u *nodev1.User, at time.Time, ttl time.Duration) string {
		t.Helper()
		k := n.SigningKey()
		if key != nil {
			k = *key
		}
		tok, _, err := auth.IssueToken(k, org, node, u, at, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	expiredTok := sign(nil, n.cfg.OrgID, n.cfg.NodeID, clerk, now.Add(-time.Hour), 15*time.Minute)
	futureTok := sign(nil, n.cfg.OrgID, n.cfg.NodeID, clerk, now.Add(time.Hour), 15*time.Minute)
	forger, err := keys.GenerateSigning(n.SigningKey().KeyID) // same kid, another key
	if err != nil {
		t.Fatal(err)
	}
	forgedTok := sign(&forger, n.cfg.OrgID, n.cfg.NodeID, clerk, now, 15*time.Minute)
	otherNodeTok := sign(nil, n.cfg.OrgID, "other-node", clerk, now, 15*time.Minute)
	otherOrgTok := sign(&forger, "org-elsewhere", "n9", clerk, now, 15*time.Minute)
	opAdmin := &nodev1.User{Username: "opadmin", Roles: []nodev1.Role{nodev1.Role_ROLE_ADMIN}}
	operatorAdminTok := sign(nil, n.cfg.OrgID, "operator-other-node", opAdmin, now, 15*time.Minute)

	const (
		ok     = "ok"
		unauth = "unauthenticated"
		denied = "permission_denied"
	)
	inbox := federationv1connect.HandoverServiceListInboxProcedure
	accept := federationv1connect.HandoverServiceAcceptCaseProcedure
	rotate := nodev1connect.NodeServiceRotateKeysProcedure
	transfer := nodev1connect.ClusterServiceTransferLeadershipProcedure
	gossipKey := nodev1connect.ClusterServiceRotateGossipKeyProcedure
	readIndex := nodev1connect.ClusterServiceReadIndexProcedure
	submit := nodev1connect.ConsoleServiceSubmitProcedure
	createUser := nodev1connect.AuthServiceCreateUserProcedure
	for _, tc := range []struct {
		name   string
		l      listener
		path   string
		from   string
		token  string
		tls    *tls.ConnectionState
		header map[string]string
		want   string
	}{
		// Open to everyone.
		{"publish from anywhere", publicListener, registryv1connect.PublishServicePublishProcedure, remote, "", nil, nil, ok},
		{"query from anywhere", publicListener, registryv1connect.QueryServiceGetOrganisationProcedure, remote, "", nil, nil, ok},
		{"query with a bad token is served anonymously", publicListener, registryv1connect.QueryServiceGetOrganisationProcedure, remote, forgedTok, nil, nil, ok},
		{"status from anywhere", publicListener, nodev1connect.NodeServiceGetStatusProcedure, remote, "", nil, nil, ok},
		{"health from anywhere", publicListener, "/grpc.health.v1.Health/Check", remote, "", nil, nil, ok},
		{"deliver handover from elsewhere", publicListener, federationv1connect.HandoverServiceDeliverHandoverProcedure, remote, "", nil, nil, ok},

		// Case workers: CLERK, nothing else.
		{"inbox without a credential", publicListener, inbox, remote, "", nil, nil, unauth},
		{"inbox from this machine without a credential", publicListener, inbox, local, "", nil, nil, unauth},
		{"inbox from loopback with X-Forwarded-For", publicListener, inbox, local, "", nil,
			map[string]string{"X-Forwarded-For": "127.0.0.1", "Forwarded": "for=127.0.0.1", "X-Real-Ip": "127.0.0.1"}, unauth},
		{"inbox as clerk", publicListener, inbox, remote, clerkTok, nil, nil, ok},
		{"accept as clerk", publicListener, accept, remote, clerkTok, nil, nil, ok},
		{"accept as admin", publicListener, accept, remote, adminTok, nil, nil, denied},
		{"accept as publisher", publicListener, accept, remote, pubTok, nil, nil, denied},
		{"inbox with an expired token", publicListener, inbox, remote, expiredTok, nil, nil, unauth},
		{"inbox with a token from the future", publicListener, inbox, remote, futureTok, nil, nil, unauth},
		{"inbox with a forged token", publicListener, inbox, remote, forgedTok, nil, nil, unauth},
		{"inbox with another node's token", publicListener, inbox, remote, otherNodeTok, nil, nil, unauth},
		{"inbox with another organisation's token", publicListener, inbox, remote, otherOrgTok, nil, nil, unauth},
		{"inbox as a disabled user", publicListener, inbox, remote, goneTok, nil, nil, unauth},
		{"inbox with a garbage token", publicListener, inbox, remote, "not.a.token", nil, nil, unauth},
		{"inbox with the clerk's client certificate", publicListener, inbox, remote, "", clerkCert, nil, ok},
		{"rotate keys with the clerk's client certificate", publicListener, rotate, remote, "", clerkCert, nil, denied},
		{"inbox with a disabled user's client certificate", publicListener, inbox, remote, "", goneCert, nil, unauth},
		{"inbox with an unregistered client certificate", publicListener, inbox, remote, "", strangerCert, nil, unauth},
		{"inbox from a peer node", peerListener, inbox, remote, "", peer("n2"), nil, denied},
		{"inbox from a peer node with a clerk's token", peerListener, inbox, remote, clerkTok, peer("n2"), nil, denied},
		{"send handover from a peer", peerListener, federationv1connect.HandoverServiceSendHandoverProcedure, local, "", peer("n2"), nil, denied},

		// Keys and users: ADMIN.
		{"rotate keys without a credential", publicListener, rotate, local, "", nil, nil, unauth},
		{"rotate keys as clerk", publicListener, rotate, remote, clerkTok, nil, nil, denied},
		{"rotate keys as a disabled admin", publicListener, rotate, remote, goneTok, nil, nil, unauth},
		{"revoke key as admin", publicListener, nodev1connect.NodeServiceRevokeKeyProcedure, remote, adminTok, nil, nil, ok},
		{"revoke key from a peer", peerListener, nodev1connect.NodeServiceRevokeKeyProcedure, remote, "", peer("n2"), nil, denied},
		{"create user as admin", publicListener, createUser, remote, adminTok, nil, nil, ok},
		{"create user as clerk", publicListener, createUser, remote, clerkTok, nil, nil, denied},
		{"create user without a credential", publicListener, createUser, local, "", nil, nil, unauth},
		{"create user from a peer", peerListener, createUser, remote, "", peer("n2"), nil, denied},
		{"create user with the operator's admin token of another node", publicListener, createUser, remote, operatorAdminTok, nil, nil, unauth},
		{"sign in from a peer", peerListener, nodev1connect.AuthServiceSignInProcedure, remote, "", peer("n2"), nil, denied},
		{"who am I without a credential", publicListener, nodev1connect.AuthServiceWhoAmIProcedure, remote, "", nil, nil, unauth},
		{"who am I as clerk", publicListener, nodev1connect.AuthServiceWhoAmIProcedure, remote, clerkTok, nil, nil, ok},

		// Console: PUBLISHER or APPROVER (the handler checks which).
		{"console as publisher", publicListener, submit, remote, pubTok, nil, nil, ok},
		{"console as clerk", publicListener, submit, remote, clerkTok, nil, nil, denied},
		{"console without a credential", publicListener, submit, local, "", nil, nil, unauth},
		{"console from a peer", peerListener, submit, remote, "", peer("n2"), nil, denied},

		// Cluster administration: the network operator's ADMIN.
		{"transfer leadership without a credential", publicListener, transfer, local, "", nil, nil, unauth},
		{"transfer leadership as this operator node's admin", publicListener, transfer, remote, adminTok, nil, nil, ok},
		{"transfer leadership as the operator's admin of another node", publicListener, transfer, remote, operatorAdminTok, nil, nil, ok},
		{"transfer leadership as clerk", publicListener, transfer, remote, clerkTok, nil, nil, denied},
		{"transfer leadership with a member node's certificate", peerListener, transfer, remote, "", peer("member-n3"), nil, unauth},
		{"transfer leadership relayed by a peer with the operator's admin token", peerListener, transfer, remote, operatorAdminTok, peer("n2"), nil, ok},
		{"gossip key with a member node's certificate", peerListener, gossipKey, remote, "", peer("member-n3"), nil, unauth},
		{"gossip key from this machine without a credential", publicListener, gossipKey, local, "", nil, nil, unauth},
		{"gossip key as the operator's admin", publicListener, gossipKey, remote, adminTok, nil, nil, ok},

		// Node to node.
		{"read index from a server of the Raft configuration", peerListener, readIndex, remote, "", peer("op-node"), nil, ok},
		{"read index from a node outside the cluster", peerListener, readIndex, remote, "", peer("intruder"), nil, denied},
		{"read index on the public listener of a TLS node", publicListener, readIndex, local, "", nil, nil, denied},
		{"forwarded publish from a peer", peerListener, registryv1connect.PublishServicePublishProcedure, remote, "", peer("n2"), nil, ok},
		{"peer listener without a verified certificate", peerListener, registryv1connect.PublishServicePublishProcedure, remote, "", nil, nil, unauth},
		{"deliver handover from a peer", peerListener, federationv1connect.HandoverServiceDeliverHandoverProcedure, remote, "", peer("n2"), nil, ok},
		{"case timeline from a peer", peerListener, federationv1connect.HandoverServiceGetCaseTimelineProcedure, remote, "", peer("n2"), nil, ok},

		// Operations.
		{"pprof on the public listener", publicListener, "/debug/pprof/", local, "", nil, nil, denied},
		{"pprof on the admin listener", adminListener, "/debug/pprof/", local, "", nil, nil, ok},
		{"the API on the admin listener", adminListener, registryv1connect.PublishServicePublishProcedure, local, "", nil, nil, denied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := api
			if tc.l == adminListener {
				h = adminMux
			}
			method, body := http.MethodPost, "{}"
			if strings.HasPrefix(tc.path, "/debug/") {
				method, body = http.MethodGet, ""
			}
			req := httptest.NewRequest(method, tc.path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			req.RemoteAddr, req.TLS = tc.from, tc.tls
			rec := httptest.NewRecorder()
			n.guard(tc.l, h).ServeHTTP(rec, req)
			got := ok
			switch {
			case rec.Code == http.StatusUnauthorized && strings.Contains(rec.Body.String(), `"unauthenticated"`):
				got = unauth
			case rec.Code == http.StatusForbidden && strings.Contains(rec.Body.String(), `"permission_denied"`):
				got = denied
			}
			if got != tc.want {
				t.Fatalf("%s on %s from %s: HTTP %d %s; want %s", tc.path, tc.l, tc.from, rec.Code, rec.Body, tc.want)
			}
			if got == denied && !strings.Contains(rec.Body.String(), "rule") {
				t.Fatalf("refusal does not name the rule: %s", rec.Body)
			}
		})
	}
	// A path no row names is not served at all.
	rec := httptest.NewRecorder()
	n.guard(publicListener, api).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/no/such/page", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("unknown path: HTTP %d, want 404", rec.Code)
	}
}

// TestPeopleSignIn: a user signs in with a password over the API, the
// token works until the user is disabled (at once, without a new token),
// a wrong password and an unknown user get the same answer, and roles are
// read from the store, not the token.
func TestPeopleSignIn(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	if _, _, err := n.Users().Create(&nodev1.User{Username: "erika", DisplayName: "Erika Mustermann", Roles: []nodev1.Role{nodev1.Role_ROLE_CLERK}}, "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	authc := nodev1connect.NewAuthServiceClient(h2cClient(), n.APIURL())
	_, errWrong := authc.SignIn(ctx, connect.NewRequest(&nodev1.SignInRequest{Username: "erika", Password: "wrong horse battery"}))
	_, errUnknown := authc.SignIn(ctx, connect.NewRequest(&nodev1.SignInRequest{Username: "nobody", Password: "correct horse battery"}))
	if connect.CodeOf(errWrong) != connect.CodeUnauthenticated || connect.CodeOf(errUnknown) != connect.CodeUnauthenticated ||
		errWrong.Error() != errUnknown.Error() {
		t.Fatalf("wrong password: %v; unknown user: %v; want the same Unauthenticated answer", errWrong, errUnknown)
	}
	res, err := authc.SignIn(ctx, connect.NewRequest(&nodev1.SignInRequest{Username: "erika", Password: "correct horse battery"}))
	if err != nil {
		t.Fatal(err)
	}
	if exp := time.UnixMilli(res.Msg.GetExpiresAtUnixMs()); exp.Sub(time.Now()) > auth.DefaultTokenTTL+time.Minute {
		t.Fatalf("token valid until %s: longer than the default lifetime", exp)
	}
	hc := &http.Client{Transport: bearerRT{tok: res.Msg.GetToken(), inner: h2cClient().Transport}}
	who, err := nodev1connect.NewAuthServiceClient(hc, n.APIURL()).WhoAmI(ctx, connect.NewRequest(&nodev1.WhoAmIRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if who.Msg.GetUser().GetUsername() != "erika" || who.Msg.GetMethod() != "token" || who.Msg.GetOrganisationId() != n.cfg.OrgID {
		t.Fatalf("who am I: %v", who.Msg)
	}
	ho := federationv1connect.NewHandoverServiceClient(hc, n.APIURL())
	if _, err := ho.ListInbox(ctx, connect.NewRequest(&federationv1.ListInboxRequest{})); err != nil {
		t.Fatalf("clerk's inbox: %v", err)
	}
	// Roles come from the store: taking CLERK away refuses the same token.
	if _, err := n.Users().Update(&nodev1.UpdateUserRequest{Username: "erika", SetRoles: true, Roles: []nodev1.Role{nodev1.Role_ROLE_PUBLISHER}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ho.ListInbox(ctx, connect.NewRequest(&federationv1.ListInboxRequest{})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("inbox after CLERK was taken away: %v, want PermissionDenied", err)
	}
	if _, err := n.Users().Update(&nodev1.UpdateUserRequest{Username: "erika", SetDisabled: true, Disabled: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := nodev1connect.NewAuthServiceClient(hc, n.APIURL()).WhoAmI(ctx, connect.NewRequest(&nodev1.WhoAmIRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("a disabled user's token: %v, want Unauthenticated", err)
	}
	if _, err := authc.SignIn(ctx, connect.NewRequest(&nodev1.SignInRequest{Username: "erika", Password: "correct horse battery"})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("a disabled user signs in: %v", err)
	}
}

type bearerRT struct {
	tok   string
	inner http.RoundTripper
}

func (b bearerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return b.inner.RoundTrip(r)
}

// TestAdminListener: pprof is served on the admin listener (off unless
// configured, loopback unless AllowPublic) and not on the public API.
func TestAdminListener(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	bad := cfg
	bad.AdminAddr = "0.0.0.0:0"
	if err := bad.withDefaults().Validate(); err == nil {
		t.Fatal("a non-loopback admin address without AllowPublic was accepted")
	}
	if n := startNode(t, testConfig(t, t.TempDir())); n.AdminURL() != "" {
		t.Fatalf("admin listener on by default: %s", n.AdminURL())
	}
	cfg.AdminAddr = "127.0.0.1:0"
	n := startNode(t, cfg)
	get := func(url string) int {
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if c := get(n.AdminURL() + "/debug/pprof/goroutine?debug=1"); c != http.StatusOK {
		t.Fatalf("pprof on the admin listener: HTTP %d", c)
	}
	if c := get(n.APIURL() + "/debug/pprof/goroutine?debug=1"); c != http.StatusForbidden {
		t.Fatalf("pprof on the public listener: HTTP %d, want 403", c)
	}
}

// TestConsoleRoles: the console signs for the node's organisation what a
// person's role allows: a PUBLISHER the organisation's own publications,
// an APPROVER governance decisions about others; each refusal names the
// rule and nothing is published.
func TestConsoleRoles(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	waitFeatureLevel(t, n) // the test compares applied indexes
	ctx := context.Background()
	client := func(tok string) nodev1connect.ConsoleServiceClient {
		return nodev1connect.NewConsoleServiceClient(&http.Client{Transport: bearerRT{tok: tok, inner: h2cClient().Transport}}, n.APIURL())
	}
	pub := client(addUser(t, n, "pub", nodev1.Role_ROLE_PUBLISHER))
	appr := client(addUser(t, n, "appr", nodev1.Role_ROLE_APPROVER))
	service := &registryv1.Mutation{Op: &registryv1.Mutation_PutService{PutService: &registryv1.Service{LeikaKey: "99115005000000", Name: "Ummeldung"}}}
	other := &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
		Id: "ssc-bund", Name: "Servicezentrum des Bundes", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE}}}
	suspend := &registryv1.Mutation{Op: &registryv1.Mutation_ChangeStatus{ChangeStatus: &registryv1.ChangeOrganisationStatus{
		OrganisationId: "ssc-bund", Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED, Reason: "test"}}}
	before := n.AppliedIndex()
	for _, tc := range []struct {
		name string
		c    nodev1connect.ConsoleServiceClient
		muts []*registryv1.Mutation
	}{
		{"publisher registers another organisation", pub, []*registryv1.Mutation{other}},
		{"publisher suspends", pub, []*registryv1.Mutation{suspend}},
		{"publisher mixes its own with a decision", pub, []*registryv1.Mutation{service, other}},
		{"approver publishes a catalogue entry", appr, []*registryv1.Mutation{service}},
	} {
		_, err := tc.c.Submit(ctx, connect.NewRequest(&nodev1.SubmitRequest{Mutations: tc.muts}))
		if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "rule console") {
			t.Fatalf("%s: %v, want PermissionDenied naming the rule", tc.name, err)
		}
	}
	if got := n.AppliedIndex(); got != before {
		t.Fatalf("refused submissions moved the registry from %d to %d", before, got)
	}
	res, err := pub.Submit(ctx, connect.NewRequest(&nodev1.SubmitRequest{Mutations: []*registryv1.Mutation{service}}))
	if err != nil || res.Msg.GetResult().GetErrorCode() != "" || res.Msg.GetIndex() == 0 {
		t.Fatalf("publisher's catalogue entry: %v %v", res, err)
	}
	res, err = appr.Submit(ctx, connect.NewRequest(&nodev1.SubmitRequest{Mutations: []*registryv1.Mutation{other}}))
	if err != nil || res.Msg.GetResult().GetErrorCode() != "" {
		t.Fatalf("approver registers an organisation: %v %v", res, err)
	}
	if o, _, err := n.Reader().Organisation("ssc-bund"); err != nil || o.GetUpdatedBy() != n.cfg.OrgID {
		t.Fatalf("registered organisation: %v %v", o, err)
	}
}

// TestEveryProtectedProcedure walks every procedure of the node's Connect
// services whose public rule needs a person and checks, through the real
// guard and routes: no credential, an expired, a forged, another node's
// and a disabled user's token, and a loopback caller with proxy headers
// are all refused as unauthenticated; a person without the role is
// refused as permission denied; the role the rule names gets through; and
// no node certificate gets it on the peer listener.
func TestEveryProtectedProcedure(t *testing.T) {
	n, peer := policyNode(t)
	api := n.routes()
	tokens := map[nodev1.Role]string{
		nodev1.Role_ROLE_CLERK:     addUser(t, n, "clerk", nodev1.Role_ROLE_CLERK),
		nodev1.Role_ROLE_PUBLISHER: addUser(t, n, "pub", nodev1.Role_ROLE_PUBLISHER),
		nodev1.Role_ROLE_APPROVER:  addUser(t, n, "appr", nodev1.Role_ROLE_APPROVER),
		nodev1.Role_ROLE_ADMIN:     addUser(t, n, "boss", nodev1.Role_ROLE_ADMIN),
	}
	gone := addUser(t, n, "gone", nodev1.Role_ROLE_CLERK, nodev1.Role_ROLE_PUBLISHER, nodev1.Role_ROLE_APPROVER, nodev1.Role_ROLE_ADMIN)
	if _, err := n.Users().Update(&nodev1.UpdateUserRequest{Username: "gone", Disabled: true, SetDisabled: true}); err != nil {
		t.Fatal(err)
	}
	all, _ := n.Users().Get("boss")
	all.Roles = []nodev1.Role{nodev1.Role_ROLE_CLERK, nodev1.Role_ROLE_PUBLISHER, nodev1.Role_ROLE_APPROVER, nodev1.Role_ROLE_ADMIN}
	now := n.cfg.Clock()
	mint := func(key jose.JSONWebKey, node string, at time.Time) string {
		tok, _, err := auth.IssueToken(key, n.cfg.OrgID, node, all, at, 15*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	forger, _ := keys.GenerateSigning(n.SigningKey().KeyID)
	bad := map[string]string{
		"no credential":        "",
		"an expired token":     mint(n.SigningKey(), n.cfg.NodeID, now.Add(-time.Hour)),
		"a forged token":       mint(forger, n.cfg.NodeID, now),
		"another node's token": mint(n.SigningKey(), "n-elsewhere", now.Add(-time.Minute)),
		"a disabled user":      gone,
	}
	// What each rule needs, and a role that is not enough.
	right := map[caller]nodev1.Role{clerk: nodev1.Role_ROLE_CLERK, admin: nodev1.Role_ROLE_ADMIN,
		console: nodev1.Role_ROLE_PUBLISHER, signedIn: nodev1.Role_ROLE_CLERK, operatorAdmin: nodev1.Role_ROLE_ADMIN}
	wrong := map[caller]nodev1.Role{clerk: nodev1.Role_ROLE_ADMIN, admin: nodev1.Role_ROLE_CLERK,
		console: nodev1.Role_ROLE_CLERK, operatorAdmin: nodev1.Role_ROLE_APPROVER}
	call := func(l listener, path, from, tok string, cs *tls.ConnectionState, proxied bool) string {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if proxied {
			req.Header.Set("X-Forwarded-For", "127.0.0.1")
			req.Header.Set("Forwarded", "for=127.0.0.1")
		}
		req.RemoteAddr, req.TLS = from, cs
		rec := httptest.NewRecorder()
		n.guard(l, api).ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusUnauthorized && strings.Contains(rec.Body.String(), `"unauthenticated"`):
			return "unauthenticated"
		case rec.Code == http.StatusForbidden && strings.Contains(rec.Body.String(), `"permission_denied"`):
			return "permission_denied"
		}
		return "served"
	}
	checked := 0
	for _, fd := range []protoreflect.FileDescriptor{nodev1.File_verbund_node_v1_node_proto, federationv1.File_verbund_federation_v1_handover_proto} {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				path := "/" + string(sd.FullName()) + "/" + string(sd.Methods().Get(j).Name())
				ru, ok := ruleFor(path)
				if !ok {
					t.Errorf("%s has no row in the policy", path)
					continue
				}
				need := ru.public
				if _, protected := right[need]; !protected {
					continue
				}
				checked++
				for what, tok := range bad {
					if need == operatorAdmin && what == "another node's token" {
						continue // this node is the operator's: its admins on other nodes administer the cluster here (TestAccessPolicy)
					}
					if got := call(publicListener, path, "192.0.2.7:1", tok, nil, false); got != "unauthenticated" {
						t.Errorf("%s with %s: %s", path, what, got)
					}
				}
				if got := call(publicListener, path, "127.0.0.1:1", "", nil, true); got != "unauthenticated" {
					t.Errorf("%s from loopback with proxy headers: %s", path, got)
				}
				if r, ok := wrong[need]; ok {
					if got := call(publicListener, path, "192.0.2.7:1", tokens[r], nil, false); got != "permission_denied" {
						t.Errorf("%s as %s: %s", path, r, got)
					}
				}
				if got := call(publicListener, path, "192.0.2.7:1", tokens[right[need]], nil, false); got != "served" {
					t.Errorf("%s as %s: %s", path, right[need], got)
				}
				if need != operatorAdmin {
					if got := call(peerListener, path, "192.0.2.7:1", "", peer("op-node"), false); got == "served" {
						t.Errorf("%s served to a node certificate on the peer listener", path)
					}
				}
			}
		}
	}
	if checked < 15 {
		t.Fatalf("only %d protected procedures found", checked)
	}
}

// TestClientCertificateSignIn: with Config.PublicTLS requesting client
// certificates, a program presenting a certificate registered to a user
// acts as that user over a real TLS connection; an unregistered one is
// anonymous.
func TestClientCertificateSignIn(t *testing.T) {
	caCert, caKey, err := peertls.NewCA("public TLS test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair := func(id string) tls.Certificate {
		certPEM, keyPEM, err := peertls.IssueNodeCert(caCert, caKey, id, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caCert)
	cfg := testConfig(t, t.TempDir())
	cfg.PublicTLS = &tls.Config{Certificates: []tls.Certificate{pair("public-api")}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS13}
	n := startNode(t, cfg)
	if !strings.HasPrefix(n.APIURL(), "https://") {
		t.Fatalf("API URL %s", n.APIURL())
	}
	program, stranger := pair("program"), pair("stranger")
	sum := sha256.Sum256(program.Certificate[0])
	if _, _, err := n.Users().Create(&nodev1.User{Username: "robot", DisplayName: "Fachverfahren", Roles: []nodev1.Role{nodev1.Role_ROLE_CLERK},
		CertificateSha256: []string{hex.EncodeToString(sum[:])}}, ""); err != nil {
		t.Fatal(err)
	}
	client := func(c tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS13}}}
	}
	ctx := context.Background()
	who, err := nodev1connect.NewAuthServiceClient(client(program), n.APIURL()).WhoAmI(ctx, connect.NewRequest(&nodev1.WhoAmIRequest{}))
	if err != nil || who.Msg.GetUser().GetUsername() != "robot" || who.Msg.GetMethod() != "certificate" {
		t.Fatalf("who am I with the registered certificate: %v %v", who, err)
	}
	if _, err := federationv1connect.NewHandoverServiceClient(client(program), n.APIURL()).ListInbox(ctx, connect.NewRequest(&federationv1.ListInboxRequest{})); err != nil {
		t.Fatalf("inbox with the registered certificate: %v", err)
	}
	if _, err := federationv1connect.NewHandoverServiceClient(client(stranger), n.APIURL()).ListInbox(ctx, connect.NewRequest(&federationv1.ListInboxRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("inbox with an unregistered certificate: %v", err)
	}
}

// TestOpenIDConnect: with the organisation's identity provider configured,
// its ID tokens authenticate the node's user their preferred_username
// names (roles from the node); an ID token for another audience, an
// expired one, one signed by another key, one for an unknown or disabled
// user are refused.
func TestOpenIDConnect(t *testing.T) {
	idpKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var issuer string
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q,"authorization_endpoint":%q,"token_endpoint":%q,"id_token_signing_alg_values_supported":["ES256"]}`,
			issuer, issuer+"/jwks", issuer+"/auth", issuer+"/token")
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &idpKey.PublicKey, KeyID: "idp-1", Algorithm: "ES256", Use: "sig"}}})
	})
	idp := httptest.NewServer(mux)
	defer idp.Close()
	issuer = idp.URL

	cfg := testConfig(t, t.TempDir())
	cfg.OIDCIssuer, cfg.OIDCClientID = issuer, "verbund-node"
	n := startNode(t, cfg)
	for _, u := range []string{"erika", "gone"} {
		if _, _, err := n.Users().Create(&nodev1.User{Username: u, DisplayName: "Erika Mustermann", Roles: []nodev1.Role{nodev1.Role_ROLE_CLERK}}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.Users().Update(&nodev1.UpdateUserRequest{Username: "gone", SetDisabled: true, Disabled: true}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	idToken := func(key *ecdsa.PrivateKey, aud, user string, exp time.Time) string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "idp-1"}}, (&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			t.Fatal(err)
		}
		claims, _ := json.Marshal(map[string]any{"iss": issuer, "aud": aud, "sub": "x-" + user, "preferred_username": user,
			"iat": now.Add(-time.Minute).Unix(), "exp": exp.Unix()})
		jws, err := signer.Sign(claims)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := jws.CompactSerialize()
		return s
	}
	ctx := context.Background()
	whoAmI := func(tok string) (*nodev1.WhoAmIResponse, error) {
		hc := &http.Client{Transport: bearerRT{tok: tok, inner: h2cClient().Transport}}
		res, err := nodev1connect.NewAuthServiceClient(hc, n.APIURL()).WhoAmI(ctx, connect.NewRequest(&nodev1.WhoAmIRequest{}))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}
	who, err := whoAmI(idToken(idpKey, "verbund-node", "erika", now.Add(5*time.Minute)))
	if err != nil || who.GetUser().GetUsername() != "erika" || who.GetMethod() != "oidc" {
		t.Fatalf("ID token of the provider: %v %v", who, err)
	}
	for name, tok := range map[string]string{
		"another audience": idToken(idpKey, "another-app", "erika", now.Add(5*time.Minute)),
		"expired":          idToken(idpKey, "verbund-node", "erika", now.Add(-time.Minute)),
		"another key":      idToken(otherKey, "verbund-node", "erika", now.Add(5*time.Minute)),
		"unknown user":     idToken(idpKey, "verbund-node", "mallory", now.Add(5*time.Minute)),
		"disabled user":    idToken(idpKey, "verbund-node", "gone", now.Add(5*time.Minute)),
	} {
		if _, err := whoAmI(tok); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
	}
	// The node's own tokens still work next to the provider's.
	own, _, err := n.IssueToken("erika")
	if err != nil {
		t.Fatal(err)
	}
	if who, err := whoAmI(own); err != nil || who.GetMethod() != "token" {
		t.Fatalf("the node's own token: %v %v", who, err)
	}
}
