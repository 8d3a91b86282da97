package walbench

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"

	"github.com/verbund/verbund/node/raftlog"
	"github.com/verbund/verbund/node/raftlog/walbench/raftbadger"
)

// countingFS counts file syncs (fdatasync) and directory syncs.
type countingFS struct {
	raftlog.FS
	syncs atomic.Int64
}

func (c *countingFS) OpenFile(name string, flag int) (raftlog.File, error) {
	f, err := c.FS.OpenFile(name, flag)
	if err != nil {
		return nil, err
	}
	return countingFile{f, &c.syncs}, nil
}

func (c *countingFS) SyncDir(dir string) error {
	c.syncs.Add(1)
	return c.FS.SyncDir(dir)
}

type countingFile struct {
	raftlog.File
	n *atomic.Int64
}

func (f countingFile) Sync() error {
	f.n.Add(1)
	return f.File.Sync()
}

type logStore interface {
	StoreLogs([]*raft.Log) error
	Close() error
}

type candidate struct {
	name string
	open func(b *testing.B, dir string) (logStore, func() int64)
}

var candidates = []candidate{
	{"raftlog", func(b *testing.B, dir string) (logStore, func() int64) {
		fs := &countingFS{FS: raftlog.OS{}}
		s, err := raftlog.Open(dir, raftlog.Options{FS: fs, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		return s, fs.syncs.Load
	}},
	{"raftbadger", func(b *testing.B, dir string) (logStore, func() int64) {
		s, err := raftbadger.Open(dir, nil)
		if err != nil {
			b.Fatal(err)
		}
		return s, nil
	}},
	{"raft-wal-v0.4.2", func(b *testing.B, dir string) (logStore, func() int64) {
		s, err := wal.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		return s, nil
	}},
}

// BenchmarkSyncedBatchAppend appends batches of ~1 KiB entries, each batch
// one StoreLogs call that returns only once the batch is durable.
func BenchmarkSyncedBatchAppend(b *testing.B) {
	data := make([]byte, 1024)
	for i := range data {
		data[i] = byte(rand.N(256))
	}
	for _, c := range candidates {
		for _, n := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/batch=%d", c.name, n), func(b *testing.B) {
				s, syncs := c.open(b, b.TempDir())
				defer s.Close()
				batch := make([]*raft.Log, n)
				idx := uint64(1)
				var synced0 int64
				if syncs != nil {
					synced0 = syncs()
				}
				start := time.Now()
				batches := 0
				for b.Loop() {
					for i := range batch {
						batch[i] = &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}
						idx++
					}
					if err := s.StoreLogs(batch); err != nil {
						b.Fatal(err)
					}
					batches++
				}
				sec := time.Since(start).Seconds()
				b.ReportMetric(float64(batches*n)/sec, "entries/s")
				b.ReportMetric(float64(batches)/sec, "batches/s")
				if syncs != nil {
					b.ReportMetric(float64(syncs()-synced0)/sec, "fsyncs/s")
				}
			})
		}
	}
}
