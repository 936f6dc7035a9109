package pipeline

import (
	"errors"
	"fmt"
	"testing"

	"github.com/oathpipe/oathpipe/shared/token"
)

func TestReasonOf(t *testing.T) {
	guest := &token.Error{Kind: token.KindGuest, Op: "resolve user pat@contoso.example",
		Message: "pat@contoso.example is a guest account; assign the token to a member account."}
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("resolve user: %w", guest), "pat@contoso.example is a guest account; assign the token to a member account."},
		{&token.Error{Kind: token.KindForbidden, Op: "create device", Message: "the app lacks Policy.ReadWrite.AuthenticationMethod", RequestID: "r-9"},
			"the app lacks Policy.ReadWrite.AuthenticationMethod (request-id r-9)"},
		{&token.Error{Kind: token.KindInternal, Op: "create device", Err: errors.New("boom")}, "create device: boom"},
		{errors.New("plain"), "plain"},
	}
	for _, tt := range tests {
		if got := reasonOf(tt.err); got != tt.want {
			t.Errorf("reasonOf(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
