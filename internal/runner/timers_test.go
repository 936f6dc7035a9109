package runner

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestScheduleNext(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct{ expr, after, want string }{
		{"0 0 2 * * *", "2026-12-01T20:00:00Z", "2026-12-02T02:00:00Z"},   // oathpipe's nightly default
		{"0 0 2 * * *", "2026-12-02T02:00:00Z", "2026-12-03T02:00:00Z"},   // strictly after
		{"*/5 * * * * *", "2026-12-01T10:00:03Z", "2026-12-01T10:00:05Z"}, // every 5 s
		{"0 */15 * * * *", "2026-12-01T10:59:00Z", "2026-12-01T11:00:00Z"},
		{"0 30 9 * * MON-FRI", "2026-12-05T12:00:00Z", "2026-12-07T09:30:00Z"}, // Saturday → Monday
		{"0 30 9 * * 1-5", "2026-12-05T12:00:00Z", "2026-12-07T09:30:00Z"},
		{"0 0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"}, // next leap day
		{"0 0 12 1 JAN,jul *", "2026-08-01T00:00:00Z", "2027-01-01T12:00:00Z"},
		{"0 0 0 13 * FRI", "2026-01-01T00:00:00Z", "2026-02-13T00:00:00Z"}, // both day fields: both must match (NCrontab)
		{"5/20 * * * * *", "2026-12-01T10:00:06Z", "2026-12-01T10:00:25Z"},
	} {
		s, err := parseSchedule(tc.expr)
		if err != nil {
			t.Fatalf("%q: %v", tc.expr, err)
		}
		got, err := s.next(at(tc.after))
		if err != nil || !got.Equal(at(tc.want)) {
			t.Errorf("%q after %s: %v %v, want %s", tc.expr, tc.after, got.Format(time.RFC3339), err, tc.want)
		}
	}
	for _, bad := range []string{"", "0 0 2 * *", "0 0 2 * * * *", "61 * * * * *", "* * 24 * * *", "* * * 0 * *", "* * * * 13 *", "* * * * * 7", "*/0 * * * * *", "5-1 * * * * *", "00:05:00", "x * * * * *"} {
		if _, err := parseSchedule(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if s, _ := parseSchedule("0 0 0 30 2 *"); s != nil {
		if _, err := s.next(at("2026-01-01T00:00:00Z")); err == nil {
			t.Error("30 February has an occurrence")
		}
	}
}

func TestResolveSetting(t *testing.T) {
	env := map[string]string{"SCHED": "0 0 2 * * *"}
	get := func(k string) string { return env[k] }
	if v, err := resolveSetting("%SCHED%", get); err != nil || v != env["SCHED"] {
		t.Errorf("%%SCHED%%: %q %v", v, err)
	}
	if v, err := resolveSetting("0 * * * * *", get); err != nil || v != "0 * * * * *" {
		t.Errorf("literal: %q %v", v, err)
	}
	if _, err := resolveSetting("%MISSING%", get); err == nil || !strings.Contains(err.Error(), "MISSING") {
		t.Errorf("missing setting: %v", err)
	}
}

// TestTimerTriggerHostShape: the runner fires a timer function on its schedule with the host's
// payload (Data.<name> the TimerInfo as Newtonsoft writes it, Metadata only sys), and a failed
// invocation is not retried: the next occurrence comes as usual.
func TestTimerTriggerHostShape(t *testing.T) {
	var mu sync.Mutex
	var got []Payload
	fired := make(chan struct{}, 16)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p Payload
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &p); err != nil {
			t.Errorf("payload: %v", err)
		}
		mu.Lock()
		got = append(got, p)
		n := len(got)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if n == 1 {
			w.WriteHeader(http.StatusInternalServerError) // the first fails: not retried
		}
		_, _ = w.Write([]byte(`{"Outputs":{},"Logs":[]}`))
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	fn := Function{Name: "Reconcile", Bindings: []Binding{{Name: "timer", Type: TimerTrigger, Direction: "in", Schedule: "%EVERY_SECOND%"}}}
	var deliveries []Delivery
	r, err := New(Options{
		Functions: []Function{fn}, HandlerURL: srv.URL, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		AppSetting: func(name string) string { return map[string]string{"EVERY_SECOND": "* * * * * *"}[name] },
		Observe:    func(d Delivery) { mu.Lock(); deliveries = append(deliveries, d); mu.Unlock(); fired <- struct{}{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	for range 2 {
		select {
		case <-fired:
		case <-ctx.Done():
			t.Fatal("the timer did not fire twice within 10 s")
		}
	}
	cancel()
	<-done

	mu.Lock()
	defer mu.Unlock()
	first, second := got[0], got[1]
	info, ok := first.Data["timer"].(map[string]any)
	if !ok {
		t.Fatalf("Data.timer is %T, want the TimerInfo object", first.Data["timer"])
	}
	if info["IsPastDue"] != false {
		t.Errorf("IsPastDue %v", info["IsPastDue"])
	}
	if sch, _ := info["Schedule"].(map[string]any); sch["AdjustForDST"] != true {
		t.Errorf("Schedule %v", info["Schedule"])
	}
	st, _ := info["ScheduleStatus"].(map[string]any)
	for _, k := range []string{"Last", "Next", "LastUpdated"} {
		if _, ok := st[k].(string); !ok {
			t.Errorf("ScheduleStatus.%s missing: %v", k, st)
		}
	}
	if len(first.Metadata) != 1 || first.Metadata["sys"] == nil {
		t.Errorf("Metadata %v, want only sys", first.Metadata)
	}
	// The second occurrence names the first as Last.
	st2, _ := second.Data["timer"].(map[string]any)["ScheduleStatus"].(map[string]any)
	if st2["Last"] != st["LastUpdated"] {
		t.Errorf("second Last %v, want the first occurrence %v", st2["Last"], st["LastUpdated"])
	}
	if len(deliveries) < 2 || deliveries[0].Err == nil || deliveries[0].Trigger != TimerTrigger || deliveries[1].Err != nil {
		t.Errorf("deliveries %+v: want a failed one, then the next occurrence, not a retry", deliveries)
	}
}

// TestTimerScheduleRefused: as the host, the runner refuses a function whose schedule names an
// unset setting or does not parse.
func TestTimerScheduleRefused(t *testing.T) {
	for _, sched := range []string{"%UNSET%", "0 0 2 * *"} {
		fn := Function{Name: "Reconcile", Bindings: []Binding{{Name: "timer", Type: TimerTrigger, Direction: "in", Schedule: sched}}}
		if _, err := New(Options{Functions: []Function{fn}, HandlerURL: "http://127.0.0.1:1"}); err == nil {
			t.Errorf("schedule %q accepted", sched)
		}
	}
}
