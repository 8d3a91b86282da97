package web

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// The clerk's inbox: the cases handed over to this node's organisation
// (HandoverService.ListInbox), one case with its verified sender, data,
// history and the actions (accept, reject with a problem, forward,
// complete: each a POST form with the CSRF token, answered with a
// redirect and a notice), the proactive offers for the case's service
// (QueryService.ListNextSteps with the providers in this municipality),
// and the outbox (ListOutbox: what is undelivered and why). Every call
// carries the signed-in person's token: the node's policy (role CLERK)
// decides, and its refusal is shown in German.

func (s *Server) inboxRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /amt/posteingang", s.staffOnly(s.inboxPage))
	mux.HandleFunc("GET /amt/fall/{id}", s.staffOnly(s.casePage))
	mux.HandleFunc("GET /amt/fall/{id}/anhang/{n}", s.staffOnly(s.attachment))
	mux.HandleFunc("POST /amt/fall/{id}/{action}", s.postOnly(s.staffForm(s.caseAction)))
	mux.HandleFunc("GET /amt/postausgang", s.staffOnly(s.outboxPage))
}

// staffForm is staffOnly for a case's forms: a POST whose session has
// expired goes to the sign-in page and from there back to the case (not
// to the form's address, which only takes POSTs); nothing is done.
func (s *Server) staffForm(h func(w http.ResponseWriter, r *http.Request, u *User)) http.HandlerFunc {
	staff := s.staffOnly(h)
	return func(w http.ResponseWriter, r *http.Request) {
		if s.currentUser(r) == nil {
			http.Redirect(w, r, "/amt/anmelden?weiter="+urlQueryEscape("/amt/fall/"+url.PathEscape(r.PathValue("id"))), http.StatusSeeOther)
			return
		}
		staff(w, r)
	}
}

// caseStates are the inbox filter's values, in the order offered.
var caseStates = []struct {
	Param string
	State federationv1.CaseState
	Label string
}{
	{"neu", federationv1.CaseState_CASE_STATE_RECEIVED, "Neu eingegangen"},
	{"angenommen", federationv1.CaseState_CASE_STATE_ACCEPTED, "Angenommen"},
	{"abgelehnt", federationv1.CaseState_CASE_STATE_REJECTED, "Abgelehnt"},
	{"erledigt", federationv1.CaseState_CASE_STATE_COMPLETED, "Erledigt"},
	{"weitergeleitet", federationv1.CaseState_CASE_STATE_FORWARDED, "Weitergeleitet"},
}

func caseStateLabel(st federationv1.CaseState) string {
	for _, c := range caseStates {
		if c.State == st {
			return c.Label
		}
	}
	return "Unbekannt"
}

func eventLabel(t federationv1.EventType) string {
	switch t {
	case federationv1.EventType_EVENT_TYPE_HANDED_OVER:
		return "Übergeben"
	case federationv1.EventType_EVENT_TYPE_ACCEPTED:
		return "Angenommen"
	case federationv1.EventType_EVENT_TYPE_REJECTED:
		return "Abgelehnt"
	case federationv1.EventType_EVENT_TYPE_COMPLETED:
		return "Erledigt"
	case federationv1.EventType_EVENT_TYPE_FORWARDED:
		return "Weitergeleitet"
	}
	return "Unbekannt"
}

func outboxStateLabel(st federationv1.OutboxState) string {
	switch st {
	case federationv1.OutboxState_OUTBOX_STATE_PENDING:
		return "Wird zugestellt"
	case federationv1.OutboxState_OUTBOX_STATE_DELIVERED:
		return "Zugestellt"
	case federationv1.OutboxState_OUTBOX_STATE_FAILED:
		return "Endgültig gescheitert"
	}
	return "Unbekannt"
}

func matchLabel(m registryv1.MatchKind) string {
	switch m {
	case registryv1.MatchKind_MATCH_KIND_OWN_MUNICIPALITY:
		return "eigene Gemeinde"
	case registryv1.MatchKind_MATCH_KIND_DELEGATED:
		return "beauftragte Stelle"
	case registryv1.MatchKind_MATCH_KIND_DISTRICT:
		return "Landkreis"
	case registryv1.MatchKind_MATCH_KIND_STATE:
		return "Land oder Bund"
	}
	return ""
}

