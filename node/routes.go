package node

import (
	"net/http"
	"net/http/pprof"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/verbund/verbund/node/connecterr"
	"github.com/verbund/verbund/node/web"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// CompressMinBytes is the smallest message the node's handlers and its
// peer clients gzip when the other side accepts it. Connect compresses
// every message by default; below a few KiB gzip costs more CPU than the
// bytes it saves on any network a registry runs on (issue 12: 4 % of the
// leader's CPU under small writes went to compress/flate).
const CompressMinBytes = 4 << 10

// routes builds the API handler served on the public and the peer
// listener (each behind its access policy, access.go): one handler per
// Connect service (which also speak gRPC and gRPC-Web; api_*.go), gRPC
// health, server reflection and the web pages (pages.go).
func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	opts := []connect.HandlerOption{
		connect.WithReadMaxBytes(n.cfg.MaxRequestBytes),
		connect.WithInterceptors(connecterr.Interceptor()),
		connect.WithCompressMinBytes(CompressMinBytes),
	}
	mux.Handle(registryv1connect.NewPublishServiceHandler(publishAPI{n}, opts...))
	mux.Handle(registryv1connect.NewQueryServiceHandler(queryAPI{n: n}, opts...))
	watchPath, watch := registryv1connect.NewWatchServiceHandler(watchAPI{n}, opts...)
	mux.Handle(watchPath, writeDeadline(watch, n.cfg.RateLimits.WatchWriteTimeout)) // api_watch.go
	mux.Handle(nodev1connect.NewNodeServiceHandler(nodeAPI{n}, opts...))
	mux.Handle(nodev1connect.NewClusterServiceHandler(clusterAPI{n}, opts...))
	mux.Handle(nodev1connect.NewAuthServiceHandler(authAPI{n}, opts...))
	mux.Handle(nodev1connect.NewConsoleServiceHandler(consoleAPI{n}, opts...))
	mux.Handle(n.handoverAPI())
	mux.Handle(grpchealth.NewHandler(&healthChecker{n: n}))
	reflector := grpcreflect.NewStaticReflector(
		registryv1connect.PublishServiceName,
		registryv1connect.QueryServiceName,
		registryv1connect.WatchServiceName,
		nodev1connect.NodeServiceName,
		nodev1connect.ClusterServiceName,
		nodev1connect.AuthServiceName,
		nodev1connect.ConsoleServiceName,
		federationv1connect.HandoverServiceName,
	)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	pages, err := n.pagesHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.publicAPI.ServeHTTP(w, r) // set by serveHTTP before any request
	}))
	if err != nil {
		panic(err) // the embedded templates are parsed by every test of node/web
	}
	mux.Handle("/{$}", pages) // pages.go
	for _, p := range web.Prefixes {
		mux.Handle(p, pages)
	}
	mux.HandleFunc("GET "+SnapshotPath, n.serveSnapshot)             // backup.go
	mux.HandleFunc("GET "+HandoverBackupPath, n.serveHandoverBackup) // backup.go
	mux.HandleFunc("GET /healthz", n.healthz)                        // health.go
	mux.HandleFunc("GET /readyz", n.readyz)
	return mux
}

// adminRoutes builds the admin listener's handler: net/http/pprof and
// the Prometheus metrics (metrics.go).
func (n *Node) adminRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", n.metrics.handler())
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
