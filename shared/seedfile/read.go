package seedfile

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/oathpipe/oathpipe/shared/token"
)

// Limits Entra ID puts on a seed, and RFC 4226's floor.
const (
	MinSecretBytes   = token.MinSecretBytes // 128 bits, RFC 4226 requirement R6
	MaxSecretBase32  = 128
	MaxSecretBytes   = MaxSecretBase32 * 5 / 8 // 80
	maxLine          = 64 << 10
	maxInternedNames = 256
)

// FileError reports that a whole file is unusable: no header, no rows, not text, or a PSKC key
// or MAC that does not check out. Read reports the same Problem through onProblem.
type FileError struct {
	Problem Problem
}

func (e *FileError) Error() string {
	return "seed file: " + e.Problem.Message + " (" + e.Problem.Code + ")"
}

// Unwrap lets token.KindOf classify a FileError as KindInvalid: retrying will not help.
func (e *FileError) Unwrap() error {
	return &token.Error{Kind: token.KindInvalid, Op: "read seed file", Message: e.Problem.Message}
}

// Read streams r, calling onRecord for each valid token and onProblem for each problem, in file
// order. A file-level problem (no header, no rows, not text, bad PSKC key/MAC) is reported
// through onProblem with Line 0 / Field "file" AND returned as a *FileError (so callers can tell
// "the whole file is unusable"). An error returned by onRecord stops the read and is returned
// wrapped. Bad options are a *token.Error of KindInvalid; a failing reader is returned wrapped.
//
// Memory stays flat: one line is held at a time, plus two maps of 64-bit keyed hashes (serials
// and seeds, never the seeds themselves) that catch repeats.
func Read(r io.Reader, opts Options, onRecord func(Record) error, onProblem func(Problem)) (Summary, error) {
	if onRecord == nil {
		onRecord = func(Record) error { return nil }
	}
	if onProblem == nil {
		onProblem = func(Problem) {}
	}
	if err := checkOptions(opts); err != nil {
		return Summary{Format: opts.Format}, err
	}
	c := &checker{
		opts:      opts,
		onRecord:  onRecord,
		onProblem: onProblem,
		serialKey: maphash.MakeSeed(),
		seedKey:   maphash.MakeSeed(),
		names:     make(map[string]string),
	}
	c.sum.Format = opts.Format
	br := bufio.NewReaderSize(r, maxLine)
	err := c.read(br)
	return c.sum, err
}

func checkOptions(o Options) error {
	switch o.Format {
	case FormatAuto, FormatEntraCSV, FormatGraphCSV, FormatPSKC, FormatOATHCSV:
	default:
		return token.Errorf(token.KindInvalid, "unknown format %q (entra-csv, graph-csv, pskc or oath-csv)", string(o.Format))
	}
	switch o.SecretEncoding {
	case "", "base32", "hex":
	default:
		return token.Errorf(token.KindInvalid, "unknown secret encoding %q (base32 or hex)", o.SecretEncoding)
	}
	switch o.Hash {
	case "", token.SHA1, token.SHA256:
	default:
		return token.Errorf(token.KindInvalid, "hash %q not accepted by Entra ID (sha1 or sha256)", string(o.Hash))
	}
	if o.PSKCKey != nil {
		if err := checkPSKCKey(o.PSKCKey); err != nil {
			return token.Errorf(token.KindInvalid, "%v", err)
		}
	}
	for _, h := range []struct{ name, v string }{{"manufacturer", o.Manufacturer}, {"model", o.Model}} {
		if h.v != "" && !ValidHint(h.v) {
			return token.Errorf(token.KindInvalid, "the %s hint must be plain text of at most 256 characters without surrounding spaces", h.name)
		}
	}
	return nil
}

// ValidHint reports whether s may be a manufacturer or model hint: plain text of at most 256
// characters without surrounding spaces.
func ValidHint(s string) bool {
	return s != "" && plainText([]byte(s)) && len(s) <= 256 && strings.TrimSpace(s) == s
}

// ParsePSKCKey reads a pre-shared PSKC transport key as settings and flags give it: hex
// (optionally 0x-prefixed, spaces ignored) of 16, 24 or 32 bytes (AES-128/192/256; 24 bytes
// is also a TripleDES key). The one rule for OATHPIPE_PSKC_KEY and --pskc-key.
func ParsePSKCKey(s string) ([]byte, error) {
	s = strings.Join(strings.Fields(s), "")
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	key, err := hex.DecodeString(s)
	if err != nil {
		return nil, errors.New("not hex: want 32, 48 or 64 hex digits (an AES-128, AES-192/TripleDES or AES-256 key)")
	}
	if err := checkPSKCKey(key); err != nil {
		return nil, err
	}
	return key, nil
}

