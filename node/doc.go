// Package node composes one running Verbund node and is the system's one
// edge: storage (badger for the registry state, a write-ahead log for
// Raft), the registry state machine under hashicorp/raft, gossip, the
// handover service, and the Connect API (gRPC, gRPC-Web and Connect JSON on
// one port, with gRPC health and reflection). The domains (registry,
// federation/*) speak Go; this package translates between them and the
// network and decides who may reach what.
//
// One file per job:
//
//	node.go          lifecycle: New, Start, Close/Kill, storage, Raft, listeners
//	config.go        Config, DefaultConfig, Validate
//	access.go        the listeners (public, peer, admin), who is calling (tokens, client
//	                 and node certificates) and the access policy table
//	routes.go        what each listener mounts
//	pages.go         the web pages (node/web) on the public listener: paths, wiring
//	api_publish.go   PublishService handler
//	api_query.go     QueryService handler
//	api_watch.go     WatchService handler (the change feed servers stream)
//	api_cluster.go   ClusterService handler (ReadIndex, ListMembers, TransferLeadership, RotateGossipKey)
//	api_node.go      NodeService handler (GetStatus, RotateKeys, RevokeKey)
//	api_auth.go      AuthService handler (sign-in, users), token issue and verification
//	api_console.go   ConsoleService handler (registry mutations signed for a person, by role)
//	api_handover.go  HandoverService, mounted from node/handoverapi
//	api_health.go    gRPC health
//	health.go        /healthz and /readyz for load balancers
//	publish.go       the write path: submit (admit here on the leader, else forward), publishOwn
//	forward.go       forwarding to the leader (retried with backoff through a failover), the one peer client cache, the peer book (known-peers.json)
//	readindex.go     linearizable reads: read barrier, leader read index, staleness
//	follow.go        a member's follow loop over a server's change feed
//	reconcile.go     Raft membership reconciliation with gossip (leader)
//	gossip.go        gossip start and member lookups
//	keyrotation.go   the organisation's key ring, rotation and revocation
//	handover.go      handover wiring: store, service, audit-head publisher
//	genesis.go       registering the network operator on an empty registry; a restart with the genesis flags rejoins
//	ratelimit.go     per-caller request budgets, paced refusals, fair query slots, stream and snapshot caps
//	expiry.go        expiry warnings for the organisation's keys and the TLS certificates
//	metrics.go       Prometheus /metrics on the admin listener
//	backup.go        backups: registry snapshot save/inspect/restore, handover store backup
//	                 and restore, quorum-loss recovery (RecoverQuorum)
//	features.go      the version gate: advertised feature level; the leader raises the cluster's
//	                 level once every server supports it
//	formats.go       on-disk format markers of the node's stores (internal/storeformat)
//
// Sub-packages: auth (the node's users, argon2id passwords, signed bearer
// tokens, the caller's identity), connecterr (the one domain-error-to-Connect-code map),
// web (the citizen portal, clerk inbox and agency console), handoverapi (the handover domain's Connect adapter, server and peer
// client), raftlog (the Raft log and stable store; raftstore.go opens it,
// refuses a log that lies and holds RecoverRaftLog), nodetest (an
// in-process cluster harness with power cuts). Write admission itself (parse, pre-verify, dedupe) is the
// registry's (registry.Admission); demo data is imported by the command
// line through Publish, never by the node.
package node
