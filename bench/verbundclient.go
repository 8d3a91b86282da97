package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	healthv1 "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/verbund/verbund/keys"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

// h2cClient is an HTTP/2 client without TLS (the nodes' public API on
// loopback), as Connect clients use it; token, if set, rides along as a
// bearer token.
func h2cClient(token string) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	tr.Protocols = p
	var rt http.RoundTripper = tr
	if token != "" {
		rt = bearer{token: token, inner: tr}
	}
	return &http.Client{Transport: rt, Timeout: 60 * time.Second}
}

type bearer struct {
	token string
	inner http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.inner.RoundTrip(r)
}

// healthClient calls the standard gRPC health check (grpc.health.v1) over
// Connect: the null RPC.
func healthClient(hc *http.Client, api string) *connect.Client[healthv1.HealthCheckRequest, healthv1.HealthCheckResponse] {
	return connect.NewClient[healthv1.HealthCheckRequest, healthv1.HealthCheckResponse](hc, api+"/grpc.health.v1.Health/Check")
}

// Munich and Augsburg: the organisations of nodes n2 and n3 of
// scripts/cluster.sh, registered with their nodes' keys by the script.
const (
	munich    = "091620000000"
	augsburg  = "097610000000"
	leikaRead = "99050012104000" // a service with providers in the sample data
	leikaPub  = "99115005000000" // not the read rows' service: writes do not grow their answers
	leikaCase = "99115005000000"
)

// readPairs are FindProviders questions (service, area) that may have
// hits in the sample data; setup keeps the ones that do.
var readPairs = [][2]string{
	{leikaRead, "091620000000"}, {leikaRead, "09162000"}, {leikaRead, "091840112112"}, {leikaRead, "097610000000"},
}

// status asks the node at api for its status (3 s at most).
func status(ctx context.Context, hc *http.Client, api string) (*nodev1.GetStatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	r, err := nodev1connect.NewNodeServiceClient(hc, api).GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", api, err)
	}
	return r.Msg, nil
}

// leaderIndex returns the index in apis of the node that reports itself
// Raft leader.
func leaderIndex(ctx context.Context, hc *http.Client, apis []string) (int, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		for i, a := range apis {
			if st, err := status(ctx, hc, a); err == nil && st.GetRaftState() == "Leader" {
				return i, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, errors.New("no Verbund node reports itself leader")
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// padding is filler text that makes a write about 1 KiB.
var padding = strings.Repeat("Bench offering text. ", 44)[:900]

// signOfferings pre-signs n commands by Munich, each putting one new
// offering of about 1 KiB (protobuf) with the id prefix tag.
func signOfferings(key jose.JSONWebKey, tag string, n int) ([]string, error) {
	out := make([]string, n)
	errs := make(chan error, 2)
	for part := range 2 {
		go func() {
			for i := part; i < n; i += 2 {
				cmd := registry.NewCommand(munich, &registryv1.Mutation{Op: &registryv1.Mutation_PutOffering{PutOffering: &registryv1.Offering{
					Id:             fmt.Sprintf("%s:%s:%s-%d", munich, leikaPub, tag, i),
					OrganisationId: munich, LeikaKey: leikaPub, Areas: []string{munich},
					Name:          fmt.Sprintf("Bench offering %s %d", tag, i),
					Prerequisites: []string{padding},
				}}})
				s, err := registry.SignCommand(cmd, key)
				if err != nil {
					errs <- err
					return
				}
				out[i] = s
			}
			errs <- nil
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			return nil, fmt.Errorf("sign offering: %w", err)
		}
	}
	return out, nil
}

// publishOne sends one signed command and checks its result.
func publishOne(ctx context.Context, c registryv1connect.PublishServiceClient, cmds []string) error {
	res, err := c.Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: cmds}))
	if err != nil {
		return err
	}
	for _, r := range res.Msg.GetResults() {
		if r.GetErrorCode() != "" {
			return fmt.Errorf("command refused: %s: %s", r.GetErrorCode(), r.GetErrorMessage())
		}
	}
	if len(res.Msg.GetResults()) != len(cmds) {
		return fmt.Errorf("%d results for %d commands", len(res.Msg.GetResults()), len(cmds))
	}
	return nil
}

// clerkToken signs in to a node of scripts/cluster.sh as its initial
// admin (password file in the node's data dir), creates the case worker
// "bench" with the clerk role and returns a token of that user.
func clerkToken(ctx context.Context, dataDir, api string) (string, error) {
	pw, err := os.ReadFile(filepath.Join(dataDir, "initial-admin-password"))
	if err != nil {
		return "", fmt.Errorf("initial admin password: %w", err)
	}
	authc := nodev1connect.NewAuthServiceClient(h2cClient(""), api)
	res, err := authc.SignIn(ctx, connect.NewRequest(&nodev1.SignInRequest{Username: "admin", Password: strings.TrimSpace(string(pw))}))
	if err != nil {
		return "", fmt.Errorf("sign in as admin of %s: %w", api, err)
	}
	admin := nodev1connect.NewAuthServiceClient(h2cClient(res.Msg.GetToken()), api)
	const user, pass = "bench", "bench-clerk-password-7f3a9c"
	_, err = admin.CreateUser(ctx, connect.NewRequest(&nodev1.CreateUserRequest{
		User:     &nodev1.User{Username: user, DisplayName: "Benchmark clerk", Roles: []nodev1.Role{nodev1.Role_ROLE_CLERK}},
		Password: pass,
	}))
	if connect.CodeOf(err) == connect.CodeAlreadyExists {
		_, err = admin.ResetPassword(ctx, connect.NewRequest(&nodev1.ResetPasswordRequest{Username: user, Password: pass}))
	}
	if err != nil {
		return "", fmt.Errorf("create user %s on %s: %w", user, api, err)
	}
	tok, err := authc.SignIn(ctx, connect.NewRequest(&nodev1.SignInRequest{Username: user, Password: pass}))
	if err != nil {
		return "", fmt.Errorf("sign in as %s: %w", user, err)
	}
	return tok.Msg.GetToken(), nil
}

// pendingHandovers counts the outbox entries of the node still pending
// (up to one page of 1,000; enough to tell zero from non-zero).
func pendingHandovers(ctx context.Context, c federationv1connect.HandoverServiceClient) (int, error) {
	res, err := c.ListOutbox(ctx, connect.NewRequest(&federationv1.ListOutboxRequest{State: federationv1.OutboxState_OUTBOX_STATE_PENDING, PageSize: 1000}))
	if err != nil {
		return 0, err
	}
	return len(res.Msg.GetEntries()), nil
}

// loadKey loads a private JWK.
func loadKey(path string) (jose.JSONWebKey, error) { return keys.Load(path) }
