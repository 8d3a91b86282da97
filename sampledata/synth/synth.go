// Package synth synthesises a national-scale registry from the real
// municipality register and the real catalogue: every one of the 11,004
// municipalities (sampledata.Municipalities) publishes a few hundred
// offerings modelled on Munich's services (sampledata.MunichServices), and
// shared service centres serve neighbouring municipalities, chosen by the
// register's coordinates, under authorisations those municipalities grant.
//
// Everything synthesised says so: offering names and channel notes carry
// "synthetisch", shared service centres are named "… (synthetisch)", URLs
// point to example.org. The organisations and areas are real.
//
// The data is valid under the registry's governance rules and signed by
// whoever the rules make responsible: the network operator registers the
// 16 state agencies (with keys) and the catalogue; each state agency
// registers its municipalities and shared service centres with keys,
// ACTIVE at once (registration by the approver); each municipality signs
// its own offerings and its grants; each centre signs its offerings for
// the neighbours that authorised it. Keys are derived from the seed, so
// the same Config yields the same organisations, keys, command ids and
// records (only the issue time, which the registry does not compare for
// duplicates, differs between runs).
//
// Generate streams the signed commands phase by phase; Load publishes
// them in requests of up to 1,000 commands, one phase after the other.
package synth

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"iter"
	"math"
	"slices"
	"strconv"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
	"github.com/verbund/verbund/sampledata"
)

// DefaultOfferings is the national figure of issue 12: 5 million
// municipal offerings, about 454 per municipality.
const DefaultOfferings = 5_000_000

// Phases, in the order they must be applied (a phase needs the previous
// ones: keys before signatures, services before offerings, grants before
// the centres' offerings).
const (
	PhaseStates        = "states"
	PhaseServices      = "services"
	PhaseOrganisations = "organisations" // municipalities and centres, per state agency
	PhaseOfferings     = "offerings"     // each municipality's offerings and grants
	PhaseCentres       = "centre-offerings"
)

