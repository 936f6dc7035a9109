package main

import (
	"bytes"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The demo vendor files are generated here from a fixed random source, so they can be remade:
//
//	OATHPIPE_UPDATE_DEMO=1 go test -run TestDemoFiles .
//
// Their seeds are fake and exist only in testdata.
func demoFiles() map[string]string {
	rng := rand.New(rand.NewChaCha8([32]byte{'o', 'a', 't', 'h', 'p', 'i', 'p', 'e', '-', 'd', 'e', 'm', 'o'}))
	enc := base32.StdEncoding.WithPadding(base32.NoPadding)
	seed := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return enc.EncodeToString(b)
	}
	const header = "upn,serial number,secret key,timeinterval,manufacturer,model"
	file := func(rows []string) string {
		return "\uFEFF" + header + "\r\n" + strings.Join(rows, "\r\n") + "\r\n"
	}
	row := func(upn, serial, secret, interval, model string) string {
		return strings.Join([]string{upn, serial, secret, interval, "Token2", model}, ",")
	}
	clean := []string{
		row("ada.lovelace@contoso.example", "8659612000101", seed(20), "30", "C202"),
		row("grace.hopper@contoso.example", "8659612000102", seed(20), "30", "C202"),
		row("alan.turing@contoso.example", "8659612000103", seed(20), "30", "C202"),
		row("edsger.dijkstra@contoso.example", "8659612000104", seed(20), "30", "C202"),
		row("barbara.liskov@contoso.example", "8659612000105", seed(20), "30", "C301"),
		row("ken.thompson@contoso.example", "8659612000106", seed(20), "60", "C301"),
		row("margaret.hamilton@contoso.example", "8659612000107", seed(20), "30", "C301"),
		row("", "8659612000108", seed(20), "30", "C301"),
	}
	mistakes := []string{
		row("donald.knuth@contoso.example", "8659612000201", seed(20), "30", "C202"),
		row("frances.allen@contoso.example", "8659612000202", seed(20), "30", "C202"),
		row("leslie.lamport@contoso.example", "8659612000203", "1234567890abcdef1234567890abcdef", "30", "C202"), // Microsoft's doc example: not Base32
		row("john.backus@contoso.example", "8659612000204", seed(20), "60", "C301"),
		row("", "8659612000201", seed(20), "30", "C202"), // repeats line 2's serial
		row("", "8659612000205", seed(20), "45", "C202"), // interval 45
		row("radia.perlman@contoso.example", "8659612000206", seed(20), "30", "C301"),
		row("", "8659612000207", seed(10), "30", "C202"),                                                  // an 80-bit seed
		row("", "8659612000208", seed(20), "30", ""),                                                      // no model
		row("Margaret Hamilton <margaret@contoso>", "8659612000209", seed(20), "30", "C202"),              // not a UPN
		row("pat.partner_fabrikam.example#EXT#@contoso.example", "8659612000210", seed(20), "30", "C202"), // a guest: Graph refuses
		row("former.employee@contoso.example", "8659612000211", seed(20), "30", "C202"),                   // disabled: Graph refuses
	}
	return map[string]string{
		"token2-batch-clean.csv":    file(clean),
		"token2-batch-mistakes.csv": file(mistakes),
	}
}

func TestDemoFiles(t *testing.T) {
	type verdict struct {
		exit         int
		valid, rows  int
		problemCodes []string
	}
	want := map[string]verdict{
		"token2-batch-clean.csv": {exitOK, 8, 8, nil},
		"token2-batch-mistakes.csv": {exitProblem, 6, 12, []string{
			"4:secret.not-base32", "6:serial.duplicate", "7:interval.unsupported", "9:secret.too-short", "10:model.missing", "11:upn.malformed"}},
	}
	for name, content := range demoFiles() {
		path := filepath.Join("testdata", "demo", name)
		if os.Getenv("OATHPIPE_UPDATE_DEMO") != "" {
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("%s differs from its generator (err %v); remake it with OATHPIPE_UPDATE_DEMO=1", path, err)
		}
		var stdout, stderr bytes.Buffer
		code := run([]string{"validate", "--json", path}, &stdout, &stderr)
		var out struct {
			Summary  struct{ Rows, Valid int }
			Problems []struct {
				Line int
				Code string
			}
		}
		if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, stdout.String())
		}
		var codes []string
		for _, p := range out.Problems {
			codes = append(codes, fmt.Sprintf("%d:%s", p.Line, p.Code))
		}
		w := want[name]
		if code != w.exit || out.Summary.Rows != w.rows || out.Summary.Valid != w.valid || fmt.Sprint(codes) != fmt.Sprint(w.problemCodes) {
			t.Errorf("%s: exit %d, %+v, problems %v; want %+v", name, code, out.Summary, codes, w)
		}
		assertNoSeed(t, content, stdout.String()+stderr.String())
	}
}
