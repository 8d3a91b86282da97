//go:build race

package node

// raceEnabled: the race detector slows the node about tenfold, too slow
// for timing tests (TestRateLimitFlood).
const raceEnabled = true