// Config shapes the synthesised registry.
type Config struct {
	// Seed makes keys, choices and ids; the same seed, the same data.
	Seed uint64
	// Offerings is the number of municipal offerings in total, spread
	// evenly over the municipalities (default DefaultOfferings). The
	// centres' offerings come on top.
	Offerings int
	// Municipalities, if set, restricts the data to these municipalities
	// (ARS); centres then serve neighbours among them. Default: all.
	Municipalities []string
	// OperatorID and OperatorKey: the network operator, who registers the
	// state agencies and the catalogue (the node's genesis organisation).
	OperatorID  string
	OperatorKey jose.JSONWebKey
	// MutationsPerCommand caps the records in one signed command (default
	// 100, at most registry.MaxMutations); commands are also cut at 256 KiB.
	MutationsPerCommand int
	// CentreEvery: one shared service centre per this many municipalities
	// of a state (default 50); CentreNeighbours: the nearest municipalities
	// of the same state each centre serves (default 4); CentreServices: the
	// services it offers them (default 8).
	CentreEvery, CentreNeighbours, CentreServices int
	// Now stamps the commands' issue time (default time.Now).
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Offerings <= 0 {
		c.Offerings = DefaultOfferings
	}
	if c.MutationsPerCommand <= 0 {
		c.MutationsPerCommand = 100
	}
	c.MutationsPerCommand = min(c.MutationsPerCommand, registry.MaxMutations)
	if c.CentreEvery <= 0 {
		c.CentreEvery = 50
	}
	if c.CentreNeighbours <= 0 {
		c.CentreNeighbours = 4
	}
	if c.CentreServices <= 0 {
		c.CentreServices = 8
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Command is one signed command of the stream.
type Command struct {
	Phase  string
	Issuer string
	ID     string
	// Signed is the JWS compact serialisation PublishService accepts.
	Signed string
	// Records is the number of mutations; Offerings of them put offerings.
	Records, Offerings int
}

// maxCommandBytes cuts commands well below registry.MaxSignedCommandBytes.
const maxCommandBytes = 256 << 10

// Key returns the signing key the generator uses for organisation id under
// seed: an Ed25519 key derived from both (kid id+"-sig-synth").
func Key(seed uint64, id string) jose.JSONWebKey {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seed)
	h.Write([]byte("verbund-synth/v1\x00"))
	h.Write(b[:])
	h.Write([]byte(id))
	priv := ed25519.NewKeyFromSeed(h.Sum(nil))
	return jose.JSONWebKey{Key: priv, KeyID: id + "-sig-synth", Algorithm: string(keys.SigningAlg), Use: keys.UseSig}
}

// CentreID is the id of the centre hosted by the municipality with ars.
func CentreID(ars string) string { return "ssc-synth-" + ars }

// plan is the data before it is cut into commands.
type plan struct {
	cfg      Config
	states   []*registryv1.Organisation
	services []*registryv1.Service
	tmpl     []*registryv1.Offering // one template per offering of Munich
	munis    []*registryv1.Organisation
	centres  []centre
	grants   map[string][]*registryv1.Authorisation // by granting municipality
}

type centre struct {
	org        *registryv1.Organisation
	host       *registryv1.Organisation
	neighbours []*registryv1.Organisation
	leika      []string
}

func newPlan(cfg Config) (*plan, error) {
	if !registry.ValidOrgID(cfg.OperatorID) {
		return nil, fmt.Errorf("synth: operator id %q is not an organisation id", cfg.OperatorID)
	}
	if cfg.OperatorKey.Key == nil || cfg.OperatorKey.KeyID == "" || cfg.OperatorKey.IsPublic() {
		return nil, fmt.Errorf("synth: the operator key must be a private signing key with a kid")
	}
	p := &plan{cfg: cfg, grants: map[string][]*registryv1.Authorisation{}}
	var err error
	if p.states, err = sampledata.States(); err != nil {
		return nil, err
	}
	if p.services, p.tmpl, err = sampledata.MunichServices(); err != nil {
		return nil, err
	}
	all, err := sampledata.Municipalities()
	if err != nil {
		return nil, err
	}
	if len(cfg.Municipalities) > 0 {
		want := map[string]bool{}
		for _, a := range cfg.Municipalities {
			want[a] = true
		}
		for _, m := range all {
			if want[m.GetId()] {
				p.munis = append(p.munis, m)
			}
		}
		if len(p.munis) != len(want) {
			return nil, fmt.Errorf("synth: %d of %d municipalities are in the register", len(p.munis), len(want))
		}
	} else {
		p.munis = all
	}
	for _, s := range p.states {
		s.Keys = []*registryv1.PublicKey{published(cfg.Seed, s.GetId())}
		s.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE
	}
	for _, m := range p.munis {
		m.Keys = []*registryv1.PublicKey{published(cfg.Seed, m.GetId())}
		m.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE
	}
	p.planCentres()
	return p, nil
}

func published(seed uint64, id string) *registryv1.PublicKey {
	pk, err := keys.Published(Key(seed, id))
	if err != nil {
		panic(err) // a derived Ed25519 key always has a valid public half
	}
	return pk
}

// rnd is a deterministic choice from the seed and a label.
func rnd(seed uint64, label string) uint64 {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seed)
	h.Write(b[:])
	h.Write([]byte(label))
	return binary.BigEndian.Uint64(h.Sum(nil))
}

// planCentres picks every CentreEvery-th municipality of each state
// (in register order, offset by the seed) as a centre's host; the centre
// serves the host's nearest CentreNeighbours municipalities of the state
// (by the register's coordinates) for CentreServices services, each
// neighbour granting it an authorisation for its own area.
func (p *plan) planCentres() {
	byState := map[string][]*registryv1.Organisation{}
	var codes []string
	for _, m := range p.munis {
		sc := m.GetStateCode()
		if _, ok := byState[sc]; !ok {
			codes = append(codes, sc)
		}
		byState[sc] = append(byState[sc], m)
	}
	slices.Sort(codes)
	leikas := make([]string, len(p.services))
	for i, s := range p.services {
		leikas[i] = s.GetLeikaKey()
	}
	for _, sc := range codes {
		ms := byState[sc]
		if len(ms) < 2 {
			continue
		}
		off := int(rnd(p.cfg.Seed, "centres:"+sc) % uint64(p.cfg.CentreEvery))
		for i := off; i < len(ms); i += p.cfg.CentreEvery {
			host := ms[i]
			nb := nearest(host, ms, p.cfg.CentreNeighbours)
			if len(nb) == 0 {
				continue
			}
			start := int(rnd(p.cfg.Seed, "centre-services:"+host.GetId()) % uint64(len(leikas)))
			var lk []string
			for j := 0; j < min(p.cfg.CentreServices, len(leikas)); j++ {
				lk = append(lk, leikas[(start+j)%len(leikas)])
			}
			slices.Sort(lk)
			id := CentreID(host.GetId())
			c := centre{host: host, neighbours: nb, leika: lk, org: &registryv1.Organisation{
				Id:        id,
				Kind:      registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE,
				Name:      "Servicezentrum " + host.GetName() + " (synthetisch)",
				StateCode: sc,
				Location:  host.GetLocation(),
				Keys:      []*registryv1.PublicKey{published(p.cfg.Seed, id)},
				Status:    registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
			}}
			p.centres = append(p.centres, c)
			for _, n := range nb {
				p.grants[n.GetId()] = append(p.grants[n.GetId()], &registryv1.Authorisation{
					Id:        n.GetId() + ":" + id,
					GrantorId: n.GetId(),
					GranteeId: id,
					Areas:     []string{n.GetId()},
					LeikaKeys: lk,
					Note:      "synthetisch: " + n.GetName() + " lässt " + c.org.GetName() + " diese Leistungen anbieten",
				})
			}
		}
	}
}

