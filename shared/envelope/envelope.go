// Package envelope opens seed files as vendors deliver them: an OpenPGP message (binary or
// ASCII-armored, encrypted to the deployment's key) or a zip archive (plain, ZipCrypto or
// WinZip AES), told apart by their content, never by their name. It hands each seed file inside
// to the caller as a stream and keeps nothing: no plaintext is written anywhere, and an
// archive is read in place through an io.ReaderAt (only a zip inside a PGP message is held in
// memory, within Limits.MaxInMemory).
//
// Every problem with the delivered file is an *Error with a stable Code (docs/seed-files.md);
// the reader of an Inner returns one too when the integrity check at the end of a PGP message
// or zip entry fails, so a reader must consume an Inner to the end before trusting what it read.
package envelope

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// Problem codes: file-level, stable, listed in docs/seed-files.md.
const (
	CodePGPNoKey       = "file.pgp-no-key"      // encrypted to a key the vault (or --pgp-key) does not hold
	CodePGPPassphrase  = "file.pgp-passphrase"  // the private key is protected and the passphrase is missing or wrong
	CodePGPCorrupt     = "file.pgp-corrupt"     // malformed, truncated, or altered (integrity check failed)
	CodePGPUnsupported = "file.pgp-unsupported" // not public-key encrypted (signed only, passphrase-encrypted) or an unsupported algorithm
	CodeZipPassword    = "file.zip-password"    // no accepted password opens an entry
	CodeZipCorrupt     = "file.zip-corrupt"     // malformed or truncated archive, CRC or authentication mismatch
	CodeZipUnsupported = "file.zip-unsupported" // a compression method or encryption other than store/deflate, ZipCrypto, WinZip AES
	CodeZipEmpty       = "file.zip-empty"       // no regular file inside
	CodeTooLarge       = "file.too-large"       // expands beyond the size cap or the compression ratio cap (a zip bomb)
	CodeNested         = "file.nested"          // an envelope inside an envelope beyond one level (a zip inside a PGP message is fine)
)

// Error is a file-level problem with the delivered envelope. Name is the delivered file or the
// entry ("archive.zip!inner.csv") it concerns. Message never quotes content.
type Error struct {
	Name    string
	Code    string
	Message string
	Err     error // the library's error, when there is one (not for display to vendors)
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s (%s): %v", e.Name, e.Message, e.Code, e.Err)
	}
	return fmt.Sprintf("%s: %s (%s)", e.Name, e.Message, e.Code)
}

func (e *Error) Unwrap() error { return e.Err }

// Kind names one layer of a delivered file.
type Kind string

// The layers Open recognises.
const (
	KindPGP Kind = "pgp"
	KindZip Kind = "zip"
)

// Keys are what Open may decrypt with.
type Keys struct {
	PGP          *PGPKeys // nil: an OpenPGP message is file.pgp-no-key
	ZipPasswords []string // tried in order for each encrypted entry
}

// Limits cap what a delivered file may expand to. Zero fields take the defaults.
type Limits struct {
	MaxExpanded int64 // bytes of plaintext per seed file (default 2 GiB)
	MaxRatio    int64 // expanded ÷ compressed, checked past 1 MiB of output (default 200)
	MaxInMemory int64 // a zip inside a PGP message is held in memory up to this (default 256 MiB)
	MaxEntries  int   // regular files in one archive (default 1000)
}

// DefaultLimits are the caps when a Limits field is zero.
var DefaultLimits = Limits{MaxExpanded: 2 << 30, MaxRatio: 200, MaxInMemory: 256 << 20, MaxEntries: 1000}

func (l Limits) withDefaults() Limits {
	if l.MaxExpanded <= 0 {
		l.MaxExpanded = DefaultLimits.MaxExpanded
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = DefaultLimits.MaxRatio
	}
	if l.MaxInMemory <= 0 {
		l.MaxInMemory = DefaultLimits.MaxInMemory
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultLimits.MaxEntries
	}
	return l
}

