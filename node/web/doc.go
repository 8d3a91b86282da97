// Package web holds the node's web pages: the citizen portal, the clerk's
// inbox and the agency console, server-rendered in German with the KERN UX
// design system (static/kern, copied from npm by scripts/web-assets.sh and
// embedded), working without JavaScript where the flow allows it.
//
// The pages read and write only through the node's Connect API, called
// in-process (inproc.go) with the visitor's source address and, for staff,
// the bearer token of their session: the node's access policy and rate
// limits apply to a page exactly as to the command line.
//
// One file per job:
//
//	server.go          Config, New, the handler: routes, security headers (CSP), errors
//	render.go          templates (templates/*.html), the page frame
//	csrf.go            CSRF tokens for every form (double submit, SameSite cookies)
//	session.go         staff sessions: sign-in, the token cookie, who is signed in
//	inproc.go          the in-process transport to the node's API and the clients
//	static.go          embedded assets (KERN UX, fonts, our CSS and script)
//	routes_citizen.go  the citizen portal's routes, the start page, template functions
//	citizen_place.go   the place chooser: /portal/ort, orte.json, the verbund_ort cookie
//	citizen_services.go life situations, search, the service page (who delivers it where)
//	citizen_track.go   case tracking with the proactive offers (ListNextSteps)
//	citizen_format.go  German names and texts of channels, fees, addresses, events
//	citizen_info.go    /info/: Impressum, Datenschutz, Barrierefreiheit (feedback), Leichte Sprache, Gebärdensprache
//	routes_staff.go    staff sign-in and the staff area's routes
//	staff_inbox.go     the clerk's inbox: cases, one case and its actions, offers, outbox
//	staff_console.go   the agency console: coverage (+ CSV), network, handover statistics
//	staff_draw.go      the console's SVG: coverage map (projection, marks), bar and line charts
//	staff_table.go     tables sorted by query parameters; CSV for German Excel
package web
