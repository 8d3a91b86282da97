package peertls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Files names the PEM files of a node's TLS identity.
type Files struct {
	// CAFile holds the network's CA certificate. During a CA rotation it
	// may hold the old and the new CA certificate; peers signed by either
	// are accepted.
	CAFile string
	// CertFile holds the node certificate, optionally followed by
	// intermediate certificates.
	CertFile string
	// KeyFile holds the node's private key; it must not be accessible by
	// group or others (mode 0600 or stricter).
	KeyFile string
}

// ErrKeyPermissions is returned by Load and ReadKeyFile for a private key
// file that group or others may access.
var ErrKeyPermissions = errors.New("private key file permissions are too open (want 0600)")

// Bundle is a node's verified TLS identity: the network's CA pool, the
// node certificate and key, and the node id from the certificate. It is
// safe for concurrent use.
//
// A Bundle read from files (Load) follows them: when the CA, certificate
// or key file changes (checked at most every ReloadCheckInterval, on the
// next handshake), it is read and checked again like Load, and new
// handshakes (server and client side, Raft and HTTP) use the new
// certificate and trust the new CA file; established connections keep
// what they negotiated. A replacement that does not check out (a key that
// does not match the certificate yet, a certificate for another node id,
// one that does not verify against the CA file) is not used: the bundle
// keeps its last good identity and ReloadError says why, until the files
// are consistent again. A Bundle built from PEM data never changes.
type Bundle struct {
	cur    atomic.Pointer[identity]
	nodeID string // fixed: a reload never changes it

	files *Files // nil: built from PEM
	mu    sync.Mutex
	next  time.Time // next time the files are looked at
	stamp string    // the files' sizes and modification times when read
	err   error     // of the last reload attempt
}

// identity is one verified state of a Bundle.
type identity struct {
	roots *x509.CertPool
	cert  tls.Certificate
	leaf  *x509.Certificate
}

// ReloadCheckInterval bounds how often a Bundle from Load looks at its
// files (one stat each).
var ReloadCheckInterval = time.Second

// Load reads the PEM files of f and checks them like FromPEM. It refuses a
// key file that group or others may access. The Bundle follows the files
// (see Bundle).
func Load(f Files) (*Bundle, error) {
	stamp, err := f.stamp()
	if err != nil {
		return nil, err
	}
	b, err := loadFiles(f)
	if err != nil {
		return nil, err
	}
	b.files, b.stamp, b.next = &f, stamp, time.Now().Add(ReloadCheckInterval)
	return b, nil
}

// stamp summarises the files' sizes and modification times.
func (f Files) stamp() (string, error) {
	var sb strings.Builder
	for _, p := range []string{f.CAFile, f.CertFile, f.KeyFile} {
		st, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("peertls: %w", err)
		}
		fmt.Fprintf(&sb, "%d/%d;", st.Size(), st.ModTime().UnixNano())
	}
	return sb.String(), nil
}

// Reload reads the files of a Bundle from Load again now and, if they
// check out, uses them for new handshakes. It returns why not (the bundle
// then keeps its identity). A Bundle from PEM data has nothing to reload.
func (b *Bundle) Reload() error {
	if b.files == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reloadLocked()
}

func (b *Bundle) reloadLocked() error {
	b.next = time.Now().Add(ReloadCheckInterval)
	stamp, err := b.files.stamp()
	if err == nil {
		var nb *Bundle
		if nb, err = loadFiles(*b.files); err == nil {
			if nb.nodeID != b.nodeID {
				err = fmt.Errorf("peertls: new certificate names node %q, this node is %q: not used", nb.nodeID, b.nodeID)
			} else {
				b.cur.Store(nb.cur.Load())
				b.stamp = stamp
			}
		}
	}
	b.err = err
	return err
}

