package nodetest

import (
	"context"
	"log/slog"
	"sync"
	"testing"
)

// logCounts counts the log messages of every node of a cluster, at info
// level and above whatever level reaches t.Log, so a test can observe events
// that are only logged (a snapshot restored, a server removed from Raft)
// without flooding its output.
type logCounts struct {
	mu sync.Mutex
	n  map[string]int
}

// LogCount is how many times any node of the cluster logged msg (the exact
// slog message, e.g. "registry restored from snapshot") at info level or
// above since the cluster started.
func (c *Cluster) LogCount(msg string) int {
	c.logs.mu.Lock()
	defer c.logs.mu.Unlock()
	return c.logs.n[msg]
}

// newLogger returns a node's logger: records at opts.LogLevel and above go
// to t.Log, records at info and above are counted.
func (c *Cluster) newLogger(t testing.TB, prefix string) *slog.Logger {
	inner := slog.NewTextHandler(&tlog{t: t, prefix: prefix}, &slog.HandlerOptions{Level: c.opts.LogLevel})
	return slog.New(&countingHandler{inner: inner, counts: &c.logs, level: c.opts.LogLevel})
}

type countingHandler struct {
	inner  slog.Handler
	counts *logCounts
	level  slog.Level
}

var _ slog.Handler = (*countingHandler)(nil)

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || l >= h.level
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelInfo {
		h.counts.mu.Lock()
		if h.counts.n == nil {
			h.counts.n = map[string]int{}
		}
		h.counts.n[r.Message]++
		h.counts.mu.Unlock()
	}
	if r.Level >= h.level {
		return h.inner.Handle(ctx, r)
	}
	return nil
}

func (h *countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &countingHandler{inner: h.inner.WithAttrs(as), counts: h.counts, level: h.level}
}

func (h *countingHandler) WithGroup(name string) slog.Handler {
	return &countingHandler{inner: h.inner.WithGroup(name), counts: h.counts, level: h.level}
}
