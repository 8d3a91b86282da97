package node

import (
	"context"
	"testing"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/sampledata"
)

// ImportSampleData imports the embedded sample data through via's ordinary
// write path ((*Node).Publish: here on the leader, else forwarded), signed
// by the network operator's node op (its organisation and key) and by fresh
// keys for the sample organisations that sign (state agencies, Munich, the
// synthetic shared service centre), as the command line does for `verbund dev`.
// Exported for package node_test.
func ImportSampleData(t testing.TB, op, via *Node) sampledata.Summary {
	t.Helper()
	sum, err := sampledata.Import(context.Background(), nodePublisher{via}, sampledata.Options{
		OperatorID: op.Config().OrgID, OperatorKey: op.SigningKey(), Keys: sampledata.KeyFiles(t.TempDir()),
	})
	if err != nil {
		t.Fatalf("sample data import: %v", err)
	}
	return sum
}

// nodePublisher is a sampledata.Publisher over (*Node).Publish.
type nodePublisher struct{ n *Node }

func (p nodePublisher) Publish(ctx context.Context, signed []string) (*registryv1.PublishResponse, error) {
	res, idx, err := p.n.Publish(ctx, signed)
	if err != nil {
		return nil, err
	}
	return &registryv1.PublishResponse{Results: res, Index: idx}, nil
}
