package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/oathpipe/oathpipe/shared/envelope"
	"github.com/oathpipe/oathpipe/shared/seedfile"
	"github.com/oathpipe/oathpipe/shared/token"
)

const validateUsage = `usage: oathpipe validate [--json] [--format F] [--secret-encoding base32|hex] [--hash sha1|sha256]
                         [--pskc-key HEX] [--pskc-password P] [--model M] [--manufacturer M]
                         [--pgp-key FILE [--pgp-passphrase P]] [--zip-password P ...] FILE

Checks a vendor seed file (Entra CSV, Graph-shaped CSV, PSKC, OATH CSV) and reports every problem by
line, field and code. It never prints a seed. FILE "-" reads standard input. A file as the
vendor delivered it (PGP-encrypted, or a zip archive with or without a password) is opened in
memory and judged exactly as the seed file inside; each file of an archive is judged on its own.
Exit status: 0 every row is valid, 1 a row or the file has a problem, 2 usage or unreadable file.

`

// jsonToken is one valid token in validate's --json output: public facts and a fingerprint.
type jsonToken struct {
	Line                  int    `json:"line"`
	SerialNumber          string `json:"serialNumber"`
	Manufacturer          string `json:"manufacturer"`
	Model                 string `json:"model"`
	UserPrincipalName     string `json:"userPrincipalName"`
	TimeIntervalInSeconds int    `json:"timeIntervalInSeconds"`
	HashFunction          string `json:"hashFunction"`
	Digits                int    `json:"digits"`
	SecretBits            int    `json:"secretBits"`
	SecretFingerprint     string `json:"secretFingerprint"`
}

type jsonSummary struct {
	Rows    int `json:"rows"`
	Valid   int `json:"valid"`
	Invalid int `json:"invalid"`
}

func runValidate(args []string, stdout, stderr io.Writer) int {
	v, code, ok := parseValidate(args, stderr)
	if !ok {
		return code
	}
	src, closeSrc, err := openSource(v.name)
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe validate: %v\n", err)
		return exitUsage
	}
	defer closeSrc()
	// What stays alive while reading is the duplicate index: pointer-free arrays that cost the
	// collector almost nothing to scan, so collecting sooner keeps the process near that size.
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	out := bufio.NewWriterSize(stdout, 64<<10)
	defer out.Flush()
	return v.validate(src, out, stderr)
}

// validation is one `oathpipe validate` run, from its flags.
type validation struct {
	name   string // the FILE, or - for standard input
	asJSON bool
	opts   seedfile.Options
	keys   envelope.Keys
}

// parseValidate reads validate's flags; when ok is false, code is the exit status.
func parseValidate(args []string, stderr io.Writer) (v validation, code int, ok bool) {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, validateUsage)
		fs.PrintDefaults()
	}
	asJSON := fs.Bool("json", false, "print one JSON object instead of a table")
	format := fs.String("format", "", "entra-csv, graph-csv, pskc, oath-csv or auto (default: detected from the content)")
	encoding := fs.String("secret-encoding", "base32", "how CSV secrets are written: base32 or hex (never guessed)")
	hashFlag := fs.String("hash", "", "sha1 or sha256 for files without a hash column (default: from the seed length, 32 bytes SHA-256, else SHA-1)")
	pskcKey := fs.String("pskc-key", "", "hex AES key for PSKC files encrypted with a pre-shared key (default $OATHPIPE_PSKC_KEY)")
	pskcPassword := fs.String("pskc-password", "", "password for PBKDF2-protected PSKC files (default $OATHPIPE_PSKC_PASSWORD)")
	model := fs.String("model", "", "model for rows whose file names none (Feitian PSKC)")
	manufacturer := fs.String("manufacturer", "", "manufacturer for rows whose file names none")
	pgpKey := fs.String("pgp-key", "", "ASCII-armored PGP private key FILE for encrypted files (default $OATHPIPE_PGP_KEY_FILE)")
	pgpPassphrase := fs.String("pgp-passphrase", "", "passphrase of the --pgp-key, when it has one (default $OATHPIPE_PGP_PASSPHRASE)")
	var zipPasswords stringList
	fs.Var(&zipPasswords, "zip-password", "a password for zip archives; repeat for more (default $OATHPIPE_ZIP_PASSWORD)")
	files, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return v, exitOK, false
	}
	if err != nil {
		return v, exitUsage, false
	}
	if len(files) != 1 {
		fmt.Fprintln(stderr, "oathpipe validate: give exactly one FILE")
		fs.Usage()
		return v, exitUsage, false
	}
	v.name, v.asJSON = files[0], *asJSON
	if v.opts, err = readOptions(*format, *encoding, *hashFlag, *pskcKey, *pskcPassword); err != nil {
		fmt.Fprintf(stderr, "oathpipe validate: %v\n", err)
		return v, exitUsage, false
	}
	v.opts.Model, v.opts.Manufacturer = strings.TrimSpace(*model), strings.TrimSpace(*manufacturer)
	if v.keys, err = envelopeKeys(*pgpKey, *pgpPassphrase, zipPasswords); err != nil {
		fmt.Fprintf(stderr, "oathpipe validate: %v\n", err)
		return v, exitUsage, false
	}
	return v, exitOK, true
}

