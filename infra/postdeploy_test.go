package infra

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeAz stands in for the Azure CLI: it answers the calls post-deploy.sh makes from files in
// $FAKE_STATE, records every call in $FAKE_STATE/calls, and keeps the state that makes a second
// run different from the first (permissions granted or removed). By default it behaves as the
// real CLI does for the authentication-methods policy: its token has no Policy.* scope, so the
// policy's GET and PATCH answer 403 (FAKE_POLICY_SCOPE=1 is the lenient variant).
const fakeAz = `#!/usr/bin/env bash
set -euo pipefail
st=$FAKE_STATE
printf '%s\n' "$*" >>"$st/calls"
args=" $* "
forbidden() {
  echo "ERROR: Forbidden({\"error\":{\"code\":\"Authorization_RequestDenied\",\"message\":\"Insufficient privileges to complete the operation.\"}})" >&2
  exit 1
}
case $args in
  *" version "*) echo "${FAKE_AZ_VERSION:-2.67.0}" ;;
  *" deployment group show "*)
    case $args in
      *AZURE_FUNCTION_APP_NAME*) echo func-oathpipe-abc ;;
      *AZURE_FUNCTION_APP_URL*) echo https://func-oathpipe-abc.azurewebsites.net ;;
      *KEY_VAULT_URL*) echo https://kv-oathpipe-abc.vault.azure.net/ ;;
      *PGP_KEY_SECRET_NAME*) echo oathpipe-pgp-key ;;
      *IDENTITY_PRINCIPAL_ID*) echo 11111111-1111-1111-1111-111111111111 ;;
      *) exit 3 ;;
    esac ;;
  *" functionapp deployment source config-zip "*)
    # Optionally fail the first upload, as a new role assignment does before it propagates.
    if [ -n "${FAKE_ZIP_FAILS_ONCE:-}" ] && [ ! -f "$st/zip-failed" ]; then touch "$st/zip-failed"; exit 1; fi ;;
  *" ad sp show "*)
    case $args in
      *"--query id "*) echo 99999999-9999-9999-9999-999999999999 ;;
      *UserAuthMethod-HardwareOATH*) [ -n "${FAKE_NO_NARROW:-}" ] || echo role-hardware-oath ;;
      *UserAuthenticationMethod.ReadWrite.All*) echo role-user-auth-method ;;
      *Policy.ReadWrite.AuthenticationMethod*) echo role-policy ;;
      *User.Read.All*) echo role-user-read ;;
      *) exit 4 ;;
    esac ;;
  *" rest --method get "*appRoleAssignments*) cat "$st/granted" 2>/dev/null || true ;;
  *" rest --method post "*appRoleAssignments*)
    id=$(sed -n 's/.*"appRoleId":"\([^"]*\)".*/\1/p' <<<"$*")
    printf 'asg-%s\t%s\n' "$id" "$id" >>"$st/granted" ;;
  *" rest --method delete "*appRoleAssignments/*)
    asg=${args##*appRoleAssignments/}; asg=${asg%% *}
    grep -v "^$asg	" "$st/granted" >"$st/granted.new" || true
    mv "$st/granted.new" "$st/granted" ;;
  *" rest --method patch "*hardwareOath*)
    [ -n "${FAKE_POLICY_SCOPE:-}" ] || forbidden
    echo enabled >"$st/oath" ;;
  *" rest --method get "*hardwareOath*)
    [ -n "${FAKE_POLICY_SCOPE:-}" ] || forbidden
    cat "$st/oath" 2>/dev/null || echo disabled ;;
  *) echo "fake az: unexpected call: $*" >&2; exit 5 ;;
esac
`

