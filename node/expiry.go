package node

import (
	"context"
	"crypto/x509"
	"slices"
	"time"

	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Expiry warnings: what this node relies on and that stops being valid at
// a known time. The organisation's keys in its registry record (a key
// with not_after_unix_ms: a RETIRING key after a rotation, or any key
// published with an end), the node's TLS certificate and the network CA
// that issued it. Each is exported as seconds remaining on /metrics; those
// due within the warning window (ExpiryWarnCerts for certificates,
// ExpiryWarnKeys for keys) are listed by GetStatus (`verbund status`)
// and logged as warnings every ExpiryCheckInterval.
//
// An expired certificate is listed until it is replaced: the node cannot
// talk to its peers with it. A key past its not_after is listed for one
// more key window and then dropped: a retiring key running out is the
// normal end of a rotation, worth a note, not an alarm forever.

// What an expiring item is (ExpiryWarning.what).
const (
	expirySigningKey    = "signing_key"
	expiryEncryptionKey = "encryption_key"
	expiryNodeCert      = "node_certificate"
	expiryNetworkCA     = "network_ca"
)

// expiryItem is one thing that expires.
type expiryItem struct {
	what, id string
	notAfter time.Time
}

func (e expiryItem) isCert() bool { return e.what == expiryNodeCert || e.what == expiryNetworkCA }

// expiryItems lists everything this node knows an end for, soonest first.
func (n *Node) expiryItems() []expiryItem {
	var out []expiryItem
	if org, _, err := n.reader.Organisation(n.cfg.OrgID); err == nil {
		for _, pk := range org.GetKeys() {
			if pk.GetNotAfterUnixMs() <= 0 || pk.GetStatus() == registryv1.KeyStatus_KEY_STATUS_REVOKED {
				continue
			}
			what := ""
			switch pk.GetUse() {
			case "sig":
				what = expirySigningKey
			case "enc":
				what = expiryEncryptionKey
			default:
				continue
			}
			out = append(out, expiryItem{what: what, id: pk.GetKid(), notAfter: time.UnixMilli(pk.GetNotAfterUnixMs())})
		}
	}
	if b := n.cfg.TLS; b != nil {
		leaf := b.Leaf()
		out = append(out, expiryItem{what: expiryNodeCert, id: certName(leaf), notAfter: leaf.NotAfter})
		if ca := issuingCA(leaf, b.CertPool()); ca != nil {
			out = append(out, expiryItem{what: expiryNetworkCA, id: certName(ca), notAfter: ca.NotAfter})
		}
	}
	slices.SortFunc(out, func(a, b expiryItem) int { return a.notAfter.Compare(b.notAfter) })
	return out
}

// issuingCA finds the CA certificate of roots that leaf chains to. The
// chain is built as of the leaf's issue time, so an expired CA is still
// found (and reported).
func issuingCA(leaf *x509.Certificate, roots *x509.CertPool) *x509.Certificate {
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: leaf.NotBefore.Add(time.Second),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil || len(chains) == 0 || len(chains[0]) < 2 {
		return nil
	}
	return chains[0][len(chains[0])-1]
}

func certName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}

// expiryWarnings are the items due within their window at now (expired
// certificates always; expired keys for one more key window), soonest
// first.
func (n *Node) expiryWarnings(now time.Time) []*nodev1.ExpiryWarning {
	var out []*nodev1.ExpiryWarning
	for _, it := range n.expiryItems() {
		left := it.notAfter.Sub(now)
		window := n.cfg.ExpiryWarnKeys
		if it.isCert() {
			window = n.cfg.ExpiryWarnCerts
		}
		if left > window || (!it.isCert() && left < -window) {
			continue
		}
		out = append(out, &nodev1.ExpiryWarning{
			What:             it.what,
			Id:               it.id,
			NotAfterUnixMs:   it.notAfter.UnixMilli(),
			RemainingSeconds: int64(left / time.Second),
		})
	}
	return out
}

// logExpiryWarnings logs each current warning once; expiryLoop calls it
// every ExpiryCheckInterval.
func (n *Node) logExpiryWarnings(now time.Time) {
	for _, w := range n.expiryWarnings(now) {
		left := time.Duration(w.GetRemainingSeconds()) * time.Second
		msg := "expires soon"
		if left < 0 {
			msg = "expired"
		}
		n.log.Warn(msg, "what", w.GetWhat(), "id", w.GetId(),
			"not_after", time.UnixMilli(w.GetNotAfterUnixMs()).UTC().Format(time.RFC3339), "remaining", left.String())
	}
}

// expiryLoop checks for expiring keys and certificates at start and then
// every ExpiryCheckInterval until ctx ends.
func (n *Node) expiryLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.ExpiryCheckInterval)
	defer t.Stop()
	for {
		n.logExpiryWarnings(n.cfg.Clock())
		if b := n.cfg.TLS; b != nil && b.ReloadError() != nil {
			// The TLS files changed but do not check out (peertls.Bundle).
			n.log.Warn("TLS certificate files changed but are not used; the previous certificate stays in use", "err", b.ReloadError())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