// ReloadError is why the files' latest change was not used (nil: the
// bundle uses what the files hold, or it has no files).
func (b *Bundle) ReloadError() error {
	if b.files == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// current returns the identity for a new handshake, first reading the
// files again if they changed (at most every ReloadCheckInterval).
func (b *Bundle) current() *identity {
	if b.files != nil {
		b.mu.Lock()
		if time.Now().After(b.next) {
			b.next = time.Now().Add(ReloadCheckInterval)
			if stamp, err := b.files.stamp(); err != nil || stamp != b.stamp {
				_ = b.reloadLocked()
			}
		}
		b.mu.Unlock()
	}
	return b.cur.Load()
}

func loadFiles(f Files) (*Bundle, error) {
	caPEM, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, fmt.Errorf("peertls: read CA file: %w", err)
	}
	certPEM, err := os.ReadFile(f.CertFile)
	if err != nil {
		return nil, fmt.Errorf("peertls: read certificate file: %w", err)
	}
	keyPEM, err := ReadKeyFile(f.KeyFile)
	if err != nil {
		return nil, err
	}
	return FromPEM(caPEM, certPEM, keyPEM)
}

// ReadKeyFile reads a private key file, refusing one that group or others
// may access (ErrKeyPermissions) or that is not a regular file.
func ReadKeyFile(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("peertls: read key file: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("peertls: read key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("peertls: key file %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("peertls: %s has mode %04o: %w; run chmod 600 %s", path, st.Mode().Perm(), ErrKeyPermissions, path)
	}
	b, err := io.ReadAll(io.LimitReader(fh, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("peertls: read key file: %w", err)
	}
	return b, nil
}

// FromPEM builds a Bundle from PEM data: caPEM holds one or more CA
// certificates, certPEM the node certificate (then any intermediates) and
// keyPEM its private key. The node certificate must belong to the key,
// chain to one of the CAs for both server and client authentication, be
// valid now and carry a verbund://node/<id> URI SAN.
func FromPEM(caPEM, certPEM, keyPEM []byte) (*Bundle, error) {
	return fromPEM(caPEM, certPEM, keyPEM, time.Now())
}

func fromPEM(caPEM, certPEM, keyPEM []byte, now time.Time) (*Bundle, error) {
	cas, err := parseCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("peertls: CA file: %w", err)
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		if err := checkCA(c); err != nil {
			return nil, err
		}
		roots.AddCert(c)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("peertls: node certificate and key: %w", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("peertls: node certificate: %w", err)
		}
		cert.Leaf = leaf
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("peertls: intermediate certificate: %w", err)
		}
		inter.AddCert(c)
	}
	// KeyUsages accepts a chain valid for any of the listed usages: check
	// each separately.
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{u},
		}); err != nil {
			return nil, fmt.Errorf("peertls: node certificate %q does not verify against the CA: %w", leaf.Subject.CommonName, err)
		}
	}
	id, err := nodeIDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("peertls: node certificate: %w", err)
	}
	b := &Bundle{nodeID: id}
	b.cur.Store(&identity{roots: roots, cert: cert, leaf: leaf})
	return b, nil
}

// NodeID returns the node id in the bundle's certificate.
func (b *Bundle) NodeID() string { return b.nodeID }

// Leaf returns the node certificate (e.g. for its NotAfter): the current
// one of a Bundle that follows its files. Do not modify it.
func (b *Bundle) Leaf() *x509.Certificate { return b.current().leaf }

// CertPool returns a copy of the pool of trusted CA certificates.
func (b *Bundle) CertPool() *x509.CertPool { return b.current().roots.Clone() }

// ServerConfig returns a TLS configuration for a node-to-node listener:
// TLS 1.3, the node certificate, ALPN h2 and http/1.1, and mutual TLS:
// a client must present a certificate that chains to the CA and names a
// node (PeerNodeID). Each call returns a new Config the caller may modify
// (except GetConfigForClient): each handshake uses a copy of it with the
// bundle's current certificate and CA pool.
func (b *Bundle) ServerConfig() *tls.Config {
	id := b.current()
	cfg := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{id.cert},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        id.roots,
		NextProtos:       []string{"h2", "http/1.1"},
		VerifyConnection: requireNodeID(nil),
	}
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		id := b.current()
		c := cfg.Clone()
		c.GetConfigForClient = nil
		c.Certificates, c.ClientCAs = []tls.Certificate{id.cert}, id.roots
		return c, nil
	}
	return cfg
}

