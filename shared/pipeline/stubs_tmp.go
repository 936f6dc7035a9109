package pipeline

import (
	"context"

	"github.com/oathpipe/oathpipe/shared/token"
)

var errTODO = token.Errorf(token.KindInternal, "not implemented yet")

func (p *Pipeline) importFile(ctx context.Context, f InboxFile) (*ImportResult, error) {
	return nil, errTODO
}
func (p *Pipeline) provision(ctx context.Context, m ProvisionMessage, n int) (*TokenOutcome, error) {
	return nil, errTODO
}
func (p *Pipeline) recordPoisoned(ctx context.Context, m ProvisionMessage, reason string) error {
	return errTODO
}
func (p *Pipeline) assignToken(ctx context.Context, r AssignRequest) (*Assignment, error) {
	return nil, errTODO
}
func (p *Pipeline) unassignToken(ctx context.Context, serial, caller string) (*Assignment, error) {
	return nil, errTODO
}
func (p *Pipeline) tokenState(ctx context.Context, serial string) (*Assignment, error) {
	return nil, errTODO
}
func (p *Pipeline) importStatus(ctx context.Context, name string) (*ImportStatus, error) {
	return nil, errTODO
}
