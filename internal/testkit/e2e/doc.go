// Package e2e holds the end-to-end test of the storage adapters and the ledger under the real
// pipeline (Azurite, and the Key Vault and Graph stand-ins). It is a package of its own so that
// the storage and ledger unit tests build without the Graph SDK, and it lives beside the kit it
// is built from, away from the production packages.
package e2e