// fakeOathpipe stands in for `oathpipe pgp-keygen`: it records its arguments, "creates" the key
// on the first call and prints an armored public key (a fake one) each time, as --if-missing does.
const fakeOathpipe = `#!/usr/bin/env bash
set -euo pipefail
printf '%s\n' "$*" >>"$FAKE_STATE/oathpipe-calls"
[ -z "${FAKE_KEYGEN_FAILS:-}" ] || { echo "oathpipe: store the PGP key in Key Vault: 403 Forbidden" >&2; exit 1; }
touch "$FAKE_STATE/pgp-key"
printf '%s\n' "-----BEGIN PGP PUBLIC KEY BLOCK-----" "FAKEPUBLICKEY" "-----END PGP PUBLIC KEY BLOCK-----"
`

// postDeployEnv makes a state directory with the fake az (and, when withOathpipe, the fake
// oathpipe binary) and a package to deploy.
func postDeployEnv(t *testing.T, withOathpipe bool) (state, zip string) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	state = t.TempDir()
	bin := filepath.Join(state, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "az"), []byte(fakeAz), 0o755); err != nil {
		t.Fatal(err)
	}
	if withOathpipe {
		if err := os.WriteFile(filepath.Join(bin, "oathpipe"), []byte(fakeOathpipe), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	zip = filepath.Join(state, "oathpipe.zip")
	if err := os.WriteFile(zip, []byte("PK"), 0o644); err != nil {
		t.Fatal(err)
	}
	return state, zip
}

// runScript runs post-deploy.sh against the fakes and returns its stdout, its stderr and
// whether it exited 0.
func runScript(t *testing.T, state string, env []string, args ...string) (stdout, stderr string, ok bool) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{"post-deploy.sh"}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(state, "bin")+":"+os.Getenv("PATH"),
		"FAKE_STATE="+state, "WAIT_SECONDS=0", "OATHPIPE_BIN="+filepath.Join(state, "bin", "oathpipe"),
		"AZURE_FUNCTION_APP_NAME=", "KEY_VAULT_URL=", "PGP_KEY_SECRET_NAME=", "ASSIGN_PERMISSION=",
		"IDENTITY_PRINCIPAL_ID=", "AZURE_FUNCTION_APP_URL=", "RESOURCE_GROUP=", "AZURE_RESOURCE_GROUP=",
		"GRAPH_ONLY=", "SKIP_CODE=", "SKIP_GRAPH=", "ENABLE_HARDWARE_OATH=")
	cmd.Env = append(cmd.Env, env...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil {
		if _, exit := err.(*exec.ExitError); !exit {
			t.Fatal(err)
		}
	}
	return o.String(), e.String(), err == nil
}

func runPostDeploy(t *testing.T, state string, env []string, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, ok := runScript(t, state, env, args...)
	if !ok {
		t.Fatalf("post-deploy.sh %v failed:\n%s", args, stderr)
	}
	return stdout, stderr
}

func calls(t *testing.T, state string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "calls"))
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(filepath.Join(state, "calls"))
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func grep(lines []string, sub string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}

