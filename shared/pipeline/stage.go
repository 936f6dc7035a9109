package pipeline

// Stage is how far an import has come. Stages only move forward (see Before); the stage tells a
// repeated delivery what is already done.
type Stage string

// Import stages, in order (stageOrder).
const (
	StageStarted  Stage = "started"  // BeginImport ran; nothing else is known to be done
	StageVaulted  Stage = "vaulted"  // every row is written to the ledger and Pending counted; seeds are being stored
	StageEnqueued Stage = "enqueued" // every valid seed is confirmed in the vault and its message sent
	StageDone     Stage = "done"     // the source blob has left the inbox
)

// stageOrder is the one place the order of the stages is written.
var stageOrder = [...]Stage{StageStarted, StageVaulted, StageEnqueued, StageDone}

// rank is s's place in stageOrder, from 1; 0 for an unknown stage (the empty one included).
func (s Stage) rank() int {
	for i, x := range stageOrder {
		if x == s {
			return i + 1
		}
	}
	return 0
}

// Known reports whether s is one of the import stages.
func (s Stage) Known() bool { return s.rank() > 0 }

// Before reports whether s comes before t. An unknown stage comes before every known one.
func (s Stage) Before(t Stage) bool { return s.rank() < t.rank() }

// RowStatus is the status of one row of an import in the ledger (a token, or a rejected line).
// A row moves forward only: rejected and failed rows stay as they are until the HTTP API
// changes the token; vaulted rows become available, assigned, activated or failed when their
// provisioning message is handled.
type RowStatus string

// Row statuses.
const (
	StatusRejected  RowStatus = "rejected"  // the row failed validation; nothing of it is stored
	StatusVaulted   RowStatus = "vaulted"   // accepted: its seed goes to the vault, then its message to the queue
	StatusQueued    RowStatus = "queued"    // shown for vaulted rows once the import's messages are sent
	StatusAvailable RowStatus = "available" // no UPN: the device is in the Entra inventory, unassigned
	StatusAssigned  RowStatus = "assigned"  // assigned, not activated (OATHPIPE_ACTIVATION=none)
	StatusActivated RowStatus = "activated" // assigned and activated
	StatusFailed    RowStatus = "failed"    // a permanent failure; Reason says why
	// StatusRetired is a row whose token was retired: its device is deleted from Entra and its
	// seed soft-deleted in the vault.
	StatusRetired RowStatus = "retired"
)

// Settled reports whether s is final for its import (no message pending).
func (s RowStatus) Settled() bool {
	switch s {
	case StatusRejected, StatusAvailable, StatusAssigned, StatusActivated, StatusFailed, StatusRetired:
		return true
	}
	return false
}

// PendingDelta is what a row moving from status s to next does to its import's Pending count
// (once the import is sealed): -1 when it settles, +1 when it stops being settled, else 0.
func (s RowStatus) PendingDelta(next RowStatus) int {
	switch {
	case !s.Settled() && next.Settled():
		return -1
	case s.Settled() && !next.Settled():
		return +1
	}
	return 0
}
