package web

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// The agency console: coverage of a service in a state (map, table, CSV),
// the network (members, Raft, gossip, change-feed lag, expiring keys and
// certificates) and the handover statistics gathered from every node.
//
// Who may open it: every signed-in staff member of this node. Everything
// it shows is public API data (QueryService, ListMembers, GetStatus,
// GetHandoverStats are open to anyone on the public listener); the
// sign-in keeps the console a working tool of the organisation's staff
// rather than a public page, and anything administrative it may offer
// later goes through the API, which checks the role (ADMIN, APPROVER).

func (s *Server) consoleRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /amt/konsole", s.staffOnly(s.consoleHome))
	mux.HandleFunc("GET /amt/konsole/abdeckung", s.staffOnly(s.coveragePage))
	mux.HandleFunc("GET /amt/konsole/abdeckung.csv", s.staffOnly(s.coverageCSV))
	mux.HandleFunc("GET /amt/konsole/netz", s.staffOnly(s.networkPage))
	mux.HandleFunc("GET /amt/konsole/uebergaben", s.staffOnly(s.statsPage))
}

func (s *Server) consoleHome(w http.ResponseWriter, r *http.Request, u *User) {
	s.render(w, r, http.StatusOK, "amt_konsole", Page{Title: "Konsole", Area: "amt", User: u})
}

// states are the German states by their two-digit key.
var states = []struct{ Code, Name string }{
	{"01", "Schleswig-Holstein"}, {"02", "Hamburg"}, {"03", "Niedersachsen"}, {"04", "Bremen"},
	{"05", "Nordrhein-Westfalen"}, {"06", "Hessen"}, {"07", "Rheinland-Pfalz"}, {"08", "Baden-Württemberg"},
	{"09", "Bayern"}, {"10", "Saarland"}, {"11", "Berlin"}, {"12", "Brandenburg"},
	{"13", "Mecklenburg-Vorpommern"}, {"14", "Sachsen"}, {"15", "Sachsen-Anhalt"}, {"16", "Thüringen"},
}

func stateName(code string) string {
	for _, st := range states {
		if st.Code == code {
			return st.Name
		}
	}
	return code
}

// leikaRE (a LeiKa key) is citizen_services.go's.

// coverageRow is one municipality of the coverage table.
type coverageRow struct {
	ARS, Name, Provider, Match, Channels string
	Lat, Lon                             float64
	// Class: "gap", "covered" or "online" (the map's marks).
	Class, ClassLabel string
	rank              int
}

func coverageClass(r *registryv1.CoverageRow) (string, string, int) {
	switch {
	case r.GetProviderId() == "":
		return "gap", "Lücke", 0
	case r.GetOnline():
		return "online", "online", 2
	}
	return "covered", "angeboten", 1
}

type coverageData struct {
	Leistung, Land string
	States         []filterOption
	OnlyGaps       bool
	// Choices when leistung is a search text rather than a key.
	Hits   []*registryv1.ServiceHit
	Asked  bool
	Result *coverageResult
	CSV    string
}

type coverageResult struct {
	Service                         string
	LeikaKey                        string
	StateName                       string
	Municipalities, Covered, Online uint32
	Gaps                            uint32
	CoveredPct, OnlinePct           string
	Map                             template.HTML
	Unlocated                       int
	Headers                         []sortHeader
	Rows                            []coverageRow
	// Shown is the number of rows (all pages); the table shows From..To
	// of them, page Page of Pages (coveragePageSize a page: a state has
	// up to 2,056 municipalities); Prev and Next link the neighbours.
	Shown, From, To, Page, Pages int
	Prev, Next                   string
}

// coveragePageSize is how many municipalities one page of the table
// lists (the map and the CSV have them all).
const coveragePageSize = 100

