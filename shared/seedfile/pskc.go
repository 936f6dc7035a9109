package seedfile

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
	"time"
)

// PSKC (RFC 6030) elements, matched by local name so any namespace prefix works.

type pskcEncrypted struct {
	Method struct {
		Algorithm string `xml:"Algorithm,attr"`
	} `xml:"EncryptionMethod"`
	CipherValue string `xml:"CipherData>CipherValue"`
}

type pskcEncryptionKey struct {
	KeyName    string          `xml:"KeyName"`
	DerivedKey *pskcDerivedKey `xml:"DerivedKey"`
	X509       *struct{}       `xml:"X509Data"`
}

// pskcDerivedKey is a transport key derived from a password (PBKDF2, RFC 6030 §6.2).
type pskcDerivedKey struct {
	Method struct {
		Algorithm string `xml:"Algorithm,attr"`
		Params    struct {
			Salt           string `xml:"Salt>Specified"`
			IterationCount int    `xml:"IterationCount"`
			KeyLength      int    `xml:"KeyLength"`
			PRF            struct {
				Algorithm string `xml:"Algorithm,attr"`
				Text      string `xml:",chardata"` // python-pskc 1.2 writes the URI as text
			} `xml:"PRF"`
		} `xml:"PBKDF2-params"`
	} `xml:"KeyDerivationMethod"`
}

type pskcMACMethod struct {
	Algorithm string         `xml:"Algorithm,attr"`
	MACKey    *pskcEncrypted `xml:"MACKey"`
}

type pskcValue struct {
	PlainValue *string        `xml:"PlainValue"`
	Encrypted  *pskcEncrypted `xml:"EncryptedValue"`
	ValueMAC   string         `xml:"ValueMAC"`
}

type pskcKeyPackage struct {
	DeviceInfo struct {
		Manufacturer string `xml:"Manufacturer"`
		SerialNo     string `xml:"SerialNo"`
		Model        string `xml:"Model"`
		UserID       string `xml:"UserId"`
	} `xml:"DeviceInfo"`
	Key *pskcKey `xml:"Key"`
}

// pskcKey is a KeyPackage's Key.
type pskcKey struct {
	Algorithm string `xml:"Algorithm,attr"`
	UserID    string `xml:"UserId"`
	Params    struct {
		Suite          string `xml:"Suite"`
		ResponseFormat *struct {
			Length   string `xml:"Length,attr"`
			Encoding string `xml:"Encoding,attr"`
		} `xml:"ResponseFormat"`
	} `xml:"AlgorithmParameters"`
	Data struct {
		Secret       *pskcValue `xml:"Secret"`
		TimeInterval *pskcValue `xml:"TimeInterval"`
	} `xml:"Data"`
	Policy struct {
		ExpiryDate string `xml:"ExpiryDate"`
	} `xml:"Policy"`
}

// pskcState is what the container header establishes for its KeyPackages.
type pskcState struct {
	encKey    *pskcEncryptionKey
	macMethod *pskcMACMethod
	transport []byte // derived lazily, on the first encrypted value
	macKey    []byte
	newMAC    func() hash.Hash
	verified  bool // a MAC already checked out: later mismatches are per row
}

func (c *checker) readPSKC(br *bufio.Reader) error {
	c.f = pskcFields
	src := &ioErrReader{r: br}
	d := xml.NewDecoder(src)
	d.CharsetReader = func(label string, in io.Reader) (io.Reader, error) {
		if strings.EqualFold(label, "utf-8") || strings.EqualFold(label, "us-ascii") {
			return in, nil
		}
		return nil, fmt.Errorf("encoding %q", label)
	}
	var st pskcState
	root := false
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			line, _ := d.InputPos()
			if src.err != nil {
				return fmt.Errorf("read PSKC file near line %d: %w", line, src.err)
			}
			return c.fileProblem(CodePSKCMalformed, fmt.Sprintf("the XML breaks off or is malformed near line %d", line))
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if !root {
			if se.Name.Local != "KeyContainer" {
				return c.fileProblem(CodeFileNotPSKC, fmt.Sprintf("the XML root is <%s>, not a PSKC <KeyContainer>", se.Name.Local))
			}
			root = true
			continue
		}
		line, _ := d.InputPos()
		switch se.Name.Local {
		case "EncryptionKey":
			st.encKey = new(pskcEncryptionKey)
			err = d.DecodeElement(st.encKey, &se)
		case "MACMethod":
			st.macMethod = new(pskcMACMethod)
			err = d.DecodeElement(st.macMethod, &se)
		case "KeyPackage":
			var kp pskcKeyPackage
			if err = d.DecodeElement(&kp, &se); err == nil {
				if err := c.keyPackage(&st, &kp, line); err != nil {
					return err
				}
			}
		default:
			err = d.Skip()
		}
		if err != nil {
			line, _ := d.InputPos()
			if src.err != nil {
				return fmt.Errorf("read PSKC file near line %d: %w", line, src.err)
			}
			return c.fileProblem(CodePSKCMalformed, fmt.Sprintf("the PSKC <%s> near line %d cannot be read", se.Name.Local, line))
		}
	}
	if !root {
		return c.fileProblem(CodeFileNotPSKC, "the file has no XML element")
	}
	if c.sum.Rows == 0 {
		return c.fileProblem(CodeFileNoRows, "the PSKC file has no KeyPackage")
	}
	return nil
}

