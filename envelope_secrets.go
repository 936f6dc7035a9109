package main

import (
	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/vault"
)

// envelopeSecrets is where the app finds the PGP keys and zip passwords for delivered files.
func envelopeSecrets(v *vault.Vault, cfg *config.Config) vault.EnvelopeSecrets {
	return vault.EnvelopeSecrets{Vault: v, PGPKeySecret: cfg.PGPKeySecret, ZipSecret: cfg.ZipPasswordsSecret}
}
