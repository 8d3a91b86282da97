package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Applier is the part of *raft.Raft the Writer needs.
type Applier interface {
	Apply(cmd []byte, timeout time.Duration) raft.ApplyFuture
}

// WriterConfig tunes group commit.
type WriterConfig struct {
	// MaxEntryBytes caps the signed commands in one Raft log entry.
	MaxEntryBytes int
	// MaxInFlight bounds the log entries proposed but not yet applied.
	MaxInFlight int
	// ApplyTimeout bounds how long a proposal may wait to be enqueued.
	ApplyTimeout time.Duration
	Logger       *slog.Logger
	// Now is the leader clock stamped into entries (tests may fix it).
	Now func() time.Time
}

// Writer turns concurrent Submit calls into few Raft log entries (group
// commit): whatever is queued while an entry is being proposed goes into the
// next one, so under load each fsync carries many commands, and many entries
// are in flight at once so Raft can batch their disk writes too.
type Writer struct {
	r     Applier
	cfg   WriterConfig
	queue chan *proposal
	sem   chan struct{}
}

type proposal struct {
	ctx  context.Context
	cmds []*SignedCommand
	done chan proposalResult
}

type proposalResult struct {
	results []*registryv1.CommandResult
	index   uint64
	err     error
}

// NewWriter returns a Writer proposing to r. Call Run to start it.
func NewWriter(r Applier, cfg WriterConfig) *Writer {
	if cfg.MaxEntryBytes <= 0 {
		cfg.MaxEntryBytes = 512 << 10
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 64
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Writer{r: r, cfg: cfg, queue: make(chan *proposal, 4096), sem: make(chan struct{}, cfg.MaxInFlight)}
}

// Submit proposes cmds (already parsed and pre-verified) and waits until
// they are committed and applied. The error is ErrNotLeader if this node
// cannot propose (nothing was appended), ErrIndeterminate if the outcome is
// unknown (retry with the same command ids), or the context's error.
func (w *Writer) Submit(ctx context.Context, cmds []*SignedCommand) ([]*registryv1.CommandResult, uint64, error) {
	if len(cmds) == 0 {
		return nil, 0, nil
	}
	p := &proposal{ctx: ctx, cmds: cmds, done: make(chan proposalResult, 1)}
	select {
	case w.queue <- p:
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
	select {
	case r := <-p.done:
		return r.results, r.index, r.err
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("%w: %v", ErrIndeterminate, ctx.Err())
	}
}

// QueueLen is the number of proposals waiting to be batched (a metric).
func (w *Writer) QueueLen() int { return len(w.queue) }

// Run batches and proposes until ctx ends.
func (w *Writer) Run(ctx context.Context) {
	var carry *proposal
	for {
		var first *proposal
		if carry != nil {
			first, carry = carry, nil
		} else {
			select {
			case first = <-w.queue:
			case <-ctx.Done():
				return
			}
		}
		batch := []*proposal{first}
		size := proposalSize(first)
	drain:
		for size < w.cfg.MaxEntryBytes {
			select {
			case p := <-w.queue:
				if size+proposalSize(p) > w.cfg.MaxEntryBytes {
					carry = p
					break drain
				}
				batch = append(batch, p)
				size += proposalSize(p)
			default:
				break drain
			}
		}
		select {
		case w.sem <- struct{}{}:
		case <-ctx.Done():
			for _, p := range batch {
				p.done <- proposalResult{err: fmt.Errorf("%w: shutting down", ErrUnavailable)}
			}
			return
		}
		w.propose(batch)
	}
}

func proposalSize(p *proposal) int {
	n := 0
	for _, c := range p.cmds {
		n += len(c.Raw)
	}
	return n
}

func (w *Writer) propose(batch []*proposal) {
	entry := &registryv1.LogEntry{ProposedAtUnixMs: w.cfg.Now().UnixMilli()}
	live := batch[:0]
	for _, p := range batch {
		if p.ctx.Err() != nil {
			p.done <- proposalResult{err: fmt.Errorf("%w: %v", ErrUnavailable, p.ctx.Err())}
			continue
		}
		live = append(live, p)
		for _, c := range p.cmds {
			entry.SignedCommands = append(entry.SignedCommands, c.Raw)
		}
	}
	if len(live) == 0 {
		<-w.sem
		return
	}
	data, err := proto.Marshal(entry)
	if err != nil {
		<-w.sem
		for _, p := range live {
			p.done <- proposalResult{err: err}
		}
		return
	}
	f := w.r.Apply(data, w.cfg.ApplyTimeout)
	go func() {
		defer func() { <-w.sem }()
		err := f.Error()
		var lr *LogResult
		if err == nil {
			switch v := f.Response().(type) {
			case *LogResult:
				lr = v
			default:
				err = fmt.Errorf("%w: unexpected apply response %T", ErrIndeterminate, v)
			}
		} else {
			err = mapRaftError(err)
		}
		off := 0
		for _, p := range live {
			if err != nil {
				p.done <- proposalResult{err: err}
				continue
			}
			n := len(p.cmds)
			if off+n > len(lr.Results) {
				p.done <- proposalResult{err: fmt.Errorf("%w: short apply response", ErrIndeterminate)}
				continue
			}
			p.done <- proposalResult{results: lr.Results[off : off+n], index: lr.Index}
			off += n
		}
	}()
}

// mapRaftError classifies a Raft apply error: ErrNotLeader and an enqueue
// timeout mean nothing was appended; anything else after proposing means the
// outcome is unknown.
func mapRaftError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	default:
		return fmt.Errorf("%w: %v", ErrIndeterminate, err)
	}
}
