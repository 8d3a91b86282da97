package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
	"github.com/verbund/verbund/sampledata"
)

// genesis registers this node's organisation as the network operator on an
// empty registry (the one command that is verified against a key carried in
// itself), then imports the sample data if configured. Both are idempotent:
// a restart finds the operator and resumes the import.
func (n *Node) genesis(ctx context.Context) error {
	if err := n.waitLeader(ctx, 30*time.Second); err != nil {
		return err
	}
	op, err := n.reader.Operator()
	if err != nil {
		return err
	}
	if op == "" {
		pub, err := keys.Published(n.keys().sig)
		if err != nil {
			return err
		}
		encPub, err := keys.Published(n.keys().enc)
		if err != nil {
			return err
		}
		name := n.cfg.OrgName
		if name == "" {
			name = "Verbund network operator"
		}
		cmd := registry.NewCommand(n.cfg.OrgID, &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
			Id:          n.cfg.OrgID,
			Kind:        registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR,
			Name:        name,
			ApiEndpoint: n.PeerURL(),
			Keys:        []*registryv1.PublicKey{pub, encPub},
			Status:      registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
		}}})
		if err := n.publishOne(ctx, cmd); err != nil {
			return fmt.Errorf("genesis: %w", err)
		}
		n.log.Info("genesis: registered network operator", "org", n.cfg.OrgID, "kid", n.keys().sig.KeyID)
	} else if op != n.cfg.OrgID {
		n.log.Info("registry already has an operator", "operator", op)
	}
	if n.cfg.SampleData {
		return n.importSampleData(ctx)
	}
	return nil
}

func (n *Node) publishOne(ctx context.Context, cmd *registryv1.Command) error {
	jws, err := registry.SignCommand(cmd, n.keys().sig)
	if err != nil {
		return err
	}
	res, _, err := n.Publish(ctx, []string{jws})
	if err != nil {
		return err
	}
	if c := res[0].GetErrorCode(); c != "" {
		return registry.ErrorFromCode(c, res[0].GetErrorMessage())
	}
	return nil
}

func (n *Node) waitLeader(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n.raft.State() != raft.Leader {
		select {
		case <-ctx.Done():
			return errors.New("no leadership: this node did not become Raft leader in time")
		case <-t.C:
		}
	}
	return nil
}

// importSampleData loads the embedded public data through the signed write
// path. Munich's own key is generated once and kept in the data dir, so
// Munich's offerings are signed by Munich.
func (n *Node) importSampleData(ctx context.Context) error {
	munich, created, err := keys.LoadOrGenerate(filepath.Join(n.cfg.DataDir, "keys", "sample", sampledata.MunichARS+".jwk"), keys.GenerateSigning, sampledata.MunichARS+"-sig")
	if err != nil {
		return err
	}
	if created {
		n.log.Info("generated sample key for Munich", "kid", munich.KeyID)
	}
	start := time.Now()
	last := time.Time{}
	sum, err := sampledata.Import(ctx, localPublisher{n}, sampledata.Options{
		OperatorID:  n.cfg.OrgID,
		OperatorKey: n.keys().sig,
		MunichKey:   munich,
		OnProgress: func(p sampledata.Progress) {
			if time.Since(last) > 2*time.Second || p.Done == p.Total {
				last = time.Now()
				n.log.Info("sample data import", "phase", p.Phase, "done", p.Done, "total", p.Total)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("sample data import: %w", err)
	}
	n.log.Info("sample data loaded", "summary", fmt.Sprintf("%+v", sum), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// localPublisher publishes through this node, without a network hop.
type localPublisher struct{ n *Node }

func (p localPublisher) Publish(ctx context.Context, signed []string) (*registryv1.PublishResponse, error) {
	res, idx, err := p.n.Publish(ctx, signed)
	if err != nil {
		return nil, err
	}
	return &registryv1.PublishResponse{Results: res, Index: idx}, nil
}
