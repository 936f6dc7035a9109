package devstack

import (
	"slices"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/internal/kvstandin"
)

// TestAppGetsEverySettingItReads: the app settings in the environment reach the child
// (issue 18 item 3: encrypted PSKC files could not be imported locally), the stack's own
// endpoints always win, and Options.Settings (the flags) win over the environment.
func TestAppGetsEverySettingItReads(t *testing.T) {
	t.Setenv("OATHPIPE_PSKC_PASSWORD", "correct horse battery staple")
	t.Setenv("OATHPIPE_ACTIVATION", "none")
	t.Setenv("OATHPIPE_HTTP_BUDGET", "30s")
	t.Setenv("OATHPIPE_KEYVAULT_URL", "https://kv-prod.vault.azure.net/") // must never reach the child
	t.Setenv("OATHPIPE_OFFLINE_TOKEN", "other")
	t.Setenv("SeedStorage", "DefaultEndpointsProtocol=https;AccountName=prod")
	s := &Stack{opts: Options{Settings: map[string]string{"OATHPIPE_HTTP_BUDGET": "45s"}}}
	s.Endpoints.VaultURL = "https://127.0.0.1:1/"
	s.Endpoints.StorageConnectionString = "UseDevelopmentStorage=true"
	got := s.Settings(7000)
	for k, want := range map[string]string{
		"OATHPIPE_PSKC_PASSWORD": "correct horse battery staple", "OATHPIPE_ACTIVATION": "none",
		"OATHPIPE_HTTP_BUDGET": "45s", "OATHPIPE_KEYVAULT_URL": "https://127.0.0.1:1/",
		"OATHPIPE_OFFLINE_TOKEN": OfflineToken, "SeedStorage": "UseDevelopmentStorage=true",
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	env := appEnv([]string{"PATH=/bin", "OATHPIPE_KEYVAULT_URL=https://kv-prod.vault.azure.net/", "OATHPIPE_PSKC_PASSWORD=x"}, got)
	if !slices.Contains(env, "PATH=/bin") || slices.Contains(env, "OATHPIPE_KEYVAULT_URL=https://kv-prod.vault.azure.net/") ||
		!slices.Contains(env, "OATHPIPE_PSKC_PASSWORD=correct horse battery staple") || slices.Contains(env, "OATHPIPE_PSKC_PASSWORD=x") {
		t.Errorf("child env %v", env)
	}
}

// TestVaultSecretsReachTheStandIn: the secrets oathpipe-dev puts in the stand-in (the PGP key,
// the zip passwords) are there, under their names, before the app starts.
func TestVaultSecretsReachTheStandIn(t *testing.T) {
	kv := kvstandin.New(kvstandin.Options{Token: OfflineToken})
	if err := putSecret(kv, PGPKeySecret, "-----BEGIN PGP PRIVATE KEY BLOCK-----\n...\n"); err != nil {
		t.Fatal(err)
	}
	if err := putSecret(kv, ZipPasswordsSecret, `["one","two"]`); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range kv.Secrets() {
		names = append(names, strings.ToLower(s.Name))
	}
	if !slices.Contains(names, PGPKeySecret) || !slices.Contains(names, ZipPasswordsSecret) {
		t.Errorf("stand-in holds %v", names)
	}
	if err := putSecret(kv, "bad name!", "x"); err == nil {
		t.Error("a name Key Vault refuses was accepted")
	}
}