// TestPostDeployIdempotent runs post-deploy.sh twice against the fakes: the first run deploys,
// creates the PGP key and grants three Graph permissions; the second grants nothing new. Neither
// touches Event Grid or function keys (the subscription is in the Bicep).
func TestPostDeployIdempotent(t *testing.T) {
	for _, tc := range []struct {
		name, env string
		zips      int
	}{
		{"first upload succeeds", "", 1},
		{"first upload fails", "FAKE_ZIP_FAILS_ONCE=1", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state, zip := postDeployEnv(t, true)
			env := strings.Fields(tc.env)
			stdout, stderr := runPostDeploy(t, state, env, "-g", "rg-test", "--zip", zip)
			first := calls(t, state)
			if n := len(grep(first, "config-zip")); n != tc.zips || len(grep(first, "--src "+zip)) != tc.zips {
				t.Errorf("want %d zip deploys of %s, got calls:\n%s", tc.zips, zip, strings.Join(first, "\n"))
			}
			for _, bad := range []string{"eventgrid", "keys list"} {
				if got := grep(first, bad); len(got) > 0 {
					t.Errorf("post-deploy.sh still calls %s: %v", bad, got)
				}
			}
			posts := grep(first, "rest --method post")
			if len(posts) != 3 {
				t.Fatalf("want 3 Graph grants, got %d:\n%s", len(posts), strings.Join(posts, "\n"))
			}
			for _, role := range []string{"role-policy", "role-hardware-oath", "role-user-read"} {
				if len(grep(posts, `"appRoleId":"`+role+`"`)) != 1 {
					t.Errorf("Graph grant of %s missing: %s", role, strings.Join(posts, "\n"))
				}
			}
			keygen, err := os.ReadFile(filepath.Join(state, "oathpipe-calls"))
			if err != nil || strings.TrimSpace(string(keygen)) != "pgp-keygen --vault https://kv-oathpipe-abc.vault.azure.net/ --secret oathpipe-pgp-key --if-missing" {
				t.Errorf("want one `oathpipe pgp-keygen --vault URL --secret NAME --if-missing`, got %q (%v)", keygen, err)
			}
			if !strings.Contains(stdout, "FAKEPUBLICKEY") || !strings.Contains(stderr, "GET /api/pgp-key") {
				t.Errorf("the public key goes to stdout and the admin is told about GET /api/pgp-key; stdout:\n%s\nstderr:\n%s", stdout, stderr)
			}

			_, stderr = runPostDeploy(t, state, env, "-g", "rg-test", "--zip", zip)
			second := calls(t, state)
			if n := len(grep(second, "rest --method post")) + len(grep(second, "rest --method delete")); n != 0 {
				t.Errorf("second run changed %d permissions", n)
			}
			if !strings.Contains(stderr, "already granted") {
				t.Errorf("second run output:\n%s", stderr)
			}
		})
	}
}

// TestPostDeployOATHPolicy403: the Azure CLI's token has no Policy.* scope, so the policy GET and
// PATCH get 403. The script says so, gives the ways that work, and still exits 0; it never
// prints `unknown` as a state. With a token that has the scope (lenient fake), it reports the state.
func TestPostDeployOATHPolicy403(t *testing.T) {
	state, zip := postDeployEnv(t, true)
	_, stderr := runPostDeploy(t, state, nil, "-g", "rg-test", "--zip", zip, "--enable-hardware-oath")
	c := calls(t, state)
	if len(grep(c, "rest --method patch")) != 1 {
		t.Errorf("want one PATCH attempt, got:\n%s", strings.Join(c, "\n"))
	}
	for _, want := range []string{
		"could not enable the hardwareOath authentication method",
		"Authorization_RequestDenied",
		"Update-MgBetaPolicyAuthenticationMethodPolicyAuthenticationMethodConfiguration",
		"Hardware OATH tokens > Enable",
		"could not be read with the Azure CLI's token",
		"done, with 1 warning(s)",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("output lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "unknown") {
		t.Errorf("`unknown` printed as a state:\n%s", stderr)
	}
	if len(grep(c, "rest --method post")) != 3 {
		t.Errorf("the Graph grants before the policy step must still happen:\n%s", strings.Join(c, "\n"))
	}

	state, zip = postDeployEnv(t, true)
	_, stderr = runPostDeploy(t, state, []string{"FAKE_POLICY_SCOPE=1"}, "-g", "rg-test", "--zip", zip)
	if !strings.Contains(stderr, "hardwareOath authentication method: disabled") {
		t.Errorf("with a Policy scope the state is reported:\n%s", stderr)
	}
	_, stderr = runPostDeploy(t, state, []string{"FAKE_POLICY_SCOPE=1"}, "-g", "rg-test", "--zip", zip, "--enable-hardware-oath")
	if !strings.Contains(stderr, "hardwareOath authentication method: enabled") || strings.Contains(stderr, "warning") {
		t.Errorf("with a Policy scope the PATCH succeeds:\n%s", stderr)
	}
}

// TestPostDeployGraphOnly: the Entra administrator's part alone touches neither code, Key Vault
// nor any Azure resource; with IDENTITY_PRINCIPAL_ID given it needs no Azure role at all.
func TestPostDeployGraphOnly(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"reads the principal from the deployment", nil, []string{"-g", "rg-test", "--graph-only"}},
		{"principal given, no resource group", []string{"IDENTITY_PRINCIPAL_ID=22222222-2222-2222-2222-222222222222"}, []string{"--graph-only"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state, _ := postDeployEnv(t, true)
			_, stderr := runPostDeploy(t, state, append(tc.env, "FAKE_AZ_VERSION=2.45.0"), tc.args...)
			c := calls(t, state)
			for _, l := range c {
				ok := strings.HasPrefix(l, "ad sp show ") || strings.HasPrefix(l, "rest ") ||
					(strings.HasPrefix(l, "deployment group show ") && strings.Contains(l, "IDENTITY_PRINCIPAL_ID"))
				if !ok {
					t.Errorf("--graph-only made a call outside Graph: %s", l)
				}
			}
			if len(grep(c, "rest --method post")) != 3 {
				t.Errorf("want the 3 Graph grants, got:\n%s", strings.Join(c, "\n"))
			}
			if _, err := os.Stat(filepath.Join(state, "oathpipe-calls")); err == nil {
				t.Error("--graph-only ran oathpipe pgp-keygen")
			}
			if !strings.Contains(stderr, "skipping zip deploy (--graph-only)") {
				t.Errorf("output:\n%s", stderr)
			}
		})
	}
}