// ioErrReader remembers a failure of the underlying reader, so that an I/O error is not
// mistaken for malformed XML.
type ioErrReader struct {
	r   io.Reader
	err error
}

func (e *ioErrReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		e.err = err
	}
	return n, err
}

// errFile carries a file-level problem out of the per-package code.
type errFile struct{ code, msg string }

func (e *errFile) Error() string { return e.msg }

func (c *checker) keyPackage(st *pskcState, kp *pskcKeyPackage, line int) error {
	k := candidate{
		line:         line,
		serial:       []byte(strings.TrimSpace(kp.DeviceInfo.SerialNo)),
		manufacturer: []byte(strings.TrimSpace(kp.DeviceInfo.Manufacturer)),
		model:        []byte(strings.TrimSpace(kp.DeviceInfo.Model)),
		interval:     30, // RFC 6030: TimeInterval defaults to 30
		digits:       6,
	}
	key := kp.Key
	if key != nil {
		if u := strings.TrimSpace(key.UserID); u != "" {
			k.upn = []byte(u)
		}
	}
	if u := strings.TrimSpace(kp.DeviceInfo.UserID); k.upn == nil && u != "" {
		k.upn = []byte(u)
	}
	c.rowCells(k.serial, k.upn)
	if key == nil {
		c.problem(line, "Key", CodeAlgorithmUnknown, "the KeyPackage has no Key")
		k.secretChecked, k.hashReported = true, true
		return c.finish(&k)
	}
	// The secret first: a wrong key stops the file before any row problem is reported.
	if err := c.keySecret(st, key, &k); err != nil {
		return err
	}
	c.keyParams(key, &k)
	return c.finish(&k)
}

// keySecret reads the Key's secret into k. A problem with the whole file (a wrong key, a
// missing MAC) is returned; a problem with this secret is reported on its row.
func (c *checker) keySecret(st *pskcState, key *pskcKey, k *candidate) error {
	sec := key.Data.Secret
	if sec == nil {
		return nil
	}
	secret, err := st.secret(c.opts, sec)
	var fe *errFile
	switch {
	case errors.As(err, &fe):
		return c.fileProblem(fe.code, fe.msg)
	case errors.Is(err, errMACMismatch):
		k.secretChecked = true
		c.problem(k.line, c.f.secret, CodeSecretMACMismatch, "the secret's MAC does not match: the file was altered")
	case err != nil:
		k.secretChecked = true
		c.problem(k.line, c.f.secret, CodeSecretNotBase64, "the secret is not Base64")
	default:
		k.secret = secret
	}
	return nil
}

