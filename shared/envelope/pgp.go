package envelope

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// PGPKeys is the private keys a delivered OpenPGP message may be encrypted to: every enabled
// version of the vault's PGP secret (newest first), or the CLI's --pgp-key file.
type PGPKeys struct {
	list openpgp.EntityList
}

// ParsePGPKeys reads ASCII-armored private keys (each text may hold several). A key protected
// by a passphrase is unlocked with passphrase; one that stays locked is kept, and a message
// encrypted to it is file.pgp-passphrase. A text without a private key is an error naming it.
func ParsePGPKeys(armored [][]byte, passphrase []byte) (*PGPKeys, error) {
	k := &PGPKeys{}
	for i, a := range armored {
		el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(a))
		if err != nil {
			return nil, fmt.Errorf("PGP key %d: not an ASCII-armored OpenPGP key: %w", i+1, err)
		}
		private := false
		for _, e := range el {
			if e.PrivateKey == nil {
				continue
			}
			private = true
			if len(passphrase) > 0 && isLocked(e) {
				if err := e.DecryptPrivateKeys(passphrase); err != nil {
					return nil, fmt.Errorf("PGP key %d (%s): the passphrase does not unlock it", i+1, e.PrimaryKey.KeyIdString())
				}
			}
		}
		if !private {
			return nil, fmt.Errorf("PGP key %d: a public key, not a private key", i+1)
		}
		k.list = append(k.list, el...)
	}
	return k, nil
}

func isLocked(e *openpgp.Entity) bool {
	if e.PrivateKey != nil && e.PrivateKey.Encrypted {
		return true
	}
	for _, s := range e.Subkeys {
		if s.PrivateKey != nil && s.PrivateKey.Encrypted {
			return true
		}
	}
	return false
}

// Len is the number of keys.
func (k *PGPKeys) Len() int {
	if k == nil {
		return 0
	}
	return len(k.list)
}

// Entities returns the keys for encrypting to (the newest first).
func (k *PGPKeys) Entities() openpgp.EntityList {
	if k == nil {
		return nil
	}
	return k.list
}

const armorMessage = "-----BEGIN PGP MESSAGE-----"

func isArmoredMessage(head []byte) bool {
	head = bytes.TrimPrefix(head, []byte{0xEF, 0xBB, 0xBF})
	return bytes.HasPrefix(bytes.TrimLeft(head, " \t\r\n"), []byte(armorMessage))
}

// isBinaryMessage reports whether head starts with an OpenPGP packet a message starts with
// (RFC 9580 §10.3): a public-key or passphrase encrypted session key, compressed data, literal
// data or a one-pass signature, with a plausible version or format octet after the length.
func isBinaryMessage(head []byte) bool {
	if len(head) < 3 || head[0]&0x80 == 0 {
		return false
	}
	var tag byte
	var body []byte
	if head[0]&0x40 != 0 { // OpenPGP (new) format
		tag = head[0] & 0x3f
		switch l := head[1]; {
		case l < 192:
			body = head[2:]
		case l < 224:
			body = head[3:]
		case l == 255:
			if len(head) < 7 {
				return false
			}
			body = head[6:]
		default: // partial length: only for data packets
			body = head[2:]
		}
	} else { // legacy format
		tag = (head[0] >> 2) & 0x0f
		switch head[0] & 3 {
		case 0:
			body = head[2:]
		case 1:
			body = head[3:]
		case 2:
			if len(head) < 6 {
				return false
			}
			body = head[5:]
		default:
			body = head[1:]
		}
	}
	if len(body) == 0 {
		return false
	}
	v := body[0]
	switch tag {
	case 1: // public-key encrypted session key
		return v == 3 || v == 6
	case 3: // symmetric-key encrypted session key
		return v == 4 || v == 5 || v == 6
	case 4: // one-pass signature
		return v == 3 || v == 6
	case 8: // compressed data
		return v <= 3
	case 11: // literal data
		return strings.IndexByte("btu1lm", v) >= 0
	}
	return false
}

var (
	errLocked    = errors.New("the private key is protected by a passphrase")
	errSymmetric = errors.New("passphrase-encrypted message")
)

