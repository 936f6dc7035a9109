package pipeline

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/token"
)

// SeedEntry is one stored seed's metadata (never the seed).
type SeedEntry struct {
	Serial       string
	Manufacturer string
	ImportID     string
}

// SeedCatalog lists the seeds the vault holds (active secrets oathpipe owns; package vault).
type SeedCatalog interface {
	SeedEntries(ctx context.Context) ([]SeedEntry, error)
}

// Reconciliation findings, one kind per disagreement.
const (
	FindingHeldByDisabled    = "held-by-disabled"    // an offboarding leak: the holder's account is disabled
	FindingHeldByDeleted     = "held-by-deleted"     // the holder's account is gone from Entra
	FindingDeviceWithoutSeed = "device-without-seed" // in Entra, no seed in the vault
	FindingSeedWithoutDevice = "seed-without-device" // a seed in the vault, no device in Entra
	FindingSeveralTokens     = "several-tokens"      // a user holds more than one hardware token
	FindingStuck             = "stuck"               // assigned or failedActivation for longer than StuckAfter
	FindingLedgerDisagrees   = "ledger-disagrees"    // the ledger row says otherwise than Entra
)

// LatestReconcileReport is the report name (under seed-reports, without .json) that each
// reconciliation overwrites with its report, beside its dated one: GET /api/reconcile/latest.
const LatestReconcileReport = "reconcile/latest"

// Reconciliation is one configured reconciliation: what the Reconcile function and
// `oathpipe reconcile` run.
type Reconciliation struct {
	Lifecycle *Lifecycle
	Seeds     SeedCatalog
	Options   ReconcileOptions
	Reports   ReportReader // the previous report (for Untracked sightings); nil: none read
}

// Run reconciles once with the configured options, the previous report (LatestReconcileReport,
// read from Reports when set) telling it since when untracked devices have been stuck.
func (r Reconciliation) Run(ctx context.Context) (*ReconcileReport, error) {
	o := r.Options
	if r.Reports != nil && o.Previous == nil {
		prev, err := PreviousReconcileReport(ctx, r.Reports)
		if err != nil {
			return nil, err
		}
		o.Previous = prev
	}
	return r.Lifecycle.Reconcile(ctx, r.Seeds, o)
}

// ReportReader reads a blob written before, such as a report in seed-reports (KindNotFound when
// there is none; storage.Blobs.Read).
type ReportReader interface {
	Read(ctx context.Context, container, name string) ([]byte, error)
}

// PreviousReconcileReport reads the last reconciliation's report (nil when there is none yet,
// or when it cannot be decoded: the sightings then start again, which errs towards reporting a
// stuck device later, never sooner).
func PreviousReconcileReport(ctx context.Context, r ReportReader) (*ReconcileReport, error) {
	b, err := r.Read(ctx, ReportsContainer, LatestReconcileReport+".json")
	if token.KindOf(err) == token.KindNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reconcile: read the previous report: %w", err)
	}
	var prev ReconcileReport
	if json.Unmarshal(b, &prev) != nil {
		return nil, nil
	}
	return &prev, nil
}

// ReconcileCaller names the reconciliation as the caller in audit records.
const ReconcileCaller = "reconciliation"

// ReconcileOptions configures one reconciliation.
type ReconcileOptions struct {
	// TakeBackDisabled takes tokens back from disabled accounts (OATHPIPE_RECONCILE_TAKE_BACK=disabled).
	// Without it the reconciliation only reads.
	TakeBackDisabled bool
	StuckAfter       time.Duration // default 7 days
	Concurrency      int           // user and ledger reads at once (default 16)
	// Previous is the last reconciliation's report: a device with no ledger row has no record
	// of when it was assigned, so its Untracked sighting carries the first time a
	// reconciliation saw it in that status. nil: every sighting starts now.
	Previous *ReconcileReport
}

// Finding is one disagreement between Entra, Key Vault and the ledger. It never holds a seed.
type Finding struct {
	Kind              string    `json:"kind"`
	SerialNumber      string    `json:"serialNumber"`
	Manufacturer      string    `json:"manufacturer,omitempty"`
	Status            string    `json:"status,omitempty"` // Entra's status; "" when Entra has no device
	UserPrincipalName string    `json:"userPrincipalName,omitempty"`
	UserID            string    `json:"userId,omitempty"`
	LedgerStatus      RowStatus `json:"ledgerStatus,omitempty"`
	ImportID          string    `json:"importId,omitempty"`
	Detail            string    `json:"detail"`
	Action            string    `json:"action,omitempty"` // "taken-back", or "take-back-failed: ..." with TakeBackDisabled
}

