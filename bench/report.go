package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// Machine describes where a run happened.
type Machine struct {
	CPU, Go, Etcd, Revision, Command, LoadAvg string
	Cores                                     int
}

// cell formats one side of a row.
func cell(r *Result, prefix string) string {
	if r == nil {
		return ""
	}
	s := FormatRate(r.Rate())
	if prefix != "" {
		s = prefix + " " + s
	}
	s += fmt.Sprintf(", p50 %s, p99 %s", FormatDuration(r.P50), FormatDuration(r.P99))
	if c := cpuText(*r); c != "?" {
		s += ", CPU " + c
	}
	if r.Errors > 0 {
		s += fmt.Sprintf(", **%d errors**", r.Errors)
	}
	return s
}

// cpuText is "148% (machine 190%)": the CPU of the cluster's processes
// and the load generator, and of the whole machine, in % of one core.
func cpuText(r Result) string {
	switch p := r.ProcPercent(); {
	case p >= 0 && r.CPU >= 0:
		return fmt.Sprintf("%.0f%% (machine %.0f%%)", p, r.CPU)
	case p >= 0:
		return fmt.Sprintf("%.0f%%", p)
	case r.CPU >= 0:
		return fmt.Sprintf("machine %.0f%%", r.CPU)
	}
	return "?"
}

// WriteMarkdown writes the report as Markdown.
func WriteMarkdown(w io.Writer, rep *Report, m Machine) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Verbund vs etcd: side-by-side benchmark\n\n")
	p("Run %s (%s), command `%s`.\n\n", rep.Started.UTC().Format("2006-01-02 15:04 UTC"), rep.Elapsed.Round(time.Second), m.Command)
	p("Machine: %s, %d cores; %s; etcd %s (Debian etcd-server, 3 members on loopback, default durability); "+
		"Verbund at %s, 3 voters + 2 members as `make cluster` starts them (scripts/cluster.sh: mTLS between nodes, "+
		"default durability), **rate limits off** (`--rate-limits off`). Load average before the run: %s.\n\n",
		m.CPU, m.Cores, m.Go, m.Etcd, m.Revision, m.LoadAvg)
	p("One closed-loop Go load generator for both (go.etcd.io/etcd/client/v3 for etcd, Connect over HTTP/2 for Verbund); "+
		"commands are signed before the clock starts; each write is about 1 KiB (etcd: 1,024-byte values; Verbund: one "+
		"offering of about 1 KiB). Rates are operations per second; p50/p99 are per request; CPU is the CPU time of the "+
		"cluster's processes and the load generator during the row, and in brackets the whole machine's busy time from /proc/stat "+
		"(other work on the machine counts there), both in %% of one core (%d%% = all cores).\n\n", 100*m.Cores)
	p("| work | clients | Verbund | etcd | ratio | signature bound |\n|---|---|---|---|---|---|\n")
	for _, r := range rep.Rows {
		clients := fmt.Sprint(r.Clients)
		e := cell(r.Etcd, r.EtcdWork)
		if r.Bound > 0 {
			e = fmt.Sprintf("%s ≈ %s", r.BoundWhat, FormatRate(r.Bound))
		}
		ratio := ""
		if x := r.Ratio(); x > 0 {
			ratio = fmt.Sprintf("%.2f", x)
		}
		sig := ""
		if r.SigBound > 0 && r.Verbund != nil {
			sig = fmt.Sprintf("%.2f of %s", r.Verbund.Rate()/r.SigBound, FormatRate(r.SigBound))
		}
		p("| %s | %s | %s | %s | %s | %s |\n", r.Work, clients, cell(r.Verbund, ""), e, ratio, sig)
	}
	c := rep.Crypto
	p("\n## Bounds computed in this run\n\n")
	p("Single-core costs, measured as the paths do them: verify one signed command (parse + Ed25519) %s; "+
		"seal a handover (sign + encrypt) %s; open it (decrypt + verify) %s; sign the receipt %s; verify the receipt %s. "+
		"Null RPC (health check over Connect: CPU time of the nodes and the load generator in its row over the calls made): %s.\n\n",
		us(c.VerifyCommand), us(c.Seal), us(c.Open), us(c.SignReceipt), us(c.VerifyReceipt), us(rep.NullRPCCPU))
	p("- **Signature-check bound for writes** = cores / (verifications per write × cost of one) = %d / (%d × %s) = **%s**. "+
		"Verifications per write: the leader's admission check before proposing plus the state machine of each of the 3 voters "+
		"(the members' copies are not counted). The column \"signature bound\" gives each write row's rate as a share of it.\n",
		m.Cores, rep.Verifiers, us(c.VerifyCommand), FormatRate(rep.SigBound))
	p("- **Handover bound** = cores / (seal + open + sign receipt + verify receipt + 2 × null RPC) = %d / (%s + %s + %s + %s + 2 × %s) = **%s**. "+
		"Two RPCs per handover: the clerk's SendHandover and the node-to-node DeliverHandover (mTLS); the fsyncs of outbox and "+
		"inbox are not CPU and not in the bound. The handover row's rate is delivered handovers (receipt stored) from the first "+
		"send to the last receipt; its latencies are SendHandover's (case in the durable outbox).\n",
		m.Cores, us(c.Seal), us(c.Open), us(c.SignReceipt), us(c.VerifyReceipt), us(rep.NullRPCCPU), FormatRate(rep.HandoverBnd))
	if len(rep.Gossip) > 0 {
		writeGossip(&b, rep)
	}
	for _, n := range rep.Notes {
		p("\n%s\n", n)
	}
	p("\nPlots: [throughput](throughput.svg), [latency](latency.svg).\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func us(d time.Duration) string {
	return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
}

