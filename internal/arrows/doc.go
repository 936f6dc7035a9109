// Package arrows holds the tests that keep the package graph and the size of functions as
// docs/architecture.md describes them: arrows_test.go checks which package may import which,
// size_test.go that no production function grows past what a reader can hold. It has no code
// of its own.
package arrows
