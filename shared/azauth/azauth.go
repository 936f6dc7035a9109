// Package azauth builds the one credential and HTTP transport every Azure client in oathpipe
// uses: a user-assigned managed identity, DefaultAzureCredential, or (for the local stand-ins
// only) a static offline token, plus an optional extra CA bundle.
package azauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/oathpipe/oathpipe/shared/config"
)

// Credential returns the credential for Key Vault, Graph and identity-based storage. An offline
// token is only ever accepted by config.Load when every endpoint is on loopback.
func Credential(cfg *config.Config) (azcore.TokenCredential, error) {
	switch {
	case cfg.OfflineToken != "":
		return StaticToken(cfg.OfflineToken), nil
	case cfg.ManagedIdentityClientID != "":
		c, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
			ID: azidentity.ClientID(cfg.ManagedIdentityClientID),
		})
		if err != nil {
			return nil, fmt.Errorf("managed identity credential (OATHPIPE_MANAGED_IDENTITY_CLIENT_ID): %w", err)
		}
		return c, nil
	default:
		c, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, fmt.Errorf("default Azure credential: %w", err)
		}
		return c, nil
	}
}

// StaticToken is a credential that always returns the same bearer token. The local stand-ins
// accept it; nothing in Azure does.
type StaticToken string

// GetToken implements azcore.TokenCredential.
func (t StaticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(t), ExpiresOn: time.Now().Add(24 * time.Hour)}, nil
}

// HTTPClient returns an HTTP client that trusts the system roots plus the PEM bundle in caFile
// (when not empty). Azure SDK clients take it as their Transport.
func HTTPClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA bundle %s: %w", caFile, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}, nil
}
