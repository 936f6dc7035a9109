package testkit

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/internal/kvstandin"
	"github.com/oathpipe/oathpipe/shared/azauth"
	"github.com/oathpipe/oathpipe/shared/entra"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/vault"
)

// SyncBuffer collects log output from many goroutines.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Stack is the pipeline wired to the real vault and entra clients against the Key Vault and
// Graph stand-ins, with a pipeline.Ledger, pipeline.Queue and pipeline.Blobs that each test chooses.
type Stack struct {
	KV     *kvstandin.Running
	Graph  *graphstandin.Running
	Vault  *vault.Vault
	Dir    *entra.Client
	Logs   *SyncBuffer // everything the pipeline, vault and entra logged (JSON lines)
	Logger *slog.Logger
}

// Options configures NewStack. The zero value: no latency, no Graph throttling, Key Vault's
// default limit, the users of testdata/users.json.
type Options struct {
	Latency    time.Duration        // added to every Key Vault and Graph request
	GraphRate  int                  // Graph writes per GraphPer; 0 = unthrottled
	GraphPer   time.Duration        // default 1 s
	GraphBurst int                  // default: one second's worth
	KVRate     int                  // Key Vault transactions per KVPer; 0 = Key Vault's default limit
	KVPer      time.Duration        // with KVRate
	Users      []graphstandin.User  // default testdata/users.json
	Quiet      bool                 // log at Info, not Debug (benchmarks of big files)
	VaultRetry *policy.RetryOptions // the vault client's retries (default vault.DefaultRetry)
}

// NewStack starts the Key Vault and Graph stand-ins over TLS and builds the real vault and
// entra clients against them; everything stops when the test ends.
func NewStack(t testing.TB, o Options) *Stack {
	t.Helper()
	s := &Stack{Logs: &SyncBuffer{}}
	level := slog.LevelDebug
	if o.Quiet {
		level = slog.LevelInfo
	}
	s.Logger = slog.New(slog.NewJSONHandler(s.Logs, &slog.HandlerOptions{Level: level}))
	var err error
	s.KV, err = kvstandin.StartTLS(kvstandin.Options{Latency: o.Latency, Rate: o.KVRate, Per: o.KVPer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.KV.Close)
	users := o.Users
	if users == nil {
		if users, err = graphstandin.LoadUsers(usersFile()); err != nil {
			t.Fatal(err)
		}
	}
	rate := o.GraphRate
	if rate == 0 {
		rate = -1
	}
	per := o.GraphPer
	if per == 0 {
		per = time.Second
	}
	s.Graph, err = graphstandin.StartTLS(graphstandin.Options{Users: users, Latency: o.Latency, WriteRate: rate, WritePer: per, WriteBurst: o.GraphBurst})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Graph.Close)

	// Trust both stand-ins the way the app does: one CA bundle file (OATHPIPE_CA_FILE).
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, append(append([]byte{}, s.KV.CAPEM...), s.Graph.CAPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	hc, err := azauth.HTTPClient(ca)
	if err != nil {
		t.Fatal(err)
	}
	s.Vault, err = vault.New(vault.Options{VaultURL: s.KV.URL, Credential: azauth.StaticToken(kvstandin.DefaultToken), HTTPClient: hc, Logger: s.Logger, Retry: o.VaultRetry})
	if err != nil {
		t.Fatal(err)
	}
	s.Dir, err = entra.New(entra.Options{GraphURL: s.Graph.URL, Credential: azauth.StaticToken(graphstandin.DefaultToken), HTTPClient: hc, Logger: s.Logger})
	if err != nil {
		t.Fatal(err)
	}
	s.StoreEnvelopeSecrets(t)
	return s
}

// Pipeline returns a Pipeline over the stack's vault and directory and the given storage ports.
func (s *Stack) Pipeline(l pipeline.Ledger, q pipeline.Queue, b pipeline.Blobs, mod func(*pipeline.Deps)) *pipeline.Pipeline {
	d := pipeline.Deps{
		Vault: s.Vault, Directory: s.Dir, Ledger: l, Queue: q, Blobs: b,
		VaultConcurrency: 8, Logger: s.Logger,
		Envelope: vault.EnvelopeSecrets{Vault: s.Vault},
	}
	if mod != nil {
		mod(&d)
	}
	return pipeline.New(d)
}

// usersFile finds testdata/users.json at the module root from any package directory.
func usersFile() string {
	dir, _ := os.Getwd()
	for {
		p := filepath.Join(dir, "testdata", "users.json")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return filepath.Join("testdata", "users.json")
		}
		dir = parent
	}
}