// keyParams reads how the Key makes codes (algorithm, Suite, ResponseFormat, TimeInterval)
// and its expiry into k, reporting what Entra ID would not take.
func (c *checker) keyParams(key *pskcKey, k *candidate) {
	f, line := &c.f, k.line
	alg := strings.ToLower(key.Algorithm)
	switch {
	case strings.HasSuffix(alg, ":totp") || strings.HasSuffix(alg, "#totp"):
	case strings.HasSuffix(alg, ":hotp") || strings.HasSuffix(alg, "#hotp"):
		c.problem(line, "Algorithm", CodeAlgorithmHOTP, "an HOTP (counter) key; Entra ID takes TOTP keys only")
	default:
		c.problem(line, "Algorithm", CodeAlgorithmUnknown, "the key is neither TOTP nor HOTP")
	}
	if s := strings.TrimSpace(key.Params.Suite); s != "" {
		h, ok := parseHash([]byte(s))
		k.hash, k.hashGiven = h, true
		if !ok {
			c.problem(line, f.hash, CodeHashUnsupported, "unknown hash function in Suite; Entra ID takes HMAC-SHA1 or HMAC-SHA256")
			k.hashReported = true
		}
	}
	if rf := key.Params.ResponseFormat; rf != nil {
		n, ok := atoiField([]byte(rf.Length))
		k.digits = n
		if !ok || !strings.EqualFold(strings.TrimSpace(rf.Encoding), "DECIMAL") && rf.Encoding != "" {
			c.problem(line, f.digits, CodeDigitsUnsupported, "the response format is not 6 decimal digits")
			k.digitsReported = true
		}
	}
	if d := strings.TrimSpace(key.Policy.ExpiryDate); d != "" {
		c.expiry(k, d)
	}
	if ti := key.Data.TimeInterval; ti != nil {
		if ti.PlainValue == nil {
			c.problem(line, f.interval, CodeIntervalUnsupported, "the time interval is not a plain value")
			k.intervalReported = true
		} else if n, ok := atoiField([]byte(*ti.PlainValue)); ok {
			k.interval = n
		} else {
			c.problem(line, f.interval, CodeIntervalUnsupported, "the time interval is not a whole number of seconds (30 or 60)")
			k.intervalReported = true
		}
	}
}

var errMACMismatch = errors.New("MAC mismatch")

// secret returns the raw secret of v: Base64 plain text, or decrypted with the transport key.
// As RFC 6030 and python-pskc read it: a CBC value must carry a ValueMAC (over IV ‖ ciphertext,
// or over the plaintext as older drafts had it), checked before the value is used; a key-wrap
// value carries its own integrity check, so its ValueMAC is checked when present.
func (st *pskcState) secret(opts Options, v *pskcValue) ([]byte, error) {
	if v.PlainValue != nil {
		return base64.StdEncoding.DecodeString(strings.Join(strings.Fields(*v.PlainValue), ""))
	}
	if v.Encrypted == nil {
		return nil, errors.New("no value")
	}
	ciph, err := lookupCipher(v.Encrypted.Method.Algorithm)
	if err != nil {
		return nil, err
	}
	if err := st.keys(opts, ciph); err != nil {
		return nil, err
	}
	if err := ciph.checkKey(st.transport); err != nil {
		return nil, err
	}
	ct, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(v.Encrypted.CipherValue), ""))
	if err != nil {
		return nil, err
	}
	macGiven := strings.TrimSpace(v.ValueMAC) != ""
	if !macGiven && !ciph.wrap {
		return nil, &errFile{CodePSKCMACMissing, "an encrypted secret has no ValueMAC, so a wrong key could not be told from a right one"}
	}
	if macGiven && st.newMAC == nil {
		return nil, &errFile{CodePSKCMACMissing, "secrets carry a ValueMAC but the file has no MACMethod to verify them"}
	}
	plain, decErr := ciph.decrypt(st.transport, ct)
	if macGiven {
		want, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(v.ValueMAC), ""))
		if err != nil {
			return nil, &errFile{CodePSKCMalformed, "a ValueMAC is not Base64"}
		}
		ok := st.macOK(ct, want) || decErr == nil && st.macOK(plain, want)
		if !ok {
			clear(plain)
			if !st.verified {
				return nil, &errFile{CodePSKCBadKey, "the PSKC key or password is wrong: the secrets' MAC does not match"}
			}
			return nil, errMACMismatch
		}
	}
	if decErr != nil {
		switch {
		case ciph.wrap && !st.verified:
			return nil, &errFile{CodePSKCBadKey, "the PSKC key or password is wrong: the key wrap's integrity check fails"}
		case ciph.wrap:
			return nil, errMACMismatch
		}
		return nil, &errFile{CodePSKCBadKey, "a secret whose MAC matches does not decrypt: the file is damaged"}
	}
	st.verified = true
	return plain, nil
}

func (st *pskcState) macOK(data, want []byte) bool {
	m := hmac.New(st.newMAC, st.macKey)
	m.Write(data)
	return subtle.ConstantTimeCompare(m.Sum(nil), want) == 1
}

