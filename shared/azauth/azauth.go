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
)

// Identity says which credential to build. The zero value is DefaultAzureCredential (az login,
// environment, workload or managed identity).
type Identity struct {
	// OfflineToken, when set, is a static bearer token for the local stand-ins. The caller makes
	// sure every endpoint it goes to is on loopback (config.Load refuses it otherwise).
	OfflineToken string
	// ClientID, when set, names a user-assigned managed identity.
	ClientID string
}

// Credential returns the credential for id: the one place oathpipe builds one, for Key Vault,
// Graph and identity-based storage alike.
func Credential(id Identity) (azcore.TokenCredential, error) {
	switch {
	case id.OfflineToken != "":
		return StaticToken(id.OfflineToken), nil
	case id.ClientID != "":
		c, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
			ID: azidentity.ClientID(id.ClientID),
		})
		if err != nil {
			return nil, fmt.Errorf("managed identity credential for client id %s: %w", id.ClientID, err)
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
