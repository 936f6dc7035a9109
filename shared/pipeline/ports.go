// Package pipeline holds oathpipe's flows — import a seed file, provision a token, (re)assign a
// token — written against small interfaces (the seed vault, the directory, the ledger, the
// queue, the blob store) so they run the same in a function, in the CLI and in tests. It
// imports no Azure SDK package: main.go wires the implementations in.
package pipeline

import (
	"context"

	"github.com/oathpipe/oathpipe/shared/token"
)

// SeedVault stores seeds at rest (Key Vault in production: package vault).
type SeedVault interface {
	// PutSeed stores seed for t. The same seed again is a no-op (created=false); a different seed
	// under the same token is a *token.Error of KindConflict naming the serial, and nothing is
	// overwritten. importID is recorded as a tag.
	PutSeed(ctx context.Context, t token.Token, seed token.Seed, importID string) (created bool, err error)
	// GetSeed returns the seed stored for the token (KindNotFound when there is none).
	GetSeed(ctx context.Context, manufacturer, serial string) (token.Seed, error)
}

// Directory is Entra ID through Microsoft Graph (package entra).
type Directory interface {
	// ResolveUser finds a user by UPN or object id; guests are KindGuest, disabled accounts KindDisabled.
	ResolveUser(ctx context.Context, upnOrID string) (token.User, error)
	// FindDevice finds a device in the inventory by serial (KindNotFound when absent).
	FindDevice(ctx context.Context, serial string) (token.Device, error)
	// EnsureDevice finds the device by serial, else creates it (unassigned) from t and seed.
	EnsureDevice(ctx context.Context, t token.Token, seed token.Seed) (d token.Device, created bool, err error)
	// Assign assigns the device to the user and returns the user's method id for it.
	// Assigning a device the user already holds returns its existing method id.
	Assign(ctx context.Context, userID, deviceID string) (methodID string, err error)
	// Activate activates the user's method with a code computed from seed right before sending
	// (waiting for the next step when fewer than ~3 s remain; a retry uses a fresh code).
	Activate(ctx context.Context, userID, methodID string, seed token.Seed) error
	// ActivateWithCode activates with a code read from the device, sent as is.
	ActivateWithCode(ctx context.Context, userID, methodID, code string) error
	// Unassign removes the user's method; the device returns to available.
	Unassign(ctx context.Context, userID, methodID string) error
	// ListUserMethods lists the user's hardware OATH methods.
	ListUserMethods(ctx context.Context, userID string) ([]token.Method, error)
}
