package seedfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

type column int

const (
	colIgnored column = iota
	colUPN
	colSerial
	colSecret
	colInterval
	colManufacturer
	colModel
	colHash
	colDigits
	numColumns
)

// headerNames maps a header cell, lower-cased without spaces, '_' and '-', to its column.
var headerNames = map[string]column{
	"upn":                   colUPN,
	"userprincipalname":     colUPN,
	"assignto":              colUPN,
	"serialnumber":          colSerial,
	"serial":                colSerial,
	"secretkey":             colSecret,
	"secret":                colSecret,
	"timeinterval":          colInterval,
	"timeintervalinseconds": colInterval,
	"manufacturer":          colManufacturer,
	"model":                 colModel,
	"hashfunction":          colHash,
	"hash":                  colHash,
	"digits":                colDigits,
}

// csvReader splits lines into fields; it holds one record at a time.
type csvReader struct {
	br      *bufio.Reader
	line    int // physical lines consumed
	sep     byte
	fields  [][]byte
	scratch []byte // unquoted field text
	joined  []byte // a record spanning lines (a quoted line break)
}

// maxQuotedLines bounds how many lines one quoted field may span.
const maxQuotedLines = 32

// errLineTooLong marks a physical line longer than the reader's buffer; it was skipped.
var errLineTooLong = errors.New("line too long")

// next returns the next record's fields and its first line. io.EOF ends the file.
func (r *csvReader) next() (fields [][]byte, start int, err error) {
	raw, err := r.readLine()
	start = r.line
	if err != nil {
		return nil, start, err
	}
	r.scratch = r.scratch[:0]
	fields, open := r.split(raw)
	// Bounded: re-splitting the joined text is quadratic, so a stray quote costs at most
	// maxQuotedLines lines of 64 KiB.
	r.joined = r.joined[:0]
	for n := 0; open && n < maxQuotedLines && len(raw) < maxLine; n++ {
		// A quoted field holds a line break: join the next line and split again.
		r.joined = append(append(r.joined[:0], raw...), '\n')
		more, err := r.readLine()
		if errors.Is(err, io.EOF) || errors.Is(err, errLineTooLong) {
			break // an unterminated quote: keep what we have
		}
		if err != nil {
			return nil, start, err
		}
		r.joined = append(r.joined, more...)
		raw = r.joined
		r.scratch = r.scratch[:0]
		fields, open = r.split(raw)
	}
	return fields, start, nil
}

// maxHeader bounds the header line: it may name thousands of columns (the extra ones are
// ignored), longer than a row's 64 KiB; held once, so memory stays flat.
const maxHeader = 1 << 20

// readLine returns the next physical line without its line end. A line longer than the
// reader's buffer (64 KiB) is skipped: errLineTooLong. The slice is valid until the next call.
func (r *csvReader) readLine() ([]byte, error) { return r.readLongLine(0) }

// readLongLine is readLine for a line of up to limit bytes, beyond the reader's buffer (0: the
// buffer's size). A longer line is skipped: errLineTooLong. A line that fits the buffer is
// returned in it, valid until the next call.
func (r *csvReader) readLongLine(limit int) ([]byte, error) {
	var buf []byte
	for {
		b, err := r.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(buf)+len(b) > limit {
				return nil, r.skipLine(err)
			}
			buf = append(buf, b...)
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if errors.Is(err, io.EOF) && len(b) == 0 && len(buf) == 0 {
			return nil, io.EOF
		}
		if buf == nil {
			buf = b // one buffer's worth: valid until the next read
		} else {
			buf = append(buf, b...)
		}
		r.line++
		if limit > 0 && len(buf) > limit+2 {
			return nil, errLineTooLong
		}
		buf = bytes.TrimSuffix(buf, []byte("\n"))
		return bytes.TrimSuffix(buf, []byte("\r")), nil
	}
}

