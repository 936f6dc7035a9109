package pipeline

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/oathpipe/oathpipe/shared/token"
)

// Inventory reads the Entra hardware token inventory page by page and deletes devices from it
// (package entra).
type Inventory interface {
	// ListDevices reads one page: the first (of at most pageSize) when link is empty, else the
	// page an earlier call's next named. next is "" on the last page.
	ListDevices(ctx context.Context, link string, pageSize int) (devices []token.Device, next string, err error)
	// DeleteDevice deletes an unassigned device (KindNotFound when it is already gone).
	DeleteDevice(ctx context.Context, deviceID string) error
}

// SeedShelf answers whether a seed is stored and soft-deletes it (package vault).
type SeedShelf interface {
	// Has reports whether an active seed secret exists for the token, without reading it.
	Has(ctx context.Context, manufacturer, serial string) (bool, error)
	// Retire marks the token's seed retired and soft-deletes it (KindNotFound when none is
	// active), so the serial imported again later is a new token.
	Retire(ctx context.Context, manufacturer, serial string) error
}

// LifecycleDeps is what a Lifecycle works with beyond its Pipeline. Both are required.
type LifecycleDeps struct {
	Inventory Inventory
	Seeds     SeedShelf
	// Concurrency bounds the vault, ledger and user reads one page of the inventory makes at
	// once (default 8).
	Concurrency int
}

// Lifecycle answers the questions of a token's whole life after its import: the inventory, a
// person's tokens, retiring a token. It shares its Pipeline's locks, ledger and directory.
type Lifecycle struct {
	p    *Pipeline
	inv  Inventory
	vs   SeedShelf
	conc int
}

// NewLifecycle returns a Lifecycle over p and d.
func NewLifecycle(p *Pipeline, d LifecycleDeps) *Lifecycle {
	if d.Concurrency < 1 {
		d.Concurrency = 8
	}
	return &Lifecycle{p: p, inv: d.Inventory, vs: d.Seeds, conc: d.Concurrency}
}

// InventoryToken is one hardware token of the inventory: Entra's facts joined with the vault's
// and the ledger's. It never holds a seed.
type InventoryToken struct {
	SerialNumber      string       `json:"serialNumber"`
	Manufacturer      string       `json:"manufacturer"`
	Model             string       `json:"model"`
	Status            string       `json:"status"` // Entra's: available, assigned, activated, failedActivation
	DeviceID          string       `json:"deviceId"`
	UserPrincipalName string       `json:"userPrincipalName,omitempty"`
	UserID            string       `json:"userId,omitempty"`
	LastUsedDateTime  string       `json:"lastUsedDateTime,omitempty"` // Entra's, when it reports one
	SeedInVault       bool         `json:"seedInVault"`
	Import            *TokenImport `json:"import,omitempty"`
	// LastActivation is when oathpipe last recorded the token activated (the ledger row's time).
	LastActivation *time.Time `json:"lastActivation,omitempty"`
}

// TokenImport is the ledger's row for a token: the import that brought it in.
type TokenImport struct {
	ImportID string    `json:"importId"`
	Line     int       `json:"line"`
	Status   RowStatus `json:"status"`
	Updated  time.Time `json:"updated"`
}

// TokenFilter selects inventory tokens; empty fields match everything. Manufacturer and model
// compare case-insensitively, as Entra may.
type TokenFilter struct {
	Status            string
	UserPrincipalName string
	Manufacturer      string
	Model             string
}

// TokenPage is one page of the inventory (GET /api/tokens).
type TokenPage struct {
	Tokens []InventoryToken `json:"tokens"`
	// Continuation, when present, is passed back as ?continuation= for the next page.
	Continuation string `json:"continuation,omitempty"`
}

