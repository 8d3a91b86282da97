// Package membership is the node's gossip membership: which Verbund nodes
// exist, how to reach them (APIAddr, RaftAddr), which Role they have and
// whether they are alive, suspect, dead or left. It wraps
// hashicorp/memberlist (SWIM).
//
// # Usage
//
//	cfg := membership.DefaultConfig()
//	cfg.Meta = membership.Meta{NodeID: "de-09162000", OrgID: "muenchen", Role: membership.RoleVoter,
//		APIAddr: "10.0.0.5:8443", RaftAddr: "10.0.0.5:7000", Version: "1.4.0"}
//	cfg.Keyring = [][]byte{key}          // 16/24/32-byte AES key(s), first is primary
//	cfg.Label = "verbund-prod"           // keeps other clusters' gossip out
//	cfg.Join = []string{"seed1:7946", "seed2:7946"}
//	m, err := membership.New(cfg, handler) // handler may be nil
//	_, err = m.Join(ctx, nil)
//	defer m.Shutdown()
//	defer m.Leave(5 * time.Second)
//
// # Trust
//
// Gossip has no per-node identity: any holder of the gossip key can join
// under any name and claim any Meta (role, addresses). Membership answers
// "who is probably out there and where", never "who may do what". Do not
// authorise anything (Raft configuration changes, handovers, registry
// writes) on membership alone; authenticate the peer on the API or Raft
// connection with its own credentials.
//
// # States
//
// memberlist keeps alive/suspect/dead/left per node but does not publish it
// (Node.State is never updated, hashicorp/memberlist#266); this package reads
// it from memberlist's table under memberlist's lock (introspect.go, checked
// against the pinned version at load time). Suspect means the node missed
// probes and has a few seconds to refute; dead means the cluster gave up on
// it; left means it called Leave. Members keeps dead and left nodes after
// memberlist forgets them, until Config.ForgetAfter (default 72 h) has
// passed since they died or left.
//
// # Partitions and the rejoin loop
//
// memberlist does not probe dead nodes and, after GossipToTheDeadTime (30 s
// on the LAN profile), does not gossip to them either: when a partition that
// lasted longer heals, both halves keep each other dead forever. Every
// Config.RejoinInterval (default 30 s) the rejoin loop therefore joins up to
// three randomly chosen remembered dead or left peers, and the configured
// seeds while the node sees no other live member. One successful exchange
// merges both sides' whole state. A healed partition merges within one or
// two intervals: once memberlist has forgotten the other side (shortly after
// GossipToTheDeadTime) the first exchange suffices; before that, the first
// exchange makes both sides refute their stale "dead" record and the next
// one carries the newer incarnation.
//
// # Rotating the gossip key
//
// Each node encrypts with its primary key and decrypts with any installed
// key, and refuses unencrypted gossip. Rotate cluster-wide in three rounds,
// finishing each round on every node before starting the next:
//
//  1. InstallKey(new) on every node (all can now read the new key);
//  2. UseKey(new) on every node (all now write with it; old still readable);
//  3. RemoveKey(old) on every node.
//
// Any other order leaves some pair of nodes unable to read each other, and
// they declare each other dead. A node down during the rotation must get the
// new key in its Config.Keyring before it restarts; after step 3 a node that
// has only the old key cannot join. ListKeys on each node shows progress.
//
// # Testing
//
// ProfileLocal shortens memberlist's timeouts for clusters on one machine.
// FaultyTransport (with NewNetTransport and Partition) drops traffic between
// chosen gossip addresses to simulate partitions.
package membership
