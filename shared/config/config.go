// Package config reads oathpipe's settings from the environment once, at start, and fails fast
// with the name of any setting that is missing or malformed. Only main and cmd/ (and the local
// stack and test kits under internal/) read it: they hand plain values to the pipeline, the
// handlers and the adapters.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/oathpipe/oathpipe/shared/loopback"
	"github.com/oathpipe/oathpipe/shared/seedfile"
)

// StorageConnection is the connection (setting prefix) of the seed storage account in
// function.json: SeedStorage, SeedStorage__blobServiceUri, ... The resource names in that
// account are in package pipeline (names.go).
const StorageConnection = "SeedStorage"

// Activation modes (OATHPIPE_ACTIVATION).
const (
	ActivationAuto = "auto" // compute the activation code from the seed in Key Vault
	ActivationNone = "none" // assign only; the user activates in My Sign-ins
)

// Setting describes one environment setting the app reads.
type Setting struct {
	Name     string
	Default  string
	Required bool   // required by `oathpipe serve` (the deployed app)
	DevOnly  bool   // only for the local stand-ins; never set in Azure
	Meaning  string // one line for README's configuration table
}

// Settings lists every setting the app reads. README's configuration table, local.settings.sample.json
// and infra/main.bicep are checked against it by tests.
var Settings = []Setting{
	{Name: "FUNCTIONS_CUSTOMHANDLER_PORT", Required: true, Meaning: "Port `oathpipe serve` listens on; set by the Functions host."},
	{Name: "SeedStorage", Meaning: "Storage connection string (local development and Azurite). In Azure use the identity-based `SeedStorage__*` settings instead."},
	{Name: "SeedStorage__blobServiceUri", Meaning: "Blob endpoint of the seed storage account (identity-based connection)."},
	{Name: "SeedStorage__queueServiceUri", Meaning: "Queue endpoint of the seed storage account (identity-based connection)."},
	{Name: "SeedStorage__tableServiceUri", Meaning: "Table endpoint of the seed storage account, for the ledger (identity-based connection)."},
	{Name: "SeedStorage__credential", Meaning: "`managedidentity` in Azure (read by the Functions host)."},
	{Name: "SeedStorage__clientId", Meaning: "Client id of the user-assigned identity for storage (read by the Functions host and the app)."},
	{Name: "OATHPIPE_KEYVAULT_URL", Required: true, Meaning: "Key Vault URL where seeds are stored, e.g. `https://kv-oathpipe.vault.azure.net/`."},
	{Name: "OATHPIPE_GRAPH_URL", Default: "https://graph.microsoft.com", Meaning: "Microsoft Graph root (national clouds use other roots); v1.0 and beta paths are built from it."},
	{Name: "OATHPIPE_MANAGED_IDENTITY_CLIENT_ID", Meaning: "Client id of the user-assigned managed identity for Key Vault and Graph; empty uses DefaultAzureCredential."},
	{Name: "OATHPIPE_ACTIVATION", Default: ActivationAuto, Meaning: "`auto`: activate with a code computed from the seed; `none`: assign only, the user activates in My Sign-ins."},
	{Name: "OATHPIPE_REQUIRED_ROLE", Meaning: "When set, HTTP callers must also carry this app role in `X-MS-CLIENT-PRINCIPAL` (App Service authentication)."},
	{Name: "OATHPIPE_VAULT_CONCURRENCY", Default: "16", Meaning: "How many seeds an import writes to Key Vault at once."},
	{Name: "OATHPIPE_IMPORT_BUDGET", Default: "5m", Meaning: "How long one ImportSeeds invocation works before it records its checkpoint and hands the import on to a continuation message (well inside host.json's `functionTimeout` of 10 minutes)."},
	{Name: "OATHPIPE_THROTTLE_MAX_WAIT", Default: "24h", Meaning: "How long a token may stay throttled (Graph or Key Vault HTTP 429) before it is recorded `failed`; until then each throttled try is re-queued after Retry-After without spending a delivery."},
	{Name: "OATHPIPE_HTTP_BUDGET", Default: "60s", Meaning: "Time budget of one HTTP API request (well inside the host's 230 s limit)."},
	{Name: "OATHPIPE_PSKC_KEY", Meaning: "Hex pre-shared transport key (AES-128/192/256 or TripleDES: 32, 48 or 64 hex digits) for encrypted PSKC files dropped in the inbox (use a Key Vault reference); also read by `oathpipe validate`."},
	{Name: "OATHPIPE_PSKC_PASSWORD", Meaning: "Password for PBKDF2-protected PSKC files (use a Key Vault reference); also read by `oathpipe validate`."},
	{Name: "OATHPIPE_PGP_KEY_SECRET", Default: "oathpipe-pgp-key", Meaning: "Key Vault secret holding the ASCII-armored PGP private key for encrypted seed files; every enabled version is tried (see `oathpipe pgp-keygen`)."},
	{Name: "OATHPIPE_ZIP_PASSWORDS_SECRET", Default: "oathpipe-zip-passwords", Meaning: "Key Vault secret holding the accepted zip passwords as a JSON array of strings."},
	{Name: "OATHPIPE_RECONCILE_SCHEDULE", Default: DefaultReconcileSchedule, Meaning: "When the `Reconcile` function runs: an NCRONTAB expression of six fields (second minute hour day month weekday), UTC; default nightly at 02:00."},
	{Name: "OATHPIPE_RECONCILE_TAKE_BACK", Default: "none", Meaning: "`none`: the reconciliation only reads and reports; `disabled`: it also takes tokens back from disabled accounts (audit records name `reconciliation` as the caller)."},
	{Name: "OATHPIPE_RECONCILE_STUCK_DAYS", Default: "7", Meaning: "Days after which a token still `assigned` or `failedActivation` is reported as stuck by the reconciliation (1 to 365)."},
	{Name: "OATHPIPE_NOTIFY_URL", Meaning: "Incoming webhook (Teams or Slack: a JSON body with `text`) that gets a short summary when an import settles with failures or a reconciliation finds something; retried with backoff; never a seed. Empty: off. It holds the webhook's secret: use a Key Vault reference."},
	{Name: "OATHPIPE_LOG_LEVEL", Default: "info", Meaning: "`debug`, `info`, `warn` or `error`."},
	{Name: "OATHPIPE_CA_FILE", DevOnly: true, Meaning: "Extra PEM CA bundle to trust (the local stand-ins' TLS certificate). Development only."},
	{Name: "OATHPIPE_OFFLINE_TOKEN", DevOnly: true, Meaning: "Static bearer token for the local stand-ins. Refused unless every endpoint is on loopback. Development only."},
}

