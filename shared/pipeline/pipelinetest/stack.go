package pipelinetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/internal/kvstandin"
	"github.com/oathpipe/oathpipe/shared/azauth"
	"github.com/oathpipe/oathpipe/shared/config"
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
		Activation: config.ActivationAuto, VaultConcurrency: 8, Logger: s.Logger,
		Envelope: vault.EnvelopeSecrets{Vault: s.Vault},
	}
	if mod != nil {
		mod(&d)
	}
	return pipeline.New(d)
}

// Row is one line of a generated Entra CSV.
type Row struct {
	UPN, Serial, Secret, Interval, Manufacturer, Model string
}

// SeedSet generates rows with fresh random secrets and remembers every secret for the leak scan.
type SeedSet struct {
	Secrets [][]byte
}

// Fresh returns a new random 160-bit secret in Base32 and remembers it.
func (ss *SeedSet) Fresh() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	ss.Secrets = append(ss.Secrets, b)
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)
}

// Row returns a valid 30 s Token2 C202 row with a fresh secret.
func (ss *SeedSet) Row(serial, upn string) Row {
	return Row{UPN: upn, Serial: serial, Secret: ss.Fresh(), Interval: "30", Manufacturer: "Token2", Model: "C202"}
}

// EntraCSV renders rows as the Entra admin center's CSV (upn,serial number,secret key,...).
func EntraCSV(rows []Row) []byte {
	var b bytes.Buffer
	b.WriteString("upn,serial number,secret key,time interval,manufacturer,model\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "%s,%s,%s,%s,%s,%s\n", csvCell(r.UPN), csvCell(r.Serial), r.Secret, r.Interval, csvCell(r.Manufacturer), csvCell(r.Model))
	}
	return b.Bytes()
}

func csvCell(s string) string {
	if strings.ContainsAny(s, ",\"\n") {
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return s
}

// Leaks scans text for any secret of ss in raw, Base32 (any case, padded or not), hex and
// Base64 form, and returns a description of each find.
func (ss *SeedSet) Leaks(where, text string) []string {
	var found []string
	low := strings.ToLower(text)
	for i, sec := range ss.Secrets {
		forms := map[string]string{
			"raw":    string(sec),
			"base32": strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sec)),
			"hex":    hex.EncodeToString(sec),
			"base64": base64.StdEncoding.EncodeToString(sec)[:24],
		}
		for form, f := range forms {
			hay := low
			if form == "raw" || form == "base64" {
				hay = text
			}
			if strings.Contains(hay, f) {
				found = append(found, fmt.Sprintf("%s: secret %d in %s form", where, i, form))
			}
		}
	}
	return found
}

// DecodeMessage reads a queue message text the way the ProvisionToken handler does.
func DecodeMessage(t testing.TB, text string) pipeline.ProvisionMessage {
	t.Helper()
	var m pipeline.ProvisionMessage
	if err := json.Unmarshal([]byte(text), &m); err != nil {
		t.Fatalf("queue message is not a ProvisionMessage: %v: %q", err, text)
	}
	return m
}

// Drain plays the host for the in-memory queue: every message is handled twice (at-least-once
// delivery), and a message whose Provision fails is put back, like the host's retry.
func Drain(t testing.TB, ctx context.Context, p *pipeline.Pipeline, q *MemQueue) {
	t.Helper()
	tries := map[string]int{}
	for {
		text, ok := q.Take()
		if !ok {
			return
		}
		m := DecodeMessage(t, text)
		tries[text]++
		if tries[text] > 5 {
			if err := p.RecordPoisoned(ctx, m, "test: retries exhausted"); err != nil {
				t.Fatalf("RecordPoisoned: %v", err)
			}
			continue
		}
		_, err := p.Provision(ctx, m, tries[text])
		if err != nil {
			q.mu.Lock()
			q.Msgs = append(q.Msgs, text)
			q.mu.Unlock()
			continue
		}
		if _, err := p.Provision(ctx, m, tries[text]+1); err != nil {
			t.Fatalf("repeated Provision of %s: %v", m.SerialNumber, err)
		}
	}
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