func checkPSKCKey(key []byte) error {
	switch len(key) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("PSKC key is %d bytes; want 16 (AES-128), 24 (AES-192 or TripleDES) or 32 (AES-256)", len(key))
}

// ParseHash reads a hash name as files and flags spell it: "sha1", "SHA-256", "HMAC-SHA1",
// "hmacsha256", ... It returns false for anything else.
func ParseHash(s string) (token.Hash, bool) { return parseHash([]byte(s)) }

func parseHash(b []byte) (token.Hash, bool) {
	var buf [24]byte
	n := 0
	for _, c := range bytes.TrimSpace(b) {
		if c == '-' || c == '_' || c == ' ' {
			continue
		}
		if n == len(buf) {
			return "", false
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[n] = c
		n++
	}
	s := bytes.TrimPrefix(buf[:n], []byte("hmac"))
	switch string(s) {
	case "sha1":
		return token.SHA1, true
	case "sha256":
		return token.SHA256, true
	case "sha512":
		return token.SHA512, true
	}
	return "", false
}

func (c *checker) read(br *bufio.Reader) error {
	head, err := br.Peek(4096)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return fmt.Errorf("read seed file: %w", err)
	}
	switch {
	case bytes.HasPrefix(head, []byte{0xEF, 0xBB, 0xBF}):
		_, _ = br.Discard(3)
		head = head[3:]
	case bytes.HasPrefix(head, []byte{0xFF, 0xFE}), bytes.HasPrefix(head, []byte{0xFE, 0xFF}):
		return c.fileProblem(CodeFileNotText, "the file is UTF-16 text; save it as UTF-8 (CSV UTF-8 in Excel)")
	}
	if len(bytes.TrimSpace(head)) == 0 {
		return c.fileProblem(CodeFileEmpty, "the file is empty")
	}
	if !looksLikeText(head) {
		return c.fileProblem(CodeFileNotText, "the file is not UTF-8 text (is it zipped, encrypted with PGP, or an Excel workbook?)")
	}
	isXML := bytes.TrimLeft(head, " \t\r\n")[0] == '<'
	switch {
	case c.opts.Format == FormatPSKC && !isXML:
		return c.fileProblem(CodeFileNotPSKC, "the file is not XML, so not PSKC")
	case c.opts.Format == FormatPSKC, c.opts.Format == FormatAuto && isXML:
		c.sum.Format = FormatPSKC
		return c.readPSKC(br)
	case c.opts.Format == FormatOATHCSV, c.opts.Format == FormatAuto && looksOATHCSV(head):
		return c.readOATHCSV(br)
	}
	return c.readCSV(br)
}

// looksLikeText reports whether b (a file's first bytes) is UTF-8 without NULs or control
// characters other than tab, CR and LF. A multi-byte rune cut by the end of b is allowed.
func looksLikeText(b []byte) bool {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\r' && c != '\n' || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return len(b)-i < utf8.UTFMax && !utf8.FullRune(b[i:])
		}
		i += n
	}
	return true
}

// fields names each value the way the file's format spells it, for problems.
type fields struct {
	serial, secret, interval, manufacturer, model, upn, hash, digits string
}

var (
	entraFields = fields{"serial number", "secret key", "time interval", "manufacturer", "model", "upn", "hash function", "digits"}
	graphFields = fields{"serialNumber", "secretKey", "timeIntervalInSeconds", "manufacturer", "model", "userPrincipalName", "hashFunction", "digits"}
	pskcFields  = fields{"SerialNo", "Secret", "TimeInterval", "Manufacturer", "Model", "UserId", "Suite", "ResponseFormat"}
)

// candidate is one row or KeyPackage on its way to becoming a Record. Byte slices may alias
// the reader's buffers; finish copies what it keeps.
type candidate struct {
	line                             int
	serial, manufacturer, model, upn []byte
	secret                           []byte // decoded; nil when missing or undecodable
	secretChecked                    bool   // the format looked at a non-empty secret (and reported what was wrong)
	interval                         int
	hash                             token.Hash
	hashGiven                        bool // the file named the hash (column or Suite)
	digits                           int
	// The format already reported a problem with this value: finish does not repeat it.
	intervalReported, digitsReported, hashReported bool
	warnings                                       []Problem // found by the format (a PSKC expiry date)
}

// checker applies the rules every format shares and keeps the duplicate indexes.
type checker struct {
	opts      Options
	onRecord  func(Record) error
	onProblem func(Problem)
	sum       Summary
	f         fields

	rowBad             bool
	rowSerial, rowUPN  []byte // the current row's serial and UPN cells, for its problems
	serialKey, seedKey maphash.Seed
	serials, seeds     index             // keyed 64-bit hashes → first line
	names              map[string]string // interned manufacturer/model strings
}

