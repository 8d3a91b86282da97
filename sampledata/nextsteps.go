package sampledata

import (
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// HundesteuerLeiKa is the LeiKa key of "Hundesteuer Anmeldung"
// (Leistungsobjekt 99102013 Hundesteuer, Verrichtung 104 Anmeldung), as
// the federal service catalogue (FIM/LeiKa, also the PVOG Suchdienst)
// lists it; Köln, for example, publishes its dog tax registration under
// it. Munich's DLDB export has no dog tax service (only a veterinary
// certificate for travelling pets, without a LeiKa key), so the sample
// catalogue would otherwise have nothing for "hund".
const HundesteuerLeiKa = "99102013104000"

// CatalogueAdditions are catalogue entries the sample data adds to the
// services converted from Munich's export: real LeiKa services the
// README's examples and the default next steps need. They carry no
// offering: nobody in the sample data claims to provide them, so a
// provider search shows the gap honestly.
func CatalogueAdditions() []*registryv1.Service {
	const name = "Hundesteuer Anmeldung"
	return []*registryv1.Service{{
		LeikaKey: HundesteuerLeiKa,
		Name:     name,
		Description: "Wer einen Hund hält, meldet ihn bei der Gemeinde (Steueramt) des Wohnsitzes zur Hundesteuer an, " +
			"in der Regel innerhalb weniger Wochen nach Anschaffung oder Zuzug. Die Höhe der Steuer und Ermäßigungen " +
			"regelt die Hundesteuersatzung der Gemeinde; nach der Anmeldung erhält man eine Steuermarke. " +
			"(Katalogeintrag der Beispieldaten, LeiKa-Leistung 99102013104000.)",
		Keywords:       []string{"Hund anmelden", "Hund ummelden", "Hundesteuer", "Hundemarke", "Steuermarke", "Hundehaltung"},
		LifeSituations: LifeSituations(HundesteuerLeiKa, name, "Hund anmelden", "Hund ummelden"),
	}}
}

// DefaultNextSteps is the default set of "what comes next" relations the
// network operator publishes with the sample data (nationwide): after the
// trigger service, in a life situation, the citizen will need these
// services at the municipality the case reached. Every key is in the
// sample catalogue (Munich's services and CatalogueAdditions).
func DefaultNextSteps() []*registryv1.NextSteps {
	return []*registryv1.NextSteps{
		{
			Id: "umzug-wohnsitzanmeldung", LifeSituation: "Umzug",
			TriggerLeikaKey: "99115005000000", // Wohnsitzanmeldung
			NextLeikaKeys: []string{
				"99036011011000", // Änderung der Adresse in Fahrzeugpapieren (Kfz-Halteränderung)
				"99036008071000", // Umschreibung Fahrzeug – von außerhalb
				HundesteuerLeiKa, // Hund ummelden: Hundesteuer am neuen Wohnort
				"99108001000000", // Bewohnerparkausweis – Umschreibung
				"99115003000000", // Meldebescheinigung
				"99050012071000", // Gewerbe-Ummeldung
			},
			Note: "Nach dem Zuzug: Fahrzeugpapiere auf die neue Adresse ändern oder das Fahrzeug umschreiben, " +
				"einen Hund am neuen Wohnort zur Hundesteuer anmelden, den Bewohnerparkausweis umschreiben und, " +
				"wer ein Gewerbe betreibt, es ummelden.",
		},
		{
			Id: "geburt-vaterschaftsanerkennung", LifeSituation: "Geburt",
			TriggerLeikaKey: "99133001000000", // Vaterschaftsanerkennung ohne Sorgerechtserklärung vor Geburt/Geburtsbeurkundung
			NextLeikaKeys: []string{
				"99072003026000", // Beurkundung von Unterhaltsansprüchen
				"99041004000000", // Elternberatung zur Kinderbetreuung
				"99085001000000", // Reisepass (auch für Kinder)
				"99008001000000", // Personalausweis
			},
			Note: "Rund um die Geburt: Unterhalt beurkunden lassen, sich zur Kinderbetreuung beraten lassen und " +
				"bei Bedarf ein Ausweisdokument für das Kind beantragen.",
		},
		{
			Id: "unternehmensgruendung-gewerbe-anmeldung", LifeSituation: "Unternehmensgründung",
			TriggerLeikaKey: "99050012104000", // Gewerbe-Anmeldung
			NextLeikaKeys: []string{
				"99052002109000", // Auskunft aus dem Gewerbezentralregister – Natürliche Person
				"99049001000000", // Führungszeugnis
				"99108003001001", // Parkausweis für gewerbliche Anlieger
			},
			Note: "Nach der Gewerbeanmeldung verlangen manche Erlaubnisse eine Auskunft aus dem Gewerbezentralregister " +
				"und ein Führungszeugnis; für Fahrzeuge des Betriebs gibt es Parkausweise für gewerbliche Anlieger.",
		},
		{
			Id: "eheschliessung-anmeldung", LifeSituation: "Eheschließung",
			TriggerLeikaKey: "99059001104000", // Anmeldung einer Eheschließung ohne Auslandsbezug
			NextLeikaKeys: []string{
				"99008001000000", // Personalausweis
				"99085001000000", // Reisepass
			},
			Note: "Wer bei der Eheschließung den Namen ändert, beantragt neue Ausweisdokumente.",
		},
		{
			Id: "todesfall-sterbeurkunde", LifeSituation: "Todesfall",
			TriggerLeikaKey: "99101004000000", // Sterbeurkunde
			NextLeikaKeys: []string{
				"99114020131000", // Hinterbliebenenrente
				"99114028000000", // Auskunft zur Rente
			},
			Note: "Hinterbliebene können eine Hinterbliebenenrente beantragen; die Rentenberatung hilft dabei.",
		},
	}
}
