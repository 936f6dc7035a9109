package vault

import (
	"fmt"
	"net/http"
	"time"

	"github.com/oathpipe/oathpipe/shared/azerr"
	"github.com/oathpipe/oathpipe/shared/token"
)

// Key Vault's inner error codes that matter here.
const (
	codeDeletedButRecoverable = "ObjectIsDeletedButRecoverable"
	codeBeingDeleted          = "ObjectIsBeingDeleted"
	codeBeingRecovered        = "ObjectIsBeingRecovered"
	codeSecretDisabled        = "SecretDisabled"
)

// keyVault is Key Vault for azerr.Classify, which decides every Azure answer's kind; refine
// adds what only Key Vault says.
var keyVault = azerr.Service{Name: "Key Vault", Role: "Key Vault Secrets Officer", Refine: refine}

// classify turns a failed Key Vault call into a *token.Error. op says what was being done
// ("store the seed of Token2 serial 123"). Messages come from Key Vault's error answers, which
// never hold a secret value.
func classify(op string, err error) error { return azerr.Classify(op, keyVault, err) }

// refine words Key Vault's answers with Key Vault's own message and reclassifies the answers
// only Key Vault gives: a secret being deleted or recovered is transient (it settles in
// seconds), and a disabled secret is a conflict (an operator disabled it), not a missing role.
func refine(a azerr.Answer, e *token.Error) {
	msg := a.Message
	if msg == "" {
		msg = fmt.Sprintf("Key Vault answered %d %s", a.Status, a.Code)
	}
	e.Message = msg
	switch {
	case a.Status == http.StatusTooManyRequests:
		e.Message = "Key Vault is throttling requests: " + msg
	case a.Status == http.StatusConflict && (a.Is(codeBeingDeleted) || a.Is(codeBeingRecovered)):
		e.Kind, e.RetryAfter = token.KindTransient, 2*time.Second
	case a.Status == http.StatusForbidden && a.Is(codeSecretDisabled):
		e.Kind = token.KindConflict
		e.Message = "the secret is disabled in Key Vault (an operator disabled it)"
	case e.Kind == token.KindForbidden:
		e.Message = "the app's identity may not use Key Vault secrets (needs the Key Vault Secrets Officer role on the vault): " + msg
	}
}

// answerIs reports whether err is Key Vault's answer with status and (inner) code.
func answerIs(err error, status int, code string) bool {
	a, ok := azerr.AnswerOf(err)
	return ok && a.Status == status && a.Is(code)
}

// answerStatus is the HTTP status of Key Vault's answer in err (0 when err carries none).
func answerStatus(err error) int {
	a, _ := azerr.AnswerOf(err)
	return a.Status
}
