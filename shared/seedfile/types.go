// Package seedfile reads vendor seed files (Entra CSV, the Graph-shaped CSV, hex variants, PSKC)
// into normalised token records and per-line problems. It streams: memory does not grow with
// the file, beyond the indexes that catch repeated serials and seeds. It does no I/O beyond the
// reader it is given.
package seedfile

import (
	"fmt"
	"time"

	"github.com/oathpipe/oathpipe/shared/token"
)

// Format names a seed file layout.
type Format string

// The formats Read understands. FormatAuto detects the format from the content (the header row
// or the XML root), never from a guess that could mis-decode a secret.
const (
	FormatAuto     Format = ""
	FormatEntraCSV Format = "entra-csv" // upn,serial number,secret key,time interval,manufacturer,model
	FormatGraphCSV Format = "graph-csv" // serialNumber,secretKey,timeIntervalInSeconds,manufacturer,model,hashFunction[,upn]
	FormatPSKC     Format = "pskc"      // RFC 6030 XML
	FormatOATHCSV  Format = "oath-csv"  // serial, key, type[, digits[, period[, hash]]]: hex keys, no header (LinOTP, privacyIDEA, multiOTP)
)

// Options chooses how a file is read. The zero value reads any format with Base32 secrets.
type Options struct {
	Format         Format
	SecretEncoding string     // "base32" (default) or "hex"; CSV only, never detected
	Hash           token.Hash // overrides the hash inferred from the seed length when the file has no hash column
	PSKCKey        []byte     // pre-shared transport key: AES-128/192/256 or TripleDES (see ParsePSKCKey)
	PSKCPassword   string     // password for PBKDF2-derived transport keys
	// Manufacturer and Model are hints (blob metadata, --manufacturer/--model) for rows whose
	// file gives none: Feitian's PSKC has no <Model>. A row that uses one gets a warning.
	// Without a model hint a PSKC key's model is FallbackModel (a CSV row's empty model cell
	// stays a problem); a manufacturer has no fallback.
	Manufacturer string
	Model        string
	Now          func() time.Time // for PSKC expiry warnings; default time.Now
	// Advice says who reads the problems' advice: AdviceCLI (the default) names
	// `oathpipe validate` flags, AdviceUpload the blob metadata hints and app settings that
	// the person who uploaded a file to seed-inbox can use.
	Advice Advice
}

// Advice is the reader of a problem's advice.
type Advice int

// The readers of advice.
const (
	AdviceCLI    Advice = iota // `oathpipe validate`: flags
	AdviceUpload               // an import from seed-inbox: blob metadata hints, app settings
)

// advise picks the sentence for the reader.
func (a Advice) advise(cli, upload string) string {
	if a == AdviceUpload {
		return upload
	}
	return cli
}

// FallbackModel is the model of a token whose file and hints name none.
const FallbackModel = "OATH-TOTP"

// ExpiryWarning is how close a PSKC key's <Policy><ExpiryDate> may come before a row warning.
const ExpiryWarning = 90 * 24 * time.Hour

// Record is one valid token read from a file. Seed holds the raw secret: keep it in memory only.
type Record struct {
	Line              int // 1-based file line; for PSKC the line where the KeyPackage starts
	Token             token.Token
	UserPrincipalName string // empty: the token goes to the inventory unassigned
	Seed              token.Seed
	// Warnings are things worth knowing about a valid row (a hinted model, a key near its
	// expiry): reported, never a reason to refuse the row.
	Warnings []Problem
}

// Problem is one thing wrong with a file. Line 0 and Field "file" mark a file-level problem.
type Problem struct {
	Line    int    `json:"line"`
	Field   string `json:"field"`   // e.g. "secret key", "upn", "file"
	Code    string `json:"code"`    // stable, e.g. "secret.not-base32"
	Message string `json:"message"` // plain; never contains a seed
	// Serial and UserPrincipalName are the row's serial number and UPN cells (trimmed) when
	// the reader knows them, whatever field the problem is about: the pipeline shows them
	// for rejected rows. Never a secret; empty for file-level problems, rows whose columns do
	// not line up with the header, and cells with control characters. Not part of the
	// `oathpipe validate --json` problem shape.
	Serial            string `json:"-"`
	UserPrincipalName string `json:"-"`
}

func (p Problem) String() string {
	if p.Line == 0 {
		return fmt.Sprintf("%s: %s", p.Code, p.Message)
	}
	return fmt.Sprintf("line %d, %s: %s (%s)", p.Line, p.Field, p.Message, p.Code)
}

// Summary counts what Read saw.
type Summary struct {
	Format  Format
	Rows    int // data rows (blank lines excluded)
	Valid   int
	Invalid int // rows with at least one problem
}