// coverage asks the registry for the coverage of q's leistung and land;
// it returns nil and no error when the form is not complete.
func (s *Server) coverage(ctx context.Context, q url.Values) (*registryv1.GetCoverageResponse, error) {
	key, land := strings.TrimSpace(q.Get("leistung")), q.Get("land")
	if !leikaRE.MatchString(key) || stateName(land) == land {
		return nil, nil
	}
	res, err := s.api.query.GetCoverage(ctx, connect.NewRequest(&registryv1.GetCoverageRequest{LeikaKey: key, StateCode: land}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// coverageRows turns the registry's answer into table rows, sorted as q
// asks (default: gaps first, then by name).
func coverageRows(res *registryv1.GetCoverageResponse, q url.Values) ([]coverageRow, sortSpec) {
	rows := make([]coverageRow, 0, len(res.GetRows()))
	for _, r := range res.GetRows() {
		class, label, rank := coverageClass(r)
		var ch []string
		for _, k := range r.GetChannels() {
			ch = append(ch, channelName(k))
		}
		rows = append(rows, coverageRow{ARS: r.GetArs(), Name: r.GetName(), Provider: r.GetProviderName(), Match: matchLabel(r.GetMatch()),
			Channels: strings.Join(ch, ", "), Lat: r.GetLocation().GetLat(), Lon: r.GetLocation().GetLon(), Class: class, ClassLabel: label, rank: rank})
	}
	spec := parseSort(q, []string{"stand", "gemeinde", "ars", "anbieter", "wege"}, "stand", false)
	by := map[string]func(a, b coverageRow) int{
		"stand": func(a, b coverageRow) int {
			if c := compareNum(a.rank, b.rank); c != 0 {
				return c
			}
			return compareText(a.Name, b.Name)
		},
		"gemeinde": func(a, b coverageRow) int { return compareText(a.Name, b.Name) },
		"ars":      func(a, b coverageRow) int { return strings.Compare(a.ARS, b.ARS) },
		"anbieter": func(a, b coverageRow) int { return compareText(a.Provider, b.Provider) },
		"wege":     func(a, b coverageRow) int { return compareText(a.Channels, b.Channels) },
	}
	sortRows(rows, spec, by)
	return rows, spec
}

// percent is part of whole in per cent with one decimal; a share that
// is not zero never shows as 0 ("unter 0,1").
func percent(part, whole uint32) string {
	if whole == 0 {
		return "0"
	}
	p := float64(part) * 100 / float64(whole)
	if part > 0 && p < 0.05 {
		return "unter 0,1"
	}
	return formatNumber(p)
}

func (s *Server) coveragePage(w http.ResponseWriter, r *http.Request, u *User) {
	q := r.URL.Query()
	d := coverageData{Leistung: strings.TrimSpace(q.Get("leistung")), Land: q.Get("land"), OnlyGaps: q.Get("nur") == "luecken"}
	if d.Land == "" {
		d.Land = "09"
	}
	for _, st := range states {
		d.States = append(d.States, filterOption{Value: st.Code, Label: st.Name, Selected: st.Code == d.Land})
	}
	pg := Page{Title: "Abdeckung einer Leistung", Area: "amt", User: u}
	status := http.StatusOK
	switch {
	case d.Leistung == "":
	case !leikaRE.MatchString(d.Leistung):
		// A name: let the officer choose the service.
		d.Asked = true
		res, err := s.api.query.SearchServices(r.Context(), connect.NewRequest(&registryv1.SearchServicesRequest{Text: d.Leistung, Limit: 20}))
		if err != nil {
			pg.Error, status = apiMessage(err), apiStatus(err)
		} else {
			d.Hits = res.Msg.GetHits()
		}
	default:
		q.Set("land", d.Land)
		res, err := s.coverage(r.Context(), q)
		if err != nil {
			pg.Error, status = apiMessage(err), apiStatus(err)
			if apiCode(err) == connect.CodeUnimplemented {
				pg.Error = "Die Software dieses Knotens kann die Abdeckung noch nicht berechnen (GetCoverage fehlt). Bitte aktualisieren Sie den Knoten."
			}
			s.log.Warn("coverage", "err", err)
			break
		}
		rows, spec := coverageRows(res, q)
		cr := &coverageResult{Service: res.GetService().GetName(), LeikaKey: d.Leistung, StateName: stateName(d.Land),
			Municipalities: res.GetMunicipalities(), Covered: res.GetCovered(), Online: res.GetOnline(),
			Gaps: res.GetMunicipalities() - res.GetCovered(), CoveredPct: percent(res.GetCovered(), res.GetMunicipalities()),
			OnlinePct: percent(res.GetOnline(), res.GetMunicipalities())}
		if cr.Service == "" {
			cr.Service = d.Leistung
		}
		pts := make([]mapPoint, 0, len(rows))
		for _, row := range rows {
			label := row.Name + ": " + row.ClassLabel
			if row.Provider != "" {
				label += " (" + row.Provider + ")"
			}
			pts = append(pts, mapPoint{Lat: row.Lat, Lon: row.Lon, Class: row.Class, Label: label})
		}
		cr.Map, cr.Unlocated = coverageMapSVG(pts, fmt.Sprintf("Karte: %s in %s – %d von %d Gemeinden ohne Anbieter", cr.Service, cr.StateName, cr.Gaps, cr.Municipalities))
		if d.OnlyGaps {
			rows = slices.DeleteFunc(rows, func(r coverageRow) bool { return r.Class != "gap" })
		}
		cr.Shown = len(rows)
		cr.Pages = (len(rows) + coveragePageSize - 1) / coveragePageSize
		cr.Page, _ = strconv.Atoi(q.Get("seite"))
		cr.Page = min(max(cr.Page, 1), max(cr.Pages, 1))
		from := (cr.Page - 1) * coveragePageSize
		cr.Rows = rows[from:min(from+coveragePageSize, len(rows))]
		cr.From, cr.To = from+1, from+len(cr.Rows)
		pageLink := func(n int) string {
			v := url.Values{}
			for k, vs := range q {
				v[k] = vs
			}
			v.Set("seite", strconv.Itoa(n))
			return "/amt/konsole/abdeckung?" + v.Encode()
		}
		if cr.Page > 1 {
			cr.Prev = pageLink(cr.Page - 1)
		}
		if cr.Page < cr.Pages {
			cr.Next = pageLink(cr.Page + 1)
		}
		cr.Headers = sortHeaders("/amt/konsole/abdeckung", q, spec, [2]string{"gemeinde", "Gemeinde"}, [2]string{"ars", "Regionalschlüssel"},
			[2]string{"stand", "Stand"}, [2]string{"anbieter", "Anbieter"}, [2]string{"wege", "Zugangswege"})
		d.Result = cr
		csvq := url.Values{"leistung": {d.Leistung}, "land": {d.Land}}
		if sk := q.Get("sort"); sk != "" {
			csvq.Set("sort", sk)
			csvq.Set("richtung", q.Get("richtung"))
		}
		if d.OnlyGaps {
			csvq.Set("nur", "luecken")
		}
		d.CSV = "/amt/konsole/abdeckung.csv?" + csvq.Encode()
		pg.Title = "Abdeckung: " + cr.Service + " in " + cr.StateName
	}
	pg.Data = d
	s.render(w, r, status, "amt_abdeckung", pg)
}

// coverageCSV exports the coverage table (csvExcel: for German Excel).
func (s *Server) coverageCSV(w http.ResponseWriter, r *http.Request, u *User) {
	q := r.URL.Query()
	res, err := s.coverage(r.Context(), q)
	if err == nil && res == nil {
		s.render(w, r, http.StatusBadRequest, "error", Page{Title: "Export nicht möglich", Area: "amt", User: u,
			Error: "Bitte geben Sie eine Leistung (LeiKa-Schlüssel, 14 Ziffern) und ein Land an."})
		return
	}
	if err != nil {
		s.render(w, r, apiStatus(err), "error", Page{Title: "Export nicht möglich", Area: "amt", User: u, Error: apiMessage(err)})
		return
	}
	rows, _ := coverageRows(res, q)
	out := make([][]string, 0, len(rows))
	for _, row := range rows {
		if q.Get("nur") == "luecken" && row.Class != "gap" {
			continue
		}
		online := "nein"
		if row.Class == "online" {
			online = "ja"
		}
		out = append(out, []string{row.ARS, row.Name, row.ClassLabel, row.Provider, row.Match, row.Channels, online,
			strconv.FormatFloat(row.Lat, 'f', 5, 64), strconv.FormatFloat(row.Lon, 'f', 5, 64)})
	}
	// Coordinates with a decimal point: a machine-readable column, and
	// the comma is German Excel's decimal separator only in numbers it
	// parses itself.
	body := csvExcel([]string{"Regionalschlüssel", "Gemeinde", "Stand", "Anbieter", "Art", "Zugangswege", "Online", "Breite", "Länge"}, out)
	name := fmt.Sprintf("abdeckung-%s-%s.csv", q.Get("leistung"), q.Get("land"))
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}

// remoteHTTP calls other nodes' public APIs (GetStatus, GetHandoverStats):
// plain Connect over HTTP(S), a short timeout, so that a node that does
// not answer costs the page at most this long.
var remoteHTTP = &http.Client{Timeout: 3 * time.Second}

// remoteBase makes a member's API address a base URL.
func remoteBase(addr string) string {
	if strings.Contains(addr, "://") {
		return strings.TrimRight(addr, "/")
	}
	return "http://" + addr
}

type nodeRow struct {
	NodeID, Org, Role, State, Suffrage, Version, RaftState, API string
	Leader, Self                                                bool
	Applied, Commit                                             uint64
	Lag                                                         string
	Staleness                                                   string
	Problem                                                     string
	Healthy                                                     bool
}

type expiryRow struct {
	Node, What, ID string
	NotAfter       int64
	Remaining      string
	Expired        bool
}

type networkData struct {
	Nodes                      []nodeRow
	Expiry                     []expiryRow
	Alive, Suspect, Dead, Left int
	Unknown                    int
	LeaderID                   string
	LeaderIndex                uint64
	Problem                    string
}

var expiryLabels = map[string]string{
	"signing_key":      "Signaturschlüssel",
	"encryption_key":   "Verschlüsselungsschlüssel",
	"node_certificate": "Knotenzertifikat",
	"network_ca":       "Netz-Zertifizierungsstelle",
}

// statusOf asks a member for its status: this node in-process, others
// over their public API.
func (s *Server) statusOf(ctx context.Context, m *nodev1.Member) (*nodev1.GetStatusResponse, error) {
	if m.GetNodeId() == s.cfg.NodeID {
		res, err := s.api.node.GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}
	if m.GetApiAddress() == "" {
		return nil, fmt.Errorf("no API address")
	}
	c := nodev1connect.NewNodeServiceClient(remoteHTTP, remoteBase(m.GetApiAddress()))
	ctx, cancel := context.WithTimeout(context.Background(), remoteHTTP.Timeout)
	defer cancel()
	res, err := c.GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func (s *Server) networkPage(w http.ResponseWriter, r *http.Request, u *User) {
	pg := Page{Title: "Netz", Area: "amt", User: u}
	res, err := s.api.cluster.ListMembers(r.Context(), connect.NewRequest(&nodev1.ListMembersRequest{}))
	if err != nil {
		s.log.Warn("members", "err", err)
		pg.Error, pg.Data = apiMessage(err), networkData{}
		s.render(w, r, apiStatus(err), "amt_netz", pg)
		return
	}
	members := res.Msg.GetMembers()
	statuses := make([]*nodev1.GetStatusResponse, len(members))
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() { statuses[i], errs[i] = s.statusOf(r.Context(), m) })
	}
	wg.Wait()
	nm := s.names(r.Context())
	d := networkData{}
	for i, m := range members {
		if m.GetLeader() {
			d.LeaderID = m.GetNodeId()
			if st := statuses[i]; st != nil {
				d.LeaderIndex = st.GetCommitIndex()
			}
		}
	}
	now := s.cfg.Now()
	for i, m := range members {
		row := nodeRow{NodeID: m.GetNodeId(), Org: nm.orgName(m.GetOrganisationId()), Role: m.GetRole(), State: memberStateLabel(m.GetState()),
			Suffrage: m.GetRaftSuffrage(), Version: m.GetVersion(), Leader: m.GetLeader(), Self: m.GetNodeId() == s.cfg.NodeID, API: m.GetApiAddress()}
		switch m.GetState() {
		case "alive":
			d.Alive++
		case "suspect":
			d.Suspect++
		case "dead":
			d.Dead++
		case "left":
			d.Left++
		default:
			d.Unknown++
		}
		st := statuses[i]
		if st == nil {
			row.Problem = "antwortet nicht"
			if errs[i] != nil {
				row.Problem += " (" + connectCodeText(errs[i]) + ")"
			}
			d.Nodes = append(d.Nodes, row)
			continue
		}
		row.RaftState, row.Applied, row.Commit = st.GetRaftState(), st.GetAppliedIndex(), st.GetCommitIndex()
		if row.Version == "" {
			row.Version = st.GetVersion()
		}
		if st.GetRaftState() == "Member" {
			if ms, err := strconv.ParseInt(st.GetStats()["staleness_ms"], 10, 64); err == nil {
				row.Staleness = germanDuration(time.Duration(ms) * time.Millisecond)
			}
		}
		if d.LeaderIndex > 0 {
			lag := int64(d.LeaderIndex) - int64(st.GetAppliedIndex())
			if lag < 0 {
				lag = 0
			}
			row.Lag = formatNumber(float64(lag)) + " Einträge"
		}
		row.Healthy = m.GetState() == "alive"
		for _, x := range st.GetExpiryWarnings() {
			label := expiryLabels[x.GetWhat()]
			if label == "" {
				label = x.GetWhat()
			}
			rem := time.Duration(x.GetRemainingSeconds()) * time.Second
			if x.GetNotAfterUnixMs() > 0 {
				rem = time.UnixMilli(x.GetNotAfterUnixMs()).Sub(now)
			}
			er := expiryRow{Node: m.GetNodeId(), What: label, ID: x.GetId(), NotAfter: x.GetNotAfterUnixMs(), Expired: rem < 0}
			if rem < 0 {
				er.Remaining = "seit " + germanDuration(-rem) + " abgelaufen"
			} else {
				er.Remaining = "noch " + germanDuration(rem)
			}
			d.Expiry = append(d.Expiry, er)
		}
		d.Nodes = append(d.Nodes, row)
	}
	slices.SortStableFunc(d.Nodes, func(a, b nodeRow) int { return strings.Compare(a.NodeID, b.NodeID) })
	slices.SortStableFunc(d.Expiry, func(a, b expiryRow) int { return compareNum(a.NotAfter, b.NotAfter) })
	pg.Data = d
	s.render(w, r, http.StatusOK, "amt_netz", pg)
}

func memberStateLabel(st string) string {
	switch st {
	case "alive":
		return "erreichbar"
	case "suspect":
		return "verdächtig (antwortet unregelmäßig)"
	case "dead":
		return "nicht erreichbar"
	case "left":
		return "ausgetreten"
	}
	return "unbekannt"
}

// connectCodeText is a short German reason for a failed remote call.
func connectCodeText(err error) string {
	switch apiCode(err) {
	case connect.CodeUnimplemented:
		return "ältere Software ohne diese Auskunft"
	case connect.CodeDeadlineExceeded:
		return "Zeitüberschreitung"
	case connect.CodeUnavailable:
		return "nicht erreichbar"
	case connect.CodePermissionDenied, connect.CodeUnauthenticated:
		return "verweigert"
	}
	return "Fehler"
}

// Handover statistics.

// statsSource is one node asked for its statistics.
type statsSource struct {
	NodeID, Org string
	OK          bool
	Problem     string
	Duplicate   bool
}

// gatherStats asks every member for GetHandoverStats since since (this
// node in-process, the others over their public API, concurrently) and
// keeps one answer per organisation (the nodes of one organisation share
// its handover store's statistics: the first that answers counts).
func (s *Server) gatherStats(ctx context.Context, members []*nodev1.Member, since int64) ([]*federationv1.HandoverStatsBucket, []statsSource) {
	answers := make([]*federationv1.GetHandoverStatsResponse, len(members))
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() {
			req := connect.NewRequest(&federationv1.GetHandoverStatsRequest{SinceUnixMs: since})
			if m.GetNodeId() == s.cfg.NodeID {
				res, err := s.api.handover.GetHandoverStats(ctx, req)
				if err == nil {
					answers[i] = res.Msg
				}
				errs[i] = err
				return
			}
			if m.GetApiAddress() == "" {
				errs[i] = fmt.Errorf("no API address")
				return
			}
			c := federationv1connect.NewHandoverServiceClient(remoteHTTP, remoteBase(m.GetApiAddress()))
			cctx, cancel := context.WithTimeout(context.Background(), remoteHTTP.Timeout)
			defer cancel()
			res, err := c.GetHandoverStats(cctx, req)
			if err == nil {
				answers[i] = res.Msg
			}
			errs[i] = err
		})
	}
	wg.Wait()
	var buckets []*federationv1.HandoverStatsBucket
	var sources []statsSource
	seen := map[string]bool{}
	for i, m := range members {
		src := statsSource{NodeID: m.GetNodeId(), Org: m.GetOrganisationId()}
		if a := answers[i]; a != nil {
			src.OK = true
			org := a.GetOrganisationId()
			if org == "" {
				org = m.GetOrganisationId()
			}
			if seen[org] {
				src.Duplicate = true
			} else {
				seen[org] = true
				buckets = append(buckets, a.GetBuckets()...)
			}
		} else {
			src.Problem = "antwortet nicht"
			if errs[i] != nil {
				src.Problem += " (" + connectCodeText(errs[i]) + ")"
			}
		}
		sources = append(sources, src)
	}
	return buckets, sources
}

