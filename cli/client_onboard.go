package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// onboardCommand is "verbund onboard": registering an organisation's node.
func onboardCommand() Command {
	return Command{
		Name:    "onboard",
		Summary: "register an organisation's node: its public keys and endpoint, signed by the network operator",
		Run:     onboard,
	}
}

// onboard asks a node for its organisation's public keys and peer address
// (NodeService.GetStatus) and publishes the organisation record with them,
// signed by the network operator: the step that lets the organisation sign
// its own registry commands and receive handovers. An existing record keeps
// its other fields.
func onboard(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("onboard --node URL --key OPERATOR_KEY [flags]",
		"Register the organisation run by the node at --node: fetch its public signing and\n"+
			"encryption keys and its peer address, and publish its organisation record signed\n"+
			"by the network operator (--key, --operator) through the registry node at --addr.\n"+
			"An existing record keeps its other fields; --name and --kind are needed for a new one.")
	o := clientFlags(fs, false)
	var nodeAddr, keyFile, operator, org, name, kindFlag, state, ars string
	fs.StringVar(&nodeAddr, "node", "", "API `url` of the node being onboarded")
	fs.StringVar(&keyFile, "key", os.Getenv("VERBUND_KEY"), "the operator's private signing JWK `file` (env VERBUND_KEY)")
	fs.StringVar(&operator, "operator", "", "the operator's organisation `id` (default: the registry node's organisation)")
	fs.StringVar(&org, "org", "", "organisation `id` (default: the one the node runs for)")
	fs.StringVar(&name, "name", "", "organisation `name` (for a new record)")
	fs.StringVar(&kindFlag, "kind", "", "organisation `kind` (for a new record): "+kindFlagValues())
	fs.StringVar(&state, "state", "", "two-digit state `code`")
	fs.StringVar(&ars, "ars", "", "12-digit `ARS` of its area")
	fs.check(func() error {
		if nodeAddr == "" || keyFile == "" {
			return fmt.Errorf("--node and --key are required")
		}
		var err error
		nodeAddr, err = apiURL("--node", nodeAddr)
		return err
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	opKey, err := keys.Load(keyFile)
	if err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	st, err := nodev1connect.NewNodeServiceClient(httpClient, nodeAddr).GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
	if err != nil {
		return fmt.Errorf("node %s: %w", nodeAddr, o.rpcErr(err))
	}
	if org == "" {
		org = st.Msg.GetOrganisationId()
	}
	if operator == "" {
		rs, err := o.node().GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
		if err != nil {
			return o.rpcErr(err)
		}
		operator = rs.Msg.GetOrganisationId()
	}
	rec := &registryv1.Organisation{Id: org}
	res, err := o.query().GetOrganisation(ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{Id: org,
		Read: &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}}))
	switch {
	case err == nil:
		rec = proto.Clone(res.Msg.GetOrganisation()).(*registryv1.Organisation)
	case connect.CodeOf(err) == connect.CodeNotFound:
		if name == "" || kindFlag == "" {
			return fs.usageErr("organisation %s is not registered yet: --name and --kind are required", org)
		}
	default:
		return o.rpcErr(err)
	}
	if name != "" {
		rec.Name = name
	}
	if kindFlag != "" {
		if rec.Kind, err = parseKind(kindFlag); err != nil {
			return fs.usageErr("%v", err)
		}
	}
	if state != "" {
		rec.StateCode = state
	}
	if ars != "" {
		rec.Ars = ars
	}
	rec.Revision, rec.UpdatedAtUnixMs, rec.UpdatedBy = 0, 0, ""
	rec.Keys = st.Msg.GetKeys()
	rec.ApiEndpoint = st.Msg.GetPeerUrl()
	rec.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE
	jws, err := registry.SignCommand(registry.NewCommand(operator, &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: rec}}), opKey)
	if err != nil {
		return err
	}
	pr, err := o.publisher().Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: []string{jws}}))
	if err != nil {
		return o.rpcErr(err)
	}
	if len(pr.Msg.GetResults()) == 0 {
		return fmt.Errorf("node %s returned no result for the command", o.addr)
	}
	r := pr.Msg.GetResults()[0]
	if r.GetErrorCode() != "" {
		return fmt.Errorf("%s: %s", r.GetErrorCode(), r.GetErrorMessage())
	}
	return o.emit(env, pr.Msg, nil, func(w io.Writer) {
		fmt.Fprintf(w, "onboarded %s (%s): %d keys, endpoint %s, at index %d\n", org, rec.GetName(), len(rec.GetKeys()), rec.GetApiEndpoint(), r.GetIndex())
	})
}
