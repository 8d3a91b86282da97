package node

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// TestAccessPolicy sends requests as they arrive on each listener, from
// this machine, from elsewhere, and from an authenticated peer node,
// through the policy in front of the node's real routes: refused requests
// get PermissionDenied (HTTP 403) before any handler runs; allowed ones
// reach their handler (whatever it answers).
func TestAccessPolicy(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	api, admin := n.routes(), n.adminRoutes()
	const (
		local  = "127.0.0.1:40000"
		remote = "192.0.2.7:40000" // documentation range: never dialled
	)
	verified := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}
	for _, tc := range []struct {
		name    string
		l       listener
		path    string
		from    string
		tls     *tls.ConnectionState
		allowed bool
	}{
		{"publish from anywhere", publicListener, registryv1connect.PublishServicePublishProcedure, remote, nil, true},
		{"query from anywhere", publicListener, registryv1connect.QueryServiceGetOrganisationProcedure, remote, nil, true},
		{"status from anywhere", publicListener, nodev1connect.NodeServiceGetStatusProcedure, remote, nil, true},
		{"health from anywhere", publicListener, "/grpc.health.v1.Health/Check", remote, nil, true},
		{"rotate keys from this machine", publicListener, nodev1connect.NodeServiceRotateKeysProcedure, local, nil, true},
		{"rotate keys from elsewhere", publicListener, nodev1connect.NodeServiceRotateKeysProcedure, remote, nil, false},
		{"rotate keys from a peer", peerListener, nodev1connect.NodeServiceRotateKeysProcedure, local, verified, false},
		{"revoke key from a peer", peerListener, nodev1connect.NodeServiceRevokeKeyProcedure, remote, verified, false},
		{"transfer leadership from elsewhere", publicListener, nodev1connect.ClusterServiceTransferLeadershipProcedure, remote, nil, false},
		{"transfer leadership from a peer", peerListener, nodev1connect.ClusterServiceTransferLeadershipProcedure, remote, verified, true},
		{"gossip key from this machine", publicListener, nodev1connect.ClusterServiceRotateGossipKeyProcedure, local, nil, true},
		{"read index from a peer", peerListener, nodev1connect.ClusterServiceReadIndexProcedure, remote, verified, true},
		{"forwarded publish from a peer", peerListener, registryv1connect.PublishServicePublishProcedure, remote, verified, true},
		{"peer listener without a verified certificate", peerListener, registryv1connect.PublishServicePublishProcedure, remote, nil, false},
		{"send handover from this machine", publicListener, federationv1connect.HandoverServiceSendHandoverProcedure, local, nil, true},
		{"send handover from elsewhere", publicListener, federationv1connect.HandoverServiceSendHandoverProcedure, remote, nil, false},
		{"send handover from a peer", peerListener, federationv1connect.HandoverServiceSendHandoverProcedure, local, verified, false},
		{"accept case from a peer", peerListener, federationv1connect.HandoverServiceAcceptCaseProcedure, remote, verified, false},
		{"deliver handover from a peer", peerListener, federationv1connect.HandoverServiceDeliverHandoverProcedure, remote, verified, true},
		{"deliver handover from elsewhere", publicListener, federationv1connect.HandoverServiceDeliverHandoverProcedure, remote, nil, true},
		{"case timeline from a peer", peerListener, federationv1connect.HandoverServiceGetCaseTimelineProcedure, remote, verified, true},
		{"pprof on the public listener", publicListener, "/debug/pprof/", local, nil, false},
		{"pprof on the admin listener", adminListener, "/debug/pprof/", local, nil, true},
		{"the API on the admin listener", adminListener, registryv1connect.PublishServicePublishProcedure, local, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := api
			if tc.l == adminListener {
				h = admin
			}
			method, body := http.MethodPost, "{}"
			if strings.HasPrefix(tc.path, "/debug/") {
				method, body = http.MethodGet, ""
			}
			req := httptest.NewRequest(method, tc.path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.RemoteAddr, req.TLS = tc.from, tc.tls
			rec := httptest.NewRecorder()
			n.guard(tc.l, h).ServeHTTP(rec, req)
			denied := rec.Code == http.StatusForbidden && strings.Contains(rec.Body.String(), "permission_denied")
			if denied == tc.allowed {
				t.Fatalf("%s on %s from %s: HTTP %d %s; want allowed=%v", tc.path, tc.l, tc.from, rec.Code, rec.Body, tc.allowed)
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