// TestPostDeployOldCLI: a CLI older than 2.60.0 would post the zip to /api/zipdeploy (404 on
// Flex); the script refuses before deploying anything and names the version it needs.
func TestPostDeployOldCLI(t *testing.T) {
	for _, v := range []string{"2.45.0", "2.59.9", "1.99.0"} {
		state, zip := postDeployEnv(t, true)
		_, stderr, ok := runScript(t, state, []string{"FAKE_AZ_VERSION=" + v}, "-g", "rg-test", "--zip", zip)
		if ok || !strings.Contains(stderr, "Azure CLI "+v+" is too old") || !strings.Contains(stderr, "2.60.0 or newer") {
			t.Errorf("CLI %s: want a refusal naming 2.60.0, got ok=%v:\n%s", v, ok, stderr)
		}
		if len(grep(calls(t, state), "config-zip")) != 0 {
			t.Errorf("CLI %s: deployed anyway", v)
		}
	}
	for _, v := range []string{"2.60.0", "2.100.1", "3.0.0"} {
		state, zip := postDeployEnv(t, true)
		if _, stderr, ok := runScript(t, state, []string{"FAKE_AZ_VERSION=" + v}, "-g", "rg-test", "--zip", zip); !ok {
			t.Errorf("CLI %s refused:\n%s", v, stderr)
		}
	}
}

