package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

// testConfig returns a single-node config in a temp dir on loopback ports.
func testConfig(t testing.TB, dir string) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.OrgID = "test-operator"
	cfg.DataDir = dir
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RaftAddr = freeAddr(t)
	cfg.Bootstrap, cfg.Genesis = true, true
	cfg.HeartbeatTimeout = 100 * time.Millisecond
	cfg.ElectionTimeout = 100 * time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	// Every test client calls from 127.0.0.1: rate limits are tested on
	// their own (ratelimit_test.go).
	cfg.RateLimits.Off = true
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("new node: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		n.Close()
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// waitFeatureLevel waits until the leader has raised the cluster's
// feature level to what this build supports: the raise is a log entry
// the leader proposes in the background after start, so a test that
// asserts "nothing was applied" must let it land first.
func waitFeatureLevel(t *testing.T, n *Node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := n.FSM().FeatureLevel()
		if err == nil && l >= registry.SupportedFeatureLevel() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("feature level %d (%v), want %d within 10s", l, err, registry.SupportedFeatureLevel())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// h2cClient speaks HTTP/2 without TLS, as gRPC needs.
func h2cClient() *http.Client {
	return &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
}

type fixture struct {
	n       *Node
	munich  jose.JSONWebKey
	pub     registryv1connect.PublishServiceClient
	query   registryv1connect.QueryServiceClient
	lastIdx uint64
}

func sign(t testing.TB, key jose.JSONWebKey, issuer string, muts ...*registryv1.Mutation) string {
	t.Helper()
	jws, err := registry.SignCommand(registry.NewCommand(issuer, muts...), key)
	if err != nil {
		t.Fatal(err)
	}
	return jws
}

func (f *fixture) publish(t *testing.T, signed ...string) []*registryv1.CommandResult {
	t.Helper()
	res, err := f.pub.Publish(context.Background(), connect.NewRequest(&registryv1.PublishRequest{SignedCommands: signed}))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	f.lastIdx = res.Msg.GetIndex()
	return res.Msg.GetResults()
}

func mustOK(t *testing.T, rs []*registryv1.CommandResult) {
	t.Helper()
	for _, r := range rs {
		if r.GetErrorCode() != "" {
			t.Fatalf("command %s failed: %s: %s", r.GetCommandId(), r.GetErrorCode(), r.GetErrorMessage())
		}
	}
}

const (
	munichARS = "091620000000"
	gewerbe   = "99050012104000"
)

// newFixture starts a node and registers Munich with a key, a service and
// Munich's offering of it.
func newFixture(t *testing.T, opts ...connect.ClientOption) *fixture {
	n := startNode(t, testConfig(t, t.TempDir()))
	waitFeatureLevel(t, n) // the tests compare applied indexes
	f := &fixture{n: n}
	var err error
	f.munich, err = keys.GenerateSigning("munich-sig-1")
	if err != nil {
		t.Fatal(err)
	}
	hc := h2cClient()
	f.pub = registryv1connect.NewPublishServiceClient(hc, n.APIURL(), opts...)
	f.query = registryv1connect.NewQueryServiceClient(hc, n.APIURL(), opts...)
	pk, _ := keys.Published(f.munich)
	op := n.SigningKey()
	// The operator registers Bavaria's state agency, which registers
	// Munich: the operator approves no organisation of a state.
	bayern, err := keys.GenerateSigning("by-lfst-sig-1")
	if err != nil {
		t.Fatal(err)
	}
	bpk, _ := keys.Published(bayern)
	mustOK(t, f.publish(t,
		sign(t, op, "test-operator",
			&registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
				Id: "by-lfst", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY, Name: "Bayern",
				StateCode: "09", Keys: []*registryv1.PublicKey{bpk},
				Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
			}}},
			&registryv1.Mutation{Op: &registryv1.Mutation_PutService{PutService: &registryv1.Service{
				LeikaKey: gewerbe, Name: "Gewerbe-Anmeldung", LifeSituations: []string{"Unternehmensgründung"},
				Keywords: []string{"Gewerbeschein"},
			}}},
		)))
	mustOK(t, f.publish(t,
		sign(t, bayern, "by-lfst",
			&registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
				Id: munichARS, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: "München, Landeshauptstadt",
				StateCode: "09", Ars: munichARS, Ags: "09162000", Keys: []*registryv1.PublicKey{pk},
				Status:   registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
				Location: &registryv1.GeoPoint{Lat: 48.137683, Lon: 11.575997},
			}}},
		)))
	mustOK(t, f.publish(t, sign(t, f.munich, munichARS, offering("091620000000:"+gewerbe, munichARS))))
	return f
}