// DefaultReconcileSchedule runs the reconciliation nightly at 02:00 UTC (NCRONTAB, six fields).
const DefaultReconcileSchedule = "0 0 2 * * *"

// Config is the validated settings.
type Config struct {
	Port int

	StorageConnectionString string // SeedStorage, when set
	BlobServiceURL          string // SeedStorage__blobServiceUri
	QueueServiceURL         string // SeedStorage__queueServiceUri
	TableServiceURL         string // SeedStorage__tableServiceUri
	StorageClientID         string // SeedStorage__clientId

	KeyVaultURL             string
	GraphURL                string // no trailing slash
	ManagedIdentityClientID string
	Activation              string
	RequiredRole            string
	VaultConcurrency        int
	HTTPBudget              time.Duration
	ImportBudget            time.Duration
	ThrottleMaxWait         time.Duration // OATHPIPE_THROTTLE_MAX_WAIT
	PSKCKey                 []byte
	PSKCPassword            string
	PGPKeySecret            string // OATHPIPE_PGP_KEY_SECRET
	ZipPasswordsSecret      string // OATHPIPE_ZIP_PASSWORDS_SECRET
	LogLevel                string
	ReconcileSchedule       string        // OATHPIPE_RECONCILE_SCHEDULE (the host reads it; checked here)
	ReconcileTakeBack       bool          // OATHPIPE_RECONCILE_TAKE_BACK=disabled
	ReconcileStuckAfter     time.Duration // OATHPIPE_RECONCILE_STUCK_DAYS
	NotifyURL               string        // OATHPIPE_NOTIFY_URL; empty: off

	CAFile       string
	OfflineToken string
}

// Error names the setting that is missing or malformed.
type Error struct {
	Setting string
	Problem string
}

func (e *Error) Error() string { return fmt.Sprintf("setting %s: %s", e.Setting, e.Problem) }