// TestPostDeployNarrowPermission: the narrow permission is the default; when the tenant does not
// offer it the script stops with a clear message and grants nothing; the broad one only when
// asked for; and a switch back to the narrow one removes the broad grant.
func TestPostDeployNarrowPermission(t *testing.T) {
	state, zip := postDeployEnv(t, true)
	_, stderr, ok := runScript(t, state, []string{"FAKE_NO_NARROW=1"}, "-g", "rg-test", "--zip", zip)
	if ok || !strings.Contains(stderr, "offers no application permission UserAuthMethod-HardwareOATH.ReadWrite.All") ||
		!strings.Contains(stderr, "--assign-permission UserAuthenticationMethod.ReadWrite.All") {
		t.Errorf("want a clear stop naming both permissions, got ok=%v:\n%s", ok, stderr)
	}
	if n := len(grep(calls(t, state), "rest --method post")); n != 0 {
		t.Errorf("granted %d permissions before stopping", n)
	}

	// The operator accepts the broad permission.
	runPostDeploy(t, state, []string{"FAKE_NO_NARROW=1"}, "-g", "rg-test", "--skip-code", "--assign-permission", "UserAuthenticationMethod.ReadWrite.All")
	posts := grep(calls(t, state), "rest --method post")
	if len(posts) != 3 || len(grep(posts, "role-user-auth-method")) != 1 {
		t.Errorf("want the broad permission granted with the other two:\n%s", strings.Join(posts, "\n"))
	}

	// The tenant now offers the narrow one: a plain rerun grants it and removes the broad one.
	_, stderr = runPostDeploy(t, state, nil, "-g", "rg-test", "--skip-code")
	c := calls(t, state)
	if len(grep(grep(c, "rest --method post"), "role-hardware-oath")) != 1 {
		t.Errorf("narrow permission not granted:\n%s", strings.Join(c, "\n"))
	}
	if del := grep(c, "rest --method delete"); len(del) != 1 || !strings.Contains(del[0], "appRoleAssignments/asg-role-user-auth-method ") {
		t.Errorf("want the broad grant removed, got:\n%s", strings.Join(del, "\n"))
	}
	if !strings.Contains(stderr, "not needed any more, removing") {
		t.Errorf("output:\n%s", stderr)
	}
	granted, _ := os.ReadFile(filepath.Join(state, "granted"))
	if strings.Contains(string(granted), "role-user-auth-method") {
		t.Errorf("broad grant still there:\n%s", granted)
	}

	_, stderr, ok = runScript(t, state, nil, "-g", "rg-test", "--skip-code", "--assign-permission", "auto")
	if ok || !strings.Contains(stderr, "--assign-permission must be") {
		t.Errorf("an unknown permission must be refused, got ok=%v:\n%s", ok, stderr)
	}
}

// TestPostDeployWithoutOathpipe: without the binary (no `make build`) the script says so and
// carries on; a keygen that fails (no Key Vault role for the operator) is a warning, not the end.
func TestPostDeployWithoutOathpipe(t *testing.T) {
	state, zip := postDeployEnv(t, false)
	_, stderr := runPostDeploy(t, state, nil, "-g", "rg-test", "--zip", zip)
	if !strings.Contains(stderr, "not found or not executable, so the PGP key was not checked or created. Run 'make build'") {
		t.Errorf("want a clear message about the missing binary:\n%s", stderr)
	}
	if len(grep(calls(t, state), "rest --method post")) != 3 {
		t.Error("the Graph step must still run")
	}

	state, zip = postDeployEnv(t, true)
	_, stderr = runPostDeploy(t, state, []string{"FAKE_KEYGEN_FAILS=1"}, "-g", "rg-test", "--zip", zip)
	if !strings.Contains(stderr, "oathpipe pgp-keygen failed") || !strings.Contains(stderr, "Key Vault data role") {
		t.Errorf("want a warning naming the Key Vault role:\n%s", stderr)
	}
}

// TestPostDeployRefusesWithoutPackage: a missing zip is a clear error naming `make package`.
func TestPostDeployRefusesWithoutPackage(t *testing.T) {
	state, _ := postDeployEnv(t, true)
	_, stderr, ok := runScript(t, state, nil, "-g", "rg-test", "--zip", filepath.Join(state, "missing.zip"))
	if ok || !strings.Contains(stderr, "make package") {
		t.Errorf("want a failure naming make package, got ok=%v:\n%s", ok, stderr)
	}
}

// TestPostDeployShellcheck keeps the script shellcheck-clean where shellcheck is installed.
func TestPostDeployShellcheck(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Skip("shellcheck not installed")
	}
	if out, err := exec.Command(sc, "post-deploy.sh").CombinedOutput(); err != nil {
		t.Errorf("shellcheck post-deploy.sh: %v\n%s", err, out)
	}
}
