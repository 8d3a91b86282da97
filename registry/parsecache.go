package registry

import (
	"sync"

	jose "github.com/go-jose/go-jose/v4"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// parsedCache hands commands parsed at the API edge (Admission) to the FSM
// of the same process, so that the leader parses each signed command once
// rather than twice. It is keyed by the exact signed bytes: ParseCommand is
// a pure function of them, so a hit is exactly what parsing again would
// return. Each entry is taken at most once (the FSM may change the parsed
// command while applying it; a second proposal of the same bytes parses
// afresh). Entries whose proposal never reached the log are dropped when
// the cache is full. Other replicas parse and verify as before: this only
// saves work on the node that admitted the command.
type parsedCache struct {
	mu  sync.Mutex
	max int
	m   map[string]*SignedCommand
}

func (c *parsedCache) init(max int) { c.max, c.m = max, make(map[string]*SignedCommand) }

func (c *parsedCache) put(sc *SignedCommand) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[sc.Raw] = sc
}

// take returns and forgets the command parsed from raw, or nil.
func (c *parsedCache) take(raw string) *SignedCommand {
	c.mu.Lock()
	defer c.mu.Unlock()
	sc, ok := c.m[raw]
	if ok {
		delete(c.m, raw)
	}
	return sc
}

// parseCommandOnce is ParseCommand, answered from the cache when this
// process's admission already parsed the same bytes.
func (f *FSM) parseCommandOnce(raw string) (*SignedCommand, error) {
	if sc := f.parsed.take(raw); sc != nil {
		return sc, nil
	}
	return ParseCommand(raw)
}

// keyCache keeps public keys parsed from their registry form (the JWK
// JSON), bounded in size: every signature check needs the issuer's key as
// a jose.JSONWebKey, and parsing the JSON each time cost as much as a
// third of a verification. The parsed key is immutable and shared.
type keyCache struct {
	mu  sync.Mutex
	max int
	m   map[string]jose.JSONWebKey
}

var parsedKeys = keyCache{max: 4096, m: map[string]jose.JSONWebKey{}}

func (c *keyCache) get(pk *registryv1.PublicKey) (jose.JSONWebKey, error) {
	// ParsePublic judges the JWK together with the record's kid, use and
	// alg: all of them are the cache key.
	j := pk.GetKid() + "\x00" + pk.GetUse() + "\x00" + pk.GetAlg() + "\x00" + pk.GetJwkJson()
	c.mu.Lock()
	k, ok := c.m[j]
	c.mu.Unlock()
	if ok {
		return k, nil
	}
	k, err := parseKeyUncached(pk)
	if err != nil {
		return k, err
	}
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[j] = k
	c.mu.Unlock()
	return k, nil
}
