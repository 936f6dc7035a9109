package seedfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/oathpipe/oathpipe/shared/token"
)

// OATH CSV is the headerless layout LinOTP, privacyIDEA and multiOTP export and import:
//
//	serial, key, type[, digits[, period[, hash]]]
//
// with a hex key, `#` comment lines and optional spaces around fields. It has no manufacturer,
// model or user columns: the manufacturer comes from the hint (required), the model from the
// hint or FallbackModel, and every token goes to the inventory unassigned.

var oathFields = fields{"serial", "key", "period", "manufacturer", "model", "user", "hash", "digits"}

// looksOATHCSV reports whether head's first line that is neither blank nor a `#` comment is an
// OATH CSV row beyond doubt: a hex key of at least 128 bits in the second field and a token
// type in the third. A header row (`serial number,secret key,...`) never looks so.
func looksOATHCSV(head []byte) bool {
	for len(head) > 0 {
		line := head
		i := bytes.IndexByte(head, '\n')
		if i < 0 {
			if len(head) == 4096 { // a cut line: not enough to be sure
				return false
			}
			head = nil
		} else {
			line, head = head[:i], head[i+1:]
		}
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' {
			continue
		}
		f := bytes.Split(t, []byte(","))
		if len(f) < 3 || len(f) > 7 {
			return false
		}
		key := bytes.TrimSpace(f[1])
		if _, ok := decodeHex(nil, key); !ok || len(key) < 32 {
			return false
		}
		typ := strings.ToLower(string(bytes.TrimSpace(f[2])))
		return typ == "totp" || typ == "hotp" || strings.HasPrefix(typ, "ocra")
	}
	return false
}

func (c *checker) readOATHCSV(br *bufio.Reader) error {
	c.f = oathFields
	c.sum.Format = FormatOATHCSV
	if c.opts.Manufacturer == "" {
		return c.fileProblem(CodeFileMissingColumn, "an OATH CSV file names no manufacturer: "+c.opts.Advice.advise("give --manufacturer", "give the blob metadata hint manufacturer"))
	}
	r := &csvReader{br: br, sep: ','}
	secretBuf := make([]byte, 0, 128)
	for {
		line, err := r.readLine()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, errLineTooLong) {
			c.sum.Rows++
			c.sum.Invalid++
			c.onProblem(Problem{Line: r.line, Field: "row", Code: CodeRowTooLong, Message: "the line is over 64 KiB"})
			continue
		}
		if err != nil {
			return fmt.Errorf("read seed file: %w", err)
		}
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' {
			continue
		}
		cells := bytes.Split(t, []byte(","))
		for i := range cells {
			cells[i] = bytes.TrimSpace(cells[i])
		}
		if len(cells) < 3 {
			c.sum.Rows++
			c.sum.Invalid++
			c.onProblem(Problem{Line: r.line, Field: "row", Code: CodeRowColumns,
				Message: fmt.Sprintf("%d fields; an OATH CSV row is serial, key, type[, digits[, period[, hash]]]", len(cells))})
			continue
		}
		k := candidate{line: r.line, interval: 30, digits: 6}
		c.oathRow(&k, cells, &secretBuf)
		if err := c.finish(&k); err != nil {
			return err
		}
	}
	if c.sum.Rows == 0 {
		return c.fileProblem(CodeFileNoRows, "the OATH CSV file has no token rows")
	}
	return nil
}

// oathRow reads the cells (at least three) of one OATH CSV row into k, reporting what is
// wrong with them. A decoded key lands in *secretBuf, reused from row to row.
func (c *checker) oathRow(k *candidate, cells [][]byte, secretBuf *[]byte) {
	k.serial = cells[0]
	c.rowCells(k.serial, nil)
	if v := cells[1]; len(v) > 0 {
		k.secretChecked = true
		var ok bool
		if *secretBuf, ok = decodeHex((*secretBuf)[:0], v); ok {
			k.secret = *secretBuf
		} else {
			c.problem(k.line, c.f.secret, CodeSecretNotHex, "the key is not hex (pairs of 0-9, a-f)")
		}
	}
	switch typ := strings.ToLower(string(cells[2])); {
	case typ == "totp":
	case typ == "hotp":
		c.problem(k.line, "type", CodeAlgorithmHOTP, "an HOTP (counter) token; Entra ID takes TOTP tokens only")
	case strings.HasPrefix(typ, "ocra"):
		c.problem(k.line, "type", CodeAlgorithmUnknown, "an OCRA (challenge-response) token; Entra ID takes TOTP tokens only")
	default:
		c.problem(k.line, "type", CodeAlgorithmUnknown, "the token type is not totp")
	}
	// The optional numbers: digits, then period.
	for _, o := range []struct {
		cell        int
		value       *int
		reported    *bool
		field, code string
		message     string
	}{
		{3, &k.digits, &k.digitsReported, c.f.digits, CodeDigitsUnsupported, "the digits are not a number (Entra ID takes 6)"},
		{4, &k.interval, &k.intervalReported, c.f.interval, CodeIntervalUnsupported, "the period is not a whole number of seconds (30 or 60)"},
	} {
		if len(cells) <= o.cell || len(cells[o.cell]) == 0 {
			continue
		}
		if n, ok := atoiField(cells[o.cell]); ok {
			*o.value = n
		} else {
			c.problem(k.line, o.field, o.code, o.message)
			*o.reported = true
		}
	}
	if len(cells) > 5 && len(cells[5]) > 0 {
		h, ok := parseHash(cells[5])
		k.hash, k.hashGiven = h, true
		if !ok {
			c.problem(k.line, c.f.hash, CodeHashUnsupported, "unknown hash; Entra ID takes sha1 or sha256")
			k.hashReported = true
		}
	} else if n := len(k.secret); n == 64 {
		// LinOTP and privacyIDEA infer the hash from the key length: 64 bytes is SHA-512.
		k.hash, k.hashGiven = token.SHA512, true
	}
}
