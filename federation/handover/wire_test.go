package handover_test

import (
	"net/http"

	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/node/connecterr"
	"github.com/verbund/verbund/node/handoverapi"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
)

// The tests of package handover run over the node's Connect edge for the
// Service (see WireHandler in helpers_test.go).
func init() {
	handover.WireHandler = func(s *handover.Service) (string, http.Handler) { return handoverapi.NewHandler(s) }
	handover.WirePeer = func(hc *http.Client, endpoint string) handover.Peer {
		return handoverapi.Peer{Client: federationv1connect.NewHandoverServiceClient(hc, endpoint)}
	}
	handover.WireError = connecterr.ToConnect
}
