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
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// DemoOptions configures Stack.Demo.
type DemoOptions struct {
	Files    []string      // vendor files to drop in seed-inbox
	Timeout  time.Duration // for the imports to settle; default 2 minutes
	Out      io.Writer     // the tables and the API answer
	Progress io.Writer     // the progress line while waiting (nil: none)
}

// DemoResult is what the demo saw.
type DemoResult struct {
	Imports    []*pipeline.ImportStatus
	Serial     string               // the token reassigned
	Reassigned *pipeline.Assignment // the API's answer
}

// Demo uploads the files into seed-inbox with the Azure SDK, waits until their imports settle,
// prints a table per file and a summary, reassigns one activated token to another user through
// PUT /api/tokens/{serial}/assignment, and prints that answer. It checks every step against the
// Graph stand-in and returns an error naming what did not happen as it should.
func (s *Stack) Demo(ctx context.Context, o DemoOptions) (*DemoResult, error) {
	if s.Endpoints.APIBase == "" {
		return nil, errors.New("demo: the stack runs without the app")
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if len(o.Files) == 0 {
		return nil, errors.New("demo: no vendor files")
	}
	leaver, err := s.addLeaver()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Out, "Graph stand-in: %s is held by %s, a disabled account\n", LeaverSerial, leaver)
	names, err := s.uploadFiles(ctx, o.Files, o.Out)
	if err != nil {
		return nil, err
	}

	res := &DemoResult{}
	if res.Imports, err = s.waitSettled(ctx, names, o.Timeout, o.Progress); err != nil {
		return res, err
	}
	fmt.Fprintln(o.Out)
	for _, st := range res.Imports {
		printImport(o.Out, st)
	}
	if err := s.checkImports(res.Imports); err != nil {
		return res, err
	}

	if res.Serial, res.Reassigned, err = s.reassignOne(ctx, res.Imports, o.Out); err != nil {
		return res, err
	}
	if err := s.retireAndReconcile(ctx, o.Out, res.Imports, res.Serial); err != nil {
		return res, err
	}
	return res, nil
}

// uploadFiles drops each vendor file into seed-inbox and returns their blob names.
func (s *Stack) uploadFiles(ctx context.Context, files []string, out io.Writer) ([]string, error) {
	var names []string
	for _, f := range files {
		content, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("demo: read vendor file: %w", err)
		}
		name := filepath.Base(f)
		if _, err := s.uploadInbox(ctx, name, content); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		fmt.Fprintf(out, "uploaded %s to %s (%d bytes)\n", name, pipeline.InboxContainer, len(content))
		names = append(names, name)
	}

	return names, nil
}

// reassignOne reassigns one activated token of imports to another user through PUT
// /api/tokens/{serial}/assignment, prints the answer and checks it against the Graph stand-in.
func (s *Stack) reassignOne(ctx context.Context, imports []*pipeline.ImportStatus, out io.Writer) (string, *pipeline.Assignment, error) {
	serial, from, to, err := s.pickReassignment(imports)
	if err != nil {
		return "", nil, err
	}
	fmt.Fprintf(out, "reassigning %s from %s to %s:\nPUT %s/tokens/%s/assignment {\"userPrincipalName\":%q}\n",
		serial, from, to, s.Endpoints.APIBase, url.PathEscape(serial), to)
	status, body, err := s.api(ctx, http.MethodPut, "tokens/"+url.PathEscape(serial)+"/assignment",
		map[string]string{"userPrincipalName": to})
	if err != nil {
		return serial, nil, fmt.Errorf("demo: reassign %s: %w", serial, err)
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, body, "", "  ") != nil {
		pretty.Write(body)
	}
	fmt.Fprintf(out, "%d %s\n%s\n", status, http.StatusText(status), pretty.String())
	if status != http.StatusOK {
		return serial, nil, fmt.Errorf("demo: reassign %s to %s: the API answered %d", serial, to, status)
	}
	var a pipeline.Assignment
	if err := json.Unmarshal(body, &a); err != nil {
		return serial, nil, fmt.Errorf("demo: reassign answer: %w", err)
	}
	if !strings.EqualFold(a.UserPrincipalName, to) || !a.Changed {
		return serial, &a, fmt.Errorf("demo: reassign %s: answer says user %q changed=%v; want %s, changed", serial, a.UserPrincipalName, a.Changed, to)
	}
	d, ok := s.Graph.Server.DeviceBySerial(serial)
	if !ok || !strings.EqualFold(d.AssignedUPN, to) || d.Status != "activated" {
		return serial, &a, fmt.Errorf("demo: after reassignment the Graph stand-in has %s as %q for %q; want activated for %s", serial, d.Status, d.AssignedUPN, to)
	}
	fmt.Fprintf(out, "\nGraph stand-in: %s is %s for %s\n", serial, d.Status, d.AssignedUPN)
	return serial, &a, nil
}

