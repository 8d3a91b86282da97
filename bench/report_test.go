package bench

import (
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func testReport() *Report {
	res := func(rate float64, p50, p99 time.Duration) *Result {
		return &Result{Ops: int64(rate * 10), Calls: int64(rate * 10), Elapsed: 10 * time.Second, P50: p50, P99: p99, CPU: 190,
			ProcCPU: 14800 * time.Millisecond, ProcCPUOK: true}
	}
	return &Report{
		Started: time.Date(2026, 12, 4, 23, 0, 0, 0, time.UTC), Elapsed: 5 * time.Minute, Verifiers: 4,
		SigBound: 5000, HandoverBnd: 3300, NullRPCCPU: 100 * time.Microsecond,
		Crypto: CryptoCosts{VerifyCommand: 100 * time.Microsecond, Seal: 200 * time.Microsecond, Open: 250 * time.Microsecond,
			SignReceipt: 50 * time.Microsecond, VerifyReceipt: 100 * time.Microsecond},
		Rows: []Row{
			{Work: wPublish, Clients: 16, Verbund: res(960, 10*time.Millisecond, 36*time.Millisecond),
				Etcd: res(3441, 3*time.Millisecond, 11*time.Millisecond), EtcdWork: "put", SigBound: 5000},
			{Work: wPublish, Clients: 256, Verbund: res(1240, 100*time.Millisecond, 581*time.Millisecond),
				Etcd: res(7218, 20*time.Millisecond, 81*time.Millisecond), EtcdWork: "put", SigBound: 5000},
			{Work: wHealth, Clients: 16, Verbund: res(8730, time.Millisecond, 4*time.Millisecond)},
			{Work: wHandover, Clients: 16, Verbund: res(1367, 10*time.Millisecond, 30*time.Millisecond), Bound: 3300, BoundWhat: "crypto+RPC bound"},
		},
		Gossip: []GossipResult{{Members: 50, Converge: 800 * time.Millisecond, BytesPerNode: 700, Window: 10 * time.Second, ModelBytes: 800},
			{Members: 100, Converge: time.Second, BytesPerNode: 900, Window: 10 * time.Second, ModelBytes: 1000}},
	}
}

func TestMarkdownTable(t *testing.T) {
	rep := testReport()
	rep.GossipModel = []GossipProjection{Project(rep.Gossip, 11000)}
	var b strings.Builder
	if err := WriteMarkdown(&b, rep, Machine{CPU: "Test CPU", Cores: 2, Go: "go1.26.8", Etcd: "3.4.23", Revision: "abc1234", Command: "make bench", LoadAvg: "0.1 0.2 0.3"}); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| work | clients | Verbund | etcd | ratio | signature bound |",
		"| signed offering publish, to the leader | 16 | 960/s, p50 10 ms, p99 36 ms, CPU 148% (machine 190%) | put 3,441/s, p50 3.0 ms, p99 11 ms, CPU 148% (machine 190%) | 0.28 | 0.19 of 5,000/s |",
		"| signed offering publish, to the leader | 256 | 1,240/s, p50 100 ms, p99 581 ms, CPU 148% (machine 190%) | put 7,218/s, p50 20 ms, p99 81 ms, CPU 148% (machine 190%) | 0.17 | 0.25 of 5,000/s |",
		"| health check (null RPC) | 16 | 8,730/s, p50 1.0 ms, p99 4.0 ms, CPU 148% (machine 190%) |  |  |  |",
		"| handovers end to end | 16 | 1,367/s, p50 10 ms, p99 30 ms, CPU 148% (machine 190%) | crypto+RPC bound ≈ 3,300/s | 0.41 |  |",
		"Test CPU, 2 cores; go1.26.8; etcd 3.4.23", "abc1234", "`make bench`", "0.1 0.2 0.3",
		"= 2 / (4 × 100.0 µs) = **5,000/s**",
		"| 11,000 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	// Every table line has the header's number of cells.
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| ") && strings.Contains(line, "signed offering") {
			if got := strings.Count(line, "|"); got != 7 {
				t.Errorf("%d pipes in %q, want 7", got, line)
			}
		}
	}
}

// wellFormed parses s as XML to the end.
func wellFormed(s string) error {
	d := xml.NewDecoder(strings.NewReader(s))
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		return errors.New("root element is " + root + ", want svg")
	}
	return nil
}

func TestSVGIsXML(t *testing.T) {
	tp, lat := Plots(testReport())
	if len(tp.Series) != 2 || len(tp.Series[0].X) != 2 {
		t.Fatalf("throughput plot series: %+v", tp.Series)
	}
	tp.Title = `Throughput <Verbund & "etcd">` // must be escaped
	onePoint := Plot{Title: "one point", Series: []Series{{Name: "x", Colour: "red", X: []float64{16}, Y: []float64{5}}}}
	for _, p := range []Plot{tp, lat, {Title: "empty"}, onePoint} {
		var b strings.Builder
		if err := p.WriteSVG(&b); err != nil {
			t.Fatal(err)
		}
		if err := wellFormed(b.String()); err != nil {
			t.Errorf("%s: %v\n%s", p.Title, err, b.String())
		}
		if strings.Contains(b.String(), "NaN") || strings.Contains(b.String(), "Inf") {
			t.Errorf("%s: SVG holds NaN or Inf", p.Title)
		}
	}
	if err := wellFormed("<svg><g></svg>"); err == nil {
		t.Error("wellFormed accepted broken XML")
	}
}

func TestGossipModel(t *testing.T) {
	if got := pushPullInterval(32); got != 30*time.Second {
		t.Errorf("pushPullInterval(32) = %v", got)
	}
	if got := pushPullInterval(64); got != 60*time.Second { // ceil(6-5)+1 = 2 steps
		t.Errorf("pushPullInterval(64) = %v", got)
	}
	if got := pushPullInterval(11000); got != 300*time.Second { // ceil(13.43-5)+1 = 10
		t.Errorf("pushPullInterval(11000) = %v", got)
	}
	lo, hi := suspicion(10000)
	if lo != 16*time.Second || hi != 96*time.Second {
		t.Errorf("suspicion(10000) = %v, %v", lo, hi)
	}
	// A fit through exact points a + b ln n reproduces them.
	ms := []GossipResult{{Members: 10, Converge: 1 * time.Second}, {Members: 100, Converge: 2 * time.Second}, {Members: 1000, Converge: 3 * time.Second}}
	p := Project(ms, 10000)
	if d := p.Converge - 4*time.Second; d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("fitted convergence at 10,000 = %v, want 4s", p.Converge)
	}
	if GossipModelBytes(1000) <= GossipModelBytes(100) {
		t.Error("the model's bytes do not grow with members")
	}
}

func TestMeasureGossip(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gossip members")
	}
	g, err := MeasureGossip(t.Context(), 5, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if g.Converge <= 0 || g.BytesPerNode <= 0 {
		t.Errorf("measured %+v", g)
	}
}

// TestNationalDiskNeed: the national run's disk estimate covers what the
// 5 M run used (three voters of 16–18 GiB and a new member) and stays small
// for the smoke run.
func TestNationalDiskNeed(t *testing.T) {
	if got := nationalDiskNeed(5_000_000); got < 60<<30 || got > 70<<30 {
		t.Errorf("5 M offerings: %d GiB", got>>30)
	}
	if got := nationalDiskNeed(22_008); got > 2<<30 {
		t.Errorf("smoke: %d bytes", got)
	}
	if freeBytes(t.TempDir()) <= 0 {
		t.Error("no free space measured for the test's temporary directory")
	}
}
