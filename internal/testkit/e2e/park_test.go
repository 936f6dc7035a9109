package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/oathpipe/oathpipe/handlers"
	"github.com/oathpipe/oathpipe/internal/testkit"
	"github.com/oathpipe/oathpipe/shared/ledger"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// downLedger is the real ledger with token writes and reads failing, as during a Table outage.
type downLedger struct{ *ledger.Ledger }

var tableDown = &token.Error{Kind: token.KindTransient, Message: "the table service is unavailable"}

func (downLedger) GetToken(context.Context, string, int) (pipeline.TokenRecord, error) {
	return pipeline.TokenRecord{}, tableDown
}
func (downLedger) SetTokenOutcome(context.Context, string, int, pipeline.Outcome) (bool, error) {
	return false, tableDown
}
func (downLedger) GetImport(context.Context, string) (pipeline.ImportRecord, error) {
	return pipeline.ImportRecord{}, tableDown
}

// TestProvisionFailedParksOnAzurite: a message on token-provisioning-poison whose recording
// fails on all five deliveries is answered 500 four times (retried) and then parked in
// token-parked on the fifth — 200, the message text kept whole — never lost: the host gives the
// -poison queue no poison queue of its own.
func TestProvisionFailedParksOnAzurite(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	ctx := context.Background()
	a := testkit.OpenAccount(t, testkit.StartAzurite(t))
	stack := testkit.NewStack(t, testkit.Options{})
	p := stack.Pipeline(downLedger{a.Ledger}, a.Provision, a.Blobs, nil)
	srv := handlers.New(handlers.Options{Pipeline: p, Parker: a.Blobs, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	front := httptest.NewServer(srv)
	defer front.Close()

	msg := `{"importId":"imp-0123456789abcdef01234567","fileName":"a.csv","line":7,"serialNumber":"PARK-1","manufacturer":"Token2","userPrincipalName":"ada.lovelace@contoso.example"}`
	for dq := 1; dq <= 5; dq++ {
		enc, _ := json.Marshal(msg)
		body, _ := json.Marshal(map[string]any{"Data": map[string]any{"job": string(enc)},
			"Metadata": map[string]any{"DequeueCount": strconv.Itoa(dq), "Id": `"m-1"`}})
		resp, err := http.Post(front.URL+"/"+handlers.FuncProvisionFailed, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusInternalServerError
		if dq == 5 {
			want = http.StatusOK
		}
		if resp.StatusCode != want {
			t.Fatalf("delivery %d answered %d; want %d", dq, resp.StatusCode, want)
		}
		parked, err := a.Blobs.Read(ctx, pipeline.ParkedContainer, "imp-0123456789abcdef01234567/0000000007.json")
		switch {
		case dq < 5 && token.KindOf(err) != token.KindNotFound:
			t.Fatalf("delivery %d: parked early (%v)", dq, err)
		case dq == 5 && (err != nil || string(parked) != msg):
			t.Fatalf("parked blob %q, %v; want the message whole", parked, err)
		}
	}
	// Parking again (a repeated last delivery) is fine and keeps the first copy.
	if err := a.Blobs.Park(ctx, "imp-0123456789abcdef01234567/0000000007.json", []byte("other")); err != nil {
		t.Fatal(err)
	}
	parked, _ := a.Blobs.Read(ctx, pipeline.ParkedContainer, "imp-0123456789abcdef01234567/0000000007.json")
	if string(parked) != msg {
		t.Fatalf("parked blob overwritten: %q", parked)
	}
}
