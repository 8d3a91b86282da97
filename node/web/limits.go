package web

import (
	"net"
	"sync"
	"time"
)

// addrLimiter allows n events per window per source address (fixed
// windows): the limit on guessing tracking codes. The node's own rate
// limits apply to every API call besides.
type addrLimiter struct {
	n      int
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	start time.Time
	count map[string]int
}

func newAddrLimiter(n int, window time.Duration, now func() time.Time) *addrLimiter {
	return &addrLimiter{n: n, window: window, now: now, count: map[string]int{}}
}

// allow counts one event for remoteAddr and reports whether it is within
// the limit.
func (l *addrLimiter) allow(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := l.now(); now.Sub(l.start) >= l.window {
		l.start = now
		clear(l.count)
	}
	l.count[host]++
	return l.count[host] <= l.n
}
