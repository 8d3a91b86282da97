package nodetest_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/dgraph-io/badger/v4"

	"github.com/verbund/verbund/node/nodetest"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// TestEnsureSameCatchesOneMissingKey: the check passes on a cluster that
// agrees, and fails, naming the node and the key, when one key is deleted
// from a replica's registry database (live, through its badger DB): an
// organisation record (replicated state) or a change-feed entry (only in a
// server's database); or one organisation record from a member's
// change-feed copy (offline, between a kill and a restart: the member
// resumes at its stored index and never hears of the record again).
func TestEnsureSameCatchesOneMissingKey(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Voters: 1, Replicas: 1, Members: 1})
	const replica, member = 1, 2
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ids []string
	for i := range 3 {
		id := fmt.Sprintf("09162000%04d", i)
		jws, err := registry.SignCommand(registry.NewCommand("test-operator", &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
			Id: id, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: "Gemeinde " + id,
		}}}), c.OperatorKey())
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.Publish(0).Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: []string{jws}}))
		if err != nil {
			t.Fatal(err)
		}
		if r := res.Msg.GetResults()[0]; r.GetErrorCode() != "" {
			t.Fatalf("publish %s: %s", id, r.GetErrorMessage())
		}
		ids = append(ids, id)
	}
	st := c.EnsureSame(t)
	if st.Servers != 2 || st.Members != 1 || st.Replicated == 0 {
		t.Fatalf("EnsureSame compared %+v, want 2 servers and 1 member", st)
	}

	expectDiverged := func(node, key string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.CheckSame(ctx)
		if !errors.Is(err, nodetest.ErrDiverged) {
			t.Fatalf("one key missing on %s: CheckSame returned %v, want ErrDiverged", node, err)
		}
		if msg := err.Error(); !strings.Contains(msg, node) || !strings.Contains(msg, fmt.Sprintf("%q only in the first", key)) {
			t.Fatalf("divergence report does not name %s and key %q: %v", node, key, err)
		}
		t.Logf("as expected: %v", err)
	}

	// A replica's registry database loses one key, then gets it back.
	db := c.Nodes[replica].Node().FSM().DB()
	for _, key := range []string{"o/" + ids[1], feedKey(t, db)} {
		var saved []byte
		if err := db.Update(func(txn *badger.Txn) error {
			it, err := txn.Get([]byte(key))
			if err != nil {
				return err
			}
			if saved, err = it.ValueCopy(nil); err != nil {
				return err
			}
			return txn.Delete([]byte(key))
		}); err != nil {
			t.Fatal(err)
		}
		expectDiverged(c.Nodes[replica].ID, key)
		if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(key), saved) }); err != nil {
			t.Fatal(err)
		}
		c.EnsureSame(t)
	}

	// A member's change-feed copy loses one record.
	key := "o/" + ids[2]
	c.Kill(member)
	mdb, err := badger.Open(badger.DefaultOptions(filepath.Join(c.Nodes[member].Dir, "state")).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := mdb.Update(func(txn *badger.Txn) error {
		if _, err := txn.Get([]byte(key)); err != nil {
			return fmt.Errorf("the member's copy has no %s: %w", key, err)
		}
		return txn.Delete([]byte(key))
	}); err != nil {
		t.Fatal(err)
	}
	if err := mdb.Close(); err != nil {
		t.Fatal(err)
	}
	c.Restart(member)
	expectDiverged(c.Nodes[member].ID, key)
}

// feedKey returns the key of the newest change-feed entry in db (prefix e/,
// see registry/keys.go): present on servers only, outside the replicated
// keyspace.
func feedKey(t *testing.T, db *badger.DB) string {
	t.Helper()
	var key string
	if err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("e/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			key = string(it.Item().KeyCopy(nil))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if key == "" {
		t.Fatal("no change-feed entry on the replica")
	}
	return key
}