// ClientConfig returns a TLS configuration for connecting to another node:
// TLS 1.3, the node certificate as client certificate, and verification
// of the server's certificate against the CA for serverName (if empty,
// the caller, e.g. net/http, fills it in from the address) and of its node
// id. Each call returns a new Config the caller may modify. The client
// certificate is the bundle's current one at each handshake; the trusted
// CAs are those of the call (HTTPTransport and the Raft stream layer ask
// for a new Config per connection).
func (b *Bundle) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Always present the node certificate, even if the server's list
		// of acceptable CAs does not name ours: the server then reports
		// "unknown certificate authority" rather than "certificate
		// required".
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert := b.current().cert
			return &cert, nil
		},
		RootCAs:          b.current().roots,
		ServerName:       serverName,
		VerifyConnection: requireNodeID(nil),
	}
}

// HTTPClient returns an HTTP client for node-to-node API calls: HTTP/2
// over TLS (ClientConfig) with this node's client certificate. It does not
// use proxies from the environment and has no overall timeout; bound calls
// with a context.
func (b *Bundle) HTTPClient() *http.Client {
	return &http.Client{Transport: b.HTTPTransport()}
}

// HTTPTransport is the transport of HTTPClient. Each new connection is
// made with the bundle's current certificate and CA pool (ClientConfig).
func (b *Bundle) HTTPTransport() *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext: d.DialContext,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			cfg := b.ClientConfig(host)
			cfg.NextProtos = []string{"h2", "http/1.1"}
			td := &tls.Dialer{NetDialer: d, Config: cfg}
			return td.DialContext(ctx, network, addr)
		},
		TLSClientConfig:       b.ClientConfig(""),
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// requireNodeID returns a VerifyConnection callback that insists on a
// verified peer certificate naming a node and, if authorize is set, asks
// it about the node id.
func requireNodeID(authorize func(string) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		id, err := PeerNodeID(cs)
		if err != nil {
			return err
		}
		if authorize != nil {
			if err := authorize(id); err != nil {
				return fmt.Errorf("peertls: node %q not authorized: %w", id, err)
			}
		}
		return nil
	}
}

// ErrNoPeerID is returned by PeerNodeID for a connection without a
// verified peer certificate that names a node.
var ErrNoPeerID = errors.New("peertls: no verified peer certificate with a node id")

// PeerNodeID returns the node id from the verified certificate of the
// connection's peer (its verbund://node/<id> URI SAN). It fails for a
// connection whose peer certificate was not verified against the CA, so
// use it only with ServerConfig or ClientConfig (or r.TLS of a request
// served with ServerConfig).
func PeerNodeID(cs tls.ConnectionState) (string, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", ErrNoPeerID
	}
	id, err := nodeIDFromCert(cs.VerifiedChains[0][0])
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoPeerID, err)
	}
	return id, nil
}

// nodeIDFromCert returns the node id of the certificate's only
// verbund://node/ URI SAN.
func nodeIDFromCert(c *x509.Certificate) (string, error) {
	var ids []string
	for _, u := range c.URIs {
		if u.Scheme != URIScheme {
			continue
		}
		id, ok := strings.CutPrefix(u.Path, "/")
		if u.Host != uriHost || !ok || u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Opaque != "" {
			return "", fmt.Errorf("malformed node URI %q", u)
		}
		if err := CheckNodeID(id); err != nil {
			return "", err
		}
		ids = append(ids, id)
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("certificate %q has no %s://%s/ URI", c.Subject.CommonName, URIScheme, uriHost)
	case 1:
		return ids[0], nil
	default:
		return "", fmt.Errorf("certificate %q names %d nodes", c.Subject.CommonName, len(ids))
	}
}
