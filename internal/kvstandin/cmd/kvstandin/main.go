// Command kvstandin serves the local Key Vault stand-in over HTTPS until interrupted, for the
// demo and manual checks. It writes its certificate (PEM) where -ca-out says, for
// OATHPIPE_CA_FILE, and prints the vault URL.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/oathpipe/oathpipe/internal/kvstandin"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "host:port to listen on")
	caOut := flag.String("ca-out", "kvstandin-ca.pem", "file to write the server certificate (PEM) to")
	latency := flag.Duration("latency", 0, "latency added to every answer")
	rate := flag.Int("rate", 0, "transactions allowed per -per (0: 4000; negative: unlimited)")
	per := flag.Duration("per", 10*time.Second, "rate-limit period")
	tenant := flag.String("tenant", kvstandin.DefaultTenant, "tenant id named in the auth challenge")
	token := flag.String("token", kvstandin.DefaultToken, "the one bearer token accepted")
	flag.Parse()

	run, err := kvstandin.Listen(*addr, kvstandin.Options{Latency: *latency, Rate: *rate, Per: *per, Tenant: *tenant, Token: *token})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer run.Close()
	if err := os.WriteFile(*caOut, run.CAPEM, 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "write %s: %v\n", *caOut, err)
		os.Exit(1)
	}
	fmt.Printf("OATHPIPE_KEYVAULT_URL=%s/\nOATHPIPE_CA_FILE=%s\nOATHPIPE_OFFLINE_TOKEN=%s\n", run.URL, *caOut, *token)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}