// ReconcileReport is seed-reports/reconcile/{date}.json.
type ReconcileReport struct {
	Date      string         `json:"date"`
	Started   time.Time      `json:"started"`
	Finished  time.Time      `json:"finished"`
	Devices   int            `json:"devices"` // hardware tokens in Entra
	Seeds     int            `json:"seeds"`   // seeds in the vault
	TakeBack  string         `json:"takeBack"`
	StuckDays int            `json:"stuckDays"`
	Counts    map[string]int `json:"counts"` // findings per kind
	Findings  []Finding      `json:"findings"`
	// Untracked are the devices in assigned or failedActivation that the ledger has no row for
	// (uploaded by hand, or a lost row), with the first reconciliation that saw each so: the
	// next reconciliations find them stuck from that time.
	Untracked  []Sighting `json:"untracked,omitempty"`
	ReportName string     `json:"reportName"` // the blob name under seed-reports, without .json
}

// Sighting is a device the ledger does not know, seen in Status since Since (at least).
type Sighting struct {
	SerialNumber string    `json:"serialNumber"`
	Status       string    `json:"status"`
	Since        time.Time `json:"since"`
}

// sightings carries the previous report's Untracked over to this one's.
type sightings struct {
	mu   sync.Mutex
	prev map[string]Sighting // by upper-cased serial
	now  time.Time
	seen []Sighting
}

func newSightings(prev *ReconcileReport, now time.Time) *sightings {
	s := &sightings{prev: map[string]Sighting{}, now: now.UTC()}
	if prev != nil {
		for _, u := range prev.Untracked {
			s.prev[seedKey(u.SerialNumber)] = u
		}
	}
	return s
}

// see records d (no ledger row, in a stuck-able status) and returns since when it has been so:
// the previous sighting's time when it was in the same status then, else now.
func (s *sightings) see(d token.Device) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := Sighting{SerialNumber: d.Serial, Status: string(d.Status), Since: s.now}
	if p, ok := s.prev[seedKey(d.Serial)]; ok && p.Status == u.Status && p.Since.Before(u.Since) {
		u.Since = p.Since
	}
	s.seen = append(s.seen, u)
	return u.Since
}

func (s *sightings) list() []Sighting {
	s.mu.Lock()
	defer s.mu.Unlock()
	sort.Slice(s.seen, func(i, j int) bool { return s.seen[i].SerialNumber < s.seen[j].SerialNumber })
	return s.seen
}

