package ledger

import (
	"errors"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/oathpipe/oathpipe/shared/azerr"
)

// classify turns a Table storage failure into a *token.Error the pipeline can act on.
func classify(op string, err error) error { return azerr.Classify(op, tableStorage, err) }

var tableStorage = azerr.Service{Name: "table storage", Role: "Storage Table Data Contributor"}

// isNotFound reports whether err is Table storage's 404 (entity or table missing).
func isNotFound(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

// isExists reports whether err is "entity/table already exists".
func isExists(err error) bool {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	return re.StatusCode == http.StatusConflict &&
		(re.ErrorCode == string(aztables.EntityAlreadyExists) || re.ErrorCode == string(aztables.TableAlreadyExists) || re.ErrorCode == "")
}

// isLostRace reports whether err says another writer got there first: a 412 on a conditional
// update, or a 409 on an insert. For an entity group transaction the service answers 202 with
// the failed operation's status inside the multipart body, so the body is read too.
func isLostRace(err error) bool {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	switch re.StatusCode {
	case http.StatusPreconditionFailed, http.StatusConflict:
		return true
	case http.StatusAccepted, http.StatusOK, http.StatusNoContent:
		if re.RawResponse == nil {
			return false
		}
		body, perr := runtime.Payload(re.RawResponse)
		if perr != nil {
			return false
		}
		s := string(body)
		return strings.Contains(s, "UpdateConditionNotSatisfied") || strings.Contains(s, "EntityAlreadyExists") ||
			strings.Contains(s, " 412 ") || strings.Contains(s, " 409 ")
	}
	return false
}