// nearest returns the k municipalities of ms closest to host (not host).
func nearest(host *registryv1.Organisation, ms []*registryv1.Organisation, k int) []*registryv1.Organisation {
	type d struct {
		m    *registryv1.Organisation
		dist float64
	}
	hl := host.GetLocation()
	var ds []d
	for _, m := range ms {
		if m.GetId() == host.GetId() || m.GetLocation() == nil || hl == nil {
			continue
		}
		l := m.GetLocation()
		dy := l.GetLat() - hl.GetLat()
		dx := (l.GetLon() - hl.GetLon()) * math.Cos(hl.GetLat()*math.Pi/180)
		ds = append(ds, d{m, dx*dx + dy*dy})
	}
	slices.SortFunc(ds, func(a, b d) int {
		if a.dist != b.dist {
			if a.dist < b.dist {
				return -1
			}
			return 1
		}
		if a.m.GetId() < b.m.GetId() {
			return -1
		}
		return 1
	})
	out := make([]*registryv1.Organisation, 0, k)
	for i := 0; i < len(ds) && i < k; i++ {
		out = append(out, ds[i].m)
	}
	return out
}

// offering synthesises offering number i of municipality m from the
// template i mod len(templates): the real service, a lean copy of Munich's
// record (name, processing time, fees, one online and one in-person
// channel at the municipality), marked synthetisch.
func (p *plan) offering(m *registryv1.Organisation, i int) *registryv1.Offering {
	t := p.tmpl[i%len(p.tmpl)]
	variant := i / len(p.tmpl)
	ars := m.GetId()
	name := t.GetName()
	id := ars + ":" + t.GetLeikaKey() + ":s" + strconv.Itoa(i%len(p.tmpl))
	if variant > 0 {
		id += "-" + strconv.Itoa(variant)
		name += " – Standort " + strconv.Itoa(variant+1)
	}
	o := &registryv1.Offering{
		Id:             id,
		OrganisationId: ars,
		LeikaKey:       t.GetLeikaKey(),
		Areas:          []string{ars},
		Name:           name + " (synthetisch)",
		Languages:      []string{"de"},
		ProcessingTime: t.GetProcessingTime(),
		InfoUrl:        "https://" + ars + ".synth.example.org/leistungen/" + t.GetLeikaKey(),
		Channels: []*registryv1.Channel{
			{Kind: registryv1.ChannelKind_CHANNEL_KIND_ONLINE, Url: "https://" + ars + ".synth.example.org/antrag/" + t.GetLeikaKey(), Note: "synthetisch"},
			{Kind: registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON, Note: "synthetisch: Bürgerbüro " + m.GetName(), Address: &registryv1.Address{
				Name: "Bürgerbüro " + m.GetName(), City: m.GetName(), PostalCode: m.GetPostalCode(), Location: m.GetLocation(),
			}},
		},
	}
	if fs := t.GetFees(); len(fs) > 0 {
		o.Fees = []*registryv1.Fee{proto.Clone(fs[0]).(*registryv1.Fee)}
	}
	return o
}

