// Package sampledata turns real public data into Verbund registry records and
// loads them into a registry through the ordinary signed write path.
//
// # Sources and licences
//
// The data is embedded (see data/ATTRIBUTION.md for the full attribution):
//
//   - data/gemeinden_ags_coords.csv: the 11,004 German municipalities with
//     AGS/ARS, district (Kreis), municipal association (verband), postal
//     code, coordinates and population, territorial status 31.12.2019.
//     Source: © Statistisches Bundesamt (Destatis), Gemeindeverzeichnis
//     (extract GV4Q), Datenlizenz Deutschland – Namensnennung – Version 2.0
//     (dl-de/by-2-0, https://www.govdata.de/dl-de/by-2-0); CSV conversion as
//     published in grundeinkommensbuero/backend. Copied unchanged.
//   - data/munich_services_de.slim.json and data/munich_locations_de.slim.json:
//     the service database (DLDB) export of the City of Munich, from
//     it-at-m/eappointment (zmsautomation/src/main/resources/dldb/),
//     © Landeshauptstadt München / BerlinOnline, EUPL-1.2
//     (data/LICENSE.eappointment-root.txt). The files keep the export's JSON
//     structure but only the fields this package reads; they are derived
//     from the originals by internal/slim (go generate).
//
// # Records
//
// [States], [Districts], [Associations] and [Municipalities] build the
// organisation hierarchy; [MunichServices] builds catalogue entries (LeiKa)
// and Munich's offerings. All converters are pure: every call returns fresh
// records that pass registry validation. [Import] publishes everything as
// signed commands with deterministic ids, so that it can be re-run and
// resumed.
//
// Kreisfreie Städte (107, including Berlin and Hamburg) are district and
// municipality at once, and the district's ARS (kreis_ags + "0000000") is
// the city's own ARS. They are represented once, as a municipality whose
// parent is its state; [Districts] returns the 294 other Kreise.
package sampledata

//go:generate go run ./internal/slim -src ../../shared/data/munich-dldb -out data

const (
	// MunichARS is the Regionalschlüssel of the Landeshauptstadt München,
	// the organisation id of Munich and of the area its offerings serve.
	MunichARS = "091620000000"

	// DatasetVersion names the embedded data: the municipality register at
	// territorial status 2019-12-31 and Munich's DLDB export generated
	// 2026-06-08, plus a revision of the conversion rules.
	DatasetVersion = "gv2019-12-31+muc-dldb-2026-06-08.r1"
)