func offering(id, org string) *registryv1.Mutation {
	return &registryv1.Mutation{Op: &registryv1.Mutation_PutOffering{PutOffering: &registryv1.Offering{
		Id: id, OrganisationId: org, LeikaKey: gewerbe, Areas: []string{munichARS}, Name: "Gewerbe-Anmeldung",
		Channels: []*registryv1.Channel{{Kind: registryv1.ChannelKind_CHANNEL_KIND_ONLINE, Url: "https://stadt.muenchen.de/gewerbe", Available_24_7: true}},
		Fees:     []*registryv1.Fee{{AmountCents: 5000, MaxAmountCents: 6000, Currency: "EUR"}},
	}}}
}

// TestEndToEndProtocols publishes and queries over Connect, gRPC and gRPC-Web.
func TestEndToEndProtocols(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.opts...)
			ctx := context.Background()
			res, err := f.query.FindProviders(ctx, connect.NewRequest(&registryv1.FindProvidersRequest{LeikaKey: gewerbe, Area: munichARS}))
			if err != nil {
				t.Fatal(err)
			}
			ps := res.Msg.GetProviders()
			if len(ps) != 1 || ps[0].GetOrganisation().GetId() != munichARS || ps[0].GetMatch() != registryv1.MatchKind_MATCH_KIND_OWN_MUNICIPALITY {
				t.Fatalf("providers = %v", ps)
			}
			if got := ps[0].GetOffering().GetFees()[0].GetAmountCents(); got != 5000 {
				t.Fatalf("fee = %d", got)
			}
			if res.Msg.GetRead().GetIndex() < f.lastIdx {
				t.Fatalf("read index %d < write index %d", res.Msg.GetRead().GetIndex(), f.lastIdx)
			}
			// AGS resolves to the municipality too.
			res, err = f.query.FindProviders(ctx, connect.NewRequest(&registryv1.FindProvidersRequest{LeikaKey: gewerbe, Area: "09162000"}))
			if err != nil || len(res.Msg.GetProviders()) != 1 {
				t.Fatalf("by AGS: %v %v", res, err)
			}
			sr, err := f.query.SearchServices(ctx, connect.NewRequest(&registryv1.SearchServicesRequest{Text: "anmelden"}))
			if err != nil {
				t.Fatal(err)
			}
			if len(sr.Msg.GetHits()) == 0 || sr.Msg.GetHits()[0].GetService().GetLeikaKey() != gewerbe {
				t.Fatalf("search anmelden = %v", sr.Msg.GetHits())
			}
			lin, err := f.query.GetOrganisation(ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{
				Id: munichARS, Read: &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE},
			}))
			if err != nil {
				t.Fatal(err)
			}
			if !lin.Msg.GetRead().GetLinearizable() || lin.Msg.GetRead().GetIndex() < f.lastIdx {
				t.Fatalf("linearizable read info = %v", lin.Msg.GetRead())
			}
		})
	}
}

func TestHealthAndReflection(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	hc := h2cClient()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A real gRPC call to grpc.health.v1.Health/Check. HealthCheckRequest{}
	// encodes like Empty, and HealthCheckResponse's status (field 1, varint)
	// decodes as Int32Value.
	health := connect.NewClient[emptypb.Empty, wrapperspb.Int32Value](hc, n.APIURL()+"/grpc.health.v1.Health/Check", connect.WithGRPC())
	res, err := health.CallUnary(ctx, connect.NewRequest(&emptypb.Empty{}))
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	if got := grpchealth.Status(res.Msg.GetValue()); got != grpchealth.StatusServing {
		t.Fatalf("health = %v, want SERVING", got)
	}
	client := grpcreflect.NewClient(hc, n.APIURL(), connect.WithGRPC())
	stream := client.NewStream(ctx)
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	want := map[string]bool{registryv1connect.QueryServiceName: false, registryv1connect.PublishServiceName: false}
	for _, s := range names {
		if _, ok := want[string(s)]; ok {
			want[string(s)] = true
		}
	}
	for s, ok := range want {
		if !ok {
			t.Errorf("reflection does not list %s (got %v)", s, names)
		}
	}
	fd, err := stream.FileContainingSymbol(registryv1connect.QueryServiceName)
	if err != nil || len(fd) == 0 {
		t.Fatalf("file containing symbol: %v %v", fd, err)
	}
}

