package node

import (
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/verbund/verbund/registry"
)

// Metrics: Prometheus text format on the admin listener under /metrics
// (next to pprof; access.go: admin listener only). Each node has its own
// registry (tests run many nodes in one process). Most values are read
// from the node's state when scraped (nodeCollector), so nothing is kept
// twice; the rest are counters and a histogram updated where the work
// happens.
//
//	verbund_rate_limit_refusals_total{listener,class}  requests refused by the rate limiter
//	verbund_rate_limit_tracked_callers                 callers in the limiter tables
//	verbund_expiry_remaining_seconds{what,id}          keys and certificates: seconds until not_after (negative: expired)
//	verbund_registry_applied_index                     the index the registry state reflects
//	verbund_raft_commit_index, _last_log_index, _term, _is_leader   (servers)
//	verbund_raft_apply_seconds                         time the registry FSM takes per applied batch (servers)
//	verbund_raft_snapshots_written_total, verbund_raft_snapshot_last_{index,bytes,seconds}   snapshots this process wrote (servers)
//	verbund_write_queue_depth                          proposals waiting for the writer (servers)
//	verbund_feed_staleness_seconds                     time since the source of this node's state was heard from
//	verbund_handover_*                                 the handover service's counters and outbox queue
//
// Left for issue 12: Raft commit latency (hashicorp/raft reports it
// through go-metrics, which needs a sink per process), signature
// verifications and refusals per admission (registry.Admission has no
// counters yet), and per-procedure request latency (a Connect
// interceptor).
type metrics struct {
	reg          *prometheus.Registry
	refusals     *prometheus.CounterVec
	applySeconds prometheus.Histogram
}

func newMetrics(n *Node) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "verbund_rate_limit_refusals_total",
			Help: "Requests refused by the rate limiter, by listener and budget class.",
		}, []string{"listener", "class"}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "verbund_raft_apply_seconds",
			Help:    "Time the registry state machine took to apply one batch of Raft log entries.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16), // 50 µs .. 1.6 s
		}),
	}
	m.reg.MustRegister(m.refusals, m.applySeconds, nodeCollector{n},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handler serves the registry in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// rateLimited counts one refusal (m may be nil).
func (m *metrics) rateLimited(l listener, c limitClass) {
	if m == nil {
		return
	}
	m.refusals.WithLabelValues(l.String(), c.String()).Inc()
}

// timedFSM is the registry FSM as Raft sees it, timing each applied batch.
// Snapshot and Restore are the FSM's own.
type timedFSM struct {
	*registry.FSM
	seconds prometheus.Observer
}

var _ raft.BatchingFSM = timedFSM{}

func (f timedFSM) Apply(l *raft.Log) interface{} { return f.ApplyBatch([]*raft.Log{l})[0] }

func (f timedFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	start := time.Now()
	defer func() { f.seconds.Observe(time.Since(start).Seconds()) }()
	return f.FSM.ApplyBatch(logs)
}

// nodeCollector reads the node's state when scraped.
type nodeCollector struct{ n *Node }

var (
	descTracked   = prometheus.NewDesc("verbund_rate_limit_tracked_callers", "Callers (addresses, identities, nodes) held in the rate limiter's tables.", nil, nil)
	descExpiry    = prometheus.NewDesc("verbund_expiry_remaining_seconds", "Seconds until a key or certificate this node relies on expires (negative: expired).", []string{"what", "id"}, nil)
	descApplied   = prometheus.NewDesc("verbund_registry_applied_index", "Raft index the node's registry state reflects.", nil, nil)
	descCommit    = prometheus.NewDesc("verbund_raft_commit_index", "Raft commit index known to this server.", nil, nil)
	descLastLog   = prometheus.NewDesc("verbund_raft_last_log_index", "Last index in this server's Raft log.", nil, nil)
	descTerm      = prometheus.NewDesc("verbund_raft_term", "Current Raft term.", nil, nil)
	descLeader    = prometheus.NewDesc("verbund_raft_is_leader", "1 if this server is the Raft leader.", nil, nil)
	descQueue     = prometheus.NewDesc("verbund_write_queue_depth", "Registry write proposals waiting for the writer (leader).", nil, nil)
	descStale     = prometheus.NewDesc("verbund_feed_staleness_seconds", "Seconds since this node last heard from the source of its state (0 on the leader; -0.001: never).", nil, nil)
	descHOPending = prometheus.NewDesc("verbund_handover_outbox_pending", "Handovers and events waiting in the outbox for delivery.", nil, nil)
	descHOCount   = prometheus.NewDesc("verbund_handover_total", "Handover service counters by event.", []string{"event"}, nil)
	descSnapCount = prometheus.NewDesc("verbund_raft_snapshots_written_total", "Raft snapshots this process wrote (servers).", nil, nil)
	descSnapIndex = prometheus.NewDesc("verbund_raft_snapshot_last_index", "Raft index of the last snapshot this process wrote.", nil, nil)
	descSnapBytes = prometheus.NewDesc("verbund_raft_snapshot_last_bytes", "Size of the last snapshot this process wrote (the state machine's stream).", nil, nil)
	descSnapSecs  = prometheus.NewDesc("verbund_raft_snapshot_last_seconds", "Time the last snapshot took, from its start to its files synced.", nil, nil)
	descHOReject  = prometheus.NewDesc("verbund_handover_rejected_total", "Refused handover and event deliveries (including failed signature checks) by reason.", []string{"reason"}, nil)
)

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTracked, descExpiry, descApplied, descCommit, descLastLog, descTerm, descLeader, descQueue, descStale, descHOPending, descHOCount, descHOReject, descSnapCount, descSnapIndex, descSnapBytes, descSnapSecs} {
		ch <- d
	}
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descTracked, float64(n.limiter.Load().tracked()))
	now := n.cfg.Clock()
	for _, it := range n.expiryItems() {
		gauge(descExpiry, it.notAfter.Sub(now).Seconds(), it.what, it.id)
	}
	if n.snaps != nil {
		w := n.snaps.written()
		counter(descSnapCount, w.count)
		if w.count > 0 {
			gauge(descSnapIndex, float64(w.index))
			gauge(descSnapBytes, float64(w.bytes))
			gauge(descSnapSecs, w.seconds)
		}
	}
	if n.state != nil {
		gauge(descApplied, float64(n.state.AppliedIndex()))
	}
	if r := n.raft; r != nil {
		gauge(descCommit, float64(r.CommitIndex()))
		gauge(descLastLog, float64(r.LastIndex()))
		if t, err := strconv.ParseUint(r.Stats()["term"], 10, 64); err == nil {
			gauge(descTerm, float64(t))
		}
		leader := 0.0
		if r.State() == raft.Leader {
			leader = 1
		}
		gauge(descLeader, leader)
	}
	if n.writer != nil {
		gauge(descQueue, float64(n.writer.QueueLen()))
	}
	if n.raft != nil || n.feedCopy != nil {
		gauge(descStale, n.staleness().Seconds())
	}
	if h := n.handover; h != nil {
		st := h.Stats()
		gauge(descHOPending, float64(st.Pending))
		for ev, v := range map[string]uint64{
			"sent": st.Sent, "delivered": st.Delivered, "received": st.Received, "duplicate": st.Duplicates,
			"attempt": st.Attempts, "retry": st.Retries, "paused": st.Paused, "failed": st.Failed, "bad_receipt": st.BadReceipts,
		} {
			counter(descHOCount, v, ev)
		}
		for reason, v := range st.Rejected {
			counter(descHOReject, v, reason)
		}
	}
}
