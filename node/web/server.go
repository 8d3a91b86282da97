package web

import (
	"errors"
	"log/slog"
	"net/http"
	"time"
)

// Config configures the pages. API is required; everything else has a
// default.
type Config struct {
	// API is the node's public API handler (behind its access policy):
	// every page reads and writes through it (inproc.go).
	API http.Handler
	// OrgID is the organisation this node runs for (the clerk's inbox is
	// its inbox).
	OrgID string
	// NodeID names the node in the console.
	NodeID string
	// SecureCookies forces the Secure flag on cookies even for plain-HTTP
	// requests (set it when a TLS-terminating proxy is in front). Cookies
	// of requests that arrived over TLS are always Secure.
	SecureCookies bool
	// TrackingLimit is how many case look-ups by tracking code one source
	// address may make per minute (guessing codes); default 10.
	TrackingLimit int
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Now; default time.Now (tests).
	Now func() time.Time
}

func (c *Config) defaults() error {
	if c.API == nil {
		return errors.New("web: Config.API is required")
	}
	if c.TrackingLimit <= 0 {
		c.TrackingLimit = 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Server serves the pages.
type Server struct {
	cfg     Config
	log     *slog.Logger
	api     *apiClients
	pages   *pages
	mux     *http.ServeMux
	tracker *addrLimiter
}

// Prefixes are the path trees the pages own, besides "/" itself: the
// node's access policy opens them (the pages do their own sign-in check;
// the API behind them enforces every permission).
var Prefixes = []string{"/static/", "/portal/", "/info/", "/amt/"}

// New builds the pages.
func New(cfg Config) (*Server, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	p, err := parsePages()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "web"), api: newAPIClients(cfg.API), pages: p,
		mux: http.NewServeMux(), tracker: newAddrLimiter(cfg.TrackingLimit, time.Minute, cfg.Now)}
	s.mux.Handle("GET /static/", staticHandler())
	s.citizenRoutes(s.mux)
	s.staffRoutes(s.mux)
	return s, nil
}

// Handler serves every page with the security headers.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Nothing from outside the machine; no inline script or style.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Permissions-Policy", "geolocation=(), camera=(), microphone=()")
		s.mux.ServeHTTP(w, r)
	})
}
