package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answers []int
		wantErr bool
		calls   int32
	}{
		{"ok", []int{200}, false, 1},
		{"retried 503 then ok", []int{503, 429, 204}, false, 3},
		{"refused", []int{400}, true, 1},
		{"always down", []int{500, 500, 500}, true, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				i := n.Add(1) - 1
				b, _ := io.ReadAll(r.Body)
				var m map[string]string
				if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &m) != nil || m["text"] != "hello" || len(m) != 1 {
					t.Errorf("request %s %q %s", r.Method, r.Header.Get("Content-Type"), b)
				}
				w.WriteHeader(tc.answers[min(int(i), len(tc.answers)-1)])
			}))
			defer srv.Close()
			w := &Webhook{URL: srv.URL + "/hook/SECRET-TOKEN", Attempts: 3, Wait: time.Millisecond}
			err := w.Notify(context.Background(), "hello")
			if (err != nil) != tc.wantErr || n.Load() != tc.calls {
				t.Errorf("err %v, %d calls; want error %v, %d calls", err, n.Load(), tc.wantErr, tc.calls)
			}
			if err != nil && strings.Contains(err.Error(), "SECRET-TOKEN") {
				t.Errorf("error names the webhook URL: %v", err)
			}
		})
	}
	// Unreachable: the error never holds the URL.
	w := &Webhook{URL: "http://127.0.0.1:1/hook/SECRET-TOKEN", Attempts: 2, Wait: time.Millisecond}
	if err := w.Notify(context.Background(), "hello"); err == nil || strings.Contains(err.Error(), "SECRET-TOKEN") {
		t.Errorf("unreachable: %v", err)
	}
	// Off when unset.
	if err := (&Webhook{}).Notify(context.Background(), "x"); err != nil {
		t.Error(err)
	}
}
