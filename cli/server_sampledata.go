package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
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

// sampleKeysDir is where the sample organisations' signing keys (state
// agencies, Munich, the synthetic shared service centre) are kept in a
// node's data dir: generated on the first import and reused after, so that
// a restart resumes the import with the same keys.
func sampleKeysDir(dataDir string) string {
	return filepath.Join(dataDir, "keys", "sample")
}

// orgLookup is what the import reads from the node in this process to skip
// steps that are done and cannot be repeated (sampledata.Options.Lookup).
type orgLookup interface {
	Organisation(id string) (*registryv1.Organisation, uint64, error)
}

// loadSampleData imports the embedded public sample data through n through
// the governance rules (see sampledata.Import): the network operator
// (operatorID with operatorKey, the node's own signing key on a genesis
// node) registers the state agencies, whose keys, like Munich's and the
// synthetic shared service centre's, are kept in dataDir/keys/sample. It is
// idempotent: commands the registry already applied come back as
// duplicates, so a restarted node resumes where the last import stopped.
// reader, if not nil, is the node's local registry state. Progress goes to
// log at most every two seconds per phase.
func loadSampleData(ctx context.Context, log *slog.Logger, n localNode, reader orgLookup, dataDir, operatorID string, operatorKey jose.JSONWebKey) error {
	dir := sampleKeysDir(dataDir)
	ids, err := sampledata.KeyedOrganisations()
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, created, err := keys.LoadOrGenerate(filepath.Join(dir, id+".jwk"), keys.GenerateSigning, id+"-sig"); err != nil {
			return err
		} else if created {
			log.Info("generated sample key", "org", id, "dir", dir)
		}
	}
	var lookup func(ctx context.Context, id string) (*registryv1.Organisation, error)
	if reader != nil {
		lookup = func(_ context.Context, id string) (*registryv1.Organisation, error) {
			o, _, err := reader.Organisation(id)
			if errors.Is(err, registry.ErrNotFound) {
				return nil, nil
			}
			return o, err
		}
	}
	start := time.Now()
	last := time.Time{}
	sum, err := sampledata.Import(ctx, nodePublisher{n}, sampledata.Options{
		OperatorID:  operatorID,
		OperatorKey: operatorKey,
		Keys:        sampledata.KeyFiles(dir),
		Lookup:      lookup,
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
