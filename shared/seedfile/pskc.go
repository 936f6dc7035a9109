package seedfile

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
)

// PSKC (RFC 6030) elements, matched by local name so any namespace prefix works.

type pskcEncrypted struct {
	Method struct {
		Algorithm string `xml:"Algorithm,attr"`
	} `xml:"EncryptionMethod"`
	CipherValue string `xml:"CipherData>CipherValue"`
}

type pskcEncryptionKey struct {
	KeyName    string `xml:"KeyName"`
	DerivedKey *struct {
		Method struct {
			Algorithm string `xml:"Algorithm,attr"`
			Params    struct {
				Salt           string `xml:"Salt>Specified"`
				IterationCount int    `xml:"IterationCount"`
				KeyLength      int    `xml:"KeyLength"`
				PRF            struct {
					Algorithm string `xml:"Algorithm,attr"`
				} `xml:"PRF"`
			} `xml:"PBKDF2-params"`
		} `xml:"KeyDerivationMethod"`
	} `xml:"DerivedKey"`
	X509 *struct{} `xml:"X509Data"`
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
	Key *struct {
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
	} `xml:"Key"`
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
	f := &c.f
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
	if sec := key.Data.Secret; sec != nil {
		secret, err := st.secret(c.opts, sec)
		var fe *errFile
		switch {
		case errors.As(err, &fe):
			return c.fileProblem(fe.code, fe.msg)
		case errors.Is(err, errMACMismatch):
			k.secretChecked = true
			c.problem(line, f.secret, CodeSecretMACMismatch, "the secret's MAC does not match: the file was altered")
		case err != nil:
			k.secretChecked = true
			c.problem(line, f.secret, CodeSecretNotBase64, "the secret is not Base64")
		default:
			k.secret = secret
		}
	}
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
	return c.finish(&k)
}

var errMACMismatch = errors.New("MAC mismatch")

// secret returns the raw secret of v: Base64 plain text, or decrypted with the transport key
// after its MAC checks out.
func (st *pskcState) secret(opts Options, v *pskcValue) ([]byte, error) {
	if v.PlainValue != nil {
		return base64.StdEncoding.DecodeString(strings.Join(strings.Fields(*v.PlainValue), ""))
	}
	if v.Encrypted == nil {
		return nil, errors.New("no value")
	}
	if err := st.keys(opts); err != nil {
		return nil, err
	}
	ct, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(v.Encrypted.CipherValue), ""))
	if err != nil {
		return nil, err
	}
	if err := checkCipher(v.Encrypted.Method.Algorithm, len(st.transport)); err != nil {
		return nil, err
	}
	if strings.TrimSpace(v.ValueMAC) == "" {
		return nil, &errFile{CodePSKCMACMissing, "an encrypted secret has no ValueMAC, so a wrong key could not be told from a right one"}
	}
	want, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(v.ValueMAC), ""))
	if err != nil {
		return nil, &errFile{CodePSKCMalformed, "a ValueMAC is not Base64"}
	}
	m := hmac.New(st.newMAC, st.macKey)
	m.Write(ct)
	if subtle.ConstantTimeCompare(m.Sum(nil), want) != 1 {
		if !st.verified {
			return nil, &errFile{CodePSKCBadKey, "the PSKC key or password is wrong: the secrets' MAC does not match"}
		}
		return nil, errMACMismatch
	}
	plain, err := decryptCBC(st.transport, ct)
	if err != nil {
		return nil, &errFile{CodePSKCBadKey, "a secret whose MAC matches does not decrypt: the file is damaged"}
	}
	st.verified = true
	return plain, nil
}

