package envelope

import (
	"archive/zip"
	"bufio"
	"compress/flate"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"strings"
)

// No zip library among the well-kept Go modules decrypts both ZipCrypto and WinZip AES, so
// this file is the smallest reader that does, over archive/zip: archive/zip finds the entries
// and hands out each entry's raw bytes (File.OpenRaw); the decryption and decompression are
// here. Sources: PKWARE APPNOTE.TXT 6.3.x §6.1 (traditional encryption) and WinZip's "AES
// Encryption Information: Encryption Specification AE-1 and AE-2".

const (
	methodStore   = 0
	methodDeflate = 8
	methodAES     = 99
	flagEncrypted = 0x1
	flagDataDesc  = 0x8
	flagStrong    = 0x40
	extraAES      = 0x9901
)

// openZip calls each for every regular file of the archive in ra.
func openZip(name string, ra io.ReaderAt, size int64, outer []Kind, keys Keys, lim Limits, each func(Inner) error) error {
	zr, err := zip.NewReader(ra, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return &Error{Name: name, Code: CodeZipCorrupt, Message: "the zip archive is damaged or cut short (its central directory cannot be read)", Err: err}
	}
	layers := append(append([]Kind(nil), outer...), KindZip)
	// The caps hold for the archive as a whole too: entries may overlap (a directory can point
	// many entries at the same compressed bytes, Fifield's "non-recursive zip bomb").
	tot := &total{size: size}
	n := 0
	for _, f := range zr.File {
		if !f.Mode().IsRegular() || strings.HasPrefix(f.Name, "__MACOSX/") {
			continue
		}
		if n++; n > lim.MaxEntries {
			return &Error{Name: name, Code: CodeTooLarge, Message: fmt.Sprintf("the archive holds more than %d files", lim.MaxEntries)}
		}
		inner := name + "!" + f.Name
		if err := openFile(inner, f, layers, keys, lim, tot, each); err != nil {
			return err
		}
	}
	if n == 0 {
		return &Error{Name: name, Code: CodeZipEmpty, Message: "the zip archive holds no file"}
	}
	return nil
}

func openFile(inner string, f *zip.File, layers []Kind, keys Keys, lim Limits, tot *total, each func(Inner) error) error {
	r, err := openEntry(inner, f, keys.ZipPasswords, lim, tot)
	if err != nil {
		return err
	}
	ahead := readAhead(r)
	defer ahead.Close()
	br := bufio.NewReaderSize(ahead, 64<<10)
	head, _ := br.Peek(64)
	if k, ok := Detect(head); ok {
		return &Error{Name: inner, Code: CodeNested, Message: fmt.Sprintf("the archive holds a %s inside; send the seed file itself in the archive (one level)", k)}
	}
	return each(Inner{Name: inner, Layers: layers, R: br})
}

// openEntry returns f's plaintext as a stream that checks the CRC (or WinZip's authentication
// code) and the caps as it goes.
func openEntry(name string, f *zip.File, passwords []string, lim Limits, tot *total) (io.Reader, error) {
	if f.UncompressedSize64 > uint64(lim.MaxExpanded) {
		return nil, &Error{Name: name, Code: CodeTooLarge, Message: fmt.Sprintf("the file expands to more than %d MiB", lim.MaxExpanded>>20)}
	}
	method, aesStrength, ae2, err := entryMethod(name, f)
	if err != nil {
		return nil, err
	}
	if f.Flags&flagEncrypted == 0 {
		raw, err := f.OpenRaw()
		if err != nil {
			return nil, &Error{Name: name, Code: CodeZipCorrupt, Message: "the zip entry cannot be read", Err: err}
		}
		return checked(name, f, decompress(method, raw), lim, tot, true), nil
	}
	if len(passwords) == 0 {
		return nil, &Error{Name: name, Code: CodeZipPassword, Message: "the file is password-protected and no zip password is configured"}
	}
	passedCheck := false
	for _, pw := range passwords {
		open := func() (io.Reader, error) { return decryptZipCrypto(f, pw) }
		if aesStrength != 0 {
			open = func() (io.Reader, error) { return decryptAES(f, pw, aesStrength) }
		}
		ok, checkOK := trial(open, method)
		passedCheck = passedCheck || checkOK
		if !ok {
			continue
		}
		r, err := open()
		if err != nil {
			continue
		}
		return checked(name, f, decompress(method, r), lim, tot, !ae2), nil
	}
	if passedCheck {
		return nil, &Error{Name: name, Code: CodeZipCorrupt, Message: "a password passes the file's check but its content does not decompress: the file is damaged"}
	}
	return nil, &Error{Name: name, Code: CodeZipPassword, Message: fmt.Sprintf("none of the %d accepted zip passwords opens the file", len(passwords))}
}