// Reconcile compares Entra (the inventory, read page by page), the vault's seeds and the
// ledger, writes seed-reports/reconcile/{date}.json and its findings as
// reconcile/{date}.failures.csv, and returns the report. It writes to Entra only with
// TakeBackDisabled, and then only to take tokens from disabled accounts.
func (l *Lifecycle) Reconcile(ctx context.Context, seeds SeedCatalog, o ReconcileOptions) (*ReconcileReport, error) {
	if o.StuckAfter <= 0 {
		o.StuckAfter = 7 * 24 * time.Hour
	}
	if o.Concurrency < 1 {
		o.Concurrency = 16
	}
	p := l.p
	now := p.now()
	rep := &ReconcileReport{Date: now.UTC().Format("2006-01-02"), Started: now.UTC(), StuckDays: int(o.StuckAfter / (24 * time.Hour)), Counts: map[string]int{}, Findings: []Finding{}}
	if o.TakeBackDisabled {
		rep.TakeBack = "disabled"
	}
	log := l.logger(slog.String(logctx.Caller, ReconcileCaller))

	devs, err := l.inventory(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	entries, err := seeds.SeedEntries(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile: list the vault's seeds: %w", err)
	}
	rep.Devices, rep.Seeds = len(devs), len(entries)
	inVault := map[string]bool{}
	for _, e := range entries {
		inVault[seedKey(e.Serial)] = true
	}

	found := &findings{seen: newSightings(o.Previous, now)}
	users := &holders{resolve: p.d.Directory.ResolveUser}
	if err := l.reconcileDevices(ctx, log, devs, o, now, inVault, users, found); err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	severalTokens(ctx, devs, users, found)
	if err := l.seedsWithoutDevice(ctx, entries, devs, found); err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	rep.Findings = append(rep.Findings, found.list...)
	rep.Untracked = found.seen.list()
	if err := l.writeReconcileReport(ctx, rep); err != nil {
		return nil, err
	}
	log.InfoContext(ctx, "reconciliation done", slog.Int("devices", rep.Devices), slog.Int("seeds", rep.Seeds), slog.Int("findings", len(rep.Findings)))
	return rep, nil
}

// seedKey is how a serial is matched between Entra and the vault.
func seedKey(s string) string { return strings.ToUpper(strings.TrimSpace(s)) }

// inventory reads every hardware token in Entra, page by page.
func (l *Lifecycle) inventory(ctx context.Context) ([]token.Device, error) {
	var devs []token.Device
	link := ""
	for {
		page, next, err := l.inv.ListDevices(ctx, link, 999)
		if err != nil {
			return nil, err
		}
		devs = append(devs, page...)
		if next == "" {
			return devs, nil
		}
		link = next
	}
}

// findings collects a reconciliation's findings, and its sightings of untracked devices, from
// its workers.
type findings struct {
	mu   sync.Mutex
	list []Finding
	seen *sightings
}

func (f *findings) add(x Finding) {
	f.mu.Lock()
	f.list = append(f.list, x)
	f.mu.Unlock()
}

// holders resolves each token holder once, however many workers ask for the same user at once:
// the first asker looks the user up, the others wait for its answer.
type holders struct {
	resolve func(ctx context.Context, id string) (token.User, error)
	mu      sync.Mutex
	users   map[string]*pendingHolder
}

// pendingHolder is one user's lookup: h is set before done is closed.
type pendingHolder struct {
	done chan struct{}
	h    holder
}

func (hs *holders) get(ctx context.Context, id string) holder {
	hs.mu.Lock()
	e, ok := hs.users[id]
	if !ok {
		if hs.users == nil {
			hs.users = map[string]*pendingHolder{}
		}
		e = &pendingHolder{done: make(chan struct{})}
		hs.users[id] = e
	}
	hs.mu.Unlock()
	if ok {
		<-e.done
		return e.h
	}
	u, err := hs.resolve(ctx, id)
	e.h = holder{u, err}
	close(e.done)
	return e.h
}

// reconcileDevices checks every device (reconcileDevice), o.Concurrency at once, and returns
// the first failure.
func (l *Lifecycle) reconcileDevices(ctx context.Context, log *slog.Logger, devs []token.Device, o ReconcileOptions, now time.Time,
	inVault map[string]bool, users *holders, found *findings) error {
	sem := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	var firstErr error
	var emu sync.Mutex
	resolve := func(id string) holder { return users.get(ctx, id) }
	for _, d := range devs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := l.reconcileDevice(ctx, log, d, o, now, inVault[seedKey(d.Serial)], resolve, found); err != nil {
				emu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// severalTokens finds the users who hold more than one hardware token.
func severalTokens(ctx context.Context, devs []token.Device, users *holders, found *findings) {
	held := map[string][]token.Device{}
	for _, d := range devs {
		if d.AssignedToID != "" {
			held[d.AssignedToID] = append(held[d.AssignedToID], d)
		}
	}
	for id, ds := range held {
		if len(ds) < 2 {
			continue
		}
		h := users.get(ctx, id)
		var serials []string
		for _, d := range ds {
			serials = append(serials, d.Serial)
		}
		sort.Strings(serials)
		for _, d := range ds {
			found.add(Finding{Kind: FindingSeveralTokens, SerialNumber: d.Serial, Manufacturer: d.Manufacturer, Status: string(d.Status),
				UserPrincipalName: h.u.UserPrincipalName, UserID: id,
				Detail: fmt.Sprintf("the user holds %d hardware tokens (%s); RFC 4226 expects one per person", len(ds), strings.Join(serials, ", "))})
		}
	}
}

// seedsWithoutDevice finds the vault's seeds that Entra has no device for, and the ledger rows
// that say such a token is in Entra.
func (l *Lifecycle) seedsWithoutDevice(ctx context.Context, entries []SeedEntry, devs []token.Device, found *findings) error {
	inEntra := map[string]bool{}
	for _, d := range devs {
		inEntra[seedKey(d.Serial)] = true
	}
	for _, e := range entries {
		if inEntra[seedKey(e.Serial)] {
			continue
		}
		f := Finding{Kind: FindingSeedWithoutDevice, SerialNumber: e.Serial, Manufacturer: e.Manufacturer, ImportID: e.ImportID,
			Detail: "the vault holds a seed for this serial and Entra ID has no such device: retire it or provision it again"}
		row, err := l.p.d.Ledger.TokenBySerial(ctx, e.Serial)
		switch {
		case err == nil:
			f.LedgerStatus, f.ImportID = row.Status, row.ImportID
			if row.Status == StatusAvailable || row.Status == StatusAssigned || row.Status == StatusActivated {
				found.add(Finding{Kind: FindingLedgerDisagrees, SerialNumber: e.Serial, Manufacturer: e.Manufacturer, LedgerStatus: row.Status, ImportID: row.ImportID,
					Detail: "the ledger says the token is " + string(row.Status) + "; Entra ID has no such device"})
			}
		case token.KindOf(err) != token.KindNotFound:
			return fmt.Errorf("read the ledger row of %s: %w", e.Serial, err)
		}
		found.add(f)
	}
	return nil
}

// writeReconcileReport sorts and counts rep's findings and writes the report under its date
// and as the latest, then notifies when anything was found.
func (l *Lifecycle) writeReconcileReport(ctx context.Context, rep *ReconcileReport) error {
	p := l.p
	sort.SliceStable(rep.Findings, func(i, j int) bool {
		a, b := rep.Findings[i], rep.Findings[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.SerialNumber < b.SerialNumber
	})
	for _, f := range rep.Findings {
		rep.Counts[f.Kind]++
	}
	rep.Finished = p.now().UTC()
	rep.ReportName = "reconcile/" + rep.Date
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("reconcile: encode the report: %w", err)
	}
	js, fails := append(js, '\n'), findingsCSV(rep.Findings)
	for _, name := range []string{rep.ReportName, LatestReconcileReport} {
		if err := p.d.Blobs.PutReport(ctx, name, js, bytes.NewReader(fails)); err != nil {
			return fmt.Errorf("reconcile: write seed-reports/%s.json: %w", name, err)
		}
	}
	if len(rep.Findings) > 0 {
		p.notify(ctx, p.reconcileSummary(rep))
	}
	return nil
}

// holder is a token holder as Entra answered (err: KindDisabled, KindNotFound, ...).
type holder struct {
	u   token.User
	err error
}

// reconcileDevice checks one device of the inventory: its holder's account, its seed, how long
// it has been stuck, and its ledger row; with TakeBackDisabled it takes it from a disabled
// account.
func (l *Lifecycle) reconcileDevice(ctx context.Context, log *slog.Logger, d token.Device, o ReconcileOptions, now time.Time, seeded bool,
	resolve func(string) holder, found *findings) error {
	p := l.p
	add := found.add
	base := Finding{SerialNumber: d.Serial, Manufacturer: d.Manufacturer, Status: string(d.Status), UserID: d.AssignedToID}
	var h holder
	if d.AssignedToID != "" {
		h = resolve(d.AssignedToID)
		base.UserPrincipalName = h.u.UserPrincipalName
		switch k := token.KindOf(h.err); {
		case h.err == nil, k == token.KindGuest:
		case k == token.KindDisabled:
			f := base
			f.Kind, f.Detail = FindingHeldByDisabled, "the holder's account is disabled: take the token back (offboarding)"
			if o.TakeBackDisabled {
				f.Action = l.takeBack(ctx, log, d, h.u)
			}
			add(f)
		case k == token.KindNotFound:
			f := base
			f.Kind, f.Detail = FindingHeldByDeleted, "the holder's account no longer exists in Entra ID: retire the token or take it back"
			add(f)
		default:
			return fmt.Errorf("look up the holder of %s: %w", d.Serial, h.err)
		}
	}
	if !seeded {
		f := base
		f.Kind, f.Detail = FindingDeviceWithoutSeed, "Entra ID has this device and the vault has no seed for it: oathpipe cannot activate it again"
		add(f)
	}
	row, err := p.d.Ledger.TokenBySerial(ctx, d.Serial)
	if token.KindOf(err) == token.KindNotFound {
		untracked(base, d, o, now, seeded, found)
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the ledger row of %s: %w", d.Serial, err)
	}
	base.LedgerStatus, base.ImportID = row.Status, row.ImportID
	if (d.Status == token.StatusAssigned || d.Status == token.StatusFailedActivation) && !row.Updated.IsZero() && now.Sub(row.Updated) > o.StuckAfter {
		f := base
		f.Kind = FindingStuck
		f.Detail = fmt.Sprintf("%s since %s (more than %d days): activate it or take it back", d.Status, row.Updated.UTC().Format("2006-01-02"), int(o.StuckAfter/(24*time.Hour)))
		add(f)
	}
	if why := disagreement(row, d, h.u); why != "" {
		f := base
		f.Kind, f.Detail = FindingLedgerDisagrees, why
		add(f)
	}
	return nil
}

// untracked checks a device the ledger has no row for: with its seed in the vault the ledger
// lost it (a disagreement); in assigned or failedActivation it is stuck once the first
// reconciliation that saw it so is longer ago than StuckAfter (its Sighting in the report).
func untracked(base Finding, d token.Device, o ReconcileOptions, now time.Time, seeded bool, found *findings) {
	if seeded {
		f := base
		f.Kind, f.Detail = FindingLedgerDisagrees, "the ledger has no row for this token; Entra ID has the device and the vault its seed"
		found.add(f)
	}
	if d.Status != token.StatusAssigned && d.Status != token.StatusFailedActivation {
		return
	}
	since := found.seen.see(d)
	if now.Sub(since) > o.StuckAfter {
		f := base
		f.Kind = FindingStuck
		f.Detail = fmt.Sprintf("%s since at least %s (more than %d days; no ledger row, so seen so by every reconciliation since): activate it or take it back",
			d.Status, since.UTC().Format("2006-01-02"), int(o.StuckAfter/(24*time.Hour)))
		found.add(f)
	}
}

// disagreement says how the ledger row contradicts Entra's device ("" when it does not). Rows
// still in flight and failed rows are not compared: they make no claim about Entra.
func disagreement(row TokenRecord, d token.Device, u token.User) string {
	entra := map[token.Status]RowStatus{token.StatusAvailable: StatusAvailable, token.StatusAssigned: StatusAssigned,
		token.StatusFailedActivation: StatusAssigned, token.StatusActivated: StatusActivated}[d.Status]
	switch row.Status {
	case StatusRetired:
		return "the ledger says the token was retired; Entra ID still has it (" + string(d.Status) + ")"
	case StatusAvailable, StatusAssigned, StatusActivated:
	default:
		return ""
	}
	if row.Status != entra {
		return "the ledger says " + string(row.Status) + "; Entra ID says " + string(d.Status)
	}
	if d.AssignedToID == "" {
		return ""
	}
	sameUser := (row.UserID != "" && row.UserID == d.AssignedToID) ||
		(row.UserID == "" && u.UserPrincipalName != "" && strings.EqualFold(row.UserPrincipalName, u.UserPrincipalName))
	if !sameUser {
		who := row.UserPrincipalName
		if who == "" {
			who = "nobody"
		}
		return "the ledger says the token is held by " + who + "; Entra ID says " + cmpOr(u.UserPrincipalName, d.AssignedToID)
	}
	return ""
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// takeBack takes d from the disabled account u, records it on the ledger row and audits it with
// the reconciliation as the caller. It answers the finding's action.
func (l *Lifecycle) takeBack(ctx context.Context, log *slog.Logger, d token.Device, u token.User) string {
	p := l.p
	ctx = logctx.WithSerial(ctx, d.Serial)
	defer p.locks.lock(d.Serial)()
	audit := AuditRecord{Caller: ReconcileCaller, Action: "take-back", Serial: d.Serial, FromUser: u.UserPrincipalName}
	if err := p.unassign(ctx, d); err != nil {
		p.audit(ctx, log, audit, err)
		return "take-back-failed: " + reasonOf(err)
	}
	if row, err := p.d.Ledger.TokenBySerial(ctx, d.Serial); err == nil {
		p.recordRow(ctx, log, row, Outcome{Status: StatusAvailable, DeviceID: d.ID})
	}
	if err := p.audit(ctx, log, audit, nil, true); err != nil {
		return "taken-back (audit record not written: " + reasonOf(err) + ")"
	}
	log.InfoContext(ctx, "token taken back from a disabled account", slog.String("from", u.UserPrincipalName))
	return "taken-back"
}

// findingsCSV renders findings as CSV (a header, one row per finding), cells made safe for
// spreadsheets.
func findingsCSV(fs []Finding) []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write([]string{"kind", "serialNumber", "manufacturer", "status", "userPrincipalName", "ledgerStatus", "importId", "detail", "action"})
	for _, f := range fs {
		_ = w.Write([]string{f.Kind, neutralise(f.SerialNumber), neutralise(f.Manufacturer), f.Status, neutralise(f.UserPrincipalName),
			string(f.LedgerStatus), f.ImportID, neutralise(f.Detail), neutralise(f.Action)})
	}
	w.Flush()
	return b.Bytes()
}
