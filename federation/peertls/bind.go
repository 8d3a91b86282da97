package peertls

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// ErrPublicBind is returned by CheckBind for an address that is not
// loopback-only when public binds are not allowed.
var ErrPublicBind = errors.New("refusing to listen on a non-loopback address (not configured to allow public binds)")

// CheckBind checks a listen address host:port. Unless allowPublic, the
// host must be a loopback IP address (127.0.0.0/8, ::1) or "localhost";
// an empty host, 0.0.0.0 and [::] (all interfaces), other IP addresses and
// host names are refused with ErrPublicBind. The port must be a number
// (0: any free port).
func CheckBind(addr string, allowPublic bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("bind address %q: %w", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("bind address %q: port %q is not a number from 0 to 65535", addr, port)
	}
	if allowPublic {
		return nil
	}
	if host == "" {
		return fmt.Errorf("bind address %q listens on all interfaces: %w", addr, ErrPublicBind)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("bind address %q: host %q is not a loopback IP address or localhost: %w", addr, host, ErrPublicBind)
	}
	ip = ip.Unmap()
	switch {
	case ip.IsUnspecified():
		return fmt.Errorf("bind address %q listens on all interfaces: %w", addr, ErrPublicBind)
	case !ip.IsLoopback():
		return fmt.Errorf("bind address %q is not a loopback address: %w", addr, ErrPublicBind)
	}
	return nil
}

// GossipKeySize is the size of a gossip encryption key (AES-256).
const GossipKeySize = 32

// NewGossipKey returns a fresh random 32-byte gossip encryption key,
// base64-encoded (standard encoding, as memberlist and Consul use it).
func NewGossipKey() (string, error) {
	k := make([]byte, GossipKeySize)
	if _, err := rand.Read(k); err != nil {
		return "", fmt.Errorf("peertls: gossip key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(k), nil
}
