package testkit

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// Row is one line of a generated Entra CSV.
type Row struct {
	UPN, Serial, Secret, Interval, Manufacturer, Model string
}

// SeedSet generates rows with fresh random secrets and remembers every secret for the leak scan.
type SeedSet struct {
	Secrets [][]byte
}

// Fresh returns a new random 160-bit secret in Base32 and remembers it.
func (ss *SeedSet) Fresh() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	ss.Secrets = append(ss.Secrets, b)
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)
}

// Row returns a valid 30 s Token2 C202 row with a fresh secret.
func (ss *SeedSet) Row(serial, upn string) Row {
	return Row{UPN: upn, Serial: serial, Secret: ss.Fresh(), Interval: "30", Manufacturer: "Token2", Model: "C202"}
}

// EntraCSV renders rows as the Entra admin center's CSV (upn,serial number,secret key,...).
func EntraCSV(rows []Row) []byte {
	var b bytes.Buffer
	b.WriteString("upn,serial number,secret key,time interval,manufacturer,model\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "%s,%s,%s,%s,%s,%s\n", csvCell(r.UPN), csvCell(r.Serial), r.Secret, r.Interval, csvCell(r.Manufacturer), csvCell(r.Model))
	}
	return b.Bytes()
}

func csvCell(s string) string {
	if strings.ContainsAny(s, ",\"\n") {
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return s
}

// Leaks scans text for any secret of ss in raw, Base32 (any case, padded or not), hex and
// Base64 form, and returns a description of each find.
func (ss *SeedSet) Leaks(where, text string) []string {
	var found []string
	low := strings.ToLower(text)
	for i, sec := range ss.Secrets {
		forms := map[string]string{
			"raw":    string(sec),
			"base32": strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sec)),
			"hex":    hex.EncodeToString(sec),
			"base64": base64.StdEncoding.EncodeToString(sec)[:24],
		}
		for form, f := range forms {
			hay := low
			if form == "raw" || form == "base64" {
				hay = text
			}
			if strings.Contains(hay, f) {
				found = append(found, fmt.Sprintf("%s: secret %d in %s form", where, i, form))
			}
		}
	}
	return found
}

// MisplacedSeedsFile is an Entra CSV whose rows do not follow its header, one row per shape a
// vendor file has been seen in: serial and secret swapped, every column shifted left (the UPN
// left out), a seed in the UPN, a seed in the model, a lower-case seed as the serial, a hex seed
// as the manufacturer, a base64 seed as the serial; plus one valid row (serial pre+"-OK", for
// user upn) so the import has something to provision. Every seed is remembered in ss for the
// leak scan, including the secret-column seeds of the rejected rows. Rows 2 to 8 are rejected.
func MisplacedSeedsFile(ss *SeedSet, pre, upn string) []byte {
	var b strings.Builder
	b.WriteString("upn,serial number,secret key,time interval,manufacturer,model\n")
	row := func(cells ...string) { b.WriteString(strings.Join(cells, ",") + "\n") }
	row(upn, ss.Fresh(), pre+"-SWAP", "30", "Token2", "C202")                 // swapped
	row(pre+"-SHIFT", ss.Fresh(), "30", "Token2", "C202", "")                 // shifted left
	row(ss.Fresh(), pre+"-UPN", ss.Fresh(), "30", "Token2", "C202")           // seed in the UPN
	row(upn, pre+"-MODEL", ss.Fresh(), "30", "Token2", ss.Fresh())            // seed in the model
	row(upn, strings.ToLower(ss.Fresh()), ss.Fresh(), "30", "Token2", "C202") // lower case
	row(upn, pre+"-HEX", ss.Fresh(), "30", hex.EncodeToString(ss.FreshRaw()), "C202")
	row(upn, base64.StdEncoding.EncodeToString(ss.FreshRaw()), ss.Fresh(), "30", "Token2", "C202")
	row(upn, pre+"-OK", ss.Fresh(), "30", "Token2", "C202")
	return []byte(b.String())
}

// MisplacedRejectedLines are the lines of MisplacedSeedsFile that must be rejected.
var MisplacedRejectedLines = []int{2, 3, 4, 5, 6, 7, 8}

// FreshRaw returns a new random 160-bit secret as bytes and remembers it.
func (ss *SeedSet) FreshRaw() []byte {
	ss.Fresh()
	return ss.Secrets[len(ss.Secrets)-1]
}

// String describes the set without its secrets.
func (ss *SeedSet) String() string { return fmt.Sprintf("SeedSet{%d secrets}", len(ss.Secrets)) }