// readOptions is the seed file reader's options from validate's flags and, for the PSKC key
// and password, the environment.
func readOptions(format, encoding, hash, pskcKey, pskcPassword string) (seedfile.Options, error) {
	switch format {
	case "auto":
		format = ""
	case "", string(seedfile.FormatEntraCSV), string(seedfile.FormatGraphCSV), string(seedfile.FormatPSKC), string(seedfile.FormatOATHCSV):
	default:
		return seedfile.Options{}, fmt.Errorf("--format %q: use entra-csv, graph-csv, pskc, oath-csv or auto", format)
	}
	if encoding != "base32" && encoding != "hex" {
		return seedfile.Options{}, fmt.Errorf("--secret-encoding %q: use base32 or hex", encoding)
	}
	opts := seedfile.Options{Format: seedfile.Format(format), SecretEncoding: encoding, PSKCPassword: pskcPassword}
	if opts.PSKCPassword == "" {
		opts.PSKCPassword = os.Getenv("OATHPIPE_PSKC_PASSWORD")
	}
	if hash != "" {
		h, ok := seedfile.ParseHash(hash)
		if !ok || h == token.SHA512 {
			return seedfile.Options{}, fmt.Errorf("--hash %q: use sha1 or sha256 (Entra ID takes no other)", hash)
		}
		opts.Hash = h
	}
	keyHex, keyFrom := pskcKey, "--pskc-key"
	if keyHex == "" {
		keyHex, keyFrom = os.Getenv("OATHPIPE_PSKC_KEY"), "OATHPIPE_PSKC_KEY"
	}
	if keyHex != "" {
		key, err := seedfile.ParsePSKCKey(keyHex)
		if err != nil {
			return seedfile.Options{}, fmt.Errorf("%s: %w", keyFrom, err)
		}
		opts.PSKCKey = key
	}
	return opts, nil
}

// openSource opens the file to validate (- is standard input); a regular file can be read at
// any offset (zip archives need it).
func openSource(name string) (envelope.Source, func(), error) {
	src := envelope.Source{Name: name, R: os.Stdin}
	if name == "-" {
		return src, func() {}, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return src, nil, err
	}
	st, err := f.Stat()
	if err == nil && st.IsDir() {
		f.Close()
		return src, nil, fmt.Errorf("%s is a directory", name)
	}
	src.R = f
	if err == nil && st.Mode().IsRegular() {
		src.At, src.Size = f, st.Size()
	}
	return src, func() { f.Close() }, nil
}

