// Package testkit builds what tests run the real adapters against: the Key Vault and Graph
// stand-ins with the real vault and entra clients (NewStack), the storage adapters and the
// ledger on Azurite (OpenAccount), seed-file builders, envelope fixtures and a scan for leaked
// seeds. It fills the adapters' Options itself; no production package imports it. The in-memory
// fakes of the pipeline's ports are in shared/pipeline/pipelinetest.
package testkit