// TestBadInput: every hostile or malformed write gets the right code and
// leaves the stored state untouched.
func TestBadInput(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other, _ := keys.GenerateSigning("munich-sig-1") // same kid, different key: a forgery
	stranger, _ := keys.GenerateSigning("stranger-1")
	before := f.n.FSM().AppliedIndex()
	good := sign(t, f.munich, munichARS, offering("091620000000:x1", munichARS))
	parts := strings.Split(good, ".")
	for _, tc := range []struct {
		name string
		jws  string
		code string
	}{
		{"forged signature", sign(t, other, munichARS, offering("091620000000:x2", munichARS)), registry.CodeInvalidSignature},
		{"unknown kid", sign(t, stranger, munichARS, offering("091620000000:x3", munichARS)), registry.CodeUnknownKey},
		{"unregistered issuer", sign(t, stranger, "ssc-nowhere", offering("ssc-nowhere:x", "ssc-nowhere")), registry.CodeUnknownKey},
		{"tampered payload", parts[0] + "." + parts[1][:len(parts[1])-4] + "AAAA." + parts[2], ""},
		{"garbage", "not-a-jws", registry.CodeInvalidSignature},
		{"alg none", "eyJhbGciOiJub25lIn0." + parts[1] + ".", registry.CodeInvalidSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := f.publish(t, tc.jws)
			if rs[0].GetErrorCode() == "" {
				t.Fatalf("accepted: %v", rs[0])
			}
			if tc.code != "" && rs[0].GetErrorCode() != tc.code {
				t.Fatalf("code = %s (%s), want %s", rs[0].GetErrorCode(), rs[0].GetErrorMessage(), tc.code)
			}
		})
	}
	if got := f.n.FSM().AppliedIndex(); got != before {
		// Rejected commands must not even enter the log.
		t.Fatalf("applied index moved from %d to %d", before, got)
	}
	// A validly signed command the issuer is not allowed to make is refused
	// by the state machine: it is in the log, but changes no entity.
	rs := f.publish(t, sign(t, f.munich, munichARS, offering("091840112112:x", "091840112112")))
	if rs[0].GetErrorCode() != registry.CodePermissionDenied {
		t.Fatalf("other org's offering: %v", rs[0])
	}
	if _, _, err := f.n.Reader().Offering("091840112112:x"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("refused offering stored: %v", err)
	}
	before = f.n.FSM().AppliedIndex()
	// Invalid query arguments map to InvalidArgument / NotFound.
	for _, tc := range []struct {
		name string
		req  *registryv1.FindProvidersRequest
		code connect.Code
	}{
		{"bad leika", &registryv1.FindProvidersRequest{LeikaKey: "12345", Area: munichARS}, connect.CodeInvalidArgument},
		{"bad area", &registryv1.FindProvidersRequest{LeikaKey: gewerbe, Area: "09x"}, connect.CodeInvalidArgument},
		{"unknown service", &registryv1.FindProvidersRequest{LeikaKey: "99999999999999", Area: munichARS}, connect.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.query.FindProviders(ctx, connect.NewRequest(tc.req))
			if connect.CodeOf(err) != tc.code {
				t.Fatalf("code = %v (%v), want %v", connect.CodeOf(err), err, tc.code)
			}
		})
	}
	// Malformed protobuf and oversized bodies.
	post := func(body []byte) (int, string) {
		resp, err := http.Post(f.n.APIURL()+"/"+registryv1connect.PublishServiceName+"/Publish", "application/proto", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}); code != http.StatusBadRequest {
		t.Errorf("malformed protobuf: status %d %s", code, body)
	}
	if code, body := post(make([]byte, f.n.Config().MaxRequestBytes+1)); code == http.StatusOK {
		t.Errorf("oversized body accepted: %s", body)
	}
	tooMany := make([]string, registry.MaxCommandsPerRequest+1)
	for i := range tooMany {
		tooMany[i] = good
	}
	_, err := f.pub.Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: tooMany}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("too many commands: %v", err)
	}
	if got := f.n.FSM().AppliedIndex(); got != before {
		t.Fatalf("applied index moved from %d to %d", before, got)
	}
}

// TestRestartKeepsState: a restarted node has every acknowledged write, at
// the same revisions (nothing re-applied), and resubmitting a command is a
// duplicate.
func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	n := startNode(t, cfg)
	f := &fixture{n: n}
	hc := h2cClient()
	f.pub = registryv1connect.NewPublishServiceClient(hc, n.APIURL())
	var cmds []string
	for i := 0; i < 50; i++ {
		cmds = append(cmds, sign(t, n.SigningKey(), "test-operator", &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
			Id: fmt.Sprintf("09162%07d", i), Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: fmt.Sprintf("Gemeinde %d", i),
		}}}))
	}
	mustOK(t, f.publish(t, cmds...))
	want, _, err := n.Reader().Organisation("091620000042")
	if err != nil {
		t.Fatal(err)
	}
	applied := n.FSM().AppliedIndex()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.RaftAddr = freeAddr(t)
	n2 := startNode(t, cfg)
	if got := n2.FSM().AppliedIndex(); got < applied {
		t.Fatalf("applied after restart = %d, before %d", got, applied)
	}
	got, _, err := n2.Reader().Organisation("091620000042")
	if err != nil {
		t.Fatal(err)
	}
	if got.GetRevision() != want.GetRevision() {
		t.Fatalf("revision changed across restart: %d -> %d", want.GetRevision(), got.GetRevision())
	}
	f.n = n2
	f.pub = registryv1connect.NewPublishServiceClient(hc, n2.APIURL())
	rs := f.publish(t, cmds[7])
	if !rs[0].GetDuplicate() {
		t.Fatalf("resubmitted command not a duplicate: %v", rs[0])
	}
}