// validate reads every file inside src and reports each to out; it returns the exit status.
func (v validation) validate(src envelope.Source, out *bufio.Writer, stderr io.Writer) int {
	newReporter := func(name string) reporter {
		if v.asJSON {
			return &jsonReporter{w: out, name: name}
		}
		return &tableReporter{w: out, name: name}
	}
	exit, inner := exitOK, 0
	err := envelope.Open(src, v.keys, envelope.Limits{}, func(in envelope.Inner) error {
		if inner++; inner > 1 {
			out.WriteString("\n")
		}
		rep := newReporter(in.Name)
		rep.start()
		sum, err := seedfile.Read(in.R, v.opts, rep.token, rep.problem)
		var fe *seedfile.FileError
		var ee *envelope.Error
		switch {
		case errors.As(err, &ee):
			// The envelope failed under the reader (an integrity check at the end, a bomb):
			// the file's problem, and nothing read from it counts.
			rep.problem(envelopeProblem(ee))
		case err != nil && !errors.As(err, &fe):
			rep.end(sum)
			return err
		}
		rep.end(sum)
		if rep.problems() > 0 || err != nil {
			exit = exitProblem
		}
		return nil
	})
	var ee *envelope.Error
	switch {
	case errors.As(err, &ee):
		// The delivered file cannot be opened: a file-level problem of the file as delivered.
		rep := newReporter(cmpOr(ee.Name, v.name))
		rep.start()
		rep.problem(envelopeProblem(ee))
		rep.end(seedfile.Summary{})
		return exitProblem
	case err != nil:
		out.Flush()
		if token.KindOf(err) == token.KindInvalid {
			fmt.Fprintf(stderr, "oathpipe validate: %v\n", err)
		} else {
			fmt.Fprintf(stderr, "oathpipe validate: %s: %v\n", v.name, err)
		}
		return exitUsage
	}
	return exit
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// envelopeProblem is an envelope failure as a file-level problem.
func envelopeProblem(e *envelope.Error) seedfile.Problem {
	return seedfile.Problem{Field: "file", Code: e.Code, Message: e.Message}
}

// envelopeKeys reads the PGP key file and zip passwords from the flags, or from
// OATHPIPE_PGP_KEY_FILE, OATHPIPE_PGP_PASSPHRASE and OATHPIPE_ZIP_PASSWORD.
func envelopeKeys(keyFile, passphrase string, zipPasswords []string) (envelope.Keys, error) {
	var k envelope.Keys
	from := "--pgp-key"
	if keyFile == "" {
		keyFile, from = os.Getenv("OATHPIPE_PGP_KEY_FILE"), "OATHPIPE_PGP_KEY_FILE"
	}
	if passphrase == "" {
		passphrase = os.Getenv("OATHPIPE_PGP_PASSPHRASE")
	}
	if keyFile != "" {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return k, fmt.Errorf("%s: %w", from, err)
		}
		keys, err := envelope.ParsePGPKeys([][]byte{b}, []byte(passphrase))
		clear(b)
		if err != nil {
			return k, fmt.Errorf("%s %s: %w", from, keyFile, err)
		}
		k.PGP = keys
	}
	k.ZipPasswords = zipPasswords
	if len(k.ZipPasswords) == 0 {
		if pw := os.Getenv("OATHPIPE_ZIP_PASSWORD"); pw != "" {
			k.ZipPasswords = []string{pw}
		}
	}
	return k, nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// parseInterleaved parses flags that may come before or after the positional arguments
// ("validate FILE --json" as well as "validate --json FILE").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// reporter prints validate's results as they stream in.
type reporter interface {
	start()
	token(seedfile.Record) error
	problem(seedfile.Problem)
	end(seedfile.Summary)
	problems() int
}

type tableReporter struct {
	w        *bufio.Writer
	name     string
	count    int
	warnings []seedfile.Problem
}

func (r *tableReporter) start() {}
func (r *tableReporter) token(rec seedfile.Record) error {
	if len(r.warnings) < maxWarnings {
		r.warnings = append(r.warnings, rec.Warnings...)
	}
	return nil
}
func (r *tableReporter) problems() int { return r.count }

// maxWarnings bounds the warnings validate holds for its report (a million Feitian rows all
// warn that their model is the fallback).
const maxWarnings = 1000

func (r *tableReporter) problem(p seedfile.Problem) {
	if r.count == 0 {
		fmt.Fprintf(r.w, "%-6s %-22s %-22s %s\n", "LINE", "FIELD", "CODE", "PROBLEM")
	}
	r.count++
	line := "-"
	if p.Line > 0 {
		line = fmt.Sprint(p.Line)
	}
	fmt.Fprintf(r.w, "%-6s %-22s %-22s %s\n", line, p.Field, p.Code, p.Message)
}

func (r *tableReporter) end(s seedfile.Summary) {
	if r.count > 0 {
		fmt.Fprintln(r.w)
	}
	if len(r.warnings) > 0 {
		fmt.Fprintf(r.w, "%-6s %-22s %-22s %s\n", "LINE", "FIELD", "WARNING", "")
		for _, p := range r.warnings {
			fmt.Fprintf(r.w, "%-6d %-22s %-22s %s\n", p.Line, p.Field, p.Code, p.Message)
		}
		fmt.Fprintln(r.w)
	}
	format := string(s.Format)
	if format == "" {
		format = "unknown format"
	}
	verdict := "every row is valid"
	switch {
	case r.count > 0 && s.Rows == 0:
		verdict = "the file cannot be used"
	case r.count > 0 && s.Invalid == 0:
		verdict = "the file has a problem"
	case r.count > 0:
		verdict = fmt.Sprintf("%d invalid", s.Invalid)
	}
	rows := "rows"
	if s.Rows == 1 {
		rows = "row"
	}
	fmt.Fprintf(r.w, "%s: %s, %d %s, %d valid, %s\n", r.name, format, s.Rows, rows, s.Valid, verdict)
}

// jsonReporter streams tokens so memory stays flat on big files; the summary, known only at
// the end, is written last. Key order is not significant in JSON.
type jsonReporter struct {
	w        *bufio.Writer
	name     string
	tokens   int
	probs    []seedfile.Problem
	warnings []seedfile.Problem
}

func (r *jsonReporter) start() {
	name, _ := json.Marshal(r.name)
	fmt.Fprintf(r.w, "{\"file\":%s,\"tokens\":[", name)
}

func (r *jsonReporter) token(rec seedfile.Record) error {
	b, err := json.Marshal(jsonToken{
		Line:                  rec.Line,
		SerialNumber:          rec.Token.Serial,
		Manufacturer:          rec.Token.Manufacturer,
		Model:                 rec.Token.Model,
		UserPrincipalName:     rec.UserPrincipalName,
		TimeIntervalInSeconds: rec.Seed.Period,
		HashFunction:          string(rec.Seed.Hash),
		Digits:                rec.Seed.Digits,
		SecretBits:            rec.Seed.Bits(),
		SecretFingerprint:     rec.Seed.Fingerprint(),
	})
	if err != nil {
		return err
	}
	if len(r.warnings) < maxWarnings {
		r.warnings = append(r.warnings, rec.Warnings...)
	}
	if r.tokens > 0 {
		r.w.WriteByte(',')
	}
	r.tokens++
	r.w.WriteString("\n")
	_, err = r.w.Write(b)
	return err
}

func (r *jsonReporter) problem(p seedfile.Problem) { r.probs = append(r.probs, p) }
func (r *jsonReporter) problems() int              { return len(r.probs) }

func (r *jsonReporter) end(s seedfile.Summary) {
	probs := r.probs
	if probs == nil {
		probs = []seedfile.Problem{}
	}
	p, _ := json.Marshal(probs)
	warnings := r.warnings
	if warnings == nil {
		warnings = []seedfile.Problem{}
	}
	rest, _ := json.Marshal(struct {
		Warnings []seedfile.Problem `json:"warnings"`
		Format   seedfile.Format    `json:"format"`
		Summary  jsonSummary        `json:"summary"`
	}{warnings, s.Format, jsonSummary{s.Rows, s.Valid, s.Invalid}})
	fmt.Fprintf(r.w, "],\n\"problems\":%s,\n%s\n", p, rest[1:])
}
