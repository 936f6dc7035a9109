package pipelinetest

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

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
