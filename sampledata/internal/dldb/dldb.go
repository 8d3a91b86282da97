// Package dldb holds the subset of the DLDB export format (the service
// database of the City of Munich, as published in it-at-m/eappointment) that
// package sampledata reads. The same types decode the original export and
// the slimmed copy that internal/slim writes, so the slim file is exactly
// the original minus the fields nobody reads.
package dldb

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Meta describes an export file.
type Meta struct {
	Generated string `json:"generated,omitempty"`
	DataCount int    `json:"datacount,omitempty"`
	Hash      string `json:"hash,omitempty"`
	// Source is set by internal/slim: where the slimmed data came from.
	Source string `json:"source,omitempty"`
}

// ServicesFile is services_de.json.
type ServicesFile struct {
	Meta Meta      `json:"meta"`
	Data []Service `json:"data"`
}

// LocationsFile is locations_de.json.
type LocationsFile struct {
	Meta Meta       `json:"meta"`
	Data []Location `json:"data"`
}

// Service is one DLDB service ("Dienstleistung").
type Service struct {
	ID          string      `json:"id"`
	Name        string      `json:"name"`
	Description string      `json:"description,omitempty"` // HTML
	Meta        ServiceMeta `json:"meta"`
	// Leika is the LeiKa key; null for most local services, and in one
	// record a comma-separated list of keys.
	Leika       string            `json:"leika,omitempty"`
	Forms       []Link            `json:"forms,omitempty"`
	Links       []Link            `json:"links,omitempty"`
	Appointment Appointment       `json:"appointment"`
	Duration    int               `json:"duration,omitempty"` // minutes
	Fees        string            `json:"fees,omitempty"`     // HTML
	Locations   []ServiceLocation `json:"locations,omitempty"`
}

// ServiceMeta is the per-service metadata.
type ServiceMeta struct {
	Keywords string `json:"keywords,omitempty"` // comma-separated
	URL      string `json:"url,omitempty"`      // with a {serviceId} placeholder
}

// Link is an entry of a service's forms or links.
type Link struct {
	Name string `json:"name"`
	Link string `json:"link"`
}

// Appointment is a service's booking link (with a {serviceId} placeholder).
type Appointment struct {
	Link string `json:"link,omitempty"`
}

// ServiceLocation says that a location offers the service.
type ServiceLocation struct {
	Location    string              `json:"location"`
	Appointment LocationAppointment `json:"appointment"`
}

// LocationAppointment is the booking state of a service at a location.
type LocationAppointment struct {
	Link    string `json:"link,omitempty"`
	Allowed bool   `json:"allowed"`
}

// Location is a service location (office).
type Location struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	DisplayName string  `json:"displayName,omitempty"`
	Address     Address `json:"address"`
	Geo         Geo     `json:"geo"`
	Contact     Contact `json:"contact"`
}

// Address of a location.
type Address struct {
	Street      string `json:"street,omitempty"`
	HouseNumber string `json:"house_number,omitempty"`
	PostalCode  string `json:"postal_code,omitempty"`
	City        string `json:"city,omitempty"`
}

// Geo is a location's coordinates; the export writes them as strings.
type Geo struct {
	Lat Coord `json:"lat"`
	Lon Coord `json:"lon"`
}

// Contact of a location.
type Contact struct {
	Phone string `json:"phone,omitempty"`
	Email string `json:"email,omitempty"`
}

// Coord is a coordinate that is written either as a JSON string or a number.
// It keeps the original text so that slimming round-trips it unchanged.
type Coord string

// UnmarshalJSON accepts "48.1", 48.1 and null.
func (c *Coord) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*c = ""
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = Coord(strings.TrimSpace(s))
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("coordinate %s: %w", b, err)
		}
		*c = Coord(n.String())
	}
	return nil
}

// MarshalJSON writes the coordinate as a string, as the export does.
func (c Coord) MarshalJSON() ([]byte, error) { return json.Marshal(string(c)) }

// Float parses the coordinate; ok is false if it is empty or not a number.
func (c Coord) Float() (float64, bool) {
	if c == "" {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(c), 64)
	return f, err == nil
}

// Source paths of the original export, recorded in the slimmed files.
const (
	ServicesSource  = "it-at-m/eappointment zmsautomation/src/main/resources/dldb/services_de.json"
	LocationsSource = "it-at-m/eappointment zmsautomation/src/main/resources/dldb/locations_de.json"
)

// SlimServices decodes an original services_de.json and re-encodes only the
// fields of Service, one service per line. Links are dropped where they
// equal the forms (true for the whole 2026 export).
func SlimServices(src []byte) ([]byte, error) {
	var f ServicesFile
	if err := json.Unmarshal(src, &f); err != nil {
		return nil, fmt.Errorf("decode services: %w", err)
	}
	for i := range f.Data {
		s := &f.Data[i]
		if sameLinks(s.Links, s.Forms) {
			s.Links = nil
		}
	}
	f.Meta.Source = ServicesSource + " (slimmed by sampledata/internal/slim)"
	return encodeLines(f.Meta, f.Data)
}

// SlimLocations decodes an original locations_de.json and re-encodes only
// the fields of Location, one location per line.
func SlimLocations(src []byte) ([]byte, error) {
	var f LocationsFile
	if err := json.Unmarshal(src, &f); err != nil {
		return nil, fmt.Errorf("decode locations: %w", err)
	}
	f.Meta.Source = LocationsSource + " (slimmed by sampledata/internal/slim)"
	return encodeLines(f.Meta, f.Data)
}

func sameLinks(a, b []Link) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func encodeLines[T any](meta Meta, data []T) ([]byte, error) {
	var buf bytes.Buffer
	enc := func(v any) error {
		var b bytes.Buffer
		e := json.NewEncoder(&b)
		e.SetEscapeHTML(false)
		if err := e.Encode(v); err != nil {
			return err
		}
		buf.Write(bytes.TrimRight(b.Bytes(), "\n"))
		return nil
	}
	buf.WriteString(`{"meta":`)
	if err := enc(meta); err != nil {
		return nil, err
	}
	buf.WriteString(",\n\"data\":[\n")
	for i := range data {
		if i > 0 {
			buf.WriteString(",\n")
		}
		if err := enc(data[i]); err != nil {
			return nil, err
		}
	}
	buf.WriteString("\n]}\n")
	return buf.Bytes(), nil
}