// keys derives the transport key and decrypts the MAC key, once. ciph is the first encrypted
// value's algorithm: a PBKDF2 derivation without a KeyLength derives a key of its size.
func (st *pskcState) keys(opts Options, ciph pskcCipher) error {
	if st.transport != nil {
		return nil
	}
	switch ek := st.encKey; {
	case ek == nil:
		return &errFile{CodePSKCMalformed, "secrets are encrypted but the file has no EncryptionKey"}
	case ek.X509 != nil:
		return &errFile{CodePSKCUnsupported, "secrets are encrypted to an X.509 certificate; ask the vendor for a pre-shared key or password"}
	case ek.DerivedKey != nil:
		key, err := derivedKey(opts, ek.DerivedKey, ciph)
		if err != nil {
			return err
		}
		st.transport = key
	default:
		if opts.PSKCKey == nil {
			return &errFile{CodePSKCKeyMissing, opts.Advice.advise("secrets are encrypted with a pre-shared key: give --pskc-key HEX or OATHPIPE_PSKC_KEY",
				"secrets are encrypted with a pre-shared key: an administrator must set the app setting OATHPIPE_PSKC_KEY (a Key Vault reference), then upload the file again")}
		}
		st.transport = opts.PSKCKey
	}
	return st.macKeys()
}

// derivedKey derives the transport key from the password with PBKDF2 (RFC 8018) as dk says.
func derivedKey(opts Options, dk *pskcDerivedKey, ciph pskcCipher) ([]byte, error) {
	m := dk.Method
	if !strings.HasSuffix(m.Algorithm, "#pbkdf2") {
		return nil, unsupportedAlgorithm("key derivation", m.Algorithm)
	}
	if opts.PSKCPassword == "" {
		return nil, &errFile{CodePSKCKeyMissing, opts.Advice.advise("secrets are protected by a password: give --pskc-password or OATHPIPE_PSKC_PASSWORD",
			"secrets are protected by a password: an administrator must set the app setting OATHPIPE_PSKC_PASSWORD (a Key Vault reference), then upload the file again")}
	}
	salt, err := base64.StdEncoding.DecodeString(strings.TrimSpace(m.Params.Salt))
	if err != nil || m.Params.IterationCount <= 0 || m.Params.IterationCount > 10_000_000 {
		return nil, &errFile{CodePSKCMalformed, "the PBKDF2 salt or iteration count cannot be read"}
	}
	n := m.Params.KeyLength
	if n == 0 {
		n = ciph.keyLens[len(ciph.keyLens)-1]
	}
	prfName := cmp.Or(strings.TrimSpace(m.Params.PRF.Algorithm), strings.TrimSpace(m.Params.PRF.Text))
	prf, ok := macHash(prfName)
	if prfName == "" {
		prf, ok = sha1.New, true // RFC 8018's default
	}
	if !ok {
		return nil, unsupportedAlgorithm("PBKDF2 pseudo-random function", prfName)
	}
	if n != 16 && n != 24 && n != 32 {
		return nil, &errFile{CodePSKCMalformed, fmt.Sprintf("the PBKDF2 key length is %d bytes; a transport key is 16, 24 or 32", n)}
	}
	key, err := pbkdf2.Key(prf, opts.PSKCPassword, salt, m.Params.IterationCount, n)
	if err != nil {
		return nil, &errFile{CodePSKCMalformed, "the PBKDF2 parameters cannot be used"}
	}
	return key, nil
}

// macKeys sets up the MAC of the secrets from the MACMethod, the transport key known: its
// hash, and its key (decrypted with the transport key, or the transport key itself).
func (st *pskcState) macKeys() error {
	mm := st.macMethod
	if mm == nil || strings.TrimSpace(mm.Algorithm) == "" {
		// Allowed for key wrap; a CBC value is refused when it comes (pskc.mac-missing).
		// python-pskc writes a MACMethod without an Algorithm (only the MACKey) for key wrap.
		return nil
	}
	newMAC, ok := macHash(mm.Algorithm)
	if !ok {
		return unsupportedAlgorithm("MAC", mm.Algorithm)
	}
	st.newMAC = newMAC
	if mm.MACKey == nil {
		// Older PSKC drafts: the MAC key is the transport key.
		st.macKey = st.transport
		return nil
	}
	mc, err := lookupCipher(mm.MACKey.Method.Algorithm)
	if err != nil {
		return err
	}
	if err := mc.checkKey(st.transport); err != nil {
		return err
	}
	ct, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(mm.MACKey.CipherValue), ""))
	if err != nil {
		return &errFile{CodePSKCMalformed, "the MACKey is not Base64"}
	}
	mk, err := mc.decrypt(st.transport, ct)
	if err != nil {
		return &errFile{CodePSKCBadKey, "the PSKC key or password is wrong: the MAC key does not decrypt"}
	}
	st.macKey = mk
	return nil
}

