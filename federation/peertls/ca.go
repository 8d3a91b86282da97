package peertls

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// URIScheme and uriHost make up the URI SAN that names a node:
// verbund://node/<nodeID>.
const (
	URIScheme = "verbund"
	uriHost   = "node"
)

// clockSkew backdates NotBefore so that a certificate is usable at once on
// nodes whose clocks are slightly behind the issuer's.
const clockSkew = 5 * time.Minute

// NodeURI returns the URI SAN that identifies nodeID in its certificate.
func NodeURI(nodeID string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: uriHost, Path: "/" + nodeID}
}

// CheckNodeID reports whether id can be put in a node certificate: 1-64
// characters from [A-Za-z0-9._-], starting with a letter or digit. (Node
// ids also name files, e.g. <id>.pem, and appear in URIs unescaped.)
func CheckNodeID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("node id %q must be 1-64 characters", id)
	}
	for i, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case (r == '.' || r == '_' || r == '-') && i > 0:
		default:
			return fmt.Errorf("node id %q: want letters, digits, '.', '_' and '-', starting with a letter or digit", id)
		}
	}
	return nil
}

// NewCA creates a self-signed ECDSA P-256 certificate authority for one
// network, valid from now (minus a few minutes of clock skew) for validity.
// It returns the certificate and the PKCS #8 private key, PEM-encoded.
func NewCA(commonName string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	return newCA(commonName, time.Now(), validity)
}

func newCA(commonName string, now time.Time, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if strings.TrimSpace(commonName) == "" {
		return nil, nil, errors.New("peertls: CA common name is empty")
	}
	if validity <= 0 {
		return nil, nil, fmt.Errorf("peertls: CA validity %v must be positive", validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("peertls: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // signs node certificates only
		SubjectKeyId:          ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("peertls: create CA certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// IssueNodeCert issues a certificate for nodeID, signed by the CA. hosts
// are the DNS names and IP addresses under which other nodes reach this
// node (its Raft and API addresses, e.g. 10.0.0.5, node1.example.org,
// 127.0.0.1, localhost); at least one is required. The certificate is good
// for both TLS server and client authentication, carries nodeID as common
// name and as the URI SAN verbund://node/<nodeID>, and expires after
// validity or when the CA expires, whichever comes first.
func IssueNodeCert(caCertPEM, caKeyPEM []byte, nodeID string, hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	return issueNodeCert(caCertPEM, caKeyPEM, nodeID, hosts, time.Now(), validity)
}

func issueNodeCert(caCertPEM, caKeyPEM []byte, nodeID string, hosts []string, now time.Time, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if err := CheckNodeID(nodeID); err != nil {
		return nil, nil, fmt.Errorf("peertls: %w", err)
	}
	if validity <= 0 {
		return nil, nil, fmt.Errorf("peertls: validity %v must be positive", validity)
	}
	if len(hosts) == 0 {
		return nil, nil, errors.New("peertls: at least one host (DNS name or IP address) is required")
	}
	caCert, err := parseCACert(caCertPEM)
	if err != nil {
		return nil, nil, err
	}
	caKey, err := parseKey(caKeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("peertls: CA key: %w", err)
	}
	if !publicKeysEqual(caKey.Public(), caCert.PublicKey) {
		return nil, nil, errors.New("peertls: the CA key does not belong to the CA certificate")
	}
	if !now.Before(caCert.NotAfter) {
		return nil, nil, fmt.Errorf("peertls: the CA expired at %v", caCert.NotAfter.UTC())
	}

	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: nodeID},
		NotBefore:   now.Add(-clockSkew),
		NotAfter:    now.Add(validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{NodeURI(nodeID)},
	}
	if tmpl.NotAfter.After(caCert.NotAfter) {
		tmpl.NotAfter = caCert.NotAfter
	}
	if tmpl.NotBefore.Before(caCert.NotBefore) {
		tmpl.NotBefore = caCert.NotBefore
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if seen[h] {
			continue
		}
		seen[h] = true
		if ip, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
			if ip.Zone() != "" {
				return nil, nil, fmt.Errorf("peertls: host %q: IP addresses with a zone cannot be certified", h)
			}
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip.Unmap().AsSlice())
			continue
		}
		if err := checkDNSName(h); err != nil {
			return nil, nil, err
		}
		tmpl.DNSNames = append(tmpl.DNSNames, strings.ToLower(strings.TrimSuffix(h, ".")))
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("peertls: generate node key: %w", err)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, nil, err
	}
	if tmpl.SubjectKeyId, err = subjectKeyID(key.Public()); err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("peertls: create node certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// checkDNSName accepts host names such as node1.example.org or localhost.
func checkDNSName(h string) error {
	name := strings.TrimSuffix(h, ".")
	if name == "" || len(name) > 253 {
		return fmt.Errorf("peertls: host %q is neither an IP address nor a DNS name", h)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("peertls: host %q is neither an IP address nor a DNS name", h)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("peertls: host %q is neither an IP address nor a DNS name", h)
			}
		}
	}
	return nil
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("peertls: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("peertls: marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("peertls: marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseKey reads the first private key (PKCS #8 or SEC 1) in PEM data.
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key found")
		}
		switch b.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("unsupported private key type %T", k)
			}
			return s, nil
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(b.Bytes)
		}
	}
}

// parseCerts returns all CERTIFICATE blocks in PEM data.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// parseCACert returns the single CA certificate in caCertPEM.
func parseCACert(caCertPEM []byte) (*x509.Certificate, error) {
	certs, err := parseCerts(caCertPEM)
	if err != nil {
		return nil, fmt.Errorf("peertls: CA certificate: %w", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("peertls: CA certificate: want one certificate, found %d", len(certs))
	}
	if err := checkCA(certs[0]); err != nil {
		return nil, err
	}
	return certs[0], nil
}

func checkCA(c *x509.Certificate) error {
	if !c.BasicConstraintsValid || !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("peertls: certificate %q is not a CA certificate", c.Subject.CommonName)
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	if ok {
		return ka.Equal(b)
	}
	da, err1 := x509.MarshalPKIXPublicKey(a)
	db, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(da, db)
}
