package bench

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var d []time.Duration
		for _, x := range n {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, c := range []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 50, 7 * time.Millisecond},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 50, 2 * time.Millisecond}, // nearest rank: ceil(0.5*4) = 2
		{ms(1, 2, 3, 4), 99, 4 * time.Millisecond},
		{hundred, 50, 50 * time.Millisecond},
		{hundred, 99, 99 * time.Millisecond},
		{hundred, 100, 100 * time.Millisecond},
		{hundred, 0.1, time.Millisecond},
	} {
		if got := Percentile(c.in, c.p); got != c.want {
			t.Errorf("Percentile(%d values, %v) = %v, want %v", len(c.in), c.p, got, c.want)
		}
	}
}

func TestFormatting(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -4200: "-4,200"} {
		if got := Thousands(in); got != want {
			t.Errorf("Thousands(%d) = %q, want %q", in, got, want)
		}
	}
	if got := FormatRate(3440.6); got != "3,441/s" {
		t.Errorf("FormatRate = %q", got)
	}
	for in, want := range map[time.Duration]string{
		850 * time.Microsecond: "850 µs", 3500 * time.Microsecond: "3.5 ms", 36 * time.Millisecond: "36 ms", 1200 * time.Millisecond: "1.20 s",
	} {
		if got := FormatDuration(in); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestCPU(t *testing.T) {
	a, ok := parseCPU([]byte("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n"))
	if !ok || a.busy != 150 || a.total != 1000 {
		t.Fatalf("parseCPU = %+v, %v", a, ok)
	}
	b, _ := parseCPU([]byte("cpu  400 0 100 1200 100 0 0 0 0 0\n"))
	// 350 busy of 800 elapsed jiffies on 2 cores: 87.5% of one core.
	if got := cpuPercent(a, b, 2); got != 87.5 {
		t.Errorf("cpuPercent = %v, want 87.5", got)
	}
	if _, ok := parseCPU([]byte("intr 1 2 3\n")); ok {
		t.Error("parseCPU accepted a file without a cpu line")
	}
}

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and parentheses; utime 1234, stime 56.
	line := "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 8 0 12345 1000000 250 18446744073709551615"
	if got := parseProcStat(line); got != 1290 {
		t.Errorf("parseProcStat = %d, want 1290", got)
	}
	if got := parseProcStat("garbage"); got != 0 {
		t.Errorf("parseProcStat(garbage) = %d", got)
	}
	// This process burns CPU: its ticks grow.
	a := procTicks([]int{os.Getpid()})
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
	}
	if b := procTicks([]int{os.Getpid()}); b <= a {
		t.Errorf("own CPU ticks %d -> %d after 300 ms of work", a, b)
	}
}

func TestRun(t *testing.T) {
	var calls atomic.Int64
	r := Run(context.Background(), 4, 200*time.Millisecond, func(ctx context.Context, w int) (int, error) {
		n := calls.Add(1)
		time.Sleep(time.Millisecond)
		if n%10 == 0 {
			return 0, errors.New("every tenth fails")
		}
		return 2, nil
	})
	if r.Clients != 4 || r.Calls == 0 || r.Errors == 0 || r.FirstError != "every tenth fails" {
		t.Fatalf("Run = %+v", r)
	}
	if r.Ops != 2*r.Calls || r.Calls+r.Errors != calls.Load() {
		t.Errorf("ops %d, calls %d, errors %d, op called %d times", r.Ops, r.Calls, r.Errors, calls.Load())
	}
	if r.Elapsed < 200*time.Millisecond || r.Elapsed > 2*time.Second || r.P50 < time.Millisecond || r.P99 < r.P50 {
		t.Errorf("elapsed %v, p50 %v, p99 %v", r.Elapsed, r.P50, r.P99)
	}
	if r.OK() {
		t.Error("a run with errors is OK")
	}
	// Inputs running out end the run early, without errors.
	var left atomic.Int64
	left.Store(50)
	start := time.Now()
	r = Run(context.Background(), 3, time.Minute, func(ctx context.Context, w int) (int, error) {
		if left.Add(-1) < 0 {
			return 0, ErrExhausted
		}
		return 1, nil
	})
	if r.Ops != 50 || r.Errors != 0 || !r.OK() || time.Since(start) > 10*time.Second {
		t.Errorf("exhausted run: %+v after %v", r, time.Since(start))
	}
}
