package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/oathpipe/oathpipe/shared/azauth"
	"github.com/oathpipe/oathpipe/shared/envelope"
	"github.com/oathpipe/oathpipe/shared/loopback"
	"github.com/oathpipe/oathpipe/shared/vault"
)

// The commands an operator runs by hand (pgp-keygen, rejected download) use the operator's
// credential and their own flags, not the app's settings: this file builds what they need.

// keyFlags are the --vault and --secret flags of the commands that use the deployment's PGP key.
type keyFlags struct{ vaultURL, secret *string }

func addKeyFlags(fs *flag.FlagSet) keyFlags {
	return keyFlags{
		vaultURL: fs.String("vault", os.Getenv("OATHPIPE_KEYVAULT_URL"), "Key Vault URL (default $OATHPIPE_KEYVAULT_URL)"),
		secret: fs.String("secret", envOr("OATHPIPE_PGP_KEY_SECRET", vault.DefaultPGPKeySecret),
			"secret holding the PGP private key (default $OATHPIPE_PGP_KEY_SECRET or "+vault.DefaultPGPKeySecret+")"),
	}
}

// open opens the --vault vault (cliVault).
func (f keyFlags) open() (*vault.Vault, error) { return cliVault(*f.vaultURL) }

// cliVault opens the vault with the caller's credential (cliCredential).
func cliVault(vaultURL string) (*vault.Vault, error) {
	if strings.TrimSpace(vaultURL) == "" {
		return nil, errors.New("no vault: give --vault URL or set OATHPIPE_KEYVAULT_URL")
	}
	cred, hc, err := cliCredential(vaultURL)
	if err != nil {
		return nil, err
	}
	return vault.New(vault.Options{VaultURL: vaultURL, Credential: cred, HTTPClient: hc, Logger: slog.New(slog.DiscardHandler)})
}

// keys reads every enabled version of the PGP key secret.
func (f keyFlags) keys(ctx context.Context, v *vault.Vault) (*envelope.PGPKeys, error) {
	armored, err := v.PGPKeys(ctx, *f.secret)
	if err != nil {
		return nil, err
	}
	keys, err := envelope.ParsePGPKeys(armored, nil)
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", *f.secret, err)
	}
	return keys, nil
}

// cliCredential is the caller's credential: DefaultAzureCredential (az login, environment,
// managed identity), or, when every endpoint is on loopback (the local stand-ins) and
// OATHPIPE_OFFLINE_TOKEN is set, that token; OATHPIPE_CA_FILE adds a trusted CA.
func cliCredential(endpoints ...string) (azcore.TokenCredential, *http.Client, error) {
	hc, err := azauth.HTTPClient(os.Getenv("OATHPIPE_CA_FILE"))
	if err != nil {
		return nil, nil, fmt.Errorf("OATHPIPE_CA_FILE: %w", err)
	}
	id := azauth.Identity{OfflineToken: os.Getenv("OATHPIPE_OFFLINE_TOKEN")}
	for _, e := range endpoints {
		if id.OfflineToken != "" && !loopback.URL(e) {
			return nil, nil, fmt.Errorf("OATHPIPE_OFFLINE_TOKEN is only for the local stand-ins, and %s is not on loopback", e)
		}
	}
	cred, err := azauth.Credential(id)
	if err != nil {
		return nil, nil, fmt.Errorf("your Azure credential (az login): %w", err)
	}
	return cred, hc, nil
}

func envOr(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}
