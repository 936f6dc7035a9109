// Command oathpipe puts OATH hardware tokens into Microsoft Entra ID: it validates vendor seed
// files, computes codes, and serves as the Azure Functions custom handler.
//
//	oathpipe validate [flags] FILE   check a vendor seed file (never prints a seed)
//	oathpipe code --secret BASE32    print a token's current code
//	oathpipe serve                   the Functions custom handler (FUNCTIONS_CUSTOMHANDLER_PORT)
//	oathpipe pgp-keygen [flags]      create the deployment's PGP key pair in Key Vault
//	oathpipe rejected download NAME  decrypt a rejected file kept in seed-rejected
package main

import (
	"fmt"
	"io"
	"os"
)

// Exit codes shared by every command.
const (
	exitOK      = 0
	exitProblem = 1 // the input has a problem (validate), or the service failed (serve)
	exitUsage   = 2 // bad flags, unreadable path, bad settings
)

type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"validate", "check a vendor seed file and report every problem by line and field", runValidate},
		{"code", "print the current code of a token from its seed (an admin's clock check)", runCode},
		{"serve", "run the Azure Functions custom handler on FUNCTIONS_CUSTOMHANDLER_PORT", runServe},
		{"pgp-keygen", "create the PGP key pair vendors encrypt seed files to; store it in Key Vault", runPGPKeygen},
		{"rejected", "rejected download NAME: decrypt a file the import kept in seed-rejected", runRejected},
		{"reconcile", "compare Entra ID, Key Vault and the ledger once; write seed-reports/reconcile/{date}.json", runReconcile},
	}
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "oathpipe: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: oathpipe <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'oathpipe <command> -h' for a command's flags.")
}