func unsupportedAlgorithm(what, alg string) *errFile {
	name := strings.TrimSpace(alg)
	if i := strings.LastIndexByte(name, '#'); i >= 0 {
		name = name[i+1:]
	}
	if name == "" || !plainText([]byte(name)) || len(name) > 64 {
		name = "(unnamed)"
	}
	return &errFile{CodePSKCUnsupportedAlgorithm, fmt.Sprintf("the %s algorithm %q is not one oathpipe implements", what, name)}
}

// pskcCipher is an XML Encryption / RFC 6030 encryption algorithm.
type pskcCipher struct {
	name    string // the URI's fragment, e.g. "aes128-cbc"
	keyLens []int
	des     bool // TripleDES rather than AES
	wrap    bool // key wrap (RFC 3394/5649, RFC 3217) rather than CBC
}

var pskcCiphers = map[string]pskcCipher{
	"aes128-cbc":    {"aes128-cbc", []int{16}, false, false},
	"aes192-cbc":    {"aes192-cbc", []int{24}, false, false},
	"aes256-cbc":    {"aes256-cbc", []int{32}, false, false},
	"tripledes-cbc": {"tripledes-cbc", []int{16, 24}, true, false},
	"kw-aes128":     {"kw-aes128", []int{16}, false, true},
	"kw-aes192":     {"kw-aes192", []int{24}, false, true},
	"kw-aes256":     {"kw-aes256", []int{32}, false, true},
	"kw-tripledes":  {"kw-tripledes", []int{16, 24}, true, true},
}

func lookupCipher(alg string) (pskcCipher, error) {
	frag := strings.ToLower(strings.TrimSpace(alg))
	if i := strings.LastIndexByte(frag, '#'); i >= 0 {
		frag = frag[i+1:]
	}
	c, ok := pskcCiphers[frag]
	if !ok {
		return c, unsupportedAlgorithm("encryption", alg)
	}
	return c, nil
}

func (c pskcCipher) checkKey(key []byte) error {
	for _, n := range c.keyLens {
		if len(key) == n {
			return nil
		}
	}
	return &errFile{CodePSKCBadKey, fmt.Sprintf("the file uses %s but the key is %d bits", c.name, len(key)*8)}
}

func (c pskcCipher) block(key []byte) (cipher.Block, error) {
	if !c.des {
		return aes.NewCipher(key)
	}
	if len(key) == 16 { // two-key TripleDES: K1 K2 K1
		key = append(append([]byte(nil), key...), key[:8]...)
	}
	return des.NewTripleDESCipher(key)
}

func (c pskcCipher) decrypt(key, data []byte) ([]byte, error) {
	b, err := c.block(key)
	if err != nil {
		return nil, err
	}
	switch {
	case c.wrap && c.des:
		return unwrap3DES(b, data)
	case c.wrap:
		return unwrapAES(b, data)
	}
	return decryptCBC(b, data)
}