// centreOffering is centre c's offering of service leika in the areas of
// the neighbours that authorised it.
func (p *plan) centreOffering(c centre, leika string) *registryv1.Offering {
	var name string
	for _, s := range p.services {
		if s.GetLeikaKey() == leika {
			name = s.GetName()
		}
	}
	areas := make([]string, len(c.neighbours))
	for i, n := range c.neighbours {
		areas[i] = n.GetId()
	}
	slices.Sort(areas)
	return &registryv1.Offering{
		Id:             c.org.GetId() + ":" + leika,
		OrganisationId: c.org.GetId(),
		LeikaKey:       leika,
		Areas:          areas,
		Name:           name + " (synthetisch: " + c.org.GetName() + ")",
		Languages:      []string{"de"},
		Channels: []*registryv1.Channel{{Kind: registryv1.ChannelKind_CHANNEL_KIND_ONLINE,
			Url: "https://" + c.org.GetId() + ".synth.example.org/antrag/" + leika, Available_24_7: true, Note: "synthetisch"}},
	}
}

// Generate yields the signed commands of the synthesised registry, phase
// by phase (a command's phase needs every earlier phase applied). It stops
// at the first error (yielded with an empty Command) or when the consumer
// stops.
func Generate(cfg Config) iter.Seq2[Command, error] {
	cfg = cfg.withDefaults()
	return func(yield func(Command, error) bool) {
		p, err := newPlan(cfg)
		if err != nil {
			yield(Command{}, err)
			return
		}
		g := &gen{p: p, yield: yield}
		g.run()
	}
}

type gen struct {
	p       *plan
	yield   func(Command, error) bool
	stopped bool
}

func (g *gen) run() {
	p, cfg := g.p, g.p.cfg
	op := cfg.OperatorID
	g.emit(PhaseStates, op, cfg.OperatorKey, putOrgs(p.states))
	svc := make([]*registryv1.Mutation, len(p.services))
	for i, s := range p.services {
		svc[i] = &registryv1.Mutation{Op: &registryv1.Mutation_PutService{PutService: s}}
	}
	g.emit(PhaseServices, op, cfg.OperatorKey, svc)
	// Each state agency registers its municipalities and centres.
	byState := map[string][]*registryv1.Organisation{}
	for _, m := range p.munis {
		byState[m.GetStateCode()] = append(byState[m.GetStateCode()], m)
	}
	for _, c := range p.centres {
		byState[c.org.GetStateCode()] = append(byState[c.org.GetStateCode()], c.org)
	}
	for _, s := range p.states {
		orgs := byState[s.GetStateCode()]
		if len(orgs) == 0 {
			continue
		}
		g.emit(PhaseOrganisations, s.GetId(), Key(cfg.Seed, s.GetId()), putOrgs(orgs))
	}
	// Each municipality: its grants, then its offerings.
	per, extra := cfg.Offerings/len(p.munis), cfg.Offerings%len(p.munis)
	for i, m := range p.munis {
		n := per
		if i < extra {
			n++
		}
		muts := make([]*registryv1.Mutation, 0, n+len(p.grants[m.GetId()]))
		for _, a := range p.grants[m.GetId()] {
			muts = append(muts, &registryv1.Mutation{Op: &registryv1.Mutation_PutAuthorisation{PutAuthorisation: a}})
		}
		for j := 0; j < n; j++ {
			muts = append(muts, &registryv1.Mutation{Op: &registryv1.Mutation_PutOffering{PutOffering: p.offering(m, j)}})
		}
		g.emit(PhaseOfferings, m.GetId(), Key(cfg.Seed, m.GetId()), muts)
		if g.stopped {
			return
		}
	}
	for _, c := range p.centres {
		muts := make([]*registryv1.Mutation, 0, len(c.leika))
		for _, lk := range c.leika {
			muts = append(muts, &registryv1.Mutation{Op: &registryv1.Mutation_PutOffering{PutOffering: p.centreOffering(c, lk)}})
		}
		g.emit(PhaseCentres, c.org.GetId(), Key(cfg.Seed, c.org.GetId()), muts)
	}
}

func putOrgs(os []*registryv1.Organisation) []*registryv1.Mutation {
	out := make([]*registryv1.Mutation, len(os))
	for i, o := range os {
		out[i] = &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: o}}
	}
	return out
}