// Load reads the settings through getenv (os.Getenv when nil) and validates them all,
// returning every problem joined, each naming its setting.
func Load(getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	l := &loader{getenv: getenv}
	c := &Config{
		StorageConnectionString: l.get("SeedStorage"),
		BlobServiceURL:          l.get("SeedStorage__blobServiceUri"),
		QueueServiceURL:         l.get("SeedStorage__queueServiceUri"),
		TableServiceURL:         l.get("SeedStorage__tableServiceUri"),
		StorageClientID:         l.get("SeedStorage__clientId"),
		KeyVaultURL:             l.get("OATHPIPE_KEYVAULT_URL"),
		GraphURL:                strings.TrimRight(l.get("OATHPIPE_GRAPH_URL"), "/"),
		ManagedIdentityClientID: l.get("OATHPIPE_MANAGED_IDENTITY_CLIENT_ID"),
		Activation:              l.get("OATHPIPE_ACTIVATION"),
		RequiredRole:            l.get("OATHPIPE_REQUIRED_ROLE"),
		PSKCPassword:            getenv("OATHPIPE_PSKC_PASSWORD"),
		PGPKeySecret:            l.get("OATHPIPE_PGP_KEY_SECRET"),
		ZipPasswordsSecret:      l.get("OATHPIPE_ZIP_PASSWORDS_SECRET"),
		LogLevel:                strings.ToLower(l.get("OATHPIPE_LOG_LEVEL")),
		CAFile:                  l.get("OATHPIPE_CA_FILE"),
		OfflineToken:            l.get("OATHPIPE_OFFLINE_TOKEN"),
	}
	l.endpoints(c)
	l.tunables(c)
	l.secrets(c)
	l.reconciliation(c)
	l.development(c)
	if len(l.errs) > 0 {
		return nil, errors.Join(l.errs...)
	}
	return c, nil
}

// loader reads settings with their defaults and collects every problem.
type loader struct {
	getenv func(string) string
	errs   []error
}

// get is the trimmed value of name, or its default (Settings) when it is empty.
func (l *loader) get(name string) string {
	v := strings.TrimSpace(l.getenv(name))
	if v == "" {
		for _, s := range Settings {
			if s.Name == name {
				return s.Default
			}
		}
	}
	return v
}

func (l *loader) bad(name, problem string) {
	l.errs = append(l.errs, &Error{Setting: name, Problem: problem})
}

// number is name as an integer from lo to hi; want describes the range in the problem.
func (l *loader) number(name string, lo, hi int, want string) int {
	n, err := strconv.Atoi(l.get(name))
	if err != nil || n < lo || n > hi {
		l.bad(name, fmt.Sprintf("%q: want %s", l.get(name), want))
		return 0
	}
	return n
}

// duration is name as a duration from lo to hi; want describes the range in the problem.
func (l *loader) duration(name string, lo, hi time.Duration, want string) time.Duration {
	d, err := time.ParseDuration(l.get(name))
	if err != nil || d < lo || d > hi {
		l.bad(name, fmt.Sprintf("%q: want %s", l.get(name), want))
		return 0
	}
	return d
}

// endpoints checks the port, the storage account, Key Vault and Graph.
func (l *loader) endpoints(c *Config) {
	if p := l.get("FUNCTIONS_CUSTOMHANDLER_PORT"); p == "" {
		l.bad("FUNCTIONS_CUSTOMHANDLER_PORT", "missing (the Functions host sets it)")
	} else if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		l.bad("FUNCTIONS_CUSTOMHANDLER_PORT", fmt.Sprintf("%q is not a port number", p))
	} else {
		c.Port = n
	}
	if c.StorageConnectionString == "" {
		for _, s := range []namedURL{
			{"SeedStorage__blobServiceUri", c.BlobServiceURL},
			{"SeedStorage__queueServiceUri", c.QueueServiceURL},
			{"SeedStorage__tableServiceUri", c.TableServiceURL},
		} {
			if s.val == "" {
				l.bad(s.name, "missing (or set SeedStorage to a connection string)")
			} else if err := checkURL(s.val); err != nil {
				l.bad(s.name, err.Error())
			}
		}
	} else if !strings.Contains(c.StorageConnectionString, "=") {
		l.bad("SeedStorage", "not a storage connection string")
	}
	if c.KeyVaultURL == "" {
		l.bad("OATHPIPE_KEYVAULT_URL", "missing")
	} else if err := checkURL(c.KeyVaultURL); err != nil {
		l.bad("OATHPIPE_KEYVAULT_URL", err.Error())
	}
	if err := checkURL(c.GraphURL); err != nil {
		l.bad("OATHPIPE_GRAPH_URL", err.Error())
	}
}

