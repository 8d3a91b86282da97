package node

import (
	"net/http"
	"strings"

	"github.com/verbund/verbund/node/web"
)

// The web pages (node/web): the citizen portal, the clerk's inbox and the
// agency console, served on the public listener at "/" and under
// web.Prefixes. The pages call this node's API in-process through the
// public listener's guarded handler, so the access policy and the rate
// limits judge each call as the visitor's.

// isPageAsset reports whether r needs no budget of its own: a static
// asset of the pages, or an API call a page makes in-process while
// serving a page view that the rate limiter admitted (a page makes a
// bounded number of them; a visitor cannot reach this path from the
// network, the mark is a context value).
func isPageAsset(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/static/") || web.FromPage(r.Context())
}

// isPagePath reports whether path belongs to the web pages.
func isPagePath(path string) bool {
	if path == "/" {
		return true
	}
	for _, p := range web.Prefixes {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// pagesHandler builds the pages on top of api, the public listener's
// guarded API handler.
func (n *Node) pagesHandler(api http.Handler) (http.Handler, error) {
	s, err := web.New(web.Config{
		API:    api,
		OrgID:  n.cfg.OrgID,
		NodeID: n.cfg.NodeID,
		Logger: n.log,
	})
	if err != nil {
		return nil, err
	}
	return s.Handler(), nil
}
