package web

import (
	"context"
	"net/http"
	"net/http/httptest"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// The pages call the node's API in-process: a request goes through the
// same handler (access policy, rate limits, Connect) as one from the
// network, with the visitor's source address and, for staff, their
// session's bearer token, so that the node judges the person behind the
// page, not the page.

type callerKey struct{}

type caller struct {
	addr  string
	token string
}

// withCaller returns ctx carrying who the API calls made for r are for.
func withCaller(ctx context.Context, r *http.Request, token string) context.Context {
	return context.WithValue(ctx, callerKey{}, caller{addr: r.RemoteAddr, token: token})
}

// FromPage reports whether ctx is that of an API request a page made
// in-process (the node does not charge it to the visitor's rate budget
// again: the page view was charged).
func FromPage(ctx context.Context) bool {
	_, ok := ctx.Value(callerKey{}).(caller)
	return ok
}

// inprocTransport serves an API request with the node's handler.
type inprocTransport struct{ h http.Handler }

func (t inprocTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c, _ := req.Context().Value(callerKey{}).(caller)
	r := req.Clone(req.Context())
	r.RemoteAddr = c.addr
	if r.RemoteAddr == "" {
		r.RemoteAddr = "0.0.0.0:0" // an anonymous caller of unknown address
	}
	r.RequestURI = r.URL.RequestURI()
	r.Header.Del("Authorization")
	if c.token != "" {
		r.Header.Set("Authorization", "Bearer "+c.token)
	}
	w := httptest.NewRecorder()
	t.h.ServeHTTP(w, r)
	return w.Result(), nil
}

// apiClients are the Connect clients of the node's services.
type apiClients struct {
	query    registryv1connect.QueryServiceClient
	handover federationv1connect.HandoverServiceClient
	auth     nodev1connect.AuthServiceClient
	node     nodev1connect.NodeServiceClient
	cluster  nodev1connect.ClusterServiceClient
	console  nodev1connect.ConsoleServiceClient
}

// apiBase is a placeholder origin: requests never leave the process.
const apiBase = "http://node.inproc"

func newAPIClients(h http.Handler) *apiClients {
	hc := &http.Client{Transport: inprocTransport{h: h}}
	return &apiClients{
		query:    registryv1connect.NewQueryServiceClient(hc, apiBase),
		handover: federationv1connect.NewHandoverServiceClient(hc, apiBase),
		auth:     nodev1connect.NewAuthServiceClient(hc, apiBase),
		node:     nodev1connect.NewNodeServiceClient(hc, apiBase),
		cluster:  nodev1connect.NewClusterServiceClient(hc, apiBase),
		console:  nodev1connect.NewConsoleServiceClient(hc, apiBase),
	}
}

// apiCode is the Connect code of an API error (CodeUnknown for others).
func apiCode(err error) connect.Code { return connect.CodeOf(err) }