// apiMessage says in German why an API call failed, without internals
// (the cause is logged).
func apiMessage(err error) string {
	switch apiCode(err) {
	case connect.CodePermissionDenied:
		return "Dafür fehlt Ihnen die Berechtigung: Fälle bearbeiten dürfen nur Beschäftigte mit der Rolle Sachbearbeitung (CLERK)."
	case connect.CodeUnauthenticated:
		return "Ihre Anmeldung ist abgelaufen. Bitte melden Sie sich neu an."
	case connect.CodeFailedPrecondition, connect.CodeAborted:
		return "Der Fall ist nicht (mehr) in einem Zustand, der diesen Schritt erlaubt. Laden Sie die Seite neu, um den aktuellen Stand zu sehen."
	case connect.CodeNotFound:
		return "Nicht gefunden."
	case connect.CodeInvalidArgument:
		return "Die Angaben sind unvollständig oder ungültig."
	case connect.CodeAlreadyExists:
		return "Das ist bereits geschehen."
	case connect.CodeResourceExhausted:
		return "Zu viele Anfragen. Bitte warten Sie eine Minute."
	case connect.CodeUnimplemented:
		return "Diese Auskunft bietet die Software dieses Knotens noch nicht an."
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
		return "Der Dienst ist gerade nicht erreichbar. Bitte versuchen Sie es gleich noch einmal."
	}
	return "Ein interner Fehler ist aufgetreten."
}

