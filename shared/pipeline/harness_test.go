package pipeline

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
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
	"github.com/oathpipe/oathpipe/shared/vault"
)

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// stack is the pipeline wired to the real vault and entra clients against the Key Vault and
// Graph stand-ins, with a Ledger, Queue and Blobs that each test chooses.
type stack struct {
	t      testing.TB
	kv     *kvstandin.Running
	graph  *graphstandin.Running
	vault  *vault.Vault
	dir    *entra.Client
	logs   *syncBuffer
	logger *slog.Logger
}

type stackOptions struct {
	latency    time.Duration
	graphRate  int           // writes per graphPer; 0 = unthrottled
	graphPer   time.Duration // default 1 s
	graphBurst int
	users      []graphstandin.User // default testdata/users.json
}

func newStack(t testing.TB, o stackOptions) *stack {
	t.Helper()
	s := &stack{t: t, logs: &syncBuffer{}}
	s.logger = slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	s.kv, err = kvstandin.StartTLS(kvstandin.Options{Latency: o.latency})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.kv.Close)
	users := o.users
	if users == nil {
		if users, err = graphstandin.LoadUsers(filepath.Join("..", "..", "testdata", "users.json")); err != nil {
			t.Fatal(err)
		}
	}
	rate := o.graphRate
	if rate == 0 {
		rate = -1
	}
	per := o.graphPer
	if per == 0 {
		per = time.Second
	}
	s.graph, err = graphstandin.StartTLS(graphstandin.Options{Users: users, Latency: o.latency, WriteRate: rate, WritePer: per, WriteBurst: o.graphBurst})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.graph.Close)

	// Trust both stand-ins the way the app does: one CA bundle file (OATHPIPE_CA_FILE).
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, append(append([]byte{}, s.kv.CAPEM...), s.graph.CAPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	hc, err := azauth.HTTPClient(ca)
	if err != nil {
		t.Fatal(err)
	}
	s.vault, err = vault.New(vault.Options{VaultURL: s.kv.URL, Credential: azauth.StaticToken(kvstandin.DefaultToken), HTTPClient: hc, Logger: s.logger})
	if err != nil {
		t.Fatal(err)
	}
	s.dir, err = entra.New(entra.Options{GraphURL: s.graph.URL, Credential: azauth.StaticToken(graphstandin.DefaultToken), HTTPClient: hc, Logger: s.logger})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pipeline returns a Pipeline over the stack's vault and directory and the given storage ports.
func (s *stack) pipeline(l Ledger, q Queue, b Blobs, mod func(*Deps)) *Pipeline {
	d := Deps{
		Vault: s.vault, Directory: s.dir, Ledger: l, Queue: q, Blobs: b,
		Activation: config.ActivationAuto, VaultConcurrency: 8, Logger: s.logger,
	}
	if mod != nil {
		mod(&d)
	}
	return New(d)
}

// row is one line of a generated Entra CSV.
type row struct {
	upn, serial, secret, interval, manufacturer, model string
}

// seedSet generates rows with fresh random secrets and remembers every secret for the leak scan.
type seedSet struct {
	secrets [][]byte
}

func (ss *seedSet) fresh() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	ss.secrets = append(ss.secrets, b)
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)
}

func (ss *seedSet) row(serial, upn string) row {
	return row{upn: upn, serial: serial, secret: ss.fresh(), interval: "30", manufacturer: "Token2", model: "C202"}
}

func entraCSV(rows []row) []byte {
	var b bytes.Buffer
	b.WriteString("upn,serial number,secret key,time interval,manufacturer,model\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "%s,%s,%s,%s,%s,%s\n", csvCell(r.upn), csvCell(r.serial), r.secret, r.interval, csvCell(r.manufacturer), csvCell(r.model))
	}
	return b.Bytes()
}

func csvCell(s string) string {
	if strings.ContainsAny(s, ",\"\n") {
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return s
}

// leaks scans text for any secret of ss in raw, Base32 (any case, padded or not), hex and
// Base64 form, and returns a description of each find.
func (ss *seedSet) leaks(where, text string) []string {
	var found []string
	low := strings.ToLower(text)
	for i, sec := range ss.secrets {
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

// decodeMessage reads a queue message text the way the ProvisionToken handler does.
func decodeMessage(t testing.TB, text string) ProvisionMessage {
	t.Helper()
	var m ProvisionMessage
	if err := json.Unmarshal([]byte(text), &m); err != nil {
		t.Fatalf("queue message is not a ProvisionMessage: %v: %q", err, text)
	}
	return m
}

// drainMem plays the host for the in-memory queue: every message is handled twice (at-least-once
// delivery), and a message whose Provision fails is put back, like the host's retry.
func drainMem(t testing.TB, ctx context.Context, p *Pipeline, q *memQueue) {
	t.Helper()
	tries := map[string]int{}
	for {
		text, ok := q.take()
		if !ok {
			return
		}
		m := decodeMessage(t, text)
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
			q.msgs = append(q.msgs, text)
			q.mu.Unlock()
			continue
		}
		if _, err := p.Provision(ctx, m, tries[text]+1); err != nil {
			t.Fatalf("repeated Provision of %s: %v", m.SerialNumber, err)
		}
	}
}
