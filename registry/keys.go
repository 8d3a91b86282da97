package registry

import (
	"encoding/binary"
	"strings"
)

// Badger key layout of the registry state. Everything the FSM writes lives
// under these prefixes in one badger DB, so a snapshot is a scan of the DB.
//
//	m/applied                      last applied Raft index (8 bytes BE), written in the same txn as the changes
//	m/operator                     id of the network operator (set by genesis)
//	m/feedstart                    oldest index the change feed still holds entries after
//	m/featurelevel                 the cluster's feature level (8 bytes BE; absent = 1), see features.go
//	e/<index BE>                   FeedEntry: the state writes of one applied log entry
//	o/<org id>                     Organisation
//	s/<leika>                      Service
//	f/<offering id>                Offering
//	h/<org id>                     AuditHead
//	c/<issuer>/<command id>        CommandResult: dedupe of applied commands
//	t/<issued_at BE>/<issuer>/<id> expiry index of the dedupe records
//	x/ags/<ags>                    -> org id (municipality by AGS)
//	x/kid/<kid>                    -> org id (every kid belongs to one organisation)
//	x/on/<folded name>\x00<id>     organisations by name
//	x/ow/<folded word>\x00<org id> -> placeMeta: organisations by each word of their name (place search)
//	x/pc/<postal code>\x00<org id> -> placeMeta: organisations by postal code (place search)
//	x/oe/<folded main name>\x00<org id> organisations by the name before its designation (place search)
//	n/<next steps id>              NextSteps
//	x/nt/<trigger leika>/<id>      next-steps records by trigger service
//	x/oo/<org id>/<offering id>    offerings of an organisation
//	x/pa/<leika>/<area>/<offering> provider lookup: offerings by service and area prefix
//	x/st/<term>/<leika>            -> field mask: full-text search over services
//	x/ls/<folded life sit.>\x00<leika> services by life situation (NUL: Fold output may hold "/")
//	x/ln/<folded life situation>   -> display name of the life situation
//	a/<authorisation id>           Authorisation
//	x/ag/<grantee>/<auth id>       authorisations by grantee
//	x/ar/<grantor>/<auth id>       authorisations by grantor
//	x/ao/<offering id>/<area>      -> id of the authorisation that entitles this offering area ("" = own area);
//	                                  present exactly for the areas in the provider index
//	x/ad/<auth id>/<offering id>/<area>  provider entries that exist because of this authorisation
//	j/<issuer>/<command id>        applied command as signed: index (8 bytes BE) + JWS compact serialisation
//	y/<org id>/<position BE>       HistoryEntry: a change concerning the organisation (position = the
//	                               change's revision, or a fresh one for a deletion)
const (
	keyApplied      = "m/applied"
	keyOperator     = "m/operator"
	keyFeedStart    = "m/feedstart"
	keyFeatureLevel = "m/featurelevel"
	pFeed           = "e/"
	pOrg            = "o/"
	pService        = "s/"
	pOffering       = "f/"
	pAuditHead      = "h/"
	pCmd            = "c/"
	pCmdExpiry      = "t/"
	pAGS            = "x/ags/"
	pKID            = "x/kid/"
	pOrgName        = "x/on/"
	pOrgOffers      = "x/oo/"
	pPlaceWord      = "x/ow/"
	pPlaceCode      = "x/pc/"
	pPlaceName      = "x/oe/"
	pNextSteps      = "n/"
	pNextTrigger    = "x/nt/"
	pProvider       = "x/pa/"
	pSearch         = "x/st/"
	pLife           = "x/ls/"
	pLifeName       = "x/ln/"
	pAuth           = "a/"
	pAuthGrantee    = "x/ag/"
	pAuthGrantor    = "x/ar/"
	pOfferAuth      = "x/ao/"
	pAuthDep        = "x/ad/"
	pCommandJWS     = "j/"
	pHistory        = "y/"
)

func k(parts ...string) []byte { return []byte(strings.Join(parts, "")) }

func orgKey(id string) []byte        { return k(pOrg, id) }
func serviceKey(leika string) []byte { return k(pService, leika) }
func offeringKey(id string) []byte   { return k(pOffering, id) }
func auditKey(org string) []byte     { return k(pAuditHead, org) }
func cmdKey(issuer, id string) []byte {
	return k(pCmd, issuer, "/", id)
}
func cmdExpiryKey(issuedAt int64, issuer, id string) []byte {
	b := make([]byte, 0, len(pCmdExpiry)+8+len(issuer)+len(id)+2)
	b = append(b, pCmdExpiry...)
	b = binary.BigEndian.AppendUint64(b, uint64(issuedAt))
	b = append(b, '/')
	b = append(b, issuer...)
	b = append(b, '/')
	b = append(b, id...)
	return b
}
func agsKey(ags string) []byte            { return k(pAGS, ags) }
func kidKey(kid string) []byte            { return k(pKID, kid) }
func orgNameKey(folded, id string) []byte { return k(pOrgName, folded, "\x00", id) }
func orgOfferKey(org, off string) []byte  { return k(pOrgOffers, org, "/", off) }
func providerKey(leika, area, off string) []byte {
	return k(pProvider, leika, "/", area, "/", off)
}
func providerPrefix(leika, area string) []byte { return k(pProvider, leika, "/", area, "/") }
func searchKey(term, leika string) []byte      { return k(pSearch, term, "/", leika) }
func lifeKey(folded, leika string) []byte      { return k(pLife, folded, "\x00", leika) }
func lifePrefix(folded string) []byte          { return k(pLife, folded, "\x00") }
func lifeNameKey(folded string) []byte         { return k(pLifeName, folded) }

func authKey(id string) []byte                 { return k(pAuth, id) }
func authGranteeKey(grantee, id string) []byte { return k(pAuthGrantee, grantee, "/", id) }
func authGranteePrefix(grantee string) []byte  { return k(pAuthGrantee, grantee, "/") }
func authGrantorKey(grantor, id string) []byte { return k(pAuthGrantor, grantor, "/", id) }
func offerAuthKey(off, area string) []byte     { return k(pOfferAuth, off, "/", area) }
func authDepKey(auth, off, area string) []byte { return k(pAuthDep, auth, "/", off, "/", area) }
func authDepPrefix(auth string) []byte         { return k(pAuthDep, auth, "/") }

func placeWordKey(word, id string) []byte { return k(pPlaceWord, word, "\x00", id) }
func placeCodeKey(code, id string) []byte { return k(pPlaceCode, code, "\x00", id) }
func placeNameKey(name, id string) []byte { return k(pPlaceName, name, "\x00", id) }
func nextStepsKey(id string) []byte       { return k(pNextSteps, id) }
func nextTriggerKey(leika, id string) []byte {
	return k(pNextTrigger, leika, "/", id)
}
func nextTriggerPrefix(leika string) []byte { return k(pNextTrigger, leika, "/") }

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func feedKey(index uint64) []byte { return append([]byte(pFeed), u64(index)...) }

func commandJWSKey(issuer, id string) []byte { return k(pCommandJWS, issuer, "/", id) }
func historyPrefix(org string) []byte        { return k(pHistory, org, "/") }
func historyKey(org string, pos uint64) []byte {
	return binary.BigEndian.AppendUint64(historyPrefix(org), pos)
}
