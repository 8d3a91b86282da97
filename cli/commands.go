package cli

// commands is every top-level command of verbund: one static table, built
// from each group's constructor in the group's file. "verbund help" lists
// them by name; TestCommandTable checks that the names are unique and valid
// and that every command has a Run.
var commands = []Command{
	// Client commands (client_*.go): they talk to a node's API at --addr.
	orgsCommand(),      // client_orgs.go
	servicesCommand(),  // client_services.go
	providersCommand(), // client_providers.go
	offeringsCommand(), // client_providers.go
	publishCommand(),   // client_publish.go
	joinCommand(),      // client_join.go
	orgCommand(),       // client_gov.go
	authoriseCommand(), // client_authorise.go
	historyCommand(),   // client_history.go
	handoverCommand(),  // client_handover.go
	inboxCommand(),     // client_handover.go
	caseCommand(),      // client_handover.go
	trackCommand(),     // client_handover.go
	auditCommand(),     // client_handover.go
	keysCommand(),      // client_keys.go
	membersCommand(),   // client_cluster.go
	clusterCommand(),   // client_cluster.go
	statusCommand(),    // client_cluster.go
	watchCommand(),     // client_watch.go
	loginCommand(),     // client_users.go
	usersCommand(),     // client_users.go

	// Server side (server_*.go): run a node in this process, or prepare and
	// load a network.
	initCommand(),    // server_init.go
	nodeCommand(),    // server_node.go
	devCommand(),     // server_node.go
	certsCommand(),   // server_certs.go
	importCommand(),  // server_import.go
	synthCommand(),   // client_synth.go
	exportCommand(),  // server_import_catalogue.go
	recoverCommand(), // server_recover.go

	// Backups and restores of the registry and the handover store
	// (server_snapshot.go).
	snapshotCommand(),

	// About this binary.
	versionCommand(), // version.go
}