// tunables checks the activation mode, concurrency, budgets and the log level.
func (l *loader) tunables(c *Config) {
	if c.Activation != ActivationAuto && c.Activation != ActivationNone {
		l.bad("OATHPIPE_ACTIVATION", fmt.Sprintf("%q: want auto or none", c.Activation))
	}
	c.VaultConcurrency = l.number("OATHPIPE_VAULT_CONCURRENCY", 1, 256, "a number from 1 to 256")
	c.HTTPBudget = l.duration("OATHPIPE_HTTP_BUDGET", time.Second, 200*time.Second, "a duration from 1s to 200s")
	c.ImportBudget = l.duration("OATHPIPE_IMPORT_BUDGET", time.Second, 8*time.Minute, "a duration from 1s to 8m (functionTimeout is 10 minutes)")
	c.ThrottleMaxWait = l.duration("OATHPIPE_THROTTLE_MAX_WAIT", time.Minute, 7*24*time.Hour, "a duration from 1m to 168h")
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		l.bad("OATHPIPE_LOG_LEVEL", fmt.Sprintf("%q: want debug, info, warn or error", c.LogLevel))
	}
}

// secrets checks the PSKC key, the Key Vault secret names and the webhook.
func (l *loader) secrets(c *Config) {
	if k := l.get("OATHPIPE_PSKC_KEY"); k != "" {
		key, err := seedfile.ParsePSKCKey(k)
		if err != nil {
			l.bad("OATHPIPE_PSKC_KEY", err.Error())
		}
		c.PSKCKey = key
	}
	for _, sec := range []struct{ name, v string }{{"OATHPIPE_PGP_KEY_SECRET", c.PGPKeySecret}, {"OATHPIPE_ZIP_PASSWORDS_SECRET", c.ZipPasswordsSecret}} {
		if !validSecretName(sec.v) {
			l.bad(sec.name, fmt.Sprintf("%q: a Key Vault secret name is 1 to 127 letters, digits and dashes", sec.v))
		}
	}
	if c.NotifyURL = strings.TrimSpace(l.getenv("OATHPIPE_NOTIFY_URL")); c.NotifyURL != "" {
		if u, err := url.Parse(c.NotifyURL); err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && loopback.URL(c.NotifyURL))) {
			l.bad("OATHPIPE_NOTIFY_URL", "not an https URL (http only on loopback); the value is not shown: it holds the webhook's secret")
		}
	}
}

// reconciliation checks the Reconcile function's schedule, take-back mode and stuck days.
func (l *loader) reconciliation(c *Config) {
	c.ReconcileSchedule = l.get("OATHPIPE_RECONCILE_SCHEDULE")
	if f := strings.Fields(c.ReconcileSchedule); len(f) != 6 {
		l.bad("OATHPIPE_RECONCILE_SCHEDULE", fmt.Sprintf("%q: want an NCRONTAB expression of six fields, such as %q", c.ReconcileSchedule, DefaultReconcileSchedule))
	}
	switch v := strings.ToLower(l.get("OATHPIPE_RECONCILE_TAKE_BACK")); v {
	case "none":
	case "disabled":
		c.ReconcileTakeBack = true
	default:
		l.bad("OATHPIPE_RECONCILE_TAKE_BACK", fmt.Sprintf("%q: want none or disabled", v))
	}
	if n := l.number("OATHPIPE_RECONCILE_STUCK_DAYS", 1, 365, "a number of days from 1 to 365"); n > 0 {
		c.ReconcileStuckAfter = time.Duration(n) * 24 * time.Hour
	}
}

// development checks the settings for the local stand-ins: the CA bundle, and the offline
// token, refused unless every endpoint it could go to is on loopback.
func (l *loader) development(c *Config) {
	if c.CAFile != "" {
		if _, err := os.Stat(c.CAFile); err != nil {
			l.bad("OATHPIPE_CA_FILE", err.Error())
		}
	}
	if c.OfflineToken != "" {
		for _, s := range c.offlineEndpoints() {
			if !loopback.URL(s.val) {
				l.bad("OATHPIPE_OFFLINE_TOKEN", fmt.Sprintf("refused: %s (%s) is not on loopback; the offline credential is for the local stand-ins only", s.name, s.val))
			}
		}
	}
}

type namedURL struct{ name, val string }

// offlineEndpoints lists every endpoint the offline credential could be sent to.
func (c *Config) offlineEndpoints() []namedURL {
	eps := []namedURL{{"OATHPIPE_KEYVAULT_URL", c.KeyVaultURL}, {"OATHPIPE_GRAPH_URL", c.GraphURL}}
	for _, s := range []namedURL{
		{"SeedStorage__blobServiceUri", c.BlobServiceURL},
		{"SeedStorage__queueServiceUri", c.QueueServiceURL},
		{"SeedStorage__tableServiceUri", c.TableServiceURL},
	} {
		if s.val != "" {
			eps = append(eps, s)
		}
	}
	return eps
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}

// validSecretName reports whether s is a Key Vault secret name (^[0-9a-zA-Z-]{1,127}$).
func validSecretName(s string) bool {
	if len(s) == 0 || len(s) > 127 {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
