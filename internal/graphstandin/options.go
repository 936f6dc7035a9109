package graphstandin

import "time"

// Options configures a stand-in.
type Options struct {
	Users   []User        // the directory (see LoadUsers)
	Latency time.Duration // added to every request before it is handled

	// Writes (POST, PATCH, DELETE; each item of a bulk request counts) are limited by a token
	// bucket refilled at WriteRate per WritePer, holding at most WriteBurst. Defaults: Graph's
	// documented 3,000 writes per 150 s per app and tenant, and a bucket of one second's worth.
	// A negative WriteRate turns throttling off.
	WriteRate  int
	WritePer   time.Duration
	WriteBurst int
	// TimeScale speeds the write limit up for tests: 10 allows ten times the writes per real
	// second (3,000 per 15 s). Activation codes always use real time (Now). Default 1.
	TimeScale float64

	PageSize int // default page size of list answers; default 100 ($top overrides)
	// SparsePages cuts device listings into pages before $filter applies, as some directory
	// queries do: a filtered answer can then span several pages, some of them empty.
	SparsePages bool
	// AllowReactivation lets an already activated method be activated again. By default the
	// stand-in refuses it (400, "already activated"), as Entra may: its behaviour is undocumented,
	// and a client that resends an activation whose answer was lost must not count on either.
	AllowReactivation bool
	Token             string           // accepted bearer token; default DefaultToken
	Now               func() time.Time // default time.Now

	// Lenient turns off, one by one, what the stand-in does strictly where Microsoft's docs
	// are silent or stricter than a convenient guess (docs/graph.md has the table). The zero
	// value is strict everywhere; AllLenient() is the convenient stand-in of old.
	Lenient Lenient
	// DistinctMethodIDs gives every assignment a method id of its own. By default a user's
	// method id equals the device id, as in every doc example; a client relies on neither.
	DistinctMethodIDs bool
	// OpaqueMessages words every 400 refusal "Invalid request." Graph documents no error codes
	// or messages for these endpoints, so a client must find causes from state.
	OpaqueMessages bool
	// ThrottleEachWrite answers every distinct write (method, path and body) 429 this many
	// times, with Retry-After ThrottleRetryAfter (default 1 s), before carrying it out: the
	// sustained throttling under which a client must resend every write with its body.
	ThrottleEachWrite  int
	ThrottleRetryAfter int
	// HTTP2 serves HTTP/2 as well (Graph does); StartTLS only.
	HTTP2 bool
}

// Lenient switches strict behaviours off. Each field names the convenient behaviour it allows.
type Lenient struct {
	// ReusedCodes accepts a code from a time step that already activated the token. Strict:
	// RFC 6238 §5.2, "The verifier MUST NOT accept the second attempt of the OTP after the
	// successful validation has been issued for the first OTP" — refused like a wrong code.
	ReusedCodes bool
	// Conflict409 answers a duplicate serial on create with 409. Strict: 400, as directory
	// uniqueness errors commonly are (no page documents the answer).
	Conflict409 bool
	// ExactSerials compares serial numbers case-sensitively. Strict: GP7001 and gp7001 are one
	// serial, for duplicates and for $filter.
	ExactSerials bool
	// FlatLists lists inventory devices as bare device objects, as the List page's response
	// section says. Strict: as all three of its examples show, each element is
	// {"@odata.type":"#microsoft.graph.hardwareOathAuthenticationMethod","id":...,"device":{...}}.
	FlatLists bool
	// UnknownProperties ignores body properties the resource does not define. Strict: the
	// resources are openType false, so they are refused (400).
	UnknownProperties bool
	// LooseInterval accepts timeIntervalInSeconds as a string ("30", as the bulk example
	// writes it) or absent. Strict: a required integer.
	LooseInterval bool
	// AnyContentType accepts write bodies without Content-Type: application/json. Strict: 415,
	// as every write page lists the header as required.
	AnyContentType bool
	// AllUserProperties returns every user property without $select. Strict: v1.0 returns
	// only the default set ("returns by default only a subset of the more commonly used
	// properties"): accountEnabled and userType must be selected.
	AllUserProperties bool
	// LooseSecret accepts lower case, spaces and = padding in secretKey. Strict: only A-Z, 2-7.
	LooseSecret bool
	// ExactPaths matches path segments case-sensitively. Strict: case-insensitively, as Graph does.
	ExactPaths bool
}

// AllLenient returns a Lenient with every strict behaviour off.
func AllLenient() Lenient {
	return Lenient{ReusedCodes: true, Conflict409: true, ExactSerials: true, FlatLists: true,
		UnknownProperties: true, LooseInterval: true, AnyContentType: true, AllUserProperties: true,
		LooseSecret: true, ExactPaths: true}
}

// Stats counts what the stand-in has seen.
type Stats struct {
	Requests   int64 // every request
	Writes     int64 // writes admitted by the throttle (bulk items counted one by one)
	Throttled  int64 // 429 answers
	NoAuth     int64 // requests that arrived without an Authorization header
	BadAuth    int64 // requests with a wrong bearer token
	Activation int64 // successful activations
	Gzipped    int64 // requests whose body came gzipped
	// EmptyBodies counts writes that arrived without the body their endpoint needs (a client
	// that resends a request after consuming its body); each is refused with 400.
	EmptyBodies int64
	// ReusedCodes counts activations refused because their code's step had already activated the token.
	ReusedCodes int64
}

// Fault is an injected failure. It matches requests by method and path substring (empty
// matches any) and answers Status, with Graph's error body, Count times. With AfterApply the
// request is carried out first and its answer replaced: the client cannot tell whether it worked.
type Fault struct {
	Method       string
	PathContains string
	Status       int
	AfterApply   bool
	Count        int
	// RetryAfter is the Retry-After (seconds) of an injected 429, 503 or 504; 0 = 1.
	RetryAfter int
}
