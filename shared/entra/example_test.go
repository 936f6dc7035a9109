package entra_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/shared/azauth"
	"github.com/oathpipe/oathpipe/shared/entra"
	"github.com/oathpipe/oathpipe/shared/token"
)

// Provisioning one token: resolve the user, find or create the device, assign it, activate it
// with a code computed from the seed. In Azure, GraphURL comes from OATHPIPE_GRAPH_URL and the
// credential from azauth.Credential.
func Example() {
	users, err := graphstandin.LoadUsers("../../testdata/users.json")
	if err != nil {
		log.Fatal(err)
	}
	graph, err := graphstandin.StartTLS(graphstandin.Options{Users: users})
	if err != nil {
		log.Fatal(err)
	}
	defer graph.Close()

	c, err := entra.New(entra.Options{
		GraphURL:   graph.URL,
		Credential: azauth.StaticToken(graphstandin.DefaultToken),
		HTTPClient: graph.HTTPClient(),
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	seed := token.Seed{Secret: []byte("12345678901234567890"), Hash: token.SHA1, Digits: 6, Period: 30}

	u, err := c.ResolveUser(ctx, "ada.lovelace@contoso.example")
	if err != nil {
		log.Fatal(err)
	}
	d, created, err := c.EnsureDevice(ctx, token.Token{Serial: "60234567", Manufacturer: "Token2", Model: "C302"}, seed)
	if err != nil {
		log.Fatal(err)
	}
	methodID, err := c.Assign(ctx, u.ID, d.ID)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Activate(ctx, u.ID, methodID, seed, time.Time{}); err != nil {
		log.Fatal(err)
	}
	st, _ := graph.Server.DeviceBySerial("60234567")
	fmt.Println(created, st.Status, st.AssignedUPN)

	_, err = c.ResolveUser(ctx, "former.employee@contoso.example")
	fmt.Println(token.KindOf(err))
	// Output:
	// true activated ada.lovelace@contoso.example
	// disabled_user
}
