package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/oathpipe/oathpipe/shared/seedfile"
	"github.com/oathpipe/oathpipe/shared/token"
)

const validateUsage = `usage: oathpipe validate [--json] [--format F] [--secret-encoding base32|hex] [--hash sha1|sha256]
                         [--pskc-key HEX] [--pskc-password P] FILE

Checks a vendor seed file (Entra CSV, Graph-shaped CSV, PSKC) and reports every problem by
line, field and code. It never prints a seed. FILE "-" reads standard input.
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
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, validateUsage)
		fs.PrintDefaults()
	}
	asJSON := fs.Bool("json", false, "print one JSON object instead of a table")
	format := fs.String("format", "", "entra-csv, graph-csv, pskc or auto (default: detected from the content)")
	encoding := fs.String("secret-encoding", "base32", "how CSV secrets are written: base32 or hex (never guessed)")
	hashFlag := fs.String("hash", "", "sha1 or sha256 for files without a hash column (default: from the seed length, 32 bytes SHA-256, else SHA-1)")
	pskcKey := fs.String("pskc-key", "", "hex AES key for PSKC files encrypted with a pre-shared key (default $OATHPIPE_PSKC_KEY)")
	pskcPassword := fs.String("pskc-password", "", "password for PBKDF2-protected PSKC files (default $OATHPIPE_PSKC_PASSWORD)")
	files, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitUsage
	}
	if len(files) != 1 {
		fmt.Fprintln(stderr, "oathpipe validate: give exactly one FILE")
		fs.Usage()
		return exitUsage
	}
	switch *format {
	case "auto":
		*format = ""
	case "", string(seedfile.FormatEntraCSV), string(seedfile.FormatGraphCSV), string(seedfile.FormatPSKC):
	default:
		fmt.Fprintf(stderr, "oathpipe validate: --format %q: use entra-csv, graph-csv, pskc or auto\n", *format)
		return exitUsage
	}
	if *encoding != "base32" && *encoding != "hex" {
		fmt.Fprintf(stderr, "oathpipe validate: --secret-encoding %q: use base32 or hex\n", *encoding)
		return exitUsage
	}
	opts := seedfile.Options{Format: seedfile.Format(*format), SecretEncoding: *encoding, PSKCPassword: *pskcPassword}
	if opts.PSKCPassword == "" {
		opts.PSKCPassword = os.Getenv("OATHPIPE_PSKC_PASSWORD")
	}
	if *hashFlag != "" {
		h, ok := seedfile.ParseHash(*hashFlag)
		if !ok || h == token.SHA512 {
			fmt.Fprintf(stderr, "oathpipe validate: --hash %q: use sha1 or sha256 (Entra ID takes no other)\n", *hashFlag)
			return exitUsage
		}
		opts.Hash = h
	}
	keyHex, keyFrom := *pskcKey, "--pskc-key"
	if keyHex == "" {
		keyHex, keyFrom = os.Getenv("OATHPIPE_PSKC_KEY"), "OATHPIPE_PSKC_KEY"
	}
	if keyHex != "" {
		key, err := hex.DecodeString(strings.TrimSpace(keyHex))
		if err != nil || (len(key) != 16 && len(key) != 24 && len(key) != 32) {
			fmt.Fprintf(stderr, "oathpipe validate: %s must be an AES key in hex (32, 48 or 64 hex digits)\n", keyFrom)
			return exitUsage
		}
		opts.PSKCKey = key
	}

	name := files[0]
	var in io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "oathpipe validate: %v\n", err)
			return exitUsage
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.IsDir() {
			fmt.Fprintf(stderr, "oathpipe validate: %s is a directory\n", name)
			return exitUsage
		}
		in = f
	}

	// What stays alive while reading is the duplicate index: pointer-free arrays that cost the
	// collector almost nothing to scan, so collecting sooner keeps the process near that size.
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	out := bufio.NewWriterSize(stdout, 64<<10)
	defer out.Flush()
	var rep reporter = &tableReporter{w: out, name: name}
	if *asJSON {
		rep = &jsonReporter{w: out, name: name}
	}
	rep.start()
	sum, err := seedfile.Read(in, opts, rep.token, rep.problem)
	var fe *seedfile.FileError
	readFailed := err != nil && !errors.As(err, &fe)
	rep.end(sum)
	if readFailed {
		out.Flush()
		if token.KindOf(err) == token.KindInvalid {
			fmt.Fprintf(stderr, "oathpipe validate: %v\n", err)
		} else {
			fmt.Fprintf(stderr, "oathpipe validate: %s: %v\n", name, err)
		}
		return exitUsage
	}
	if rep.problems() > 0 || err != nil {
		return exitProblem
	}
	return exitOK
}

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
	w     *bufio.Writer
	name  string
	count int
}

func (r *tableReporter) start()                      {}
func (r *tableReporter) token(seedfile.Record) error { return nil }
func (r *tableReporter) problems() int               { return r.count }

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
	w      *bufio.Writer
	name   string
	tokens int
	probs  []seedfile.Problem
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
	rest, _ := json.Marshal(struct {
		Format  seedfile.Format `json:"format"`
		Summary jsonSummary     `json:"summary"`
	}{s.Format, jsonSummary{s.Rows, s.Valid, s.Invalid}})
	fmt.Fprintf(r.w, "],\n\"problems\":%s,\n%s\n", p, rest[1:])
}
