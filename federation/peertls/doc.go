// Package peertls secures node-to-node traffic of a Verbund network with
// mutual TLS: Raft (NewStreamLayer, NewRaftTransport) and node-to-node API
// calls (Bundle.ServerConfig, Bundle.HTTPClient). Every connection is
// TLS 1.3, and both ends present a certificate signed by the network's CA
// that names a node with the URI SAN verbund://node/<node-id>
// (PeerNodeID). A peer without such a certificate, with one from another
// CA, or with an expired one fails the handshake. Nothing listens on a
// non-loopback address unless configured (CheckBind, WithAllowPublic).
//
// # Usage
//
//	b, err := peertls.Load(peertls.Files{CAFile: "ca.pem", CertFile: "n1.pem", KeyFile: "n1-key.pem"})
//	trans, err := peertls.NewRaftTransport("10.0.0.5:7000", "", b, 3, 10*time.Second, logger,
//		peertls.WithAllowPublic(cfg.AllowPublic),
//		peertls.WithAuthorize(func(id string) error { ... is id a known server? ... }))
//	srv := &http.Server{Addr: peerAddr, Handler: h, TLSConfig: b.ServerConfig()}
//	srv.ListenAndServeTLS("", "") // in a handler: peertls.PeerNodeID(*r.TLS)
//	client := b.HTTPClient() // HTTP/2, presents the node certificate
//
// Raft connections negotiate the ALPN protocol RaftALPN, so a Raft port
// and an HTTP port cannot be confused. A node's certificate must cover the
// host part of the addresses peers dial (Raft advertise address, API
// address) as DNS name or IP address. Gossip (memberlist) does not use
// TLS; it is encrypted with the shared gossip key (see below) and carries
// no identity, so never authorise anything on gossip alone.
//
// # Provisioning a network
//
// Each network has exactly one CA, created and held offline by the network
// operator:
//
//	verbund certs init-ca --dir ./ca --cn "Verbund prod CA"   # ca.pem, ca-key.pem (0600), 10 years
//
// ca-key.pem never goes onto a node; keep it offline (encrypted media or
// an HSM-backed copy) and use it only to issue certificates. ca.pem is
// public and goes to every node.
//
// For each node the operator issues a certificate for the node id and the
// hosts (DNS names and IP addresses) under which other nodes reach it:
//
//	verbund certs issue --ca-dir ./ca --node de-09162000 \
//		--host node1.muenchen.example --host 10.0.0.5 --out ./out   # de-09162000.pem, de-09162000-key.pem (0600), 1 year
//
// and delivers ca.pem, <id>.pem and <id>-key.pem to the node over a secure
// channel. (Alternatively the node generates its key and the operator
// signs a CSR; this package does not implement that yet.) Key files must
// have mode 0600; Load refuses wider permissions. The certificate never
// outlives the CA.
//
// # Rotating certificates
//
// Node certificates: issue a new certificate before the old one expires
// (Bundle.Leaf().NotAfter; e.g. at two thirds of its lifetime), replace
// the node's files and restart the node; peers accept it at once because
// it comes from the same CA. There is no hot reload. To revoke a node,
// remove it from the Raft configuration and reject its id in the
// Authorize hook; there are no CRLs, so keep node certificates short-lived.
//
// The CA: create a new CA well before the old one expires, then
//
//  1. append the new CA certificate to every node's CA file (old + new)
//     and restart each node; all nodes now trust both;
//  2. issue new node certificates from the new CA and roll them out node
//     by node;
//  3. remove the old CA certificate from every CA file and restart.
//
// Skipping a step leaves pairs of nodes that cannot verify each other.
//
// # The gossip key
//
// Gossip is encrypted with a 32-byte AES key that all nodes of the network
// share (membership.Config.Keyring). Create it once with
//
//	verbund certs gossip-key   # prints the key, base64
//
// and distribute it like a private key. Rotate it in three cluster-wide
// rounds, finishing each round on every node before the next: install the
// new key everywhere (all nodes can read it), use it everywhere (all nodes
// write with it; the old key is still readable), then remove the old key
// everywhere. Nodes that are down during a rotation need the new key in
// their configuration before they restart. See package membership.
package peertls
