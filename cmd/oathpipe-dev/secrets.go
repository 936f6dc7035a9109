package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/oathpipe/oathpipe/internal/devstack"
	"github.com/oathpipe/oathpipe/shared/envelope"
)

// secretFlags are the flags that give the app what it needs to read protected seed files:
// PSKC keys become app settings; the PGP private key and the zip passwords go into the
// stand-in vault under the secrets the app reads (brief decision 4 and 6).
type secretFlags struct {
	pskcKey, pskcPassword string
	pgpKeyFile            string
	zipPasswords          []string
}

// apply returns the app settings and the vault secrets the flags ask for. Secret names follow
// OATHPIPE_PGP_KEY_SECRET and OATHPIPE_ZIP_PASSWORDS_SECRET when the environment sets them
// (the app reads the same settings, which the stack passes on).
func (f secretFlags) apply(getenv func(string) string) (settings, secrets map[string]string, err error) {
	settings, secrets = map[string]string{}, map[string]string{}
	if f.pskcKey != "" {
		k, err := hex.DecodeString(f.pskcKey)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return nil, nil, fmt.Errorf("--pskc-key: want an AES key in hex (32, 48 or 64 hex digits)")
		}
		settings["OATHPIPE_PSKC_KEY"] = f.pskcKey
	}
	if f.pskcPassword != "" {
		settings["OATHPIPE_PSKC_PASSWORD"] = f.pskcPassword
	}
	pgpSecret := orDefault(getenv("OATHPIPE_PGP_KEY_SECRET"), devstack.PGPKeySecret)
	if f.pgpKeyFile == "" {
		// Without --pgp-key the stack makes a key of its own, as post-deploy.sh does in Azure: the
		// app keeps a rejected plain file only encrypted to the deployment's key, and without one
		// it would leave such a file in the inbox.
		k, err := envelope.NewPGPKey("oathpipe local stack", "", time.Now())
		if err != nil {
			return nil, nil, fmt.Errorf("make the stack's PGP key: %w", err)
		}
		secrets[pgpSecret] = k.Private
	} else {
		b, err := os.ReadFile(f.pgpKeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--pgp-key: %w", err)
		}
		if !bytes.Contains(b, []byte("-----BEGIN PGP PRIVATE KEY BLOCK-----")) {
			return nil, nil, fmt.Errorf("--pgp-key %s: not an ASCII-armored OpenPGP private key (gpg --armor --export-secret-keys)", f.pgpKeyFile)
		}
		secrets[pgpSecret] = string(b)
	}
	if len(f.zipPasswords) > 0 {
		b, err := json.Marshal(f.zipPasswords)
		if err != nil {
			return nil, nil, err
		}
		secrets[orDefault(getenv("OATHPIPE_ZIP_PASSWORDS_SECRET"), devstack.ZipPasswordsSecret)] = string(b)
	}
	return settings, secrets, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
