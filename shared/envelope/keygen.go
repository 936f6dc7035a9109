package envelope

import (
	"bytes"
	"crypto"
	"fmt"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// PGPKey is a new key pair, armored: Private goes into Key Vault (never anywhere else), Public
// to the vendor.
type PGPKey struct {
	Private, Public string
	Fingerprint     string // upper-case hex
}

// NewPGPKey makes a Curve25519 key pair as GnuPG's default ("future-default"): Ed25519 to
// certify, X25519 to encrypt. Curve25519 over RSA: every OpenPGP tool a vendor uses reads it
// (GnuPG ≥ 2.1, Kleopatra, OpenPGP.js, go-crypto), the key is 32 bytes rather than 384, and
// its encryption takes the randomness the app gives it, so a rejected file stored again after
// a crash is the very same blob (see Encrypt). `oathpipe pgp-keygen` and the local stack both
// make their keys here.
func NewPGPKey(name, email string, now time.Time) (PGPKey, error) {
	cfg := &packet.Config{
		Algorithm:   packet.PubKeyAlgoEdDSA,
		Curve:       packet.Curve25519,
		DefaultHash: crypto.SHA256,
		Time:        func() time.Time { return now },
	}
	e, err := openpgp.NewEntity(name, "", email, cfg)
	if err != nil {
		return PGPKey{}, fmt.Errorf("generate the key: %w", err)
	}
	var b bytes.Buffer
	w, err := armor.Encode(&b, openpgp.PrivateKeyType, nil)
	if err == nil {
		err = e.SerializePrivate(w, nil)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		return PGPKey{}, fmt.Errorf("armor the private key: %w", err)
	}
	b.WriteByte('\n')
	pub, err := ArmorPublic(e)
	if err != nil {
		return PGPKey{}, fmt.Errorf("armor the public key: %w", err)
	}
	return PGPKey{Private: b.String(), Public: pub, Fingerprint: fmt.Sprintf("%X", e.PrimaryKey.Fingerprint)}, nil
}