// skipLine reads past the rest of a line too long to keep (err: the bufio.ErrBufferFull that
// found it) and counts it: errLineTooLong, or the reader's own failure.
func (r *csvReader) skipLine(err error) error {
	r.line++
	for errors.Is(err, bufio.ErrBufferFull) {
		_, err = r.br.ReadSlice('\n')
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return errLineTooLong
}

// split cuts line into fields at r.sep, honouring double quotes ("" inside quotes is a quote)
// and trimming spaces around each field. open reports a quote still open at the line end.
func (r *csvReader) split(line []byte) (fields [][]byte, open bool) {
	fields = r.fields[:0]
	for i := 0; ; {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		if i < len(line) && line[i] == '"' {
			// Quoted field.
			start := len(r.scratch)
			i++
			closed := false
			for i < len(line) {
				j := bytes.IndexByte(line[i:], '"')
				if j < 0 {
					r.scratch = append(r.scratch, line[i:]...)
					i = len(line)
					break
				}
				r.scratch = append(r.scratch, line[i:i+j]...)
				i += j + 1
				if i < len(line) && line[i] == '"' {
					r.scratch = append(r.scratch, '"')
					i++
					continue
				}
				closed = true
				break
			}
			if !closed {
				open = true
			}
			// Anything between the closing quote and the separator is kept, leniently.
			j := bytes.IndexByte(line[i:], r.sep)
			if j < 0 {
				j = len(line) - i
			}
			r.scratch = append(r.scratch, bytes.TrimRight(line[i:i+j], " \t")...)
			fields = append(fields, r.scratch[start:len(r.scratch):len(r.scratch)])
			i += j
		} else {
			j := bytes.IndexByte(line[i:], r.sep)
			if j < 0 {
				j = len(line) - i
			}
			fields = append(fields, bytes.TrimRight(line[i:i+j], " \t"))
			i += j
		}
		if i >= len(line) {
			break
		}
		i++ // the separator
		if i == len(line) {
			fields = append(fields, nil) // a trailing separator ends an empty field
			break
		}
	}
	r.fields = fields
	return fields, open
}

func blank(fields [][]byte) bool {
	for _, f := range fields {
		if len(f) > 0 {
			return false
		}
	}
	return true
}

// guessSeparator picks ',' unless the header line has more ';' or tabs (Excel in some locales).
func guessSeparator(line []byte) byte {
	best, n := byte(','), bytes.Count(line, []byte{','})
	for _, s := range []byte{';', '\t'} {
		if m := bytes.Count(line, []byte{s}); m > n {
			best, n = s, m
		}
	}
	return best
}

func normaliseHeader(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		switch {
		case c == ' ' || c == '_' || c == '-' || c == '\t':
		case 'A' <= c && c <= 'Z':
			sb.WriteByte(c + 'a' - 'A')
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

func (c *checker) readCSV(br *bufio.Reader) error {
	r := &csvReader{br: br, sep: ','}
	header, err := c.csvHeader(r)
	if err != nil {
		return err
	}
	layout, err := c.csvLayout(r, header, r.line)
	if err != nil {
		return err
	}
	secretBuf := make([]byte, 0, 256)
	var k candidate
	for {
		fields, start, err := r.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, errLineTooLong) {
			c.badRow(r.line, CodeRowTooLong, "the line is over 64 KiB")
			continue
		}
		if err != nil {
			return fmt.Errorf("read seed file line %d: %w", r.line, err)
		}
		if blank(fields) {
			continue
		}
		if len(fields) != len(layout.cols) {
			// Not read at all: a shifted column could put a seed where the serial should be.
			c.badRow(start, CodeRowColumns, fmt.Sprintf("the row has %d columns; the header has %d", len(fields), len(layout.cols)))
			continue
		}
		k = candidate{line: start, digits: 6}
		// The serial and UPN first: problems found in earlier columns name the row by them.
		if layout.at[colSerial] > 0 {
			k.serial = fields[layout.at[colSerial]-1]
		}
		if layout.at[colUPN] > 0 {
			k.upn = fields[layout.at[colUPN]-1]
		}
		c.rowCells(k.serial, k.upn)
		for i, col := range layout.cols {
			c.csvCell(&k, col, fields[i], &secretBuf)
		}
		if err := c.finish(&k); err != nil {
			return err
		}
	}
	if c.sum.Rows == 0 {
		return c.fileProblem(CodeFileNoRows, "the file has a header but no token rows")
	}
	return nil
}

// badRow counts a row that could not be read as columns, with its one problem.
func (c *checker) badRow(line int, code, msg string) {
	c.sum.Rows++
	c.rowCells(nil, nil)
	c.problem(line, "row", code, msg)
	c.rowBad = false
	c.sum.Invalid++
}

// csvHeader reads up to the header: the first line neither blank nor Excel's "sep=".
func (c *checker) csvHeader(r *csvReader) ([]byte, error) {
	for {
		line, err := r.readLongLine(maxHeader)
		if errors.Is(err, io.EOF) {
			return nil, c.fileProblem(CodeFileEmpty, "the file has only blank lines")
		}
		if errors.Is(err, errLineTooLong) {
			return nil, c.fileProblem(CodeFileHeaderTooLong, fmt.Sprintf("the header (line %d) is over 1 MiB; oathpipe reads headers up to 1 MiB "+
				"(thousands of columns: the extra ones are ignored), so this is not a seed-file header", r.line))
		}
		if err != nil {
			return nil, fmt.Errorf("read seed file: %w", err)
		}
		if t := bytes.TrimSpace(line); len(t) > 0 && !bytes.HasPrefix(bytes.ToLower(t), []byte("sep=")) {
			return line, nil
		}
	}
}

// csvLayout is what a header says: each column's meaning, and where each known column is
// (its index + 1; 0 when absent).
type csvLayout struct {
	cols []column
	at   [numColumns]int
}

// csvLayout reads the header at headerLine: the separator, the columns, and from their names
// the format (Entra's CSV or Graph's) unless the options fix it. It sets c.f to the format's
// field names.
func (c *checker) csvLayout(r *csvReader, header []byte, headerLine int) (csvLayout, error) {
	r.sep = guessSeparator(header)
	cells, _ := r.split(header)
	l := csvLayout{cols: make([]column, len(cells))}
	graph := false
	for i, cell := range cells {
		name := normaliseHeader(cell)
		col := headerNames[name]
		l.cols[i] = col
		if col == colIgnored {
			continue
		}
		if l.at[col] != 0 {
			return l, c.fileProblem(CodeFileNoHeader, fmt.Sprintf("the header (line %d) names the %s column twice", headerLine, entraFields.name(col)))
		}
		l.at[col] = i + 1
		if name == "timeintervalinseconds" || name == "hashfunction" || name == "userprincipalname" {
			graph = true
		}
	}
	if l.at[colSerial] == 0 || l.at[colSecret] == 0 {
		return l, c.fileProblem(CodeFileNoHeader, "no seed-file header: the first line must name the columns, e.g. upn,serial number,secret key,time interval,manufacturer,model")
	}
	switch c.opts.Format {
	case FormatEntraCSV:
	case FormatGraphCSV:
		graph = true
	default:
		c.sum.Format = FormatEntraCSV
		if graph {
			c.sum.Format = FormatGraphCSV
		}
	}
	c.f = entraFields
	if graph {
		c.f = graphFields
	}
	for _, col := range []column{colInterval, colManufacturer, colModel} {
		if l.at[col] == 0 {
			return l, c.fileProblem(CodeFileMissingColumn, fmt.Sprintf("the header (line %d) has no %s column", headerLine, c.f.name(col)))
		}
	}
	return l, nil
}

// csvCell reads one cell v of column col into k, reporting what is wrong with it. A decoded
// secret lands in *secretBuf, reused from row to row.
func (c *checker) csvCell(k *candidate, col column, v []byte, secretBuf *[]byte) {
	switch col {
	case colUPN:
		k.upn = v
	case colSerial:
		k.serial = v
	case colManufacturer:
		k.manufacturer = v
	case colModel:
		k.model = v
	case colSecret:
		c.csvSecret(k, v, secretBuf)
	case colInterval:
		n, ok := atoiField(v)
		switch {
		case len(v) == 0:
			c.problem(k.line, c.f.interval, CodeIntervalMissing, "the time interval is empty (30 or 60)")
			k.intervalReported = true
		case !ok:
			c.problem(k.line, c.f.interval, CodeIntervalUnsupported, "the time interval is not a whole number of seconds (30 or 60)")
			k.intervalReported = true
		}
		k.interval = n
	case colHash:
		if len(v) == 0 {
			return
		}
		h, ok := parseHash(v)
		k.hash, k.hashGiven = h, true
		if !ok {
			c.problem(k.line, c.f.hash, CodeHashUnsupported, "unknown hash function; Entra ID takes hmacsha1 or hmacsha256")
			k.hashReported = true
		}
	case colDigits:
		if len(v) == 0 {
			return
		}
		n, ok := atoiField(v)
		k.digits = n
		if !ok {
			c.problem(k.line, c.f.digits, CodeDigitsUnsupported, "digits is not a number; Entra ID takes 6")
			k.digitsReported = true
		}
	}
}

// csvSecret decodes a secret cell (Base32, or hex with the hex secret encoding) into k.
func (c *checker) csvSecret(k *candidate, v []byte, secretBuf *[]byte) {
	if len(v) == 0 {
		return
	}
	k.secretChecked = true
	var ok bool
	if c.opts.SecretEncoding == "hex" {
		*secretBuf, ok = decodeHex((*secretBuf)[:0], v)
		if !ok {
			c.problem(k.line, c.f.secret, CodeSecretNotHex, "the secret key is not hex (0-9, A-F, an even number of characters)")
		}
	} else {
		*secretBuf, ok = decodeBase32((*secretBuf)[:0], v)
		if !ok {
			c.problem(k.line, c.f.secret, CodeSecretNotBase32, notBase32Message(v, c.opts.Advice))
		}
	}
	if ok {
		k.secret = *secretBuf
	}
}

func (f *fields) name(col column) string {
	switch col {
	case colUPN:
		return f.upn
	case colSerial:
		return f.serial
	case colSecret:
		return f.secret
	case colInterval:
		return f.interval
	case colManufacturer:
		return f.manufacturer
	case colModel:
		return f.model
	case colHash:
		return f.hash
	case colDigits:
		return f.digits
	}
	return "?"
}

// decodeBase32 appends the bytes of the Base32 text s to dst. Lower case and '=' padding are
// accepted; the result is what Entra and Graph read as the upper-case unpadded form.
func decodeBase32(dst, s []byte) ([]byte, bool) {
	for len(s) > 0 && s[len(s)-1] == '=' {
		s = s[:len(s)-1]
	}
	switch len(s) % 8 {
	case 1, 3, 6:
		return dst, false
	}
	var acc uint64
	bits := 0
	for _, ch := range s {
		v := base32Values[ch]
		if v == 0xff {
			return dst, false
		}
		acc = acc<<5 | uint64(v)
		bits += 5
		if bits >= 8 {
			bits -= 8
			dst = append(dst, byte(acc>>bits))
		}
	}
	// The bits left over must be zero, as every encoder writes them: otherwise two different
	// texts would decode to one seed and part of what the vendor meant is silently dropped.
	if acc&(1<<bits-1) != 0 {
		return dst, false
	}
	return dst, true
}

// base32Values maps a byte to its Base32 value (either case), 0xff for anything else.
var base32Values = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" {
		t[c] = byte(i)
		if 'A' <= c && c <= 'Z' {
			t[c+'a'-'A'] = byte(i)
		}
	}
	return t
}()