// apiStatus is the HTTP status of a page whose main API call failed.
func apiStatus(err error) int {
	switch apiCode(err) {
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeInvalidArgument:
		return http.StatusBadRequest
	case connect.CodeFailedPrecondition, connect.CodeAborted, connect.CodeAlreadyExists:
		return http.StatusConflict
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// names resolves organisation ids and LeiKa keys to names once per page.
type names struct {
	s     *Server
	ctx   context.Context
	orgs  map[string]*registryv1.Organisation
	servs map[string]string
}

func (s *Server) names(ctx context.Context) *names {
	return &names{s: s, ctx: ctx, orgs: map[string]*registryv1.Organisation{}, servs: map[string]string{}}
}

// org returns the organisation (nil if the registry does not know it).
func (n *names) org(id string) *registryv1.Organisation {
	if id == "" {
		return nil
	}
	if o, ok := n.orgs[id]; ok {
		return o
	}
	res, err := n.s.api.query.GetOrganisation(n.ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{Id: id}))
	var o *registryv1.Organisation
	if err == nil {
		o = res.Msg.GetOrganisation()
	}
	n.orgs[id] = o
	return o
}

// orgName is the organisation's name, or its id when the registry does
// not know it.
func (n *names) orgName(id string) string {
	if o := n.org(id); o != nil && o.GetName() != "" {
		return o.GetName()
	}
	return id
}

// service is the service's name, or its key.
func (n *names) service(key string) string {
	if key == "" {
		return "–"
	}
	if v, ok := n.servs[key]; ok {
		return v
	}
	name := key
	res, err := n.s.api.query.GetService(n.ctx, connect.NewRequest(&registryv1.GetServiceRequest{LeikaKey: key}))
	if err == nil && res.Msg.GetService().GetName() != "" {
		name = res.Msg.GetService().GetName()
	}
	n.servs[key] = name
	return name
}

// deadlineKeys are the top-level fields of a case's data read as its
// deadline, first found wins. Case data has no schema; these are the
// names senders use (FIT-Connect's "Frist", English "deadline").
var deadlineKeys = []string{"frist", "deadline", "fällig_am", "faellig_am", "frist_bis", "due_date"}

// caseDeadline returns the case data's deadline: the time if it parses
// (RFC 3339, 2006-01-02 or 02.01.2006), the text otherwise; zero and ""
// if it has none.
func caseDeadline(caseJSON string) (time.Time, string) {
	var m map[string]any
	if json.Unmarshal([]byte(caseJSON), &m) != nil {
		return time.Time{}, ""
	}
	for k, v := range m {
		if !slices.Contains(deadlineKeys, strings.ToLower(k)) {
			continue
		}
		str, ok := v.(string)
		if !ok || str == "" {
			continue
		}
		for _, layout := range []string{time.RFC3339, "2006-01-02", "02.01.2006"} {
			if t, err := time.ParseInLocation(layout, str, berlin); err == nil {
				return t, t.In(berlin).Format("02.01.2006")
			}
		}
		return time.Time{}, str
	}
	return time.Time{}, ""
}

// inboxRow is one line of the inbox table.
type inboxRow struct {
	ID, Service, Sender, Tracking, Status string
	State                                 federationv1.CaseState
	Received                              int64
	Deadline                              string
	DeadlineAt                            time.Time
	Overdue                               bool
}

type inboxData struct {
	Filter   string
	States   []filterOption
	Headers  []sortHeader
	Rows     []inboxRow
	Total    int
	Problem  string
	Truncate bool
}

type filterOption struct {
	Value, Label string
	Selected     bool
}

// deadlineReads is how many open cases the inbox opens to show their
// deadline (the rest show none: the list says so).
const deadlineReads = 300

// inboxMax is how many cases the inbox page reads (ten API pages).
const inboxMax = 10 * 1000

func (s *Server) inboxPage(w http.ResponseWriter, r *http.Request, u *User) {
	q := r.URL.Query()
	filter := q.Get("status")
	req := &federationv1.ListInboxRequest{PageSize: 1000}
	d := inboxData{Filter: filter, States: []filterOption{{Value: "", Label: "Alle", Selected: filter == ""}}}
	for _, c := range caseStates {
		d.States = append(d.States, filterOption{Value: c.Param, Label: c.Label, Selected: filter == c.Param})
		if filter == c.Param {
			req.State = c.State
		}
	}
	var cases []*federationv1.CaseSummary
	for {
		res, err := s.api.handover.ListInbox(r.Context(), connect.NewRequest(req))
		if err != nil {
			s.log.Warn("inbox", "err", err)
			s.render(w, r, apiStatus(err), "amt_posteingang", Page{Title: "Posteingang", Area: "amt", User: u, Error: apiMessage(err), Data: d})
			return
		}
		cases = append(cases, res.Msg.GetCases()...)
		req.PageToken = res.Msg.GetNextPageToken()
		if req.PageToken == "" {
			break
		}
		if len(cases) >= inboxMax {
			d.Truncate = true
			break
		}
	}
	nm := s.names(r.Context())
	now := s.cfg.Now()
	for _, c := range cases {
		row := inboxRow{ID: c.GetHandoverId(), Service: nm.service(c.GetLeikaKey()), Sender: nm.orgName(c.GetFromOrganisationId()),
			Tracking: c.GetTrackingCode(), State: c.GetState(), Status: caseStateLabel(c.GetState()), Received: c.GetReceivedAtUnixMs()}
		d.Rows = append(d.Rows, row)
	}
	// The deadline is in the case data, which ListInbox does not carry:
	// read it for the open cases (those still to be worked on), at most
	// deadlineReads of them.
	reads := 0
	for i := range d.Rows {
		st := d.Rows[i].State
		if st != federationv1.CaseState_CASE_STATE_RECEIVED && st != federationv1.CaseState_CASE_STATE_ACCEPTED {
			continue
		}
		if reads++; reads > deadlineReads {
			break
		}
		res, err := s.api.handover.GetCase(r.Context(), connect.NewRequest(&federationv1.GetCaseRequest{HandoverId: d.Rows[i].ID}))
		if err != nil {
			continue
		}
		d.Rows[i].DeadlineAt, d.Rows[i].Deadline = caseDeadline(res.Msg.GetCase().GetCaseJson())
		d.Rows[i].Overdue = !d.Rows[i].DeadlineAt.IsZero() && d.Rows[i].DeadlineAt.Before(now)
	}
	spec := parseSort(q, []string{"eingang", "leistung", "absender", "frist", "status"}, "eingang", true)
	sortRows(d.Rows, spec, map[string]func(a, b inboxRow) int{
		"eingang":  func(a, b inboxRow) int { return compareNum(a.Received, b.Received) },
		"leistung": func(a, b inboxRow) int { return compareText(a.Service, b.Service) },
		"absender": func(a, b inboxRow) int { return compareText(a.Sender, b.Sender) },
		"status":   func(a, b inboxRow) int { return compareNum(a.State, b.State) },
		"frist": func(a, b inboxRow) int {
			// Cases without a deadline last, in either direction of the
			// dates among themselves.
			switch {
			case a.DeadlineAt.IsZero() && b.DeadlineAt.IsZero():
				return 0
			case a.DeadlineAt.IsZero():
				return 1
			case b.DeadlineAt.IsZero():
				return -1
			}
			return a.DeadlineAt.Compare(b.DeadlineAt)
		},
	})
	d.Headers = sortHeaders("/amt/posteingang", q, spec, [2]string{"leistung", "Leistung"}, [2]string{"absender", "Absender"},
		[2]string{"eingang", "Eingegangen"}, [2]string{"frist", "Frist"}, [2]string{"status", "Status"})
	d.Total = len(d.Rows)
	s.render(w, r, http.StatusOK, "amt_posteingang", Page{Title: "Posteingang", Area: "amt", User: u, Notice: noticeText(q.Get("hinweis")), Data: d})
}

// Problem types a clerk chooses from when rejecting a case: an RFC 7807
// problem's type (URI), its title (the label), and the detail the clerk
// writes. The URIs are this project's (the handover protocol takes any).
var problemTypes = []struct{ Type, Title string }{
	{"urn:verbund:problem:nicht-zustaendig", "Nicht zuständig"},
	{"urn:verbund:problem:unvollstaendig", "Unterlagen oder Angaben unvollständig"},
	{"urn:verbund:problem:fehlerhafte-angaben", "Angaben fehlerhaft oder widersprüchlich"},
	{"urn:verbund:problem:frist-versaeumt", "Frist versäumt"},
	{"urn:verbund:problem:doppelt", "Der Fall liegt bereits vor (doppelt)"},
	{"urn:verbund:problem:sonstiges", "Sonstiger Grund"},
}

// field is one entry of the case data as a definition list.
type field struct {
	Key    string
	Value  string
	Fields []field // a nested object
	Items  []field // an array (Key empty)
}

// caseFields turns case_json into fields: objects become nested lists,
// arrays lists, scalars text (numbers as written, booleans ja/nein).
// Keys keep the sender's order. Invalid JSON becomes one field.
func caseFields(caseJSON string) []field {
	dec := json.NewDecoder(strings.NewReader(caseJSON))
	dec.UseNumber()
	v, err := decodeOrdered(dec)
	if err != nil {
		return []field{{Key: "Daten", Value: caseJSON}}
	}
	f := toField("", v)
	if f.Fields != nil {
		return f.Fields
	}
	return []field{f}
}

// ordered is a JSON object with its keys in order.
type ordered []struct {
	k string
	v any
}

// decodeOrdered decodes one JSON value keeping object key order.
func decodeOrdered(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			o := ordered{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				v, err := decodeOrdered(dec)
				if err != nil {
					return nil, err
				}
				o = append(o, struct {
					k string
					v any
				}{k, v})
			}
			_, err := dec.Token()
			return o, err
		case '[':
			var a []any
			for dec.More() {
				v, err := decodeOrdered(dec)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			_, err := dec.Token()
			if a == nil {
				a = []any{}
			}
			return a, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	default:
		return tok, nil
	}
}

func toField(key string, v any) field {
	switch x := v.(type) {
	case ordered:
		f := field{Key: key, Fields: []field{}}
		for _, kv := range x {
			f.Fields = append(f.Fields, toField(kv.k, kv.v))
		}
		return f
	case []any:
		f := field{Key: key, Items: []field{}}
		for _, it := range x {
			f.Items = append(f.Items, toField("", it))
		}
		return f
	case bool:
		if x {
			return field{Key: key, Value: "ja"}
		}
		return field{Key: key, Value: "nein"}
	case nil:
		return field{Key: key, Value: "–"}
	case json.Number:
		return field{Key: key, Value: x.String()}
	case string:
		return field{Key: key, Value: x}
	}
	return field{Key: key, Value: fmt.Sprint(v)}
}

// signedHeader is what the case page shows of the sender's signature:
// the protected header of the inner JWS (algorithm and key id). The node
// verified the signature against the sender's registry keys when it
// accepted the envelope (it signs a receipt only for a verified one).
type signedHeader struct {
	Alg, Kid, Typ string
}

func jwsHeader(compact string) (signedHeader, bool) {
	first, _, ok := strings.Cut(compact, ".")
	if !ok {
		return signedHeader{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(first)
	if err != nil {
		return signedHeader{}, false
	}
	var h signedHeader
	var m struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	if json.Unmarshal(raw, &m) != nil {
		return signedHeader{}, false
	}
	h.Alg, h.Kid, h.Typ = m.Alg, m.Kid, m.Typ
	return h, true
}

type caseView struct {
	ID, CaseID, Tracking, Service, LeikaKey, Reason, Status string
	State                                                   federationv1.CaseState
	Received, Updated                                       int64
	Sender                                                  string
	SenderID                                                string
	Signature                                               signedHeader
	Signed, Receipt                                         bool
	Envelope                                                string
	Deadline                                                string
	Fields                                                  []field
	Attachments                                             []attachmentView
	History                                                 []historyView
	Previous                                                []hopView
	ForwardedTo                                             string
}

type attachmentView struct {
	N                          int
	Name, MediaType, SHA, Size string
}

type historyView struct {
	At          int64
	What        string
	By          string
	Delivery    string
	Problem     string
	ForwardedTo string
}

type hopView struct {
	From, To string
	At       int64
}

// nextGroup is one "what comes next" relation: its life situation and
// note, and the services it offers.
type nextGroup struct {
	Situation, Note string
	Services        []nextStepView
}

type nextStepView struct {
	Service   string
	LeikaKey  string
	Providers []providerView
	Problem   string
}

type providerView struct {
	Name     string
	Match    string
	Channels []channelView
}

type channelView struct {
	Label, URL, Detail string
}

type caseData struct {
	Case caseView
	// Actions open in this state.
	CanAccept, CanReject, CanForward, CanComplete bool
	ProblemTypes                                  []struct{ Type, Title string }
	// Forwarding: the search and its results.
	Search        string
	Candidates    []*registryv1.Organisation
	SearchDone    bool
	SearchProblem string
	NextSteps     []nextGroup
	NextProblem   string
	// Form values kept after a failed action.
	Form map[string]string
}

func (s *Server) casePage(w http.ResponseWriter, r *http.Request, u *User) {
	s.showCase(w, r, u, http.StatusOK, "", nil)
}

// showCase renders the case page, with errMsg (and the clerk's form
// values) after a failed action.
func (s *Server) showCase(w http.ResponseWriter, r *http.Request, u *User, status int, errMsg string, form map[string]string) {
	id := r.PathValue("id")
	res, err := s.api.handover.GetCase(r.Context(), connect.NewRequest(&federationv1.GetCaseRequest{HandoverId: id}))
	if err != nil {
		msg := apiMessage(err)
		if apiCode(err) == connect.CodeNotFound {
			msg = "Diesen Fall gibt es im Posteingang nicht."
		}
		s.log.Warn("case", "id", id, "err", err)
		s.render(w, r, apiStatus(err), "error", Page{Title: "Fall nicht verfügbar", Area: "amt", User: u, Error: msg})
		return
	}
	c := res.Msg.GetCase()
	sum := c.GetSummary()
	nm := s.names(r.Context())
	v := caseView{ID: sum.GetHandoverId(), CaseID: sum.GetCaseId(), Tracking: sum.GetTrackingCode(), LeikaKey: sum.GetLeikaKey(),
		Service: nm.service(sum.GetLeikaKey()), Reason: sum.GetReason(), State: sum.GetState(), Status: caseStateLabel(sum.GetState()),
		Received: sum.GetReceivedAtUnixMs(), Updated: sum.GetUpdatedAtUnixMs(), Sender: nm.orgName(sum.GetFromOrganisationId()),
		SenderID: sum.GetFromOrganisationId(), Envelope: sum.GetEnvelopeSha256(), Receipt: c.GetReceipt() != "",
		Fields: caseFields(c.GetCaseJson())}
	v.Signature, v.Signed = jwsHeader(c.GetSignedHandover())
	_, v.Deadline = caseDeadline(c.GetCaseJson())
	if c.GetForwardedTo() != "" {
		v.ForwardedTo = nm.orgName(c.GetForwardedTo())
	}
	for i, a := range c.GetAttachments() {
		v.Attachments = append(v.Attachments, attachmentView{N: i + 1, Name: a.GetName(), MediaType: a.GetMediaType(), SHA: a.GetSha256(), Size: byteSize(len(a.GetData()))})
	}
	for _, h := range c.GetPrevious() {
		v.Previous = append(v.Previous, hopView{From: nm.orgName(h.GetFromOrganisationId()), To: nm.orgName(h.GetToOrganisationId()), At: h.GetAtUnixMs()})
	}
	v.History = append(v.History, historyView{At: sum.GetReceivedAtUnixMs(), What: "Eingegangen, Empfang quittiert", By: v.Sender + " → " + nm.orgName(s.cfg.OrgID)})
	for _, e := range c.GetEvents() {
		h := historyView{At: e.GetAtUnixMs(), What: eventLabel(e.GetType()), By: nm.orgName(s.cfg.OrgID), Delivery: outboxStateLabel(e.GetDeliveryState())}
		if p := e.GetProblem(); p != nil {
			h.Problem = strings.TrimSpace(p.GetTitle() + ": " + p.GetDetail())
		}
		if e.GetForwardedTo() != "" {
			h.ForwardedTo = nm.orgName(e.GetForwardedTo())
		}
		v.History = append(v.History, h)
	}
	sort.SliceStable(v.History, func(i, j int) bool { return v.History[i].At < v.History[j].At })

	d := caseData{Case: v, ProblemTypes: problemTypes, Form: form}
	switch v.State {
	case federationv1.CaseState_CASE_STATE_RECEIVED:
		d.CanAccept, d.CanReject, d.CanForward = true, true, true
	case federationv1.CaseState_CASE_STATE_ACCEPTED:
		d.CanReject, d.CanForward, d.CanComplete = true, true, true
	}
	if d.CanForward {
		d.Search = strings.TrimSpace(r.URL.Query().Get("empfaenger"))
		if d.Search != "" {
			d.SearchDone = true
			d.Candidates, err = s.searchOrganisations(r.Context(), d.Search)
			if err != nil {
				d.SearchProblem = apiMessage(err)
			}
		}
	}
	d.NextSteps, d.NextProblem = s.nextSteps(r.Context(), nm, v.LeikaKey)
	s.render(w, r, status, "amt_fall", Page{Title: "Fall: " + v.Service, Area: "amt", User: u, Error: errMsg, Notice: noticeText(r.URL.Query().Get("hinweis")), Data: d})
}

// searchOrganisations finds forwarding recipients by name: the place
// search (ListOrganisations.query), or a name prefix where the registry
// does not have it yet. At most 20, without this node's organisation.
func (s *Server) searchOrganisations(ctx context.Context, text string) ([]*registryv1.Organisation, error) {
	res, err := s.api.query.ListOrganisations(ctx, connect.NewRequest(&registryv1.ListOrganisationsRequest{Query: text, PageSize: 20}))
	if err != nil && apiCode(err) != connect.CodeInvalidArgument && apiCode(err) != connect.CodeUnimplemented {
		return nil, err
	}
	if err != nil || len(res.Msg.GetOrganisations()) == 0 {
		res, err = s.api.query.ListOrganisations(ctx, connect.NewRequest(&registryv1.ListOrganisationsRequest{NamePrefix: text, PageSize: 20}))
		if err != nil {
			return nil, err
		}
	}
	var out []*registryv1.Organisation
	for _, o := range res.Msg.GetOrganisations() {
		if o.GetId() != s.cfg.OrgID {
			out = append(out, o)
		}
	}
	return out, nil
}

// nextStepsMax bounds the services offered next on a case page.
const nextStepsMax = 8

// nextSteps returns the proactive offers for a case of service key: the
// services that come next (ListNextSteps, with this municipality's
// state's relations) and who provides each to a citizen of this
// municipality (FindProviders for its ARS, the best three).
func (s *Server) nextSteps(ctx context.Context, nm *names, key string) ([]nextGroup, string) {
	if key == "" {
		return nil, ""
	}
	own := nm.org(s.cfg.OrgID)
	area := own.GetArs()
	res, err := s.api.query.ListNextSteps(ctx, connect.NewRequest(&registryv1.ListNextStepsRequest{TriggerLeikaKey: key, Area: area}))
	if err != nil {
		if apiCode(err) == connect.CodeUnimplemented {
			return nil, "Die Software dieses Knotens kennt die „nächsten Schritte“ noch nicht (ListNextSteps fehlt); Angebote können deshalb nicht angezeigt werden."
		}
		return nil, "Die nächsten Schritte konnten nicht geladen werden: " + apiMessage(err)
	}
	var out []nextGroup
	seen := map[string]bool{}
	shown := 0
	for _, ns := range res.Msg.GetNextSteps() {
		g := nextGroup{Situation: ns.GetLifeSituation(), Note: ns.GetNote()}
		for _, next := range ns.GetNextLeikaKeys() {
			if seen[next] || shown >= nextStepsMax {
				continue
			}
			seen[next] = true
			shown++
			v := nextStepView{LeikaKey: next, Service: nm.service(next)}
			if area == "" {
				v.Problem = "Diese Organisation hat keinen Regionalschlüssel; Anbieter vor Ort können nicht bestimmt werden."
			} else if pr, err := s.api.query.FindProviders(ctx, connect.NewRequest(&registryv1.FindProvidersRequest{LeikaKey: next, Area: area, Limit: 3})); err != nil {
				v.Problem = "Anbieter konnten nicht geladen werden: " + apiMessage(err)
			} else {
				for _, p := range pr.Msg.GetProviders() {
					pv := providerView{Name: p.GetOrganisation().GetName(), Match: matchLabel(p.GetMatch())}
					// One entry per kind of channel (the first: an
					// offer beside a case, not the full service page).
					kinds := map[registryv1.ChannelKind]bool{}
					for _, ch := range p.GetOffering().GetChannels() {
						if kinds[ch.GetKind()] {
							continue
						}
						kinds[ch.GetKind()] = true
						cv := channelView{Label: channelName(ch.GetKind()), URL: safeURL(ch.GetUrl())}
						switch {
						case ch.GetPhone() != "":
							cv.Detail = ch.GetPhone()
						case ch.GetAddress().GetStreet() != "":
							cv.Detail = strings.TrimSpace(ch.GetAddress().GetStreet() + ", " + ch.GetAddress().GetPostalCode() + " " + ch.GetAddress().GetCity())
						case ch.GetEmail() != "":
							cv.Detail = ch.GetEmail()
						}
						pv.Channels = append(pv.Channels, cv)
					}
					v.Providers = append(v.Providers, pv)
				}
			}
			g.Services = append(g.Services, v)
		}
		if len(g.Services) > 0 {
			out = append(out, g)
		}
	}
	return out, ""
}

// safeURL keeps http(s) links only (registry data is published by many
// organisations; a javascript: URL must not become a link).
func safeURL(u string) string {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "https" && p.Scheme != "http") {
		return ""
	}
	return u
}

func byteSize(n int) string {
	switch {
	case n >= 1<<20:
		return formatNumber(float64(n)/(1<<20)) + " MB"
	case n >= 1<<10:
		return formatNumber(float64(n)/(1<<10)) + " KB"
	}
	return strconv.Itoa(n) + " Byte"
}

// attachment sends one attachment of a case as a download (never shown
// inline: its type is the sender's claim).
func (s *Server) attachment(w http.ResponseWriter, r *http.Request, u *User) {
	n, err := strconv.Atoi(r.PathValue("n"))
	res, gerr := s.api.handover.GetCase(r.Context(), connect.NewRequest(&federationv1.GetCaseRequest{HandoverId: r.PathValue("id")}))
	if gerr != nil {
		s.render(w, r, apiStatus(gerr), "error", Page{Title: "Anhang nicht verfügbar", Area: "amt", User: u, Error: apiMessage(gerr)})
		return
	}
	atts := res.Msg.GetCase().GetAttachments()
	if err != nil || n < 1 || n > len(atts) {
		s.render(w, r, http.StatusNotFound, "error", Page{Title: "Anhang nicht verfügbar", Area: "amt", User: u, Error: "Diesen Anhang gibt es nicht."})
		return
	}
	a := atts[n-1]
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", "attachment; filename*=UTF-8''"+url.PathEscape(a.GetName()))
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(a.GetData())
}

// notices are the texts shown after an action (PRG: the redirect carries
// the key, never the text).
var notices = map[string]string{
	"angenommen":     "Der Fall ist angenommen. Die absendende Stelle wird benachrichtigt.",
	"abgelehnt":      "Der Fall ist abgelehnt. Die absendende Stelle erhält die Begründung.",
	"weitergeleitet": "Der Fall ist weitergeleitet. Die neue Stelle erhält ihn, die absendende Stelle wird benachrichtigt.",
	"erledigt":       "Der Fall ist abgeschlossen. Die absendende Stelle wird benachrichtigt.",
}

func noticeText(key string) string { return notices[key] }

// errFormIncomplete marks a form the clerk must complete.
var errFormIncomplete = errors.New("form incomplete")

// caseAction performs accept, reject, forward or complete, then redirects
// back to the case with a notice; on failure it shows the case again
// with the error and what the clerk entered (nothing was done: the API
// call is one step and refused as a whole).
func (s *Server) caseAction(w http.ResponseWriter, r *http.Request, u *User) {
	id := r.PathValue("id")
	action := r.PathValue("action")
	form := map[string]string{}
	for _, k := range []string{"problem", "detail", "empfaenger", "grund"} {
		form[k] = strings.TrimSpace(r.PostFormValue(k))
	}
	var err error
	var notice, msg string
	ctx := r.Context()
	switch action {
	case "annehmen":
		_, err = s.api.handover.AcceptCase(ctx, connect.NewRequest(&federationv1.AcceptCaseRequest{HandoverId: id}))
		notice = "angenommen"
	case "ablehnen":
		notice = "abgelehnt"
		var title string
		for _, p := range problemTypes {
			if p.Type == form["problem"] {
				title = p.Title
			}
		}
		switch {
		case title == "":
			err, msg = errFormIncomplete, "Bitte wählen Sie den Grund der Ablehnung."
		case form["detail"] == "":
			err, msg = errFormIncomplete, "Bitte beschreiben Sie, was fehlt oder falsch ist: die absendende Stelle und die Bürgerin oder der Bürger lesen es."
		case len(form["detail"]) > 4000:
			err, msg = errFormIncomplete, "Die Beschreibung ist zu lang (höchstens 4.000 Zeichen)."
		default:
			_, err = s.api.handover.RejectCase(ctx, connect.NewRequest(&federationv1.RejectCaseRequest{HandoverId: id,
				Problem: &federationv1.Problem{Type: form["problem"], Title: title, Detail: form["detail"]}}))
		}
	case "weiterleiten":
		notice = "weitergeleitet"
		if form["empfaenger"] == "" {
			err, msg = errFormIncomplete, "Bitte wählen Sie die Stelle, an die der Fall geht."
		} else {
			_, err = s.api.handover.ForwardCase(ctx, connect.NewRequest(&federationv1.ForwardCaseRequest{HandoverId: id,
				RecipientOrganisationId: form["empfaenger"], Reason: form["grund"]}))
		}
	case "abschliessen":
		_, err = s.api.handover.CompleteCase(ctx, connect.NewRequest(&federationv1.CompleteCaseRequest{HandoverId: id}))
		notice = "erledigt"
	default:
		s.render(w, r, http.StatusNotFound, "error", Page{Title: "Seite nicht gefunden", Area: "amt", User: u, Error: "Diese Aktion gibt es nicht."})
		return
	}
	if err != nil {
		status := http.StatusBadRequest
		if !errors.Is(err, errFormIncomplete) {
			s.log.Warn("case action", "action", action, "id", id, "err", err)
			msg, status = apiMessage(err), apiStatus(err)
			if apiCode(err) == connect.CodeNotFound && action == "weiterleiten" {
				msg = "Die gewählte Stelle ist im Verzeichnis nicht (mehr) bekannt oder hat keinen Knoten, der Fälle annimmt."
			}
		}
		s.showCase(w, r, u, status, msg, form)
		return
	}
	http.Redirect(w, r, "/amt/fall/"+url.PathEscape(id)+"?hinweis="+notice, http.StatusSeeOther)
}

// outboxRow is one line of the outbox.
type outboxRow struct {
	ID, Kind, To, Tracking, Status, LastError, Retry string
	State                                            federationv1.OutboxState
	Attempts                                         uint32
	Created, Delivered                               int64
}

type outboxData struct {
	Filter  string
	States  []filterOption
	Pending []outboxRow
	Failed  []outboxRow
	Done    []outboxRow
}

// retryHint says when the deliverer tries an entry again after attempts
// failed ones: the node's default backoff (0,5 s doubled per attempt up
// to 5 minutes, of which it waits between half and all). The API does not
// report the planned time.
func retryHint(attempts uint32) string {
	if attempts == 0 {
		return "sofort"
	}
	b := 500 * time.Millisecond
	for i := uint32(1); i < attempts && b < 5*time.Minute; i++ {
		b *= 2
	}
	b = min(b, 5*time.Minute)
	return "spätestens " + germanDuration(b) + " nach dem letzten Versuch (solange die Empfängerseite erreichbar gemeldet ist)"
}

// germanDuration writes d roughly: "3 Sekunden", "5 Minuten", "2 Stunden".
func germanDuration(d time.Duration) string {
	switch {
	case d < 2*time.Second:
		return formatNumber(d.Seconds()) + " Sekunde" + plural(d.Seconds() != 1, "n")
	case d < 2*time.Minute:
		return strconv.Itoa(int(d.Round(time.Second).Seconds())) + " Sekunden"
	case d < 2*time.Hour:
		return strconv.Itoa(int(d.Round(time.Minute).Minutes())) + " Minuten"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Round(time.Hour).Hours())) + " Stunden"
	}
	return strconv.Itoa(int(d.Hours()/24)) + " Tage"
}

