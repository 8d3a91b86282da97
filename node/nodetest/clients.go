package nodetest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// Clients are outside the cluster: they call a node's public API directly
// (plain HTTP on loopback, not through the Net), as a case worker or an
// operator would. The case-worker and admin procedures need a person: the
// member clients authenticate as the harness user (auth.go).
var clientHTTP = &http.Client{Timeout: 10 * time.Second}

// memberClients caches the Connect clients of one member, bound to its API
// URL (a first start that found its port taken moves to another one).
type memberClients struct {
	mu       sync.Mutex
	api      string
	handover federationv1connect.HandoverServiceClient
	node     nodev1connect.NodeServiceClient
}

// clients returns the member's clients for its current API URL.
func (m *Member) clients() (federationv1connect.HandoverServiceClient, nodev1connect.NodeServiceClient) {
	m.cl.mu.Lock()
	defer m.cl.mu.Unlock()
	if api := m.API(); m.cl.api != api {
		m.cl.api = api
		m.cl.handover = federationv1connect.NewHandoverServiceClient(m.HTTPClient(), api)
		m.cl.node = nodev1connect.NewNodeServiceClient(m.HTTPClient(), api)
	}
	return m.cl.handover, m.cl.node
}

// Handover is a client of the member's handover service, as the
// organisation's case workers use it (send, inbox, accept, track, audit).
// The client is cached; it keeps working across kills and restarts.
func (m *Member) Handover() federationv1connect.HandoverServiceClient {
	h, _ := m.clients()
	return h
}

// NodeService is a client of the member's node service (status, key
// rotation), cached like Handover.
func (m *Member) NodeService() nodev1connect.NodeServiceClient {
	_, n := m.clients()
	return n
}

// Handover is node i's handover client; see Member.Handover.
func (c *Cluster) Handover(i int) federationv1connect.HandoverServiceClient {
	return c.Nodes[i].Handover()
}

// Onboard registers the organisation node i runs for, as `verbund onboard`
// does: it asks the node for the public halves of its real keys and its
// peer URL (NodeService.GetStatus) and publishes the organisation record
// with them, signed by the network operator, through node i (forwarded to
// the leader). An existing record keeps its other fields. It returns the
// commit index; every node reflects the record once it has applied it.
func (c *Cluster) Onboard(ctx context.Context, i int, name string) (uint64, error) {
	m := c.Nodes[i]
	st, err := m.NodeService().GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
	if err != nil {
		return 0, fmt.Errorf("status of %s: %w", m.ID, err)
	}
	org := st.Msg.GetOrganisationId()
	rec := &registryv1.Organisation{Id: org, Name: name, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY}
	res, err := c.Query(i).GetOrganisation(ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{Id: org,
		Read: &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}}))
	switch {
	case err == nil:
		rec = proto.Clone(res.Msg.GetOrganisation()).(*registryv1.Organisation)
	case connect.CodeOf(err) != connect.CodeNotFound:
		return 0, fmt.Errorf("read organisation %s: %w", org, err)
	}
	rec.Revision, rec.UpdatedAtUnixMs, rec.UpdatedBy = 0, 0, ""
	rec.Keys = st.Msg.GetKeys()
	rec.ApiEndpoint = st.Msg.GetPeerUrl()
	rec.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE
	op, err := c.Nodes[0].NodeService().GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
	if err != nil {
		return 0, fmt.Errorf("status of the operator's node: %w", err)
	}
	jws, err := registry.SignCommand(registry.NewCommand(op.Msg.GetOrganisationId(),
		&registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: rec}}), c.OperatorKey())
	if err != nil {
		return 0, err
	}
	pr, err := c.Publish(i).Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: []string{jws}}))
	if err != nil {
		return 0, fmt.Errorf("publish organisation %s: %w", org, err)
	}
	rs := pr.Msg.GetResults()
	if len(rs) == 0 {
		return 0, errors.New("publish returned no result")
	}
	if rs[0].GetErrorCode() != "" {
		return 0, fmt.Errorf("onboard %s: %s: %s", org, rs[0].GetErrorCode(), rs[0].GetErrorMessage())
	}
	return rs[0].GetIndex(), nil
}