// statsAgg sums buckets.
type statsAgg struct {
	Label                                               string
	Handovers, Accepted, Rejected, Completed, Forwarded uint64
	ProcSum                                             uint64
	ProcCount                                           uint64
	ProcMax                                             uint64
}

func (a *statsAgg) add(b *federationv1.HandoverStatsBucket) {
	a.Handovers += uint64(b.GetHandovers())
	a.Accepted += uint64(b.GetAccepted())
	a.Rejected += uint64(b.GetRejected())
	a.Completed += uint64(b.GetCompleted())
	a.Forwarded += uint64(b.GetForwarded())
	a.ProcSum += b.GetProcessingMsSum()
	a.ProcCount += uint64(b.GetProcessingCount())
	a.ProcMax = max(a.ProcMax, b.GetProcessingMsMax())
}

// MeanMs is the mean processing time in milliseconds; ok false when no
// case was decided.
func (a statsAgg) MeanMs() (float64, bool) {
	if a.ProcCount == 0 {
		return 0, false
	}
	return float64(a.ProcSum) / float64(a.ProcCount), true
}

// Mean is MeanMs for a table cell.
func (a statsAgg) Mean() string {
	if ms, ok := a.MeanMs(); ok {
		return shortDuration(ms)
	}
	return "–"
}