// uploadInbox drops a vendor file into seed-inbox with the Azure SDK, as an admin would, and
// returns the new blob's ETag.
func (s *Stack) uploadInbox(ctx context.Context, name string, content []byte) (string, error) {
	bc, err := azblob.NewClientFromConnectionString(s.Endpoints.StorageConnectionString, nil)
	if err != nil {
		return "", fmt.Errorf("blob client: %w", err)
	}
	resp, err := bc.UploadBuffer(ctx, pipeline.InboxContainer, name, content, nil)
	if err != nil {
		return "", fmt.Errorf("upload %s to %s: %w", name, pipeline.InboxContainer, err)
	}
	return string(*resp.ETag), nil
}

// waitSettled polls GET /api/imports/{name} until every import has settled.
func (s *Stack) waitSettled(ctx context.Context, names []string, timeout time.Duration, progress io.Writer) ([]*pipeline.ImportStatus, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	latest := make([]*pipeline.ImportStatus, len(names))
	tty := isTerminal(progress)
	lastLine, lastPrint := "", time.Time{}
	defer func() {
		if tty && lastLine != "" {
			fmt.Fprintln(progress)
		}
	}()
	for {
		done := true
		var parts []string
		for i, name := range names {
			status, body, err := s.api(ctx, http.MethodGet, "imports/"+url.PathEscape(name), nil)
			switch {
			case err != nil:
				return latest, fmt.Errorf("demo: import status of %s: %w", name, err)
			case status == http.StatusNotFound:
				done = false
				parts = append(parts, name+": not started")
				continue
			case status != http.StatusOK:
				return latest, fmt.Errorf("demo: import status of %s: the API answered %d: %s", name, status, clip(body))
			}
			var st pipeline.ImportStatus
			if err := json.Unmarshal(body, &st); err != nil {
				return latest, fmt.Errorf("demo: import status of %s: %w", name, err)
			}
			latest[i] = &st
			if !st.Settled {
				done = false
			}
			parts = append(parts, fmt.Sprintf("%s: %s, %d/%d settled", name, st.Stage, len(st.Tokens)-st.Pending, len(st.Tokens)))
		}
		if done {
			return latest, nil
		}
		line := fmt.Sprintf("waiting %4.1fs  %s", time.Since(start).Seconds(), strings.Join(parts, "  "))
		if progress != nil {
			if tty {
				fmt.Fprintf(progress, "\r\033[K%s", line)
				lastLine = line
			} else if time.Since(lastPrint) > 2*time.Second {
				fmt.Fprintln(progress, line)
				lastPrint = time.Now()
			}
		}
		if time.Now().After(deadline) {
			return latest, fmt.Errorf("demo: imports did not settle within %v: %s", timeout, strings.Join(parts, "; "))
		}
		select {
		case <-ctx.Done():
			return latest, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// printImport prints one import as a table of its tokens and a summary line.
func printImport(w io.Writer, st *pipeline.ImportStatus) {
	fmt.Fprintf(w, "%s  (%s, %d rows: %d valid, %d invalid; source %s)\n", st.FileName, st.Format, st.Rows, st.Valid, st.Invalid, orDash(st.Disposition))
	for _, p := range st.Problems {
		fmt.Fprintf(w, "  file problem: %s\n", p.Message)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  LINE\tSERIAL\tUSER\tOUTCOME\tREASON")
	for _, t := range st.Tokens {
		reason := t.Reason
		if reason == "" && len(t.Problems) > 0 {
			var ps []string
			for _, p := range t.Problems {
				ps = append(ps, p.Field+": "+p.Message)
			}
			reason = strings.Join(ps, "; ")
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\n", t.Line, orDash(t.SerialNumber), orDash(t.UserPrincipalName), t.Status, reason)
	}
	_ = tw.Flush()
	var counts []string
	for k, v := range st.Counts {
		counts = append(counts, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(counts)
	fmt.Fprintf(w, "  summary: %s\n\n", strings.Join(counts, ", "))
}

// checkImports holds the demo to what it shows: the clean file fully activated (or in
// inventory when it names no user), the file with mistakes reporting them, and every activated
// token activated for its user in the Graph stand-in.
func (s *Stack) checkImports(imports []*pipeline.ImportStatus) error {
	activated := 0
	for _, st := range imports {
		lower := strings.ToLower(st.FileName)
		bad := 0
		for _, t := range st.Tokens {
			switch t.Status {
			case "activated":
				activated++
				d, ok := s.Graph.Server.DeviceBySerial(t.SerialNumber)
				if !ok || d.Status != "activated" || !strings.EqualFold(d.AssignedUPN, t.UserPrincipalName) {
					return fmt.Errorf("demo: %s line %d: the ledger says %s is activated for %s, the Graph stand-in has %q for %q",
						st.FileName, t.Line, t.SerialNumber, t.UserPrincipalName, d.Status, d.AssignedUPN)
				}
			case "available":
				if t.UserPrincipalName != "" {
					return fmt.Errorf("demo: %s line %d: %s names %s but is only in the inventory", st.FileName, t.Line, t.SerialNumber, t.UserPrincipalName)
				}
			default:
				bad++
			}
		}
		if strings.Contains(lower, "clean") && (bad > 0 || st.Invalid > 0 || len(st.Problems) > 0) {
			return fmt.Errorf("demo: %s should import cleanly, but %d tokens did not reach activated/available", st.FileName, bad+st.Invalid)
		}
		if strings.Contains(lower, "mistake") && bad == 0 && st.Invalid == 0 && len(st.Problems) == 0 {
			return fmt.Errorf("demo: %s has mistakes, but none was reported", st.FileName)
		}
	}
	if activated == 0 {
		return errors.New("demo: no token was activated")
	}
	return nil
}

// pickReassignment chooses an activated token and a member user who can take it.
func (s *Stack) pickReassignment(imports []*pipeline.ImportStatus) (serial, from, to string, err error) {
	for _, st := range imports {
		for _, t := range st.Tokens {
			if t.Status == "activated" && serial == "" {
				serial, from = t.SerialNumber, t.UserPrincipalName
			}
		}
	}
	if serial == "" {
		return "", "", "", errors.New("demo: no activated token to reassign")
	}
	best := -1
	for _, u := range s.Users {
		if !u.AccountEnabled || !strings.EqualFold(u.UserType, "Member") || strings.EqualFold(u.UserPrincipalName, from) {
			continue
		}
		held := len(s.Graph.Server.UserMethods(u.UserPrincipalName)) + u.ExistingOathMethods
		if held >= 5 {
			continue
		}
		if best < 0 || held < best {
			to, best = u.UserPrincipalName, held
		}
	}
	if to == "" {
		return "", "", "", errors.New("demo: no user in the directory can take another token")
	}
	return serial, from, to, nil
}

// api calls the HTTP front.
func (s *Stack) api(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.Endpoints.APIBase+"/"+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, b, err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func clip(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