func (c *checker) fileProblem(code, msg string) error {
	p := Problem{Line: 0, Field: "file", Code: code, Message: msg}
	c.onProblem(p)
	return &FileError{Problem: p}
}

func (c *checker) problem(line int, field, code, msg string) {
	c.rowBad = true
	c.onProblem(Problem{Line: line, Field: field, Code: code, Message: msg,
		Serial: token.ShownCell(token.CellSerial, string(c.rowSerial)), UserPrincipalName: token.ShownCell(token.CellUPN, string(c.rowUPN))})
}

// rowCells names the row whose problems follow (nil, nil: none known).
func (c *checker) rowCells(serial, upn []byte) { c.rowSerial, c.rowUPN = serial, upn }

// finish applies the shared rules to a row, counts it and hands a valid one to onRecord.
func (c *checker) finish(k *candidate) error {
	c.sum.Rows++
	c.checkPublic(k)
	warnings := append(c.applyHints(k), k.warnings...)
	if len(k.upn) > 0 && !ValidUPN(k.upn) {
		c.problem(k.line, c.f.upn, CodeUPNMalformed, "not a user principal name (name@domain.example); leave it empty to put the token in the inventory unassigned")
	}
	c.checkSecret(k)
	h := c.checkCode(k)
	c.rowCells(nil, nil)
	if c.rowBad {
		c.rowBad = false
		c.sum.Invalid++
		return nil
	}
	c.sum.Valid++
	rec := Record{
		Line: k.line,
		Token: token.Token{
			Serial:       string(k.serial),
			Manufacturer: c.intern(k.manufacturer),
			Model:        c.intern(k.model),
		},
		UserPrincipalName: string(k.upn),
		Seed:              token.Seed{Secret: bytes.Clone(k.secret), Hash: h, Digits: k.digits, Period: k.interval},
		Warnings:          warnings,
	}
	if err := c.onRecord(rec); err != nil {
		return fmt.Errorf("seed file line %d, serial %s: %w", k.line, rec.Token.Serial, err)
	}
	return nil
}

// checkPublic checks the values Entra shows (serial, manufacturer, model): plain text, not a
// seed, and a serial that is there and new.
func (c *checker) checkPublic(k *candidate) {
	f := &c.f
	for _, v := range []struct {
		field string
		value []byte
	}{{f.serial, k.serial}, {f.manufacturer, k.manufacturer}, {f.model, k.model}} {
		if !plainText(v.value) {
			c.problem(k.line, v.field, CodeFieldNotText, "the value has control characters or bytes that are not UTF-8")
		} else if secret, ok := token.SecretLike(string(v.value)); ok {
			// A seed where a public value belongs: it must never reach Entra (where every admin
			// sees a device's model) nor any output. Not quoted; the row is named by its line.
			c.problem(k.line, v.field, CodeRowShifted, fmt.Sprintf("the %s decodes to %d bytes, like a seed: the columns look shifted (check the row against the header)", v.field, len(secret)))
		}
	}
	if len(k.serial) == 0 {
		c.problem(k.line, f.serial, CodeSerialMissing, "the serial number is empty")
	} else if first, dup := c.seen(&c.serials, c.serialKey, k.serial, k.line); dup {
		c.problem(k.line, f.serial, CodeSerialDuplicate, fmt.Sprintf("this serial number already appears on line %d", first))
	}
}

// applyHints fills an empty manufacturer or model from the hints (a model, for PSKC and OATH
// CSV, from FallbackModel) and returns the warnings that say so; without one it is a problem.
func (c *checker) applyHints(k *candidate) []Problem {
	f := &c.f
	var warnings []Problem
	warn := func(field, code, msg string) {
		warnings = append(warnings, Problem{Line: k.line, Field: field, Code: code, Message: msg,
			Serial: token.ShownCell(token.CellSerial, string(k.serial)), UserPrincipalName: token.ShownCell(token.CellUPN, string(k.upn))})
	}
	if len(k.manufacturer) == 0 {
		if c.opts.Manufacturer == "" {
			c.problem(k.line, f.manufacturer, CodeManufacturerMissing, "the manufacturer is empty"+c.opts.Advice.advise(" (or give --manufacturer)", " (or give the blob metadata hint manufacturer)"))
		} else {
			k.manufacturer = []byte(c.opts.Manufacturer)
			warn(f.manufacturer, WarnManufacturerHint, "no manufacturer in the file: the manufacturer hint is used")
		}
	}
	if len(k.model) == 0 {
		switch {
		case c.opts.Model != "":
			k.model = []byte(c.opts.Model)
			warn(f.model, WarnModelHint, "no model in the file: the model hint is used")
		case c.sum.Format == FormatPSKC, c.sum.Format == FormatOATHCSV:
			// PSKC's <Model> is optional (RFC 6030 §4.3.1) and Feitian leaves it out; OATH CSV
			// has no model column.
			k.model = []byte(FallbackModel)
			warn(f.model, WarnModelFallback, "no model in the file nor a model hint: the model is "+FallbackModel)
		default:
			c.problem(k.line, f.model, CodeModelMissing, "the model is empty"+c.opts.Advice.advise(" (or give --model)", " (or give the blob metadata hint model)"))
		}
	}
	return warnings
}