// Max is the longest processing time for a table cell.
func (a statsAgg) Max() string {
	if a.ProcCount == 0 {
		return "–"
	}
	return shortDuration(float64(a.ProcMax))
}

// timeUnit is a unit for processing times: its name and length in ms.
type timeUnit struct {
	Name, Short string
	Ms          float64
}

var timeUnits = []timeUnit{{"Sekunden", "s", 1e3}, {"Minuten", "min", 6e4}, {"Stunden", "h", 3.6e6}, {"Tage", "d", 8.64e7}}

// unitFor is the largest unit in which ms is at least 1 (seconds at least).
func unitFor(ms float64) timeUnit {
	u := timeUnits[0]
	for _, c := range timeUnits {
		if ms >= c.Ms {
			u = c
		}
	}
	return u
}

// shortDuration writes a processing time in its own unit: "45 s",
// "12,5 min", "3 h", "2,5 d".
func shortDuration(ms float64) string {
	u := unitFor(ms)
	return formatNumber(ms/u.Ms) + " " + u.Short
}

// statsByDay sums buckets per calendar day (Berlin) from the day of since
// to the day of now, every day present (zero when quiet).
func statsByDay(buckets []*federationv1.HandoverStatsBucket, since, now time.Time) []statsAgg {
	start := time.Date(since.In(berlin).Year(), since.In(berlin).Month(), since.In(berlin).Day(), 0, 0, 0, 0, berlin)
	var days []statsAgg
	idx := map[string]int{}
	for d := start; !d.After(now); d = d.AddDate(0, 0, 1) {
		k := d.Format("2006-01-02")
		idx[k] = len(days)
		days = append(days, statsAgg{Label: d.Format("02.01.")})
	}
	for _, b := range buckets {
		k := time.UnixMilli(b.GetStartUnixMs()).In(berlin).Format("2006-01-02")
		if i, ok := idx[k]; ok {
			days[i].add(b)
		}
	}
	return days
}

