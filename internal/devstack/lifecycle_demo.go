package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// LeaverSerial is the token the demo's directory gives a disabled account before the imports:
// the offboarding leak the reconciliation finds.
const LeaverSerial = "DEMO-LEAVER-1"

// addLeaver puts a token held by the directory's first disabled member into the Graph
// stand-in's inventory (it was never imported: the vault has no seed for it either).
func (s *Stack) addLeaver() (string, error) {
	for _, u := range s.Users {
		if !u.AccountEnabled && strings.EqualFold(u.UserType, "Member") {
			s.Graph.Server.Preload([]graphstandin.DeviceState{{Serial: LeaverSerial, Manufacturer: "Token2", Model: "C202",
				Status: "activated", AssignedUserID: u.ID, AssignedUPN: u.UserPrincipalName}})
			return u.UserPrincipalName, nil
		}
	}
	return "", errors.New("demo: the directory has no disabled member account")
}

// retireAndReconcile retires one activated token other than skip through
// DELETE /api/tokens/{serial}, checks it is gone from the Graph stand-in, then runs
// `oathpipe reconcile` with the app's settings and prints its summary, which must name the
// disabled account's token.
func (s *Stack) retireAndReconcile(ctx context.Context, out io.Writer, imports []*pipeline.ImportStatus, skip string) error {
	serial := ""
	for _, st := range imports {
		for _, t := range st.Tokens {
			if serial == "" && t.SerialNumber != skip && (t.Status == "activated" || t.Status == "available") {
				serial = t.SerialNumber
			}
		}
	}
	if serial == "" {
		return errors.New("demo: no token to retire")
	}
	fmt.Fprintf(out, "\nretiring %s:\nDELETE %s/tokens/%s\n", serial, s.Endpoints.APIBase, url.PathEscape(serial))
	status, body, err := s.api(ctx, http.MethodDelete, "tokens/"+url.PathEscape(serial), nil)
	if err != nil {
		return fmt.Errorf("demo: retire %s: %w", serial, err)
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, body, "", "  ") != nil {
		pretty.Write(body)
	}
	fmt.Fprintf(out, "%d %s\n%s\n", status, http.StatusText(status), pretty.String())
	var r pipeline.Retirement
	if status != http.StatusOK || json.Unmarshal(body, &r) != nil || !r.Changed {
		return fmt.Errorf("demo: retire %s: the API answered %d", serial, status)
	}
	if _, ok := s.Graph.Server.DeviceBySerial(serial); ok {
		return fmt.Errorf("demo: after retiring, the Graph stand-in still has %s", serial)
	}

	fmt.Fprintln(out, "\noathpipe reconcile:")
	cmd := exec.CommandContext(ctx, s.opts.AppPath, "reconcile")
	cmd.Dir = s.opts.Root
	cmd.Env = appEnv(os.Environ(), s.Settings(s.appPort))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("demo: oathpipe reconcile: %w\n%s", err, stderr.String())
	}
	fmt.Fprint(out, stdout.String())
	if !strings.Contains(stdout.String(), "held-by-disabled") {
		return fmt.Errorf("demo: the reconciliation did not find %s, held by a disabled account", LeaverSerial)
	}
	return nil
}
