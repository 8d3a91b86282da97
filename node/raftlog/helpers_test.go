package raftlog_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node/raftlog"
)

// entries makes entries from..to with the given term and data derived from
// the index and a salt, of varied sizes (0 to ~300 bytes).
func entries(from, to, term uint64, salt byte) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		n := int(i*7+uint64(salt)) % 300
		data := make([]byte, n)
		for j := range data {
			data[j] = byte(i) ^ byte(j) ^ salt
		}
		l := &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: data,
			AppendedAt: time.Unix(1700000000, int64(i)*1000+int64(salt))}
		if i%3 == 0 {
			l.Extensions = []byte{salt, byte(i)}
		}
		if i%5 == 0 {
			l.Type = raft.LogNoop
			l.Data = nil
		}
		out = append(out, l)
	}
	return out
}

// model is what a log store must serve: its live entries and stable values.
type model struct {
	logs   map[uint64]raft.Log
	stable map[string]string
}

func newModel() *model { return &model{logs: map[uint64]raft.Log{}, stable: map[string]string{}} }

func (m *model) clone() *model {
	return &model{logs: maps.Clone(m.logs), stable: maps.Clone(m.stable)}
}

func (m *model) bounds() (first, last uint64) {
	for i := range m.logs {
		if first == 0 || i < first {
			first = i
		}
		last = max(last, i)
	}
	return first, last
}

func (m *model) store(ls []*raft.Log) {
	for _, l := range ls {
		m.logs[l.Index] = *l
	}
}

func (m *model) deleteRange(lo, hi uint64) {
	for i := range m.logs {
		if i >= lo && i <= hi {
			delete(m.logs, i)
		}
	}
}

// diff compares what s serves with m and describes the first difference
// ("" if none).
func diff(s *raftlog.Store, m *model) string {
	first, last := m.bounds()
	if f, err := s.FirstIndex(); err != nil || f != first {
		return fmt.Sprintf("FirstIndex %d (%v), want %d", f, err, first)
	}
	if l, err := s.LastIndex(); err != nil || l != last {
		return fmt.Sprintf("LastIndex %d (%v), want %d", l, err, last)
	}
	lo := uint64(1)
	if first > 3 {
		lo = first - 3
	}
	for i := lo; i <= last+3; i++ {
		var got raft.Log
		err := s.GetLog(i, &got)
		want, ok := m.logs[i]
		if !ok {
			if err != raft.ErrLogNotFound {
				return fmt.Sprintf("GetLog(%d) = %v, %v; want ErrLogNotFound", i, got.Index, err)
			}
			continue
		}
		if err != nil {
			return fmt.Sprintf("GetLog(%d): %v", i, err)
		}
		if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type ||
			!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) ||
			!got.AppendedAt.Equal(want.AppendedAt) || (got.Data == nil) != (len(want.Data) == 0) {
			return fmt.Sprintf("GetLog(%d) = %+v, want %+v", i, got, want)
		}
	}
	keys := slices.Sorted(maps.Keys(m.stable))
	for _, k := range keys {
		v, err := s.Get([]byte(k))
		if err != nil || string(v) != m.stable[k] {
			return fmt.Sprintf("Get(%q) = %q, %v; want %q", k, v, err, m.stable[k])
		}
	}
	for _, k := range []string{"CurrentTerm", "LastVoteTerm", "LastVoteCand"} {
		if _, ok := m.stable[k]; !ok {
			if _, err := s.Get([]byte(k)); err == nil || err.Error() != "not found" {
				return fmt.Sprintf("Get(%q) of a missing key: %v, want \"not found\"", k, err)
			}
		}
	}
	return ""
}

func check(t *testing.T, s *raftlog.Store, m *model) {
	t.Helper()
	if d := diff(s, m); d != "" {
		t.Fatal(d)
	}
}

func mustOpen(t testing.TB, dir string, opts raftlog.Options) *raftlog.Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := raftlog.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// logCapture is a slog handler that keeps the records, for tests that
// check what the store logged.
type logCapture struct {
	mu   sync.Mutex
	recs []string
}

func (c *logCapture) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.recs = append(c.recs, string(p))
		return len(p), nil
	}), nil))
}

func (c *logCapture) lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.recs)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

var _ = rand.New