// decryptCBC decrypts IV ‖ ciphertext with PKCS#7 padding (XML Encryption's CBC layout).
func decryptCBC(block cipher.Block, data []byte) ([]byte, error) {
	bs := block.BlockSize()
	if len(data) < 2*bs || len(data)%bs != 0 {
		return nil, errors.New("bad ciphertext length")
	}
	out := make([]byte, len(data)-bs)
	cipher.NewCBCDecrypter(block, data[:bs]).CryptBlocks(out, data[bs:])
	pad := int(out[len(out)-1])
	if pad == 0 || pad > bs || !bytes.Equal(out[len(out)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		clear(out)
		return nil, errors.New("bad padding")
	}
	return out[:len(out)-pad], nil
}

var errUnwrap = errors.New("key unwrap integrity check failed")

// unwrapAES is AES key unwrap, RFC 3394 §2.2.2, with RFC 5649's padding (python-pskc wraps a
// 20-byte SHA-1 seed that way).
func unwrapAES(block cipher.Block, data []byte) ([]byte, error) {
	if len(data)%8 != 0 || len(data) < 16 {
		return nil, errUnwrap
	}
	n := len(data)/8 - 1
	var a [8]byte
	r := make([]byte, 8*n)
	var buf [16]byte
	if n == 1 {
		block.Decrypt(buf[:], data)
		copy(a[:], buf[:8])
		copy(r, buf[8:])
	} else {
		copy(a[:], data[:8])
		copy(r, data[8:])
		for j := 5; j >= 0; j-- {
			for i := n - 1; i >= 0; i-- {
				t := uint64(n*j + i + 1)
				for k := 0; k < 8; k++ {
					a[7-k] ^= byte(t >> (8 * k))
				}
				copy(buf[:8], a[:])
				copy(buf[8:], r[8*i:8*i+8])
				block.Decrypt(buf[:], buf[:])
				copy(a[:], buf[:8])
				copy(r[8*i:8*i+8], buf[8:])
			}
		}
	}
	if subtle.ConstantTimeCompare(a[:], []byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}) == 1 && n >= 2 {
		return r, nil
	}
	if subtle.ConstantTimeCompare(a[:4], []byte{0xa6, 0x59, 0x59, 0xa6}) == 1 {
		mli := int(binary.BigEndian.Uint32(a[4:]))
		if mli <= len(r) && mli > len(r)-8 && allZero(r[mli:]) {
			return r[:mli], nil
		}
	}
	clear(r)
	return nil, errUnwrap
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// unwrap3DES is TripleDES key unwrap, RFC 3217 §3 (CBC twice, the second pass reversed, a
// SHA-1 checksum).
func unwrap3DES(block cipher.Block, data []byte) ([]byte, error) {
	if len(data)%8 != 0 || len(data) < 24 {
		return nil, errUnwrap
	}
	tmp := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, []byte{0x4a, 0xdd, 0xa2, 0x2c, 0x79, 0xe8, 0x21, 0x05}).CryptBlocks(tmp, data)
	slices.Reverse(tmp)
	out := make([]byte, len(tmp)-8)
	cipher.NewCBCDecrypter(block, tmp[:8]).CryptBlocks(out, tmp[8:])
	key, icv := out[:len(out)-8], out[len(out)-8:]
	sum := sha1.Sum(key)
	if subtle.ConstantTimeCompare(sum[:8], icv) != 1 {
		clear(out)
		return nil, errUnwrap
	}
	return key, nil
}

func macHash(alg string) (func() hash.Hash, bool) {
	i := strings.LastIndexByte(alg, '#')
	switch strings.ToLower(alg[i+1:]) {
	case "hmac-sha1":
		return sha1.New, true
	case "hmac-sha224":
		return sha256.New224, true
	case "hmac-sha256":
		return sha256.New, true
	case "hmac-sha384":
		return sha512.New384, true
	case "hmac-sha512":
		return sha512.New, true
	}
	return nil, false
}

// expiry warns about a key whose <Policy><ExpiryDate> (xs:dateTime) has passed or comes within
// ExpiryWarning: Entra takes the token, but its owner will lose it soon. A date that cannot be
// read is a warning too, never a reason to refuse the key.
func (c *checker) expiry(k *candidate, date string) {
	now := time.Now
	if c.opts.Now != nil {
		now = c.opts.Now
	}
	warn := func(code, msg string) {
		k.warnings = append(k.warnings, Problem{Line: k.line, Field: "ExpiryDate", Code: code, Message: msg})
	}
	t, err := time.Parse(time.RFC3339, date)
	if err != nil {
		if t, err = time.Parse("2006-01-02T15:04:05", date); err != nil { // no zone: UTC
			warn(WarnKeyExpiring, "the key's ExpiryDate cannot be read as a date and time")
			return
		}
	}
	switch left := t.Sub(now()); {
	case left <= 0:
		warn(WarnKeyExpired, fmt.Sprintf("the key expired on %s (PSKC Policy ExpiryDate)", t.UTC().Format("2006-01-02")))
	case left <= ExpiryWarning:
		warn(WarnKeyExpiring, fmt.Sprintf("the key expires on %s, within %d days (PSKC Policy ExpiryDate)", t.UTC().Format("2006-01-02"), int(ExpiryWarning.Hours()/24)))
	}
}
