package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// TestReadmeIsTrue keeps README.md's quick start and configuration table in step with the code.
func TestReadmeIsTrue(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	demo, test := strings.Index(readme, "make demo"), strings.Index(readme, "make test")
	if demo < 0 || test < 0 || demo > test {
		t.Errorf("README's quick start must show `make demo` first and `make test` second")
	}
	for _, s := range config.Settings {
		if !strings.Contains(readme, "| `"+s.Name+"` |") {
			t.Errorf("README's configuration table lacks %s", s.Name)
		}
	}
	for _, name := range []string{pipeline.InboxContainer, pipeline.ReportsContainer, pipeline.RejectedContainer,
		pipeline.ProvisionQueue, pipeline.PoisonQueue, pipeline.LedgerTable, pipeline.AuditTable} {
		if !strings.Contains(readme, "`"+name+"`") {
			t.Errorf("README does not name %s", name)
		}
	}
	for _, m := range regexp.MustCompile(`\]\(((?:docs|infra)/[^)#]+)`).FindAllStringSubmatch(readme, -1) {
		if _, err := os.Stat(m[1]); err != nil {
			t.Errorf("README links to %s, which does not exist", m[1])
		}
	}
	entries, err := os.ReadDir("functions")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() && !strings.Contains(readme, "`"+e.Name()+"`") {
			t.Errorf("README's function table lacks %s", e.Name())
		}
	}
}