// UserTokens is the hardware tokens one person holds (GET /api/users/{upn}/tokens).
type UserTokens struct {
	UserPrincipalName string           `json:"userPrincipalName"`
	UserID            string           `json:"userId"`
	AccountEnabled    bool             `json:"accountEnabled"`
	Tokens            []InventoryToken `json:"tokens"`
}

// Page sizes: what a caller may ask for, and what one Graph read asks for.
const (
	DefaultTokenLimit = 100
	MaxTokenLimit     = 500
	graphPageSize     = 200
)

// cursor is the continuation's content: the Graph page to read again and how many of its
// devices the earlier pages already went past.
type cursor struct {
	Link string `json:"l,omitempty"`
	Skip int    `json:"s,omitempty"`
}

func (c cursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (cursor, error) {
	var c cursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil || c.Skip < 0 {
		return cursor{}, token.Errorf(token.KindInvalid, "continuation is not one this API gave out; start again without it")
	}
	return c, nil
}

func (f TokenFilter) match(d token.Device) bool {
	return (f.Status == "" || strings.EqualFold(string(d.Status), f.Status)) &&
		(f.Manufacturer == "" || strings.EqualFold(d.Manufacturer, f.Manufacturer)) &&
		(f.Model == "" || strings.EqualFold(d.Model, f.Model))
}

// ListTokens answers one page of the inventory. It reads Graph pages until limit tokens match
// or the request's time is nearly spent (a quarter of what was left when it began), and then
// answers a continuation where it stopped: a page is never late, even when a filter matches
// few of 50,000 tokens. With UserPrincipalName it reads that user's methods only.
func (l *Lifecycle) ListTokens(ctx context.Context, f TokenFilter, limit int, continuation string) (*TokenPage, error) {
	if limit <= 0 {
		limit = DefaultTokenLimit
	}
	limit = min(limit, MaxTokenLimit)
	if f.UserPrincipalName != "" {
		if continuation != "" {
			return nil, token.Errorf(token.KindInvalid, "continuation is not one this API gave out; start again without it")
		}
		ut, err := l.UserTokens(ctx, f.UserPrincipalName)
		if err != nil {
			return nil, err
		}
		page := &TokenPage{Tokens: []InventoryToken{}}
		for _, t := range ut.Tokens {
			if f.match(token.Device{Status: token.Status(t.Status), Manufacturer: t.Manufacturer, Model: t.Model}) {
				page.Tokens = append(page.Tokens, t)
			}
		}
		return page, nil
	}
	cur := cursor{}
	if continuation != "" {
		var err error
		if cur, err = decodeCursor(continuation); err != nil {
			return nil, err
		}
	}
	stopBy := time.Time{}
	if dl, ok := ctx.Deadline(); ok {
		stopBy = dl.Add(-time.Until(dl) / 4)
	}
	var picked []token.Device
	page := &TokenPage{}
	for {
		devs, next, err := l.inv.ListDevices(ctx, cur.Link, graphPageSize)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		if cur.Skip > len(devs) {
			return nil, token.Errorf(token.KindInvalid, "continuation is not one this API gave out; start again without it")
		}
		i := cur.Skip
		for ; i < len(devs) && len(picked) < limit; i++ {
			if f.match(devs[i]) {
				picked = append(picked, devs[i])
			}
		}
		switch {
		case i < len(devs): // the limit was reached inside this page
			page.Continuation = cursor{Link: cur.Link, Skip: i}.encode()
		case next == "":
		case len(picked) >= limit || (!stopBy.IsZero() && time.Now().After(stopBy)):
			page.Continuation = cursor{Link: next}.encode()
		default:
			cur = cursor{Link: next}
			continue
		}
		break
	}
	toks, err := l.join(ctx, picked)
	if err != nil {
		return nil, err
	}
	page.Tokens = toks
	return page, nil
}

// UserTokens lists the hardware tokens upnOrID holds, with their status (the offboarding
// check). A disabled or guest account is answered too: that is when the question matters.
func (l *Lifecycle) UserTokens(ctx context.Context, upnOrID string) (*UserTokens, error) {
	upnOrID = strings.TrimSpace(upnOrID)
	u, err := l.p.d.Directory.ResolveUser(ctx, upnOrID)
	if k := token.KindOf(err); err != nil && k != token.KindDisabled && k != token.KindGuest {
		return nil, fmt.Errorf("look up %s: %w", upnOrID, err)
	}
	methods, err := l.p.d.Directory.ListUserMethods(ctx, u.ID)
	if err != nil {
		return nil, fmt.Errorf("list the tokens of %s: %w", u.UserPrincipalName, err)
	}
	devs := make([]token.Device, 0, len(methods))
	for _, m := range methods {
		d, err := l.p.d.Directory.FindDevice(ctx, m.Serial)
		if token.KindOf(err) == token.KindNotFound {
			// Deleted from the inventory between the two reads: report the method as Entra lists it.
			d = token.Device{ID: m.DeviceID, Serial: m.Serial, Status: m.Status, AssignedToID: u.ID}
		} else if err != nil {
			return nil, fmt.Errorf("read token %s of %s: %w", m.Serial, u.UserPrincipalName, err)
		}
		devs = append(devs, d)
	}
	toks, err := l.join(ctx, devs)
	if err != nil {
		return nil, err
	}
	return &UserTokens{UserPrincipalName: u.UserPrincipalName, UserID: u.ID, AccountEnabled: u.Enabled, Tokens: toks}, nil
}

// join adds the vault's and the ledger's facts to devices, a few at a time, resolving each
// holder once.
func (l *Lifecycle) join(ctx context.Context, devs []token.Device) ([]InventoryToken, error) {
	out := make([]InventoryToken, len(devs))
	errs := make([]error, len(devs))
	var mu sync.Mutex
	upns := map[string]string{}
	upnOf := func(id, name string) string {
		mu.Lock()
		v, ok := upns[id]
		mu.Unlock()
		if ok {
			return v
		}
		v = l.p.upnOf(ctx, id, name)
		mu.Lock()
		upns[id] = v
		mu.Unlock()
		return v
	}
	sem := make(chan struct{}, l.conc)
	var wg sync.WaitGroup
	for i, d := range devs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i], errs[i] = l.facts(ctx, d, upnOf)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (l *Lifecycle) facts(ctx context.Context, d token.Device, upnOf func(id, name string) string) (InventoryToken, error) {
	t := InventoryToken{SerialNumber: d.Serial, Manufacturer: d.Manufacturer, Model: d.Model, Status: string(d.Status),
		DeviceID: d.ID, UserID: d.AssignedToID, LastUsedDateTime: d.LastUsedDateTime}
	if d.AssignedToID != "" {
		t.UserPrincipalName = upnOf(d.AssignedToID, d.AssignedToName)
	}
	row, err := l.p.d.Ledger.TokenBySerial(ctx, d.Serial)
	switch {
	case err == nil:
		t.Import = &TokenImport{ImportID: row.ImportID, Line: row.Line, Status: row.Status, Updated: row.Updated}
		if row.Status == StatusActivated && !row.Updated.IsZero() {
			at := row.Updated
			t.LastActivation = &at
		}
		if t.Manufacturer == "" {
			t.Manufacturer = row.Manufacturer
		}
	case token.KindOf(err) != token.KindNotFound:
		return t, fmt.Errorf("token %s: read its ledger row: %w", d.Serial, err)
	}
	if t.Manufacturer != "" {
		in, err := l.vs.Has(ctx, t.Manufacturer, d.Serial)
		if err != nil {
			return t, fmt.Errorf("token %s: look for its seed: %w", d.Serial, err)
		}
		t.SeedInVault = in
	}
	return t, nil
}

// logger returns the pipeline's logger with attrs.
func (l *Lifecycle) logger(attrs ...any) *slog.Logger { return l.p.log.With(attrs...) }