func bytesRate(b float64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB/s", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB/s", b/(1<<10))
	default:
		return fmt.Sprintf("%.0f B/s", b)
	}
}

func writeGossip(b *strings.Builder, rep *Report) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("\n## Gossip at scale (memberlist, in-process members on loopback)\n\n")
	p("Each member is a `federation/membership` node with the production settings (LAN profile = memberlist's DefaultLANConfig, " +
		"AES-256-GCM keyring, cluster label), all in this one process on 127.0.0.1. Convergence: from a new member's Join " +
		"(through the last member, not the seed) until every member sees it alive. Bytes: everything each member sends " +
		"(UDP packets and TCP stream writes) in a quiet window without joins, per member and second.\n\n")
	p("| members | join reaches all | bytes sent per member (measured) | model: probes + push/pull = total | push/pull interval |\n|---|---|---|---|---|\n")
	for _, g := range rep.Gossip {
		probes, pp := gossipModelParts(g.Members)
		p("| %s | %s | %s over %s | %s + %s = %s | %s |\n", Thousands(int64(g.Members)), FormatDuration(g.Converge), bytesRate(g.BytesPerNode), g.Window,
			bytesRate(probes), bytesRate(pp), bytesRate(g.ModelBytes), pushPullInterval(g.Members))
	}
	p("\nA measuring window shorter than the push/pull interval catches few of the full-state syncs: the measured bytes mostly " +
		"check the model's probe part, and the push/pull part is the model's average.\n")
	if len(rep.GossipModel) > 0 {
		p("\nExtrapolated with memberlist's own model (the formulas of its util.go and its LAN defaults):\n\n")
		p("| members | join reaches all (fit a + b·ln n) | epidemic model | bytes per member | push/pull interval | suspicion timeout |\n|---|---|---|---|---|---|\n")
		for _, x := range rep.GossipModel {
			p("| %s | %s | %s | %s | %s | %s – %s |\n", Thousands(int64(x.Members)), FormatDuration(x.Converge), FormatDuration(x.ConvergeModel),
				bytesRate(x.BytesPerNode), x.PushPullInterval, x.SuspicionMin.Round(100*time.Millisecond), x.SuspicionMax.Round(time.Second))
		}
		p("\nAssumptions: probe interval 1 s (one ping + ack per member and second, about %d bytes encrypted), gossip interval %s to %d members, "+
			"push/pull every 30 s scaled by memberlist's pushPullScale (one more 30 s step per doubling beyond 32 members), each member "+
			"taking part in two syncs per interval (its own and one from another member on average), each sync sending the full state "+
			"(about %d bytes per member entry with our metadata) one way per side; no churn (joins, failures and meta updates add "+
			"gossip: each broadcast is retransmitted %d × ⌈log10(n+1)⌉ times); the suspicion timeout is %d × max(1, log10 n) × probe interval, "+
			"shrinking from %d times that as independent confirmations arrive; a member's failure is noticed by a probe within about n probe "+
			"intervals' worth of random rounds (each member probes one other per second, in a shuffled round-robin), then confirmed dead after "+
			"the suspicion timeout. The epidemic model counts log_(1+k)(n) + ln(n)/k gossip rounds (k = %d), rounded up. Loopback has "+
			"no latency or loss: over a WAN add the round trips, and the measured convergence is on one 2-core machine shared by all members.\n",
			probeBytes, lanGossipInterval, lanGossipNodes, pushPullEntry, lanRetransmitMult, lanSuspicionMult, lanSuspicionMax, lanGossipNodes)
	}
}

// Series is one line of a plot.
type Series struct {
	Name   string
	Colour string
	X, Y   []float64
}

// Plot is a simple line chart with points.
type Plot struct {
	Title, XLabel, YLabel string
	LogX                  bool
	Series                []Series
}

