package bench

import (
	"context"
	"errors"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrExhausted is returned by an Op whose pre-made inputs (signed
// commands) ran out: the worker stops without counting an error.
var ErrExhausted = errors.New("bench: inputs exhausted")

// Op performs one request for worker w (0 <= w < clients); n is the
// number of operations the request carried (1, or 1,000 for a bulk
// request). An Op must be safe for concurrent use by different workers.
type Op func(ctx context.Context, w int) (n int, err error)

// RequestTimeout bounds one request of a row.
const RequestTimeout = 30 * time.Second

// Run drives op from clients closed-loop workers for d (or until ctx ends
// or the inputs run out) and measures throughput, per-request latency and
// the machine's CPU use. Workers start no request after d; requests under
// way then finish (each bounded by RequestTimeout) and count.
func Run(ctx context.Context, clients int, d time.Duration, op Op) Result {
	return RunWith(ctx, clients, d, nil, op)
}

// RunWith is Run that also measures the CPU time of the processes pids
// (the cluster's) and of this process (the load generator) during the
// run: Result.ProcCPU.
func RunWith(ctx context.Context, clients int, d time.Duration, pids []int, op Op) Result {
	pids = append(slices.Clone(pids), os.Getpid())
	p0 := procTicks(pids)
	var (
		ops, calls, errs atomic.Int64
		firstErr         atomic.Value
		wg               sync.WaitGroup
	)
	lats := make([][]time.Duration, clients)
	cpu0, cpuOK := readCPU()
	start := time.Now()
	end := start.Add(d)
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, 1024)
			for ctx.Err() == nil && time.Now().Before(end) {
				t := time.Now()
				rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
				n, err := op(rctx, w)
				cancel()
				el := time.Since(t)
				if errors.Is(err, ErrExhausted) {
					break
				}
				if err != nil {
					if ctx.Err() != nil { // interrupted
						break
					}
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ops.Add(int64(n))
				calls.Add(1)
				l = append(l, el)
			}
			lats[w] = l
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, _ := readCPU()
	p1 := procTicks(pids)
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	sortDurations(all)
	r := Result{
		Clients: clients, Ops: ops.Load(), Calls: calls.Load(), Errors: errs.Load(),
		Elapsed: elapsed, P50: Percentile(all, 50), P99: Percentile(all, 99), CPU: -1,
	}
	if s, ok := firstErr.Load().(string); ok {
		r.FirstError = s
	}
	if cpuOK {
		r.CPU = cpuPercent(cpu0, cpu1, runtime.NumCPU())
	}
	r.ProcCPU = time.Duration(p1-p0) * time.Second / clockTicks
	r.ProcCPUOK = p0 > 0
	return r
}
