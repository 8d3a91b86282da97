package cli

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/sampledata"
)

// The sample data is demo data: nodes do not link it. "verbund dev" and
// "verbund node --sample-data" load it from here, the command-line side,
// into the node running in this process, through the node's ordinary write
// path (the same signed commands "verbund import" sends over the API).

// localNode is the write path of the node running in this process:
// (*node.Node).Publish, which applies here on the leader and forwards to
// the leader otherwise.
type localNode interface {
	Publish(ctx context.Context, signed []string) ([]*registryv1.CommandResult, uint64, error)
}

// nodePublisher adapts a localNode to sampledata.Publisher.
type nodePublisher struct{ n localNode }

func (p nodePublisher) Publish(ctx context.Context, signed []string) (*registryv1.PublishResponse, error) {
	res, idx, err := p.n.Publish(ctx, signed)
	if err != nil {
		return nil, err
	}
	return &registryv1.PublishResponse{Results: res, Index: idx}, nil
}

// sampleKeyFile is where Munich's sample signing key is kept in a node's
// data dir: generated on the first import and reused after, so that a
// restart resumes the import with the same key.
func sampleKeyFile(dataDir string) string {
	return filepath.Join(dataDir, "keys", "sample", sampledata.MunichARS+".jwk")
}

// loadSampleData imports the embedded public sample data through n, signed
// by the network operator (operatorID with operatorKey, the node's own
// signing key on a genesis node) and, for Munich's offerings, by Munich's
// key kept in dataDir. It is idempotent: commands the registry already
// applied come back as duplicates, so a restarted node resumes where the
// last import stopped. Progress goes to log at most every two seconds per
// phase.
func loadSampleData(ctx context.Context, log *slog.Logger, n localNode, dataDir, operatorID string, operatorKey jose.JSONWebKey) error {
	munich, created, err := keys.LoadOrGenerate(sampleKeyFile(dataDir), keys.GenerateSigning, sampledata.MunichARS+"-sig")
	if err != nil {
		return err
	}
	if created {
		log.Info("generated sample key for Munich", "kid", munich.KeyID)
	}
	start := time.Now()
	last := time.Time{}
	sum, err := sampledata.Import(ctx, nodePublisher{n}, sampledata.Options{
		OperatorID:  operatorID,
		OperatorKey: operatorKey,
		MunichKey:   munich,
		OnProgress: func(p sampledata.Progress) {
			if time.Since(last) > 2*time.Second || p.Done == p.Total {
				last = time.Now()
				log.Info("sample data import", "phase", p.Phase, "done", p.Done, "total", p.Total)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("sample data import: %w", err)
	}
	log.Info("sample data loaded", "summary", fmt.Sprintf("%+v", sum), "took", time.Since(start).Round(time.Millisecond))
	return nil
}