func plural(p bool, suffix string) string {
	if p {
		return suffix
	}
	return ""
}

func (s *Server) outboxPage(w http.ResponseWriter, r *http.Request, u *User) {
	req := &federationv1.ListOutboxRequest{PageSize: 1000}
	var entries []*federationv1.OutboxEntry
	for {
		res, err := s.api.handover.ListOutbox(r.Context(), connect.NewRequest(req))
		if err != nil {
			s.log.Warn("outbox", "err", err)
			s.render(w, r, apiStatus(err), "amt_postausgang", Page{Title: "Postausgang", Area: "amt", User: u, Error: apiMessage(err), Data: outboxData{}})
			return
		}
		entries = append(entries, res.Msg.GetEntries()...)
		req.PageToken = res.Msg.GetNextPageToken()
		if req.PageToken == "" || len(entries) >= inboxMax {
			break
		}
	}
	nm := s.names(r.Context())
	var d outboxData
	for _, e := range entries {
		row := outboxRow{ID: e.GetId(), To: nm.orgName(e.GetToOrganisationId()), Tracking: e.GetTrackingCode(), State: e.GetState(),
			Status: outboxStateLabel(e.GetState()), LastError: e.GetLastError(), Attempts: e.GetAttempts(),
			Created: e.GetCreatedAtUnixMs(), Delivered: e.GetDeliveredAtUnixMs()}
		if e.GetKind() == federationv1.OutboxKind_OUTBOX_KIND_EVENT {
			row.Kind = "Nachricht: " + eventLabel(e.GetEventType())
		} else {
			row.Kind = "Fall"
		}
		switch e.GetState() {
		case federationv1.OutboxState_OUTBOX_STATE_DELIVERED:
			d.Done = append(d.Done, row)
		case federationv1.OutboxState_OUTBOX_STATE_FAILED:
			d.Failed = append(d.Failed, row)
		default:
			row.Retry = retryHint(row.Attempts)
			d.Pending = append(d.Pending, row)
		}
	}
	// Oldest undelivered first (they wait longest); newest delivered first.
	slices.SortStableFunc(d.Pending, func(a, b outboxRow) int { return compareNum(a.Created, b.Created) })
	slices.SortStableFunc(d.Failed, func(a, b outboxRow) int { return compareNum(b.Created, a.Created) })
	slices.SortStableFunc(d.Done, func(a, b outboxRow) int { return compareNum(b.Delivered, a.Delivered) })
	s.render(w, r, http.StatusOK, "amt_postausgang", Page{Title: "Postausgang", Area: "amt", User: u, Data: d})
}