// keys derives the transport key and decrypts the MAC key, once.
func (st *pskcState) keys(opts Options) error {
	if st.transport != nil {
		return nil
	}
	switch ek := st.encKey; {
	case ek == nil:
		return &errFile{CodePSKCMalformed, "secrets are encrypted but the file has no EncryptionKey"}
	case ek.X509 != nil:
		return &errFile{CodePSKCUnsupported, "secrets are encrypted to an X.509 certificate; ask the vendor for a pre-shared key or password"}
	case ek.DerivedKey != nil:
		m := ek.DerivedKey.Method
		if !strings.HasSuffix(m.Algorithm, "#pbkdf2") {
			return &errFile{CodePSKCUnsupported, "the key derivation is not PBKDF2"}
		}
		if opts.PSKCPassword == "" {
			return &errFile{CodePSKCKeyMissing, opts.Advice.advise("secrets are protected by a password: give --pskc-password or OATHPIPE_PSKC_PASSWORD",
				"secrets are protected by a password: an administrator must set the app setting OATHPIPE_PSKC_PASSWORD (a Key Vault reference), then upload the file again")}
		}
		salt, err := base64.StdEncoding.DecodeString(strings.TrimSpace(m.Params.Salt))
		if err != nil || m.Params.IterationCount <= 0 || m.Params.IterationCount > 10_000_000 {
			return &errFile{CodePSKCMalformed, "the PBKDF2 salt or iteration count cannot be read"}
		}
		n := m.Params.KeyLength
		if n == 0 {
			n = 16
		}
		prf, ok := macHash(m.Params.PRF.Algorithm)
		if m.Params.PRF.Algorithm == "" {
			prf, ok = sha1.New, true
		}
		if !ok || (n != 16 && n != 24 && n != 32) {
			return &errFile{CodePSKCUnsupported, "the PBKDF2 pseudo-random function or key length is not supported"}
		}
		key, err := pbkdf2.Key(prf, opts.PSKCPassword, salt, m.Params.IterationCount, n)
		if err != nil {
			return &errFile{CodePSKCUnsupported, "the PBKDF2 parameters are not supported"}
		}
		st.transport = key
	default:
		if opts.PSKCKey == nil {
			return &errFile{CodePSKCKeyMissing, opts.Advice.advise("secrets are encrypted with a pre-shared key: give --pskc-key HEX or OATHPIPE_PSKC_KEY",
				"secrets are encrypted with a pre-shared key: an administrator must set the app setting OATHPIPE_PSKC_KEY (a Key Vault reference), then upload the file again")}
		}
		st.transport = opts.PSKCKey
	}
	mm := st.macMethod
	if mm == nil {
		return &errFile{CodePSKCMACMissing, "secrets are encrypted but the file has no MACMethod to verify them"}
	}
	newMAC, ok := macHash(mm.Algorithm)
	if !ok {
		return &errFile{CodePSKCUnsupported, "the MAC algorithm is not HMAC-SHA1/224/256/384/512"}
	}
	st.newMAC = newMAC
	if mm.MACKey == nil {
		// Older PSKC drafts: the MAC key is the transport key.
		st.macKey = st.transport
		return nil
	}
	if err := checkCipher(mm.MACKey.Method.Algorithm, len(st.transport)); err != nil {
		return err
	}
	ct, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(mm.MACKey.CipherValue), ""))
	if err != nil {
		return &errFile{CodePSKCMalformed, "the MACKey is not Base64"}
	}
	mk, err := decryptCBC(st.transport, ct)
	if err != nil {
		return &errFile{CodePSKCBadKey, "the PSKC key or password is wrong: the MAC key does not decrypt"}
	}
	st.macKey = mk
	return nil
}

func checkCipher(alg string, keyLen int) error {
	want := map[int]string{16: "#aes128-cbc", 24: "#aes192-cbc", 32: "#aes256-cbc"}[keyLen]
	if want == "" || !strings.HasSuffix(alg, want) {
		if strings.HasSuffix(alg, "-cbc") && want != "" {
			return &errFile{CodePSKCBadKey, fmt.Sprintf("the file uses %s but the key is %d bits", alg[strings.LastIndexByte(alg, '#')+1:], keyLen*8)}
		}
		return &errFile{CodePSKCUnsupported, "the encryption is not AES-CBC (aes128-cbc, aes192-cbc or aes256-cbc)"}
	}
	return nil
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

// decryptCBC decrypts IV ‖ ciphertext with PKCS#7 padding (XML Encryption's CBC layout).
func decryptCBC(key, data []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if len(data) < 2*aes.BlockSize || len(data)%aes.BlockSize != 0 {
		return nil, errors.New("bad ciphertext length")
	}
	out := make([]byte, len(data)-aes.BlockSize)
	cipher.NewCBCDecrypter(block, data[:aes.BlockSize]).CryptBlocks(out, data[aes.BlockSize:])
	pad := int(out[len(out)-1])
	if pad == 0 || pad > aes.BlockSize || !bytes.Equal(out[len(out)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		clear(out)
		return nil, errors.New("bad padding")
	}
	return out[:len(out)-pad], nil
}
