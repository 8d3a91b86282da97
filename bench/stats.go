// Package bench is the side-by-side benchmark of Verbund against etcd
// (issue 12): it starts a 3-voter Verbund cluster the way `make cluster`
// does and a 3-member etcd 3.4 cluster on loopback, drives both with one
// closed-loop load generator, and writes a Markdown table and SVG plots.
// cmd/verbund-bench is its command line; `make bench` and `make
// bench-smoke` run it.
package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, which must be in ascending order; 0 for an empty slice.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Result is what one run of one row measured.
type Result struct {
	Clients int
	Ops     int64 // operations that succeeded (for bulk rows: keys written)
	Calls   int64 // requests that succeeded
	Errors  int64
	// FirstError is the text of the first error, if any.
	FirstError string
	Elapsed    time.Duration
	P50, P99   time.Duration // per request
	// CPU is the machine's busy time during the run as a percentage of one
	// core (200 = both cores of a 2-core machine busy); -1 if unknown.
	CPU float64
	// ProcCPU is the CPU time (user + system) the cluster's processes and
	// the load generator used during the run; valid if ProcCPUOK. On a
	// machine shared with other work it is the cleaner figure.
	ProcCPU   time.Duration
	ProcCPUOK bool
}

// ProcPercent is ProcCPU as a percentage of one core over the run.
func (r Result) ProcPercent() float64 {
	if !r.ProcCPUOK || r.Elapsed <= 0 {
		return -1
	}
	return r.ProcCPU.Seconds() / r.Elapsed.Seconds() * 100
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux).
const clockTicks = 100

// procTicks sums utime + stime of the processes (their threads included;
// exited children not), 0 if none can be read.
func procTicks(pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		sum += parseProcStat(string(b))
	}
	return sum
}

// parseProcStat returns utime + stime (fields 14 and 15) of a
// /proc/<pid>/stat line; the command name (field 2) may hold spaces and
// parentheses, so fields are counted from its closing parenthesis.
func parseProcStat(s string) int64 {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 { // state is field 3: f[0]; utime f[11], stime f[12]
		return 0
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return u + st
}

// Rate is the throughput in operations per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// OK reports whether the run produced a throughput and no errors.
func (r Result) OK() bool { return r.Ops > 0 && r.Errors == 0 }

// cpuTimes is one reading of the aggregate "cpu" line of /proc/stat.
type cpuTimes struct{ busy, total uint64 }

// readCPU reads /proc/stat; ok is false where it is unavailable.
func readCPU() (cpuTimes, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, false
	}
	return parseCPU(b)
}

// parseCPU parses the first line of /proc/stat ("cpu user nice system
// idle iowait irq softirq steal ..."): idle and iowait are not busy.
func parseCPU(b []byte) (cpuTimes, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[0] != "cpu" {
			continue
		}
		var t cpuTimes
		for i, s := range f[1:] {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return cpuTimes{}, false
			}
			if i >= 8 { // guest times are already counted in user
				break
			}
			t.total += v
			if i != 3 && i != 4 {
				t.busy += v
			}
		}
		return t, true
	}
	return cpuTimes{}, false
}

// cpuPercent is the busy share between two readings, in percent of one
// core on a machine with ncpu cores.
func cpuPercent(a, b cpuTimes, ncpu int) float64 {
	if b.total <= a.total {
		return -1
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total) * 100 * float64(ncpu)
}

// sortDurations sorts in place and returns its argument.
func sortDurations(d []time.Duration) []time.Duration { slices.Sort(d); return d }

// FormatRate formats a throughput with thousands separators: "3,441/s".
func FormatRate(r float64) string { return Thousands(int64(math.Round(r))) + "/s" }

// Thousands formats n with commas: 1234567 -> "1,234,567".
func Thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// FormatDuration formats a latency compactly: "850 µs", "3.5 ms", "1.20 s".
func FormatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}