func xmlEscape(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")
	return r.Replace(s)
}

// niceMax rounds v up to 1, 2 or 5 times a power of ten.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

// WriteSVG draws the plot as a standalone SVG document.
func (pl Plot) WriteSVG(w io.Writer) error {
	const W, H, L, R, T, B = 640.0, 400.0, 80.0, 170.0, 40.0, 50.0
	var xmin, xmax, ymax float64 = math.Inf(1), math.Inf(-1), 0
	tx := func(x float64) float64 {
		if pl.LogX {
			return math.Log2(math.Max(x, 1e-9))
		}
		return x
	}
	for _, s := range pl.Series {
		for i := range s.X {
			xmin, xmax = math.Min(xmin, tx(s.X[i])), math.Max(xmax, tx(s.X[i]))
			ymax = math.Max(ymax, s.Y[i])
		}
	}
	if math.IsInf(xmin, 0) {
		xmin, xmax = 0, 1
	}
	if xmax == xmin {
		xmin, xmax = xmin-1, xmax+1
	}
	ymax = niceMax(ymax)
	px := func(x float64) float64 { return L + (tx(x)-xmin)/(xmax-xmin)*(W-L-R) }
	py := func(y float64) float64 { return H - B - y/ymax*(H-T-B) }
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%.0f" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", L, xmlEscape(pl.Title))
	for i := 0; i <= 5; i++ {
		y := ymax * float64(i) / 5
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", L, py(y), W-R, py(y))
		p(`<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", L-6, py(y)+4, xmlEscape(tickLabel(y)))
	}
	seen := map[float64]bool{}
	for _, s := range pl.Series {
		for _, x := range s.X {
			if seen[x] {
				continue
			}
			seen[x] = true
			p(`<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px(x), H-B+18, xmlEscape(tickLabel(x)))
		}
	}
	p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", L, H-B, W-R, H-B)
	p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", L, T, L, H-B)
	p(`<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", (L+W-R)/2, H-10, xmlEscape(pl.XLabel))
	p(`<text x="16" y="%.1f" text-anchor="middle" transform="rotate(-90 16 %.1f)">%s</text>`+"\n", (T+H-B)/2, (T+H-B)/2, xmlEscape(pl.YLabel))
	for i, s := range pl.Series {
		var pts []string
		for j := range s.X {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.X[j]), py(s.Y[j])))
		}
		if len(pts) > 1 {
			p(`<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", s.Colour, strings.Join(pts, " "))
		}
		for j := range s.X {
			p(`<circle cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s: %s</title></circle>`+"\n", px(s.X[j]), py(s.Y[j]), s.Colour,
				xmlEscape(s.Name), xmlEscape(tickLabel(s.Y[j])))
		}
		ly := T + 10 + float64(i)*20
		p(`<rect x="%.1f" y="%.1f" width="12" height="12" fill="%s"/>`+"\n", W-R+12, ly-10, s.Colour)
		p(`<text x="%.1f" y="%.1f">%s</text>`+"\n", W-R+30, ly, xmlEscape(s.Name))
	}
	p("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func tickLabel(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return Thousands(int64(v))
	}
	return fmt.Sprintf("%.2g", v)
}

// Plots returns the throughput and latency plots of the write and read
// rows by clients.
func Plots(rep *Report) (throughput, latency Plot) {
	throughput = Plot{Title: "Throughput by clients", XLabel: "clients (log scale)", YLabel: "operations/s", LogX: true}
	latency = Plot{Title: "Latency (p99) by clients", XLabel: "clients (log scale)", YLabel: "p99 latency, ms", LogX: true}
	type line struct {
		work, name, colour string
		etcd               bool
	}
	lines := []line{
		{wPublish, "Verbund publish", "#1f77b4", false},
		{wPublish, "etcd put", "#ff7f0e", true},
		{wLocal, "Verbund FindProviders", "#2ca02c", false},
		{wLocal, "etcd serializable get", "#d62728", true},
	}
	for _, l := range lines {
		var tp, lat Series
		tp.Name, tp.Colour, lat.Name, lat.Colour = l.name, l.colour, l.name, l.colour
		for _, r := range rep.Rows {
			if r.Work != l.work {
				continue
			}
			res := r.Verbund
			if l.etcd {
				res = r.Etcd
			}
			if res == nil {
				continue
			}
			tp.X, tp.Y = append(tp.X, float64(r.Clients)), append(tp.Y, math.Round(res.Rate()))
			lat.X, lat.Y = append(lat.X, float64(r.Clients)), append(lat.Y, float64(res.P99)/float64(time.Millisecond))
		}
		if len(tp.X) > 0 {
			throughput.Series = append(throughput.Series, tp)
			latency.Series = append(latency.Series, lat)
		}
	}
	return throughput, latency
}