// Source is a delivered file. R is read as a stream; At and Size, when set, let a zip archive
// be read in place (archive/zip needs random access to find the central directory). Without At
// a zip is held in memory (compressed) up to Limits.MaxInMemory.
type Source struct {
	Name string
	R    io.Reader
	At   io.ReaderAt
	Size int64
}

// Inner is one seed file inside a delivered file (or the delivered file itself when it is
// plain). R must be read to the end: its last Read reports an *Error when an integrity check
// fails, and the caller must then discard what it read.
type Inner struct {
	Name   string // the delivered name, or "archive.zip!inner.csv" for an entry
	Layers []Kind // outermost first; empty for a plain file
	R      io.Reader
}

// Detect tells what head (a file's first bytes, 64 are enough) is.
func Detect(head []byte) (Kind, bool) {
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")), bytes.HasPrefix(head, []byte("PK\x05\x06")):
		return KindZip, true
	case isArmoredMessage(head), isBinaryMessage(head):
		return KindPGP, true
	}
	return "", false
}

// Open reads src's first bytes, and calls each once per seed file inside: once with the file
// itself when it is plain, once with the decrypted content of a PGP message, once per regular
// file of a zip archive. An error returned by each stops Open and is returned as is; a problem
// with the envelope is an *Error.
func Open(src Source, keys Keys, lim Limits, each func(Inner) error) error {
	lim = lim.withDefaults()
	br := bufio.NewReaderSize(src.R, 64<<10)
	head, _ := br.Peek(64)
	kind, ok := Detect(head)
	switch {
	case !ok:
		return each(Inner{Name: src.Name, R: br})
	case kind == KindPGP:
		return openPGP(src.Name, br, keys, lim, each)
	default:
		if src.At == nil {
			// archive/zip needs random access: an archive read from a stream (standard input) is
			// held in memory, still compressed and encrypted.
			return zipInMemory(src.Name, br, nil, keys, lim, each)
		}
		return openZip(src.Name, src.At, src.Size, nil, keys, lim, each)
	}
}

// openPGP decrypts the message in r and passes the plaintext on: as is, or opened as a zip
// archive held in memory.
func openPGP(name string, r io.Reader, keys Keys, lim Limits, each func(Inner) error) error {
	plain, err := decryptPGP(name, r, keys.PGP)
	if err != nil {
		return err
	}
	ahead := readAhead(&capReader{r: plain, name: name, max: lim.MaxExpanded})
	defer ahead.Close()
	br := bufio.NewReaderSize(ahead, 64<<10)
	head, _ := br.Peek(64)
	kind, ok := Detect(head)
	switch {
	case !ok:
		return each(Inner{Name: name, Layers: []Kind{KindPGP}, R: br})
	case kind == KindPGP:
		return &Error{Name: name, Code: CodeNested, Message: "the PGP message holds another PGP message; send one layer of encryption"}
	}
	// A zip inside the message: archive/zip needs random access, so the archive (still
	// compressed and, when its entries are encrypted, still encrypted) is held in memory.
	return zipInMemory(name, br, []Kind{KindPGP}, keys, lim, each)
}

func zipInMemory(name string, r io.Reader, outer []Kind, keys Keys, lim Limits, each func(Inner) error) error {
	buf, err := io.ReadAll(io.LimitReader(r, lim.MaxInMemory+1))
	if err != nil {
		return err
	}
	if int64(len(buf)) > lim.MaxInMemory {
		return &Error{Name: name, Code: CodeTooLarge, Message: fmt.Sprintf("the zip archive is over %d MiB and cannot be read in place", lim.MaxInMemory>>20)}
	}
	return openZip(name, bytes.NewReader(buf), int64(len(buf)), outer, keys, lim, each)
}

// capReader fails once more than max bytes came through: a compression bomb inside a PGP
// message (OpenPGP compresses too).
type capReader struct {
	r    io.Reader
	name string
	max  int64
	n    int64
}

func (c *capReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		return n, &Error{Name: c.name, Code: CodeTooLarge, Message: fmt.Sprintf("the content expands beyond %d MiB", c.max>>20)}
	}
	return n, err
}
