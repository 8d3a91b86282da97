package nodetest

import (
	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/keys"
)

func loadKey(path string) (jose.JSONWebKey, error) { return keys.Load(path) }