// statsBy sums buckets per key, largest first.
func statsBy(buckets []*federationv1.HandoverStatsBucket, key func(*federationv1.HandoverStatsBucket) string, label func(string) string) []statsAgg {
	m := map[string]*statsAgg{}
	var order []string
	for _, b := range buckets {
		k := key(b)
		a, ok := m[k]
		if !ok {
			a = &statsAgg{Label: label(k)}
			m[k] = a
			order = append(order, k)
		}
		a.add(b)
	}
	out := make([]statsAgg, 0, len(order))
	for _, k := range order {
		out = append(out, *m[k])
	}
	slices.SortStableFunc(out, func(a, b statsAgg) int {
		if c := compareNum(b.Handovers, a.Handovers); c != 0 {
			return c
		}
		return compareText(a.Label, b.Label)
	})
	return out
}

type statsData struct {
	Days, Direction, Leistung, Organisation string
	DayOptions, Directions                  []filterOption
	Services, Orgs                          []filterOption
	Sources                                 []statsSource
	Answered, Asked                         int
	PerDay                                  []statsAgg
	PerService, PerOrg                      []statsAgg
	Total                                   statsAgg
	CountChart, TimeChart                   template.HTML
	TimeUnit                                string
	Problem                                 string
}

func (s *Server) statsPage(w http.ResponseWriter, r *http.Request, u *User) {
	q := r.URL.Query()
	d := statsData{Days: q.Get("tage"), Direction: q.Get("richtung"), Leistung: q.Get("leistung"), Organisation: q.Get("organisation")}
	if !slices.Contains([]string{"7", "30", "90"}, d.Days) {
		d.Days = "30"
	}
	if !slices.Contains([]string{"eingang", "ausgang"}, d.Direction) {
		d.Direction = "eingang"
	}
	for _, v := range []string{"7", "30", "90"} {
		d.DayOptions = append(d.DayOptions, filterOption{Value: v, Label: "letzte " + v + " Tage", Selected: v == d.Days})
	}
	d.Directions = []filterOption{
		{Value: "eingang", Label: "empfangene Fälle", Selected: d.Direction == "eingang"},
		{Value: "ausgang", Label: "gesendete Fälle", Selected: d.Direction == "ausgang"},
	}
	pg := Page{Title: "Übergaben im Netz", Area: "amt", User: u}
	res, err := s.api.cluster.ListMembers(r.Context(), connect.NewRequest(&nodev1.ListMembersRequest{}))
	if err != nil {
		pg.Error, pg.Data = apiMessage(err), d
		s.render(w, r, apiStatus(err), "amt_uebergaben", pg)
		return
	}
	now := s.cfg.Now()
	days, _ := strconv.Atoi(d.Days)
	sinceDay := now.In(berlin).AddDate(0, 0, -(days - 1))
	since := time.Date(sinceDay.Year(), sinceDay.Month(), sinceDay.Day(), 0, 0, 0, 0, berlin)
	all, sources := s.gatherStats(r.Context(), res.Msg.GetMembers(), since.UnixMilli())
	nm := s.names(r.Context())
	for i := range sources {
		sources[i].Org = nm.orgName(sources[i].Org)
		d.Asked++
		if sources[i].OK {
			d.Answered++
		}
	}
	d.Sources = sources
	// Filters: direction always (each handover is counted by its sender
	// and its recipient), service and organisation if chosen; the
	// choice lists come from the buckets of the chosen direction.
	var dir []*federationv1.HandoverStatsBucket
	svcs, orgs := map[string]bool{}, map[string]bool{}
	for _, b := range all {
		// A node may answer with more than asked for (since is a
		// lower bound it may round): the period is cut here.
		if b.GetIncoming() != (d.Direction == "eingang") || b.GetStartUnixMs() < since.UnixMilli() {
			continue
		}
		dir = append(dir, b)
		svcs[b.GetLeikaKey()] = true
		orgs[b.GetOrganisationId()] = true
	}
	d.Services = options(svcs, d.Leistung, nm.service)
	d.Orgs = options(orgs, d.Organisation, nm.orgName)
	var sel []*federationv1.HandoverStatsBucket
	for _, b := range dir {
		if (d.Leistung == "" || b.GetLeikaKey() == d.Leistung) && (d.Organisation == "" || b.GetOrganisationId() == d.Organisation) {
			sel = append(sel, b)
			d.Total.add(b)
		}
	}
	d.PerDay = statsByDay(sel, since, now)
	d.PerService = statsBy(sel, (*federationv1.HandoverStatsBucket).GetLeikaKey, nm.service)
	d.PerOrg = statsBy(sel, (*federationv1.HandoverStatsBucket).GetOrganisationId, nm.orgName)
	counts := make([]chartPoint, len(d.PerDay))
	times := make([]chartPoint, len(d.PerDay))
	longest := 0.0
	for _, a := range d.PerDay {
		if ms, ok := a.MeanMs(); ok {
			longest = max(longest, ms)
		}
	}
	unit := unitFor(longest) // one unit for the whole line
	for i, a := range d.PerDay {
		counts[i] = chartPoint{Label: a.Label, Value: float64(a.Handovers)}
		ms, ok := a.MeanMs()
		times[i] = chartPoint{Label: a.Label, Value: ms / unit.Ms, Missing: !ok}
	}
	d.TimeUnit = unit.Name
	d.CountChart = barChartSVG(counts, "Übergaben je Tag (Balkendiagramm; die Zahlen stehen in der Tabelle daneben)", "Fälle")
	d.TimeChart = lineChartSVG(times, "Mittlere Bearbeitungszeit je Tag in "+unit.Name+" (Liniendiagramm; die Zahlen stehen in der Tabelle daneben)", unit.Name)
	if d.Answered == 0 {
		d.Problem = "Kein Knoten hat Statistiken geliefert."
		for _, src := range sources {
			if strings.Contains(src.Problem, "ältere Software") {
				d.Problem += " Die Software der Knoten kennt die Übergabestatistik noch nicht (GetHandoverStats fehlt)."
				break
			}
		}
	}
	pg.Data = d
	s.render(w, r, http.StatusOK, "amt_uebergaben", pg)
}

// options builds a select's options from keys, labelled and sorted by
// label, with "alle" first.
func options(keys map[string]bool, selected string, label func(string) string) []filterOption {
	out := []filterOption{{Value: "", Label: "alle", Selected: selected == ""}}
	var rest []filterOption
	for k := range keys {
		rest = append(rest, filterOption{Value: k, Label: label(k), Selected: k == selected})
	}
	slices.SortFunc(rest, func(a, b filterOption) int { return compareText(a.Label, b.Label) })
	return append(out, rest...)
}