// emit cuts muts into commands of issuer and yields them signed.
func (g *gen) emit(phase, issuer string, key jose.JSONWebKey, muts []*registryv1.Mutation) {
	cfg := g.p.cfg
	var cur []*registryv1.Mutation
	size, num := 0, 0
	flush := func() {
		if len(cur) == 0 || g.stopped {
			return
		}
		id := commandID(cfg.Seed, phase, issuer, num)
		num++
		cmd := &registryv1.Command{Issuer: issuer, Id: id, IssuedAtUnixMs: cfg.Now().UnixMilli(), Mutations: cur}
		c := Command{Phase: phase, Issuer: issuer, ID: id, Records: len(cur)}
		for _, m := range cur {
			if m.GetPutOffering() != nil {
				c.Offerings++
			}
		}
		var err error
		if c.Signed, err = registry.SignCommand(cmd, key); err != nil {
			err = fmt.Errorf("synth: %s command %s of %s: %w", phase, id, issuer, err)
			g.stopped = true
			g.yield(Command{}, err)
			return
		}
		if !g.yield(c, nil) {
			g.stopped = true
		}
		cur, size = nil, 0
	}
	for _, m := range muts {
		n := proto.Size(m)
		if len(cur) >= cfg.MutationsPerCommand || size+n > maxCommandBytes {
			flush()
		}
		cur = append(cur, m)
		size += n
	}
	flush()
}

// commandID is deterministic: the same seed, phase, issuer and position
// give the same id, so a re-run is answered "duplicate" within the
// registry's replay window.
func commandID(seed uint64, phase, issuer string, num int) string {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seed)
	h.Write([]byte("verbund-synth/v1\x00"))
	h.Write(b[:])
	for _, s := range []string{phase, issuer, strconv.Itoa(num)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:24])
}

// Publisher is what Load needs from a node (sampledata.Publisher).
type Publisher = sampledata.Publisher

// LoadOptions shape Load.
type LoadOptions struct {
	// CommandsPerRequest (default 1,000, at most
	// registry.MaxCommandsPerRequest); requests are also cut at
	// MaxRequestBytes (default 1 MiB: a request is one Raft log entry and
	// one badger transaction on every server; 8 MiB entries overflowed a
	// transaction and raised the node's memory).
	CommandsPerRequest int
	MaxRequestBytes    int
	// Parallel requests in flight within a phase (default 2).
	Parallel int
	// OnProgress, if set, is called after every request (serialised).
	OnProgress func(Progress)
}

// Progress of a Load.
type Progress struct {
	Phase                                string
	Commands, Records, Offerings, Errors int
	Duplicates                           int
	Index                                uint64
	Elapsed                              time.Duration
}

// Load generates the registry of cfg and publishes it through p: requests
// of up to CommandsPerRequest commands, Parallel of them in flight, each
// phase complete before the next starts. A refused command (other than a
// duplicate) stops the load with its error.
func Load(ctx context.Context, p Publisher, cfg Config, opt LoadOptions) (Progress, error) {
	if opt.CommandsPerRequest <= 0 {
		opt.CommandsPerRequest = 1000
	}
	opt.CommandsPerRequest = min(opt.CommandsPerRequest, registry.MaxCommandsPerRequest)
	if opt.MaxRequestBytes <= 0 {
		opt.MaxRequestBytes = 1 << 20
	}
	if opt.Parallel <= 0 {
		opt.Parallel = 2
	}
	l := &loader{ctx: ctx, p: p, opt: opt, start: time.Now(), sem: make(chan struct{}, opt.Parallel)}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l.ctx, l.cancel = ctx, cancel
	var (
		req   []Command
		bytes int
		phase string
	)
	for c, err := range Generate(cfg) {
		if err != nil {
			l.wait()
			return l.prog, err
		}
		if c.Phase != phase || len(req) >= opt.CommandsPerRequest || bytes+len(c.Signed) > opt.MaxRequestBytes {
			if len(req) > 0 {
				l.send(req)
			}
			if c.Phase != phase {
				l.wait() // a phase needs the previous one applied
				l.mu.Lock()
				l.prog.Phase = c.Phase
				l.mu.Unlock()
			}
			req, bytes, phase = nil, 0, c.Phase
		}
		if err := l.failed(); err != nil {
			l.wait()
			return l.prog, err
		}
		req = append(req, c)
		bytes += len(c.Signed)
	}
	if len(req) > 0 {
		l.send(req)
	}
	l.wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.prog.Elapsed = time.Since(l.start)
	return l.prog, l.err
}