// checkSecret checks the seed: there, of a length Entra takes, and not seen before.
func (c *checker) checkSecret(k *candidate) {
	f := &c.f
	if k.secret == nil && !k.secretChecked {
		c.problem(k.line, f.secret, CodeSecretMissing, "the secret key is empty")
	}
	if k.secret == nil {
		return
	}
	switch n := len(k.secret); {
	case n < MinSecretBytes:
		c.problem(k.line, f.secret, CodeSecretTooShort, fmt.Sprintf("the seed is %d bits; at least 128 are required (RFC 4226), 160 recommended", n*8))
	case n > MaxSecretBytes:
		c.problem(k.line, f.secret, CodeSecretTooLong, fmt.Sprintf("the seed is %d Base32 characters; Entra ID takes at most %d", (n*8+4)/5, MaxSecretBase32))
	}
	if first, dup := c.seen(&c.seeds, c.seedKey, k.secret, k.line); dup {
		c.problem(k.line, f.secret, CodeSecretDuplicate, fmt.Sprintf("the same seed already appears on line %d under another serial number", first))
	}
}

// checkCode checks how codes are made (interval, digits, hash) against what Entra takes, and
// returns the hash: the file's, else the option's, else inferred from the seed's length.
func (c *checker) checkCode(k *candidate) token.Hash {
	f := &c.f
	if !k.intervalReported && k.interval != 30 && k.interval != 60 {
		c.problem(k.line, f.interval, CodeIntervalUnsupported, fmt.Sprintf("time interval %d s; Entra ID takes 30 or 60", k.interval))
	}
	if !k.digitsReported && k.digits != 6 {
		c.problem(k.line, f.digits, CodeDigitsUnsupported, fmt.Sprintf("%d digits; Entra ID takes 6-digit codes only", k.digits))
	}
	h := k.hash
	if !k.hashGiven {
		h = c.opts.Hash
		if h == "" {
			h = inferHash(len(k.secret))
		}
	}
	if !k.hashReported && h != token.SHA1 && h != token.SHA256 {
		c.problem(k.line, f.hash, CodeHashUnsupported, fmt.Sprintf("hash %s; Entra ID takes SHA-1 or SHA-256", hashName(h)))
	}
	return h
}

// inferHash guesses the hash from the seed length the way vendors do when a file has no hash
// column: 32 bytes is SHA-256, anything else SHA-1 (the Entra CSV path's hash).
func inferHash(n int) token.Hash {
	if n == 32 {
		return token.SHA256
	}
	return token.SHA1
}

func hashName(h token.Hash) string {
	switch h {
	case token.SHA1:
		return "SHA-1"
	case token.SHA256:
		return "SHA-256"
	case token.SHA512:
		return "SHA-512"
	}
	return "unknown"
}

// seen records key's keyed hash with line and reports the first line when it was already there.
// Only the 64-bit keyed hash is kept, never the value: a seed cannot be read back from it.
func (c *checker) seen(x *index, seed maphash.Seed, key []byte, line int) (int, bool) {
	return x.seen(maphash.Bytes(seed, key), line)
}

func (c *checker) intern(b []byte) string {
	if s, ok := c.names[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(c.names) < maxInternedNames {
		c.names[s] = s
	}
	return s
}

// ValidUPN reports whether b is a well-formed user principal name: token.ValidUPN, the one
// rule the HTTP API applies too.
func ValidUPN(b []byte) bool { return token.ValidUPN(string(b)) }

// plainText reports whether b is UTF-8 without control characters.
func plainText(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return false
		}
		if c >= utf8.RuneSelf {
			return utf8.Valid(b)
		}
	}
	return true
}

// atoiField parses a small non-negative decimal; ok is false for anything else.
func atoiField(b []byte) (int, bool) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || len(b) > 6 {
		return 0, false
	}
	n, err := strconv.Atoi(string(b))
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}
