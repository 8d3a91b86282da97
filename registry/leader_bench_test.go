package registry

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// directApplier is a one-node "Raft" without disk or network: each Apply
// is applied to the FSM at once, in order.
type directApplier struct {
	mu    sync.Mutex
	fsm   *FSM
	index uint64
}

type doneFuture struct {
	index uint64
	resp  interface{}
}

func (f doneFuture) Error() error          { return nil }
func (f doneFuture) Index() uint64         { return f.index }
func (f doneFuture) Response() interface{} { return f.resp }

func (d *directApplier) Apply(cmd []byte, _ time.Duration) raft.ApplyFuture {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.index++
	return doneFuture{d.index, d.fsm.Apply(&raft.Log{Index: d.index, Type: raft.LogCommand, Data: cmd})}
}

// BenchmarkLeaderPublish: the registry's share of a write on the leader,
// without Raft's disk and network: Admission (parse, verify, dedupe
// lookup), group commit, and the FSM's parse, verification (from the
// cache) and apply, for signed offerings of about 1 KiB from 16
// concurrent publishers.
//
//	go test -run '^$' -bench LeaderPublish -benchtime 20000x -count 6 ./registry
func BenchmarkLeaderPublish(b *testing.B) {
	w := newWorld(b)
	app := &directApplier{fsm: w.fsm, index: w.index}
	wr := NewWriter(app, WriterConfig{Now: func() time.Time { return time.UnixMilli(w.now) }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go wr.Run(ctx)
	adm := NewAdmission(w.fsm, wr)
	pad := strings.Repeat("x", 600)
	cmds := make([]string, b.N)
	for i := range cmds {
		o := offering(arsMuni, leikaGewerbe, arsMuni)
		o.Id = fmt.Sprintf("%s:%s:b%d", arsMuni, leikaGewerbe, i)
		o.Name = "Angebot " + pad[:200]
		o.Channels = []*registryv1.Channel{{Kind: registryv1.ChannelKind_CHANNEL_KIND_ONLINE, Url: "https://example.org/" + fmt.Sprint(i), Note: pad[:300]}}
		cmds[i] = w.signed(w.muni, mPutOffering(o))
	}
	var next sync.WaitGroup
	var mu sync.Mutex
	i := 0
	cpu0 := processCPU()
	b.ResetTimer()
	for c := 0; c < 16; c++ {
		next.Add(1)
		go func() {
			defer next.Done()
			for {
				mu.Lock()
				k := i
				i++
				mu.Unlock()
				if k >= len(cmds) {
					return
				}
				rs, _, err := adm.Publish(ctx, []string{cmds[k]})
				if err != nil || rs[0].GetErrorCode() != "" {
					b.Errorf("publish: %v %v", err, rs)
					return
				}
			}
		}()
	}
	next.Wait()
	b.StopTimer()
	// CPU per write: steadier than ns/op on a shared machine.
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/write")
}

// processCPU is the user+system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
