package handlers

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"

	"github.com/oathpipe/oathpipe/shared/token"
)

type fakePGPKey struct {
	key string
	err error
}

func (f fakePGPKey) PGPPublicKey(context.Context) (string, error) { return f.key, f.err }

const armoredPublic = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxjMEaaaa\n-----END PGP PUBLIC KEY BLOCK-----\n"

func TestPGPKey(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pgp    PGPPublicKey
		method string
		want   int
		code   string
	}{
		{"key", fakePGPKey{key: armoredPublic}, "GET", 200, ""},
		{"no key in the vault", fakePGPKey{err: token.Errorf(token.KindNotFound, "no PGP key")}, "GET", 404, "not-found"},
		{"not wired", nil, "GET", 404, "not-found"},
		{"vault down", fakePGPKey{err: token.Errorf(token.KindTransient, "vault 503")}, "GET", 503, "upstream-unavailable"},
		{"method", fakePGPKey{key: armoredPublic}, "POST", 405, "method-not-allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{Pipeline: &fakePipeline{}, PGPKey: tc.pgp, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			a := invoke(t, s, FuncPgpKey, httpPayload(tc.method, "https://x/api/pgp-key", nil, nil, nil))
			res := a.res(t)
			if a.Status != 200 || res.StatusCode != tc.want {
				t.Fatalf("host %d res %d, want %d", a.Status, res.StatusCode, tc.want)
			}
			if tc.want == 200 {
				if res.Body != armoredPublic || res.Headers["Content-Type"] != "text/plain; charset=utf-8" {
					t.Errorf("body %q, headers %v", res.Body, res.Headers)
				}
				return
			}
			var p Problem
			_ = json.Unmarshal([]byte(res.Body), &p)
			if p.Code != tc.code {
				t.Errorf("code %q, want %q", p.Code, tc.code)
			}
		})
	}
}
