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
// run different from the first (the event subscription exists, permissions are granted).
const fakeAz = `#!/usr/bin/env bash
set -euo pipefail
st=$FAKE_STATE
printf '%s\n' "$*" >>"$st/calls"
args=" $* "
case $args in
  *" deployment group show "*)
    case $args in
      *AZURE_FUNCTION_APP_NAME*) echo func-oathpipe-abc ;;
      *AZURE_FUNCTION_APP_URL*) echo https://func-oathpipe-abc.azurewebsites.net ;;
      *EVENT_GRID_SYSTEM_TOPIC_NAME*) echo evgt-oathpipe-abc ;;
      *INBOX_CONTAINER*) echo seed-inbox ;;
      *IDENTITY_PRINCIPAL_ID*) echo 11111111-1111-1111-1111-111111111111 ;;
      *) exit 3 ;;
    esac ;;
  *" functionapp deployment source config-zip "*)
    # Optionally fail the first upload, as a new role assignment does before it propagates.
    if [ -n "${FAKE_ZIP_FAILS_ONCE:-}" ] && [ ! -f "$st/zip-failed" ]; then touch "$st/zip-failed"; exit 1; fi ;;
  *" functionapp keys list "*)
    # The host needs one poll before its key exists.
    if [ -f "$st/key-polled" ]; then echo FAKE-BLOBS-KEY-DO-NOT-PRINT; else touch "$st/key-polled"; fi ;;
  *" event-subscription show "*) [ -f "$st/subscribed" ] ;;
  *" event-subscription create "*) touch "$st/subscribed" ;;
  *" event-subscription update "*) [ -f "$st/subscribed" ] ;;
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
    echo "$id" >>"$st/granted" ;;
  *" rest --method patch "*hardwareOath*) echo enabled >"$st/oath" ;;
  *" rest --method get "*hardwareOath*) cat "$st/oath" 2>/dev/null || echo disabled ;;
  *) echo "fake az: unexpected call: $*" >&2; exit 5 ;;
esac
`

func runPostDeploy(t *testing.T, state string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("bash", append([]string{"post-deploy.sh"}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(state, "bin")+":"+os.Getenv("PATH"),
		"FAKE_STATE="+state, "WAIT_SECONDS=0",
		"AZURE_FUNCTION_APP_NAME=", "EVENT_GRID_SYSTEM_TOPIC_NAME=", "INBOX_CONTAINER=",
		"IDENTITY_PRINCIPAL_ID=", "AZURE_FUNCTION_APP_URL=", "RESOURCE_GROUP=", "AZURE_RESOURCE_GROUP=")
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("post-deploy.sh %v: %v\n%s", args, err, out)
	}
	if strings.Contains(string(out), "FAKE-BLOBS-KEY") {
		t.Errorf("post-deploy.sh printed the blobs_extension key:\n%s", out)
	}
	return string(out)
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

// TestPostDeployIdempotent runs post-deploy.sh twice against a fake az: the first run deploys,
// subscribes ImportSeeds to seed-inbox and grants three Graph permissions; the second updates
// the subscription (the key may have changed) and grants nothing new.
func TestPostDeployIdempotent(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	for _, tc := range []struct {
		name, env, assign string
	}{
		{"narrow permission offered", "", "role-hardware-oath"},
		{"narrow permission missing, first upload fails", "FAKE_NO_NARROW=1 FAKE_ZIP_FAILS_ONCE=1", "role-user-auth-method"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := t.TempDir()
			bin := filepath.Join(state, "bin")
			if err := os.Mkdir(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(bin, "az"), []byte(fakeAz), 0o755); err != nil {
				t.Fatal(err)
			}
			zip := filepath.Join(state, "oathpipe.zip")
			if err := os.WriteFile(zip, []byte("PK"), 0o644); err != nil {
				t.Fatal(err)
			}
			env := strings.Fields(tc.env)
			zips := 1
			if strings.Contains(tc.env, "FAKE_ZIP_FAILS_ONCE") {
				zips = 2
			}

			out := runPostDeploy(t, state, env, "-g", "rg-test", "--zip", zip)
			first := calls(t, state)
			if n := len(grep(first, "config-zip")); n != zips || len(grep(first, "--src "+zip)) != zips {
				t.Errorf("want %d zip deploys of %s, got calls:\n%s", zips, zip, strings.Join(first, "\n"))
			}
			create := grep(first, "event-subscription create")
			if len(create) != 1 {
				t.Fatalf("want one event-subscription create, got:\n%s", strings.Join(first, "\n"))
			}
			for _, want := range []string{
				"--endpoint https://func-oathpipe-abc.azurewebsites.net/runtime/webhooks/blobs?functionName=Host.Functions.ImportSeeds&code=FAKE-BLOBS-KEY-DO-NOT-PRINT ",
				"--included-event-types Microsoft.Storage.BlobCreated",
				"--subject-begins-with /blobServices/default/containers/seed-inbox/",
				"--endpoint-type webhook",
				"--system-topic-name evgt-oathpipe-abc",
			} {
				if !strings.Contains(create[0]+" ", want) {
					t.Errorf("event subscription lacks %q: %s", want, strings.ReplaceAll(create[0], "FAKE-BLOBS-KEY-DO-NOT-PRINT", "<key>"))
				}
			}
			posts := grep(first, "rest --method post")
			if len(posts) != 3 {
				t.Fatalf("want 3 Graph grants, got %d:\n%s", len(posts), strings.Join(posts, "\n"))
			}
			for _, role := range []string{"role-policy", tc.assign, "role-user-read"} {
				if len(grep(posts, `"appRoleId":"`+role+`"`)) != 1 {
					t.Errorf("Graph grant of %s missing: %s", role, strings.Join(posts, "\n"))
				}
			}
			if !strings.Contains(out, "hardwareOath authentication method: disabled") {
				t.Errorf("first run should report the method disabled:\n%s", out)
			}

			out = runPostDeploy(t, state, env, "-g", "rg-test", "--zip", zip, "--enable-hardware-oath")
			second := calls(t, state)
			if len(grep(second, "event-subscription create")) != 0 || len(grep(second, "event-subscription update")) != 1 {
				t.Errorf("second run should update, not create, the subscription:\n%s", strings.Join(second, "\n"))
			}
			if n := len(grep(second, "rest --method post")); n != 0 {
				t.Errorf("second run granted %d permissions again", n)
			}
			if !strings.Contains(out, "already granted") || !strings.Contains(out, "hardwareOath authentication method: enabled") {
				t.Errorf("second run output:\n%s", out)
			}
		})
	}
}

// TestPostDeployRefusesWithoutPackage: a missing zip is a clear error naming `make package`.
func TestPostDeployRefusesWithoutPackage(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	state := t.TempDir()
	bin := filepath.Join(state, "bin")
	_ = os.Mkdir(bin, 0o755)
	if err := os.WriteFile(filepath.Join(bin, "az"), []byte(fakeAz), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "post-deploy.sh", "-g", "rg-test", "--zip", filepath.Join(state, "missing.zip"))
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "FAKE_STATE="+state, "AZURE_FUNCTION_APP_NAME=")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "make package") {
		t.Errorf("want a failure naming make package, got %v:\n%s", err, out)
	}
}
