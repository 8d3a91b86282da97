package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// What the client commands (client_*.go) share: the --addr, -o, --timeout
// and read-consistency flags, the Connect clients, error reporting, and
// table, JSON and paging output.

const defaultAddr = "http://127.0.0.1:8080"

// clientOpts are the flags every client command shares.
type clientOpts struct {
	addr         string
	token        string // bearer token: --token, VERBUND_TOKEN, or the one `verbund login` stored
	output       string
	timeout      time.Duration
	linearizable bool
	minIndex     uint64
}

// clientFlags registers the shared client flags on fs; read adds the read
// consistency flags (--linearizable, --min-index).
func clientFlags(fs *flagSet, read bool) *clientOpts {
	o := &clientOpts{}
	addr := os.Getenv("VERBUND_ADDR")
	if addr == "" {
		addr = defaultAddr
	}
	fs.StringVar(&o.addr, "addr", addr, "node API base `url` (env VERBUND_ADDR)")
	fs.StringVar(&o.token, "token", "", "bearer `token` of a user of the node (env VERBUND_TOKEN; default: the one `verbund login` stored for --addr)")
	fs.StringVar(&o.output, "o", "table", "output `format`: table or json")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "request timeout, e.g. 30s (0: none)")
	if read {
		fs.BoolVar(&o.linearizable, "linearizable", false, "guaranteed-current read, confirmed by the Raft leader")
		fs.Uint64Var(&o.minIndex, "min-index", 0, "wait until the node has applied Raft `index` (read your own writes)")
	}
	fs.check(func() error {
		switch o.output {
		case "table", "json":
		default:
			return fmt.Errorf("-o %q: want table or json", o.output)
		}
		if o.timeout < 0 {
			return fmt.Errorf("--timeout must not be negative")
		}
		var err error
		if o.addr, err = apiURL("--addr", o.addr); err != nil {
			return err
		}
		if o.token == "" {
			o.token = os.Getenv("VERBUND_TOKEN")
		}
		if o.token == "" {
			o.token = storedToken(o.addr)
		}
		return nil
	})
	return o
}

// apiURL normalises a node's API address given with flag: http:// is
// assumed without a scheme, and a trailing slash is dropped.
func apiURL(flag, addr string) (string, error) {
	a := addr
	if !strings.Contains(a, "://") {
		a = "http://" + a
	}
	u, err := url.Parse(a)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%s %q is not an http(s) URL", flag, addr)
	}
	return strings.TrimRight(a, "/"), nil
}

var httpClient = &http.Client{Transport: retryTransport{inner: http.DefaultTransport, tries: 5}}

// retryTransport retries a request the node refused for its rate limit
// (HTTP 429: refused before anything was done, so a write is safe to send
// again) after the Retry-After the node named (1 s if none, at most 10 s),
// up to tries attempts. Request bodies are buffered to be sent again;
// streaming requests (no body to replay) are sent once.
type retryTransport struct {
	inner http.RoundTripper
	tries int
}

func (t retryTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength < 0 || r.ContentLength > 8<<20 {
			return t.inner.RoundTrip(r) // a stream or a huge body: once
		}
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	for try := 1; ; try++ {
		req := r.Clone(r.Context())
		if body != nil {
			req.Body = io.NopCloser(bytes.NewReader(body))
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		}
		resp, err := t.inner.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests || try >= t.tries {
			return resp, err
		}
		wait := time.Second
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			wait = min(time.Duration(s)*time.Second, 10*time.Second)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		select {
		case <-r.Context().Done():
			return nil, r.Context().Err()
		case <-time.After(wait):
		}
	}
}

// http is the HTTP client for the node at --addr: with a token, every
// request carries it as "Authorization: Bearer".
func (o *clientOpts) http() *http.Client {
	if o.token == "" {
		return httpClient
	}
	return &http.Client{Transport: bearerTransport{token: o.token, inner: httpClient.Transport}}
}

// bearerTransport adds a bearer token to every request.
type bearerTransport struct {
	token string
	inner http.RoundTripper
}

func (t bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.token)
	return t.inner.RoundTrip(r)
}

func (o *clientOpts) query() registryv1connect.QueryServiceClient {
	return registryv1connect.NewQueryServiceClient(o.http(), o.addr)
}

func (o *clientOpts) publisher() registryv1connect.PublishServiceClient {
	return registryv1connect.NewPublishServiceClient(o.http(), o.addr)
}

func (o *clientOpts) node() nodev1connect.NodeServiceClient {
	return nodev1connect.NewNodeServiceClient(o.http(), o.addr)
}

// context bounds ctx by --timeout.
func (o *clientOpts) context(ctx context.Context) (context.Context, context.CancelFunc) {
	if o.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, o.timeout)
}

