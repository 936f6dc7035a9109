package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/vault"
)

// vaultCatalog lists the vault's active seed secrets for the reconciliation.
type vaultCatalog struct{ v *vault.Vault }

func (c vaultCatalog) SeedEntries(ctx context.Context) ([]pipeline.SeedEntry, error) {
	var out []pipeline.SeedEntry
	for e, err := range c.v.Entries(ctx) {
		if err != nil {
			return nil, err
		}
		if e.Enabled {
			out = append(out, pipeline.SeedEntry{Serial: e.Serial, Manufacturer: e.Manufacturer, ImportID: e.ImportID})
		}
	}
	return out, nil
}

// runReconcile is `oathpipe reconcile`: the Reconcile function's code, run once against the
// configured endpoints (the app's settings; FUNCTIONS_CUSTOMHANDLER_PORT is not needed). It
// prints a summary, or the whole report with --json.
func runReconcile(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the whole report as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: oathpipe reconcile [--json]\n\nCompares Entra ID, Key Vault and the ledger with the app's settings (OATHPIPE_*, SeedStorage),\n"+
			"writes seed-reports/reconcile/{date}.json and .failures.csv, and prints what it found.\n"+
			"It writes to Entra ID only with OATHPIPE_RECONCILE_TAKE_BACK=disabled.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	getenv := func(k string) string {
		if v := os.Getenv(k); v != "" || k != "FUNCTIONS_CUSTOMHANDLER_PORT" {
			return v
		}
		return "1" // not served: any valid port
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe reconcile: settings:\n%v\n", err)
		return exitUsage
	}
	log := newLogger(stderr, stderr, cfg.LogLevel)
	a, err := newApp(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe reconcile: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := a.reconciliation.Run(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe reconcile: %v\n", err)
		return exitProblem
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		return exitOK
	}
	fmt.Fprint(stdout, ReconcileSummary(rep))
	return exitOK
}

// ReconcileSummary is a reconciliation's few lines for people: counts per finding and where the
// report is.
func ReconcileSummary(rep *pipeline.ReconcileReport) string {
	s := fmt.Sprintf("reconciled %d devices in Entra ID and %d seeds in Key Vault: %d findings\n", rep.Devices, rep.Seeds, len(rep.Findings))
	kinds := make([]string, 0, len(rep.Counts))
	for k := range rep.Counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		s += fmt.Sprintf("  %-20s %d\n", k, rep.Counts[k])
	}
	for _, f := range rep.Findings {
		if f.Action != "" {
			s += fmt.Sprintf("  %s %s: %s\n", f.SerialNumber, f.UserPrincipalName, f.Action)
		}
	}
	s += fmt.Sprintf("report: %s/%s.json (+ .failures.csv)\n", pipeline.ReportsContainer, rep.ReportName)
	return s
}