// decryptPGP starts decrypting the OpenPGP message in r (armored or binary) and returns the
// plaintext as a stream whose errors are *Error.
func decryptPGP(name string, r io.Reader, keys *PGPKeys) (io.Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(64)
	var bin io.Reader = br
	if isArmoredMessage(head) {
		block, err := armor.Decode(br)
		if err != nil {
			return nil, &Error{Name: name, Code: CodePGPCorrupt, Message: "the ASCII-armored PGP message cannot be read", Err: err}
		}
		if block.Type != "PGP MESSAGE" {
			return nil, &Error{Name: name, Code: CodePGPUnsupported, Message: fmt.Sprintf("the armored block is a %q, not a PGP MESSAGE", block.Type)}
		}
		bin = block.Body
	}
	bb := bufio.NewReaderSize(bin, 64<<10)
	ids := recipients(bb)
	if keys.Len() == 0 {
		return nil, &Error{Name: name, Code: CodePGPNoKey, Message: "the file is PGP-encrypted (to key " + ids + ") and no PGP private key is configured"}
	}
	prompt := func(candidates []openpgp.Key, symmetric bool) ([]byte, error) {
		if len(candidates) > 0 {
			return nil, errLocked
		}
		return nil, errSymmetric
	}
	md, err := openpgp.ReadMessage(bb, keys.list, prompt, &packet.Config{})
	if err != nil {
		return nil, pgpError(name, ids, err)
	}
	if !md.IsEncrypted {
		return nil, &Error{Name: name, Code: CodePGPUnsupported, Message: "the PGP message is not encrypted; ask the vendor to encrypt it to the deployment's public key (GET /api/pgp-key)"}
	}
	return &pgpBody{r: md.UnverifiedBody, name: name}, nil
}

func pgpError(name, ids string, err error) *Error {
	var (
		structural  pgperrors.StructuralError
		unsupported pgperrors.UnsupportedError
	)
	switch {
	case errors.Is(err, pgperrors.ErrKeyIncorrect):
		return &Error{Name: name, Code: CodePGPNoKey, Message: "the file is encrypted to key " + ids + ", which is not among the deployment's PGP keys", Err: err}
	case errors.Is(err, errLocked):
		return &Error{Name: name, Code: CodePGPPassphrase, Message: "the private key the file is encrypted to is protected by a passphrase: give --pgp-passphrase (OATHPIPE_PGP_PASSPHRASE)"}
	case errors.Is(err, errSymmetric):
		return &Error{Name: name, Code: CodePGPUnsupported, Message: "the file is encrypted with a passphrase, not to the deployment's public key (GET /api/pgp-key)"}
	case errors.As(err, &unsupported):
		return &Error{Name: name, Code: CodePGPUnsupported, Message: "the PGP message uses something oathpipe cannot decrypt", Err: err}
	case errors.As(err, &structural), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &Error{Name: name, Code: CodePGPCorrupt, Message: "the PGP message is damaged or cut short", Err: err}
	}
	var sig pgperrors.SignatureError
	if errors.As(err, &sig) {
		return &Error{Name: name, Code: CodePGPCorrupt, Message: "the PGP message fails its integrity check: it was altered or damaged", Err: err}
	}
	return &Error{Name: name, Code: CodePGPCorrupt, Message: "the PGP message cannot be decrypted", Err: err}
}

// recipients names the key ids of the message's public-key encrypted session keys, read from
// the buffered head of the binary stream (without consuming it), for problem messages.
func recipients(br *bufio.Reader) string {
	head, _ := br.Peek(16 << 10)
	pr := packet.NewReader(bytes.NewReader(head))
	var ids []string
	for len(ids) < 8 {
		p, err := pr.Next()
		if err != nil {
			break
		}
		ek, ok := p.(*packet.EncryptedKey)
		if !ok {
			break
		}
		if ek.KeyId == 0 {
			ids = append(ids, "(anonymous)")
		} else {
			ids = append(ids, fmt.Sprintf("%016X", ek.KeyId))
		}
	}
	if len(ids) == 0 {
		return "(unknown)"
	}
	return strings.Join(ids, ", ")
}