// read returns the ReadOptions selected by --linearizable and --min-index.
func (o *clientOpts) read() *registryv1.ReadOptions {
	if !o.linearizable && o.minIndex == 0 {
		return nil
	}
	r := &registryv1.ReadOptions{MinIndex: o.minIndex}
	if o.linearizable {
		r.Consistency = registryv1.Consistency_CONSISTENCY_LINEARIZABLE
	}
	return r
}

// rpcErr adds a hint to errors where the cause is usually the flags.
// Connect errors print as "<code>: <message>".
func (o *clientOpts) rpcErr(err error) error {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable:
		// Only when the node could not be reached at all; an unavailable
		// answer from the node itself (no leader, no quorum) stays as is.
		var ne net.Error
		if errors.As(err, &ne) {
			return fmt.Errorf("%w (node %s; set --addr or VERBUND_ADDR)", err, o.addr)
		}
	case connect.CodeUnauthenticated:
		if o.token == "" {
			return fmt.Errorf("%w (sign in first: verbund login --addr %s, or set --token / VERBUND_TOKEN)", err, o.addr)
		}
		return fmt.Errorf("%w (the token was refused; verbund login --addr %s gets a new one)", err, o.addr)
	case connect.CodeDeadlineExceeded:
		if o.timeout > 0 {
			return fmt.Errorf("%w (--timeout %s)", err, o.timeout)
		}
	}
	return err
}

func (o *clientOpts) json() bool { return o.output == "json" }

// emit prints resp as JSON, or runs table and prints the read footer.
func (o *clientOpts) emit(env *Env, resp proto.Message, ri *registryv1.ReadInfo, table func(w io.Writer)) error {
	if o.json() {
		return writeJSON(env.Stdout, resp)
	}
	table(env.Stdout)
	writeReadInfo(env.Stdout, ri)
	return nil
}

// writeJSON prints m as indented protojson (unpopulated fields omitted).
// protojson output is deliberately unstable in its whitespace, so it is
// re-indented for a stable, diffable form.
func writeJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err = w.Write(buf.Bytes())
	return err
}

// writeReadInfo prints the footer that says what a read reflects.
func writeReadInfo(w io.Writer, ri *registryv1.ReadInfo) {
	if ri == nil {
		return
	}
	kind := "local"
	if ri.GetLinearizable() {
		kind = "linearizable"
	}
	node := ri.GetNodeId()
	if node == "" {
		node = "?"
	}
	fmt.Fprintf(w, "(index %d, %s read on node %s, staleness %dms)\n", ri.GetIndex(), kind, node, ri.GetStalenessMs())
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// row writes one tab-separated table row; cells are sanitised so that
// tabs and newlines in data cannot break the layout.
func row(w io.Writer, cells ...string) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		io.WriteString(w, cell(c))
	}
	io.WriteString(w, "\n")
}

func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}

// kv collects "label  value" lines and aligns them; empty values are skipped.
type kv struct{ tw *tabwriter.Writer }

func newKV(w io.Writer) *kv { return &kv{tw: newTable(w)} }

func (k *kv) add(label, value string) {
	if value == "" {
		return
	}
	fmt.Fprintf(k.tw, "%s:\t%s\n", label, cell(value))
}

func (k *kv) flush() { k.tw.Flush() }

// ---- paging ----

const maxPageSize = 1000

// collect pages through a list: all pages with all, else until limit items.
// fetch returns one page and the next page token.
func collect[T any](limit int, all bool, fetch func(size int32, token string) ([]T, string, error)) ([]T, string, error) {
	var out []T
	token := ""
	for {
		size := maxPageSize
		if !all {
			size = min(limit-len(out), maxPageSize)
		}
		items, next, err := fetch(int32(size), token)
		if err != nil {
			return nil, "", err
		}
		out = append(out, items...)
		if next == "" || (!all && len(out) >= limit) {
			if !all && len(out) > limit {
				out = out[:limit]
			}
			return out, next, nil
		}
		if next == token {
			return nil, "", fmt.Errorf("server returned the same page token %q twice", next)
		}
		token = next
	}
}

func pagingFlags(fs *flagSet, what string) (limit *uint, all *bool) {
	limit, all = new(uint), new(bool)
	fs.UintVar(limit, "limit", 100, "show at most `n` "+what)
	fs.BoolVar(all, "all", false, "page through all "+what+" (no --limit)")
	fs.check(func() error {
		if *limit == 0 {
			return errors.New("--limit must be at least 1")
		}
		return nil
	})
	return limit, all
}

func countLine(w io.Writer, n int, one, many string, more bool) {
	noun := many
	if n == 1 {
		noun = one
	}
	if more {
		fmt.Fprintf(w, "\n%d %s shown, more match (use --all or a higher --limit)\n", n, noun)
	} else {
		fmt.Fprintf(w, "\n%d %s\n", n, noun)
	}
}
