package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/oathpipe/oathpipe/internal/devstack"
)

// runDemo brings the stack up, runs the demo and shuts down. It exits 0 only if every step
// happened as it should.
func runDemo(ctx context.Context, opts devstack.Options, files []string, timeout time.Duration, stdout, stderr io.Writer) int {
	start := time.Now()
	fmt.Fprintln(stdout, "starting the local stack: Azurite, Key Vault and Graph stand-ins, oathpipe serve, the runner")
	s, err := devstack.Start(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, "oathpipe-dev demo:", err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "stack up in %.1fs; API at %s\n\n", time.Since(start).Seconds(), s.Endpoints.APIBase)
	_, derr := s.Demo(ctx, devstack.DemoOptions{Files: files, Timeout: timeout, Out: stdout, Progress: stderr})
	s.Stop()
	if derr != nil {
		fmt.Fprintln(stderr, "oathpipe-dev demo: FAILED:", derr)
		return exitFailed
	}
	fmt.Fprintf(stdout, "\ndemo done in %.1fs; everything it started is stopped\n", time.Since(start).Seconds())
	return exitOK
}
