package pipeline

// Names of the storage resources oathpipe keeps its work in. function.json and infra/ use the
// same names (tests in handlers and infra/ check they agree); the adapters, the handlers and
// the commands all take them from here.
const (
	InboxContainer    = "seed-inbox"                // vendor files are dropped here
	ReportsContainer  = "seed-reports"              // {name}.json and {name}.failures.csv
	RejectedContainer = "seed-rejected"             // files with any failed row, kept whole (they hold seeds)
	ProvisionQueue    = "token-provisioning"        // one message per token, never a seed
	PoisonQueue       = "token-provisioning-poison" // the host moves exhausted messages here
	ImportsQueue      = "seed-imports"              // Event Grid BlobCreated events of seed-inbox, and import continuations
	ParkedContainer   = "token-parked"              // ProvisionFailed parks a message it still cannot record here
	EventsDeadLetter  = "seed-events-deadletter"    // Event Grid dead-letters undeliverable events here (infra/)
	LedgerTable       = "oathpipeledger"            // one partition per import, one entity per token
	AuditTable        = "oathpipeaudit"             // one entity per change made through the HTTP API
)
