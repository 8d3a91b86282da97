package nodetest

import (
	"sync/atomic"
	"time"

	"github.com/verbund/verbund/node"
)

// Clock is a wall clock that a test can jump: the real time plus an
// offset. Injected as node.Config.Clock it moves everything a node stamps
// and judges by wall time (the proposal time of log entries, its own
// commands' issue times, the handover service's times) while Raft's timers,
// which run on Go's monotonic clock, are unaffected, as on a machine whose
// clock is stepped by an operator or a broken time source.
type Clock struct{ offset atomic.Int64 }

// Now is the real time plus the offset.
func (c *Clock) Now() time.Time { return time.Now().Add(c.Offset()) }

// Set makes the clock run d ahead of the real time (behind for d < 0).
func (c *Clock) Set(d time.Duration) { c.offset.Store(int64(d)) }

// Offset is how far the clock runs ahead of the real time.
func (c *Clock) Offset() time.Duration { return time.Duration(c.offset.Load()) }

// Clocks returns n clocks and an Options.Configure that gives node i
// clocks[i] (nodes beyond n keep the real clock).
func Clocks(n int) ([]*Clock, func(int, *node.Config)) {
	cs := make([]*Clock, n)
	for i := range cs {
		cs[i] = &Clock{}
	}
	return cs, func(i int, cfg *node.Config) {
		if i < len(cs) {
			cfg.Clock = cs[i].Now
		}
	}
}