// pgpBody turns the library's read errors (an MDC or AEAD tag mismatch at the end, a cut-off
// packet) into file-level problems.
type pgpBody struct {
	r    io.Reader
	name string
	err  error
}

func (b *pgpBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		var e *Error
		if !errors.As(err, &e) {
			e = pgpError(b.name, "", err)
			if e.Code == CodePGPNoKey {
				e.Code, e.Message = CodePGPCorrupt, "the PGP message cannot be decrypted"
			}
		}
		b.err = e
		return n, e
	}
	return n, err
}

// Encrypt returns a writer that encrypts what is written to it to the newest key of keys (the
// deployment's own public key) as a binary OpenPGP message on w; Close finishes the message.
// It is how a rejected plain seed file is kept: never in plaintext.
//
// With a non-empty nonce the message is the same for the same key, nonce and content: its
// random bytes (session key, ephemeral key) come from AES-CTR keyed with HMAC-SHA256(secret
// key material, nonce). The pipeline passes the import id, so a repeated delivery stores the
// very same blob (storage refuses to overwrite a blob with different content), while nobody
// without the private key can predict or reproduce the session key. That holds for Curve25519
// keys (what `oathpipe pgp-keygen` makes); Go's RSA encryption draws its own randomness.
func Encrypt(w io.Writer, keys *PGPKeys, name string, nonce []byte) (io.WriteCloser, error) {
	if keys.Len() == 0 {
		return nil, errors.New("no PGP key to encrypt to")
	}
	cfg := &packet.Config{}
	if len(nonce) > 0 {
		r, err := keys.deterministic(nonce)
		if err != nil {
			return nil, err
		}
		cfg.Rand = r
	}
	return openpgp.Encrypt(w, keys.list[:1], nil, &openpgp.FileHints{IsBinary: true, FileName: name}, cfg)
}

func (k *PGPKeys) deterministic(nonce []byte) (io.Reader, error) {
	var secret bytes.Buffer
	if err := k.list[0].SerializePrivateWithoutSigning(&secret, nil); err != nil {
		return nil, fmt.Errorf("derive the encryption nonce: %w", err)
	}
	m := hmac.New(sha256.New, secret.Bytes())
	clear(secret.Bytes())
	m.Write([]byte("oathpipe rejected-file encryption v1\x00"))
	m.Write(nonce)
	block, err := aes.NewCipher(m.Sum(nil))
	if err != nil {
		return nil, err
	}
	return cipher.StreamReader{S: cipher.NewCTR(block, make([]byte, aes.BlockSize)), R: zeros{}}, nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// PublicKey returns the armored public key of the newest key: what a vendor encrypts to.
func (k *PGPKeys) PublicKey() (string, error) {
	if k.Len() == 0 {
		return "", errors.New("no PGP key")
	}
	return ArmorPublic(k.list[0])
}

// ArmorPublic armors e's public key.
func ArmorPublic(e *openpgp.Entity) (string, error) {
	var b bytes.Buffer
	w, err := armor.Encode(&b, openpgp.PublicKeyType, nil)
	if err != nil {
		return "", err
	}
	if err := e.Serialize(w); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	b.WriteByte('\n')
	return b.String(), nil
}

// Fingerprint is the newest key's fingerprint in upper-case hex.
func (k *PGPKeys) Fingerprint() string {
	if k.Len() == 0 {
		return ""
	}
	return fmt.Sprintf("%X", k.list[0].PrimaryKey.Fingerprint)
}

// Append returns the keys of k followed by those of more.
func (k *PGPKeys) Append(more *PGPKeys) *PGPKeys {
	out := &PGPKeys{}
	if k != nil {
		out.list = append(out.list, k.list...)
	}
	if more != nil {
		out.list = append(out.list, more.list...)
	}
	return out
}

// DecryptPGP decrypts one OpenPGP message (armored or binary) as a stream, without looking at
// what is inside: for `oathpipe rejected download`. Errors are *Error, the last Read's too.
func DecryptPGP(name string, r io.Reader, keys *PGPKeys) (io.Reader, error) {
	return decryptPGP(name, r, keys)
}
