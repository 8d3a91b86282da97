package node

import (
	"net/http"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/node/handoverapi"
)

// handoverAPI mounts the HandoverService: the Connect adapter of the
// handover domain (node/handoverapi) over this node's Service
// (handover.go). Which procedures other nodes may call, and which only case
// workers on this machine, is in access.go.
func (n *Node) handoverAPI() (string, http.Handler) {
	return handoverapi.NewHandler(n.handover, connect.WithCompressMinBytes(CompressMinBytes))
}
