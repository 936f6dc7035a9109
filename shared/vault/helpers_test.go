package vault_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/oathpipe/oathpipe/internal/kvstandin"
	"github.com/oathpipe/oathpipe/shared/azauth"
	"github.com/oathpipe/oathpipe/shared/token"
	"github.com/oathpipe/oathpipe/shared/vault"
)

// env is a stand-in vault reached through the real azsecrets client over TLS.
type env struct {
	kv     *kvstandin.Running
	vault  *vault.Vault
	raw    *azsecrets.Client // the bare SDK client, for poking at the vault the way an operator would
	logs   *syncBuffer
	caFile string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type envOptions struct {
	standin kvstandin.Options
	retry   *policy.RetryOptions
	token   string // the credential's token; default kvstandin.DefaultToken
}

func newEnv(tb testing.TB, o envOptions) *env {
	tb.Helper()
	run, err := kvstandin.StartTLS(o.standin)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(run.Close)
	caFile := filepath.Join(tb.TempDir(), "kv-ca.pem")
	if err := os.WriteFile(caFile, run.CAPEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	hc, err := azauth.HTTPClient(caFile)
	if err != nil {
		tb.Fatal(err)
	}
	tok := o.token
	if tok == "" {
		tok = kvstandin.DefaultToken
	}
	logs := &syncBuffer{}
	v, err := vault.New(vault.Options{
		VaultURL:   run.URL + "/",
		Credential: azauth.StaticToken(tok),
		HTTPClient: hc,
		Logger:     slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Retry:      o.retry,
	})
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := azsecrets.NewClient(run.URL, azauth.StaticToken(kvstandin.DefaultToken), &azsecrets.ClientOptions{
		ClientOptions:                        policy.ClientOptions{Transport: hc},
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return &env{kv: run, vault: v, raw: raw, logs: logs, caFile: caFile}
}

func seedOf(secret string) token.Seed {
	return token.Seed{Secret: []byte(secret), Hash: token.SHA1, Digits: 6, Period: 30}
}

var ctx = context.Background()

func azauthHTTPClient(caFile string) (*http.Client, error) { return azauth.HTTPClient(caFile) }

func staticToken() azauth.StaticToken { return azauth.StaticToken(kvstandin.DefaultToken) }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
