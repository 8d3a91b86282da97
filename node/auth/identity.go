package auth

import (
	"context"
	"fmt"
	"slices"

	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
)

// Kind says what authenticated a request.
type Kind uint8

const (
	// Anonymous: no credential; known by its source address only.
	Anonymous Kind = iota
	// Person: a user of this node (bearer token or client certificate).
	Person
	// OperatorAdmin: an ADMIN token of a node of the network operator,
	// presented to another node (cluster administration).
	OperatorAdmin
	// PeerNode: another node, by its certificate of the network CA (peer
	// listener).
	PeerNode
)

func (k Kind) String() string {
	return [...]string{"anonymous", "person", "operator-admin", "node"}[k]
}

// Identity is who a request comes from, as the node's guard established
// it. The zero value is anonymous.
type Identity struct {
	Kind Kind
	// Addr is the request's source address (r.RemoteAddr; proxy headers
	// are ignored).
	Addr string
	// User is the person (Person; for OperatorAdmin the token's claims
	// only: username and roles).
	User *nodev1.User
	// Org is the person's organisation (the token's issuer, or this
	// node's organisation for a certificate).
	Org string
	// Node is the node that issued the token (Person, OperatorAdmin) or
	// the calling node (PeerNode).
	Node string
	// Method is "token" or "certificate" for a person.
	Method string
}

// HasRole reports whether the identity is a person (or operator admin)
// holding role r.
func (id Identity) HasRole(r nodev1.Role) bool {
	return (id.Kind == Person || id.Kind == OperatorAdmin) && slices.Contains(id.User.GetRoles(), r)
}

// LimitKey is the key rate limits are kept under: the identity when
// authenticated, else the source address.
func (id Identity) LimitKey() (key string, authenticated bool) {
	switch id.Kind {
	case Person, OperatorAdmin:
		return "user:" + id.User.GetUsername() + "@" + id.Node, true
	case PeerNode:
		return "node:" + id.Node, true
	}
	return "addr:" + id.Addr, false
}

// Actor is how the person is named in signed commands and audit entries:
// "<display name> (<username>@<node>)"; "" for anything but a person.
func (id Identity) Actor() string {
	if id.Kind != Person && id.Kind != OperatorAdmin {
		return ""
	}
	return fmt.Sprintf("%s (%s@%s)", id.User.GetDisplayName(), id.User.GetUsername(), id.Node)
}

type identityKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity ctx carries (anonymous if none).
func FromContext(ctx context.Context) Identity {
	id, _ := ctx.Value(identityKey{}).(Identity)
	return id
}
