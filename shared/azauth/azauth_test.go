package azauth

import (
	"context"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

func TestCredential(t *testing.T) {
	c, err := Credential(Identity{OfflineToken: "tok", ClientID: "ignored"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.GetToken(context.Background(), policy.TokenRequestOptions{})
	if err != nil || tok.Token != "tok" {
		t.Fatalf("offline credential gave %q, %v", tok.Token, err)
	}
	c, err = Credential(Identity{ClientID: "00000000-0000-0000-0000-000000000001"})
	if _, ok := c.(*azidentity.ManagedIdentityCredential); err != nil || !ok {
		t.Fatalf("with a client id: %T, %v; want a managed identity credential", c, err)
	}
}

func TestHTTPClient(t *testing.T) {
	if _, err := HTTPClient(""); err != nil {
		t.Fatal(err)
	}
	if _, err := HTTPClient("/nonexistent/ca.pem"); err == nil {
		t.Fatal("a missing CA bundle was accepted")
	}
}
