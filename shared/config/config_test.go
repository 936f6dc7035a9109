package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func valid() map[string]string {
	return map[string]string{
		"FUNCTIONS_CUSTOMHANDLER_PORT": "8080",
		"SeedStorage__blobServiceUri":  "https://st.blob.core.windows.net",
		"SeedStorage__queueServiceUri": "https://st.queue.core.windows.net",
		"SeedStorage__tableServiceUri": "https://st.table.core.windows.net",
		"OATHPIPE_KEYVAULT_URL":        "https://kv.vault.azure.net/",
	}
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(env(valid()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 8080 || c.GraphURL != "https://graph.microsoft.com" || c.Activation != ActivationAuto ||
		c.VaultConcurrency != 16 || c.HTTPBudget != 60*time.Second || c.LogLevel != "info" {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestLoadNamesEveryBadSetting(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change map[string]string
		want   []string // settings the error must name; empty: no error
	}{
		{"ok", nil, nil},
		{"missing port", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": ""}, []string{"FUNCTIONS_CUSTOMHANDLER_PORT"}},
		{"bad port", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "http"}, []string{"FUNCTIONS_CUSTOMHANDLER_PORT"}},
		{"no storage", map[string]string{"SeedStorage__blobServiceUri": "", "SeedStorage__queueServiceUri": "", "SeedStorage__tableServiceUri": ""},
			[]string{"SeedStorage__blobServiceUri", "SeedStorage__queueServiceUri", "SeedStorage__tableServiceUri"}},
		{"connection string instead", map[string]string{"SeedStorage": "DefaultEndpointsProtocol=http;AccountName=a", "SeedStorage__blobServiceUri": "", "SeedStorage__queueServiceUri": "", "SeedStorage__tableServiceUri": ""}, nil},
		{"bad vault", map[string]string{"OATHPIPE_KEYVAULT_URL": "kv"}, []string{"OATHPIPE_KEYVAULT_URL"}},
		{"bad activation", map[string]string{"OATHPIPE_ACTIVATION": "sometimes"}, []string{"OATHPIPE_ACTIVATION"}},
		{"bad concurrency", map[string]string{"OATHPIPE_VAULT_CONCURRENCY": "0"}, []string{"OATHPIPE_VAULT_CONCURRENCY"}},
		{"budget over host limit", map[string]string{"OATHPIPE_HTTP_BUDGET": "240s"}, []string{"OATHPIPE_HTTP_BUDGET"}},
		{"bad pskc key", map[string]string{"OATHPIPE_PSKC_KEY": "1234"}, []string{"OATHPIPE_PSKC_KEY"}},
		{"good pskc key", map[string]string{"OATHPIPE_PSKC_KEY": "12345678901234567890123456789012"}, nil},
		{"aes-256 pskc key, as validate takes it", map[string]string{"OATHPIPE_PSKC_KEY": "0x" + strings.Repeat("ab", 32)}, nil},
		{"pskc key of 20 bytes", map[string]string{"OATHPIPE_PSKC_KEY": strings.Repeat("ab", 20)}, []string{"OATHPIPE_PSKC_KEY"}},
		{"bad pgp secret name", map[string]string{"OATHPIPE_PGP_KEY_SECRET": "pgp_key"}, []string{"OATHPIPE_PGP_KEY_SECRET"}},
		{"bad zip secret name", map[string]string{"OATHPIPE_ZIP_PASSWORDS_SECRET": "a.b"}, []string{"OATHPIPE_ZIP_PASSWORDS_SECRET"}},
		{"bad log level", map[string]string{"OATHPIPE_LOG_LEVEL": "loud"}, []string{"OATHPIPE_LOG_LEVEL"}},
		{"missing CA file", map[string]string{"OATHPIPE_CA_FILE": filepath.Join(dir, "nope.pem")}, []string{"OATHPIPE_CA_FILE"}},
		{"offline token against Azure", map[string]string{"OATHPIPE_OFFLINE_TOKEN": "t", "OATHPIPE_CA_FILE": ca}, []string{"OATHPIPE_OFFLINE_TOKEN"}},
		{"offline token on loopback", map[string]string{"OATHPIPE_OFFLINE_TOKEN": "t",
			"OATHPIPE_KEYVAULT_URL": "https://127.0.0.1:8443/", "OATHPIPE_GRAPH_URL": "https://localhost:9443",
			"SeedStorage": "UseDevelopmentStorage=true", "SeedStorage__blobServiceUri": "", "SeedStorage__queueServiceUri": "", "SeedStorage__tableServiceUri": ""}, nil},
		{"offline token with one remote endpoint", map[string]string{"OATHPIPE_OFFLINE_TOKEN": "t",
			"OATHPIPE_KEYVAULT_URL": "https://127.0.0.1:8443/", "OATHPIPE_GRAPH_URL": "https://graph.microsoft.com",
			"SeedStorage": "UseDevelopmentStorage=true", "SeedStorage__blobServiceUri": "", "SeedStorage__queueServiceUri": "", "SeedStorage__tableServiceUri": ""}, []string{"OATHPIPE_GRAPH_URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv := valid()
			for k, v := range tt.change {
				kv[k] = v
			}
			_, err := Load(env(kv))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error naming %v", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
}

func TestSettingsAreUniqueAndDescribed(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Settings {
		if seen[s.Name] {
			t.Errorf("setting %s listed twice", s.Name)
		}
		seen[s.Name] = true
		if s.Meaning == "" {
			t.Errorf("setting %s has no meaning for the README", s.Name)
		}
	}
}