// entryMethod reads the compression method, and for WinZip AES the key strength and the
// vendor version from the 0x9901 extra field.
func entryMethod(name string, f *zip.File) (method uint16, strength int, ae2 bool, err error) {
	method = f.Method
	if f.Flags&flagStrong != 0 {
		return 0, 0, false, &Error{Name: name, Code: CodeZipUnsupported, Message: "the file uses PKWARE strong encryption; use ZipCrypto or AES-256 (WinZip AES)"}
	}
	if method == methodAES {
		ex := f.Extra
		for len(ex) >= 4 {
			id, n := binary.LittleEndian.Uint16(ex), int(binary.LittleEndian.Uint16(ex[2:]))
			if len(ex) < 4+n {
				break
			}
			if id == extraAES && n >= 7 {
				d := ex[4 : 4+n]
				ae2 = binary.LittleEndian.Uint16(d) == 2
				strength = int(d[4])
				method = binary.LittleEndian.Uint16(d[5:])
				break
			}
			ex = ex[4+n:]
		}
		if strength < 1 || strength > 3 {
			return 0, 0, false, &Error{Name: name, Code: CodeZipCorrupt, Message: "the file is AES-encrypted but its AES extra field is missing or damaged"}
		}
	}
	if method != methodStore && method != methodDeflate {
		return 0, 0, false, &Error{Name: name, Code: CodeZipUnsupported, Message: fmt.Sprintf("compression method %d; oathpipe reads stored and deflated entries", method)}
	}
	return method, strength, ae2, nil
}

// trial reports whether a password's plaintext looks right: the scheme's own check passed in
// open, and the first KiB decompress. It weeds out the wrong passwords that pass ZipCrypto's
// one-byte check (1 in 256) or WinZip's two-byte verifier (1 in 65536).
// checkOK says the scheme's own check passed.
func trial(open func() (io.Reader, error), method uint16) (ok, checkOK bool) {
	r, err := open()
	if err != nil {
		return false, false
	}
	if method == methodStore {
		return true, true
	}
	var buf [1024]byte
	_, err = io.ReadFull(decompress(method, r), buf[:])
	return err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF), true
}

func decompress(method uint16, r io.Reader) io.Reader {
	if method == methodDeflate {
		return flate.NewReader(bufio.NewReaderSize(r, 32<<10))
	}
	return r
}

// total is what all entries of one archive expanded to so far, and the archive's size.
type total struct{ n, size int64 }

// checkedReader enforces the caps and, at the end, the length and CRC-32 of the entry.
type checkedReader struct {
	r        io.Reader
	f        *zip.File
	name     string
	lim      Limits
	tot      *total
	crc      hash.Hash32
	checkCRC bool
	n        int64
	err      error
}

func checked(name string, f *zip.File, r io.Reader, lim Limits, tot *total, checkCRC bool) io.Reader {
	return &checkedReader{r: r, f: f, name: name, lim: lim, tot: tot, crc: crc32.NewIEEE(), checkCRC: checkCRC}
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	c.crc.Write(p[:n])
	c.n += int64(n)
	c.tot.n += int64(n)
	comp := min(int64(c.f.CompressedSize64), c.tot.size)
	switch {
	case c.n > c.lim.MaxExpanded || c.tot.n > c.lim.MaxExpanded:
		c.err = &Error{Name: c.name, Code: CodeTooLarge, Message: fmt.Sprintf("the archive expands beyond %d MiB", c.lim.MaxExpanded>>20)}
	case c.n > 1<<20 && c.n > c.lim.MaxRatio*max(comp, 1), c.tot.n > 1<<20 && c.tot.n > c.lim.MaxRatio*max(c.tot.size, 1):
		c.err = &Error{Name: c.name, Code: CodeTooLarge, Message: fmt.Sprintf("the archive expands more than %d times its size (a zip bomb?)", c.lim.MaxRatio)}
	case err == io.EOF:
		if uint64(c.n) != c.f.UncompressedSize64 {
			c.err = &Error{Name: c.name, Code: CodeZipCorrupt, Message: "the file's length does not match the archive's directory: damaged"}
		} else if c.checkCRC && c.crc.Sum32() != c.f.CRC32 {
			c.err = &Error{Name: c.name, Code: CodeZipCorrupt, Message: "the file's CRC does not match: damaged (or a wrong ZipCrypto password that passed its check)"}
		}
	case err != nil:
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Name: c.name, Code: CodeZipCorrupt, Message: "the file is damaged or cut short", Err: err}
		}
		c.err = e
	}
	if c.err != nil {
		return n, c.err
	}
	return n, err
}

// ZipCrypto (APPNOTE §6.1).

type zipCrypto struct{ k0, k1, k2 uint32 }

func newZipCrypto(password string) *zipCrypto {
	z := &zipCrypto{0x12345678, 0x23456789, 0x34567890}
	for i := 0; i < len(password); i++ {
		z.update(password[i])
	}
	return z
}

