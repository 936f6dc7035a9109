package pipeline

// SetChunkHook makes p call fn with the number of rows of each chunk an import holds at once
// (the rows written to the ledger together, or the records whose seeds are stored together).
func SetChunkHook(p *Pipeline, fn func(n int)) { p.onChunk = fn }
