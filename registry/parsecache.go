package registry

import (
	"sync"

	jose "github.com/go-jose/go-jose/v4"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

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