func (z *zipCrypto) update(b byte) {
	z.k0 = crc32.IEEETable[byte(z.k0)^b] ^ z.k0>>8
	z.k1 = (z.k1+z.k0&0xff)*134775813 + 1
	z.k2 = crc32.IEEETable[byte(z.k2)^byte(z.k1>>24)] ^ z.k2>>8
}

func (z *zipCrypto) decrypt(p []byte) {
	for i, c := range p {
		t := z.k2 | 2
		p[i] = c ^ byte((t*(t^1))>>8)
		z.update(p[i])
	}
}

type zipCryptoReader struct {
	r io.Reader
	z *zipCrypto
}

func (r *zipCryptoReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.z.decrypt(p[:n])
	return n, err
}

var errPassword = errors.New("wrong password")

func decryptZipCrypto(f *zip.File, password string) (io.Reader, error) {
	raw, err := f.OpenRaw()
	if err != nil {
		return nil, err
	}
	var hdr [12]byte
	if _, err := io.ReadFull(raw, hdr[:]); err != nil {
		return nil, err
	}
	z := newZipCrypto(password)
	z.decrypt(hdr[:])
	check := byte(f.CRC32 >> 24)
	if f.Flags&flagDataDesc != 0 {
		check = byte(f.ModifiedTime >> 8) //nolint:staticcheck // the check byte is the DOS time's high byte
	}
	if hdr[11] != check {
		return nil, errPassword
	}
	return &zipCryptoReader{r: raw, z: z}, nil
}

// WinZip AES (AE-1/AE-2): PBKDF2-HMAC-SHA1 (1000 rounds) gives the AES key, the HMAC key and a
// two-byte verifier; AES in CTR mode with a little-endian counter from 1; HMAC-SHA1 over the
// ciphertext, cut to 10 bytes, after it.

func decryptAES(f *zip.File, password string, strength int) (io.Reader, error) {
	keyLen := 8 + 8*strength // 16, 24, 32
	saltLen := keyLen / 2
	raw, err := f.OpenRaw()
	if err != nil {
		return nil, err
	}
	body := int64(f.CompressedSize64) - int64(saltLen) - 2 - 10
	if body < 0 {
		return nil, io.ErrUnexpectedEOF
	}
	head := make([]byte, saltLen+2)
	if _, err := io.ReadFull(raw, head); err != nil {
		return nil, err
	}
	dk, err := pbkdf2.Key(sha1.New, password, head[:saltLen], 1000, 2*keyLen+2)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(dk[2*keyLen:], head[saltLen:]) != 1 {
		return nil, errPassword
	}
	block, err := aes.NewCipher(dk[:keyLen])
	if err != nil {
		return nil, err
	}
	return &aesReader{
		raw: raw, left: body, ctr: newLECTR(block), mac: hmac.New(sha1.New, dk[keyLen:2*keyLen]),
	}, nil
}

type aesReader struct {
	raw  io.Reader
	left int64
	ctr  *leCTR
	mac  hash.Hash
	done bool
}

var errAESAuth = errors.New("WinZip AES authentication code mismatch")

func (a *aesReader) Read(p []byte) (int, error) {
	if a.left == 0 {
		if !a.done {
			a.done = true
			var code [10]byte
			if _, err := io.ReadFull(a.raw, code[:]); err != nil {
				return 0, io.ErrUnexpectedEOF
			}
			if !hmac.Equal(a.mac.Sum(nil)[:10], code[:]) {
				return 0, errAESAuth
			}
		}
		return 0, io.EOF
	}
	if int64(len(p)) > a.left {
		p = p[:a.left]
	}
	n, err := a.raw.Read(p)
	a.left -= int64(n)
	a.mac.Write(p[:n])
	a.ctr.xor(p[:n])
	if errors.Is(err, io.EOF) {
		if a.left > 0 {
			return n, io.ErrUnexpectedEOF
		}
		err = nil
	}
	return n, err
}

// leCTR is AES-CTR with Gladman's little-endian 128-bit counter (first block counter 1).
type leCTR struct {
	b       cipher.Block
	counter [16]byte
	stream  [512]byte
	pos     int
}

func newLECTR(b cipher.Block) *leCTR { return &leCTR{b: b, pos: 512} }

func (c *leCTR) refill() {
	for off := 0; off < len(c.stream); off += 16 {
		for i := range c.counter {
			c.counter[i]++
			if c.counter[i] != 0 {
				break
			}
		}
		c.b.Encrypt(c.stream[off:off+16], c.counter[:])
	}
	c.pos = 0
}

func (c *leCTR) xor(p []byte) {
	for len(p) > 0 {
		if c.pos == len(c.stream) {
			c.refill()
		}
		n := subtle.XORBytes(p, p, c.stream[c.pos:])
		c.pos += n
		p = p[n:]
	}
}
