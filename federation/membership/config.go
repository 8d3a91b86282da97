package membership

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/memberlist"
)

// Profiles select memberlist's timing.
const (
	// ProfileLAN is memberlist's LAN profile: failures are detected in a few
	// seconds, dead nodes are gossiped to for 30 s.
	ProfileLAN = "lan"
	// ProfileLocal has short timeouts for tests on one machine (loopback).
	// Never use it between real hosts.
	ProfileLocal = "local"
)

// Defaults.
const (
	DefaultPort           = 7946
	DefaultRejoinInterval = 30 * time.Second
	DefaultForgetAfter    = 72 * time.Hour
)

// Config configures a Membership. Start from DefaultConfig.
type Config struct {
	// NodeName is the unique gossip name of this node; defaults to
	// Meta.NodeID.
	NodeName string
	// BindAddr/BindPort are where the default transport listens (TCP and
	// UDP on the same port). BindPort 0 picks a free port. Ignored when
	// Transport is set.
	BindAddr string
	BindPort int
	// AdvertiseAddr/AdvertisePort are what other nodes use to reach this
	// one; empty/0 means the bound address and port.
	AdvertiseAddr string
	AdvertisePort int

	Meta Meta

	// Keyring holds AES keys (16, 24 or 32 bytes); the first is the
	// primary, used to encrypt; all are tried to decrypt. Empty means no
	// encryption, which is refused unless AllowPlaintext is set.
	Keyring        [][]byte
	AllowPlaintext bool

	// Label is memberlist's cluster label: packets and streams carrying
	// another label are dropped, so nodes of another cluster are kept out.
	// It is not a secret and not authentication.
	Label string

	// Join lists seeds (host:port) used by Join(ctx, nil) and, while this
	// node sees no other live member, by the rejoin loop.
	Join []string

	// RejoinInterval is how often the node re-joins remembered peers that
	// are dead or left (and the seeds while it is alone). memberlist never
	// probes dead nodes again, so without this a healed partition stays
	// split. 0 means DefaultRejoinInterval; negative disables the loop.
	RejoinInterval time.Duration

	// ForgetAfter is how long a dead or left peer is remembered (and
	// re-joined) after memberlist itself forgot it. 0 means
	// DefaultForgetAfter; negative means forever.
	ForgetAfter time.Duration

	// Profile is ProfileLAN (default) or ProfileLocal.
	Profile string

	// Transport replaces memberlist's UDP/TCP transport, e.g. with a
	// FaultyTransport in tests. BindAddr and BindPort are then unused.
	Transport memberlist.NodeAwareTransport

	// Logger receives this package's logs and memberlist's own (at debug
	// level). nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a config for a LAN/WAN node on DefaultPort with the
// rejoin loop on. NodeName, Meta and Keyring must still be filled in.
func DefaultConfig() Config {
	return Config{
		BindAddr:       "0.0.0.0",
		BindPort:       DefaultPort,
		Meta:           Meta{Role: RoleMember},
		RejoinInterval: DefaultRejoinInterval,
		ForgetAfter:    DefaultForgetAfter,
		Profile:        ProfileLAN,
	}
}

// withDefaults fills zero values that have defaults.
func (c Config) withDefaults() Config {
	if c.NodeName == "" {
		c.NodeName = c.Meta.NodeID
	}
	if c.BindAddr == "" {
		c.BindAddr = "0.0.0.0"
	}
	if c.RejoinInterval == 0 {
		c.RejoinInterval = DefaultRejoinInterval
	}
	if c.ForgetAfter == 0 {
		c.ForgetAfter = DefaultForgetAfter
	}
	if c.Profile == "" {
		c.Profile = ProfileLAN
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first problem with c (zero values that have defaults
// are accepted).
func (c Config) Validate() error {
	return c.withDefaults().validate()
}

func (c Config) validate() error {
	if c.NodeName == "" {
		return errors.New("membership: NodeName (or Meta.NodeID) is required")
	}
	if err := c.Meta.Validate(); err != nil {
		return err
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		return fmt.Errorf("membership: BindPort %d out of range", c.BindPort)
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		return fmt.Errorf("membership: AdvertisePort %d out of range", c.AdvertisePort)
	}
	if len(c.Keyring) == 0 && !c.AllowPlaintext {
		return errors.New("membership: no gossip key configured; set Keyring (or AllowPlaintext for tests)")
	}
	for i, k := range c.Keyring {
		if err := memberlist.ValidateKey(k); err != nil {
			return fmt.Errorf("membership: Keyring[%d]: %w", i, err)
		}
		for _, o := range c.Keyring[:i] {
			if bytes.Equal(k, o) {
				return fmt.Errorf("membership: Keyring[%d] is a duplicate", i)
			}
		}
	}
	if len(c.Label) > memberlist.LabelMaxSize {
		return fmt.Errorf("membership: Label is %d bytes, the limit is %d", len(c.Label), memberlist.LabelMaxSize)
	}
	for i, s := range c.Join {
		if s == "" {
			return fmt.Errorf("membership: Join[%d] is empty", i)
		}
	}
	switch c.Profile {
	case ProfileLAN, ProfileLocal:
	default:
		return fmt.Errorf("membership: unknown Profile %q (want %q or %q)", c.Profile, ProfileLAN, ProfileLocal)
	}
	return nil
}

// Timing of ProfileLocal. Exposed to the package's tests through these
// constants.
const (
	localProbeInterval       = 200 * time.Millisecond
	localProbeTimeout        = 100 * time.Millisecond
	localGossipInterval      = 50 * time.Millisecond
	localGossipToTheDeadTime = 2 * time.Second
	localPushPullInterval    = 2 * time.Second
)

// memberlistConfig builds memberlist's config (without delegates).
func (c Config) memberlistConfig() (*memberlist.Config, error) {
	var mc *memberlist.Config
	switch c.Profile {
	case ProfileLocal:
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = localProbeInterval
		mc.ProbeTimeout = localProbeTimeout
		mc.GossipInterval = localGossipInterval
		mc.GossipToTheDeadTime = localGossipToTheDeadTime
		mc.PushPullInterval = localPushPullInterval
		mc.TCPTimeout = time.Second
		mc.RetransmitMult = 3
		mc.SuspicionMult = 3
		mc.SuspicionMaxTimeoutMult = 4
	default:
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name = c.NodeName
	mc.BindAddr = c.BindAddr
	mc.BindPort = c.BindPort
	mc.AdvertiseAddr = c.AdvertiseAddr
	mc.AdvertisePort = c.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = c.BindPort
	}
	mc.Label = c.Label
	if c.Transport != nil {
		mc.Transport = c.Transport
	}
	if len(c.Keyring) > 0 {
		kr, err := memberlist.NewKeyring(c.Keyring, c.Keyring[0])
		if err != nil {
			return nil, fmt.Errorf("membership: keyring: %w", err)
		}
		mc.Keyring = kr
	}
	// Refuse anything that is not encrypted with one of our keys.
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.Logger = newStdLogger(c.Logger)
	return mc, nil
}