func decodeHex(dst, s []byte) ([]byte, bool) {
	if len(s)%2 != 0 {
		return dst, false
	}
	for i := 0; i < len(s); i += 2 {
		hi, ok1 := fromHex(s[i])
		lo, ok2 := fromHex(s[i+1])
		if !ok1 || !ok2 {
			return dst, false
		}
		dst = append(dst, hi<<4|lo)
	}
	return dst, true
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// notBase32Message explains why s is not Base32 without quoting any of it.
func notBase32Message(s []byte, adv Advice) string {
	msg := "the secret key is not Base32 (letters A-Z and digits 2-7 only)"
	hexLike := len(s)%2 == 0
	for _, c := range s {
		if _, ok := fromHex(c); !ok {
			hexLike = false
			break
		}
	}
	t := bytes.TrimRight(s, "=")
	switch {
	case bytes.ContainsAny(s, "0189"):
		msg += ": it has digits 0, 1, 8 or 9"
	case bytes.ContainsAny(s, " \t"):
		msg += ": it has spaces"
	case bytes.ContainsAny(s, "+/"):
		msg += ": it looks like Base64"
	case !isBase32Alphabet(t):
		msg += ": it has characters outside the Base32 alphabet"
	case len(t)%8 == 1 || len(t)%8 == 3 || len(t)%8 == 6:
		msg += ": its length is not that of any Base32-encoded seed"
	default:
		msg += ": its last character carries bits no encoder writes, so it is not the encoding of a whole seed (a made-up example?)"
	}
	if hexLike {
		msg += adv.advise("; if the vendor's seeds are hex, read the file with --secret-encoding hex",
			"; if the vendor's seeds are hex, upload the file again with blob metadata secretencoding=hex (az storage blob upload ... --metadata secretencoding=hex)")
	}
	return msg
}

func isBase32Alphabet(s []byte) bool {
	for _, c := range s {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '2' <= c && c <= '7') {
			return false
		}
	}
	return true
}
