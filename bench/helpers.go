package bench

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"sync"

	"connectrpc.com/connect"
)

// Workers share HTTP/2 connections: one per 32 workers, as a client
// library with a small pool would (etcd's client multiplexes gRPC on one
// connection per endpoint).
const workersPerConn = 32

var (
	sharedMu      sync.Mutex
	sharedClients []*http.Client
)

// sharedClient is the plain (h2c) HTTP client of worker w.
func sharedClient(w int) *http.Client {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	i := w / workersPerConn
	for len(sharedClients) <= i {
		sharedClients = append(sharedClients, h2cClient(""))
	}
	return sharedClients[i]
}

// makeClients makes one Connect client per worker of api, sharing
// connections as sharedClient does.
func makeClients[T any](api string, n int, ctor func(connect.HTTPClient, string, ...connect.ClientOption) T) []T {
	out := make([]T, n)
	for w := range n {
		out[w] = ctor(sharedClient(w), api)
	}
	return out
}

func osMkdirAll(p string) error { return os.MkdirAll(p, 0o755) }

// prefixWriter writes each line of its input with a prefix (for the
// cluster script's output in the progress log).
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	if p.w == nil {
		return len(b), nil
	}
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if _, err := io.WriteString(p.w, p.prefix+string(bytes.TrimRight(line, "\n"))+"\n"); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
