package nodetest

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/verbund/verbund/federation/peertls"
	"github.com/verbund/verbund/node"
	"github.com/verbund/verbund/node/auth"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
)

// HarnessUser is the user every node of a test cluster has (roles ADMIN
// and CLERK), created in its data dir before the first start, as
// `verbund users add --data DIR` does. The cluster's clients
// (Member.Handover, Member.NodeService, Member.HTTPClient) send its bearer
// token. On node 0 (the network operator's node) it is the operator's
// admin, whom every node lets transfer leadership and rotate gossip keys.
const HarnessUser = "harness"

// harnessTokenTTL outlives any test; the nodes are configured to sign
// tokens this long.
const harnessTokenTTL = 6 * time.Hour

// addHarnessUser creates HarnessUser in dir's user store.
func addHarnessUser(dir string) error {
	s, err := auth.Open(auth.Dir(dir), nil, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	if _, err := s.Get(HarnessUser); err == nil {
		return nil
	}
	pw, err := auth.GeneratePassword()
	if err != nil {
		return err
	}
	_, _, err = s.Create(&nodev1.User{Username: HarnessUser, DisplayName: "Test Harness",
		Roles: []nodev1.Role{nodev1.Role_ROLE_ADMIN, nodev1.Role_ROLE_CLERK}}, pw)
	return err
}

// tokenSource mints and caches the harness user's token of one member,
// minted by the running node itself (node.IssueToken): a fresh one when
// the node restarted or rotated its signing key, or the cached one is half
// spent. While the node is down the last token is kept.
type tokenSource struct {
	m    *Member
	mu   sync.Mutex
	node *node.Node
	kid  string
	tok  string
	exp  time.Time
}

func (s *tokenSource) token() (string, error) {
	n := s.m.Node()
	s.mu.Lock()
	defer s.mu.Unlock()
	if n == nil {
		if s.tok == "" {
			return "", fmt.Errorf("%s is down and has issued no token yet", s.m.ID)
		}
		return s.tok, nil
	}
	kid := n.SigningKey().KeyID
	if n == s.node && kid == s.kid && time.Until(s.exp) > harnessTokenTTL/2 {
		return s.tok, nil
	}
	tok, exp, err := n.IssueToken(HarnessUser)
	if err != nil {
		return "", err
	}
	s.node, s.kid, s.tok, s.exp = n, kid, tok, exp
	return tok, nil
}

// bearerTransport adds the member's harness token to every request.
type bearerTransport struct {
	inner http.RoundTripper
	src   *tokenSource
}

func (t bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	tok, err := t.src.token()
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return t.inner.RoundTrip(r)
}

// HTTPClient is an HTTP client that authenticates as the member's harness
// user (ADMIN and CLERK) on the member's own API. Node 0's client is the
// network operator's admin on every node.
func (m *Member) HTTPClient() *http.Client {
	m.tokOnce.Do(func() {
		m.tokens = &tokenSource{m: m}
		m.authHTTP = &http.Client{Timeout: clientHTTP.Timeout, Transport: bearerTransport{inner: http.DefaultTransport, src: m.tokens}}
	})
	return m.authHTTP
}

// Token returns the member's harness user's current bearer token.
func (m *Member) Token() (string, error) {
	m.HTTPClient()
	return m.tokens.token()
}

// OperatorHTTPClient authenticates as the network operator's admin (node
// 0's harness user): what TransferLeadership and RotateGossipKey need on
// any node.
func (c *Cluster) OperatorHTTPClient() *http.Client { return c.Nodes[0].HTTPClient() }

// IssueCert issues a certificate of the cluster's CA (Options.TLS) for
// nodeID: tests present it as a node that is, or is not, part of the
// cluster.
func (c *Cluster) IssueCert(nodeID string) (*peertls.Bundle, error) {
	if c.caCert == nil {
		return nil, fmt.Errorf("the cluster runs without TLS")
	}
	certPEM, keyPEM, err := peertls.IssueNodeCert(c.caCert, c.caKey, nodeID, []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		return nil, err
	}
	return peertls.FromPEM(c.caCert, certPEM, keyPEM)
}
