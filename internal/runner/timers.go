package runner

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/oathpipe/oathpipe/shared/logctx"
)

// TimerTrigger is the timer trigger type, delivered on its NCRONTAB schedule.
const TimerTrigger = "timerTrigger"

// schedule is a parsed six-field NCRONTAB expression: {second} {minute} {hour} {day} {month}
// {day of week}, the form the Functions timer trigger takes. Each field is a set of the values
// it allows.
type schedule struct {
	expr                            string
	sec, min, hour, dom, month, dow [64]bool
	anyDOM, anyDOW                  bool
}

var (
	monthNames = map[string]int{"JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6, "JUL": 7, "AUG": 8, "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12}
	dayNames   = map[string]int{"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
)

// parseSchedule reads a six-field NCRONTAB expression (`*`, `a`, `a-b`, `*/n`, `a-b/n`, lists
// with `,`; month and day names in three letters). The TimeSpan form (`hh:mm:ss`) is for App
// Service plans only, which Flex Consumption is not, so the runner refuses it.
func parseSchedule(expr string) (*schedule, error) {
	f := strings.Fields(expr)
	if len(f) != 6 {
		return nil, fmt.Errorf("schedule %q: want 6 NCRONTAB fields ({second} {minute} {hour} {day} {month} {day-of-week}), found %d", expr, len(f))
	}
	s := &schedule{expr: expr}
	for i, spec := range []struct {
		set      *[64]bool
		lo, hi   int
		names    map[string]int
		wildcard *bool
	}{
		{&s.sec, 0, 59, nil, nil}, {&s.min, 0, 59, nil, nil}, {&s.hour, 0, 23, nil, nil},
		{&s.dom, 1, 31, nil, &s.anyDOM}, {&s.month, 1, 12, monthNames, nil}, {&s.dow, 0, 6, dayNames, &s.anyDOW},
	} {
		if err := parseField(f[i], spec.lo, spec.hi, spec.names, spec.set); err != nil {
			return nil, fmt.Errorf("schedule %q field %d (%s): %w", expr, i+1, f[i], err)
		}
		if spec.wildcard != nil {
			*spec.wildcard = f[i] == "*" || f[i] == "?"
		}
	}
	return s, nil
}

func parseField(text string, lo, hi int, names map[string]int, set *[64]bool) error {
	for _, part := range strings.Split(text, ",") {
		step := 1
		if rng, st, ok := strings.Cut(part, "/"); ok {
			n, err := strconv.Atoi(st)
			if err != nil || n <= 0 {
				return fmt.Errorf("bad step %q", st)
			}
			part, step = rng, n
		}
		from, to := lo, hi
		switch {
		case part == "*" || part == "?":
		case strings.Contains(part, "-"):
			a, b, _ := strings.Cut(part, "-")
			var err error
			if from, err = fieldValue(a, names); err != nil {
				return err
			}
			if to, err = fieldValue(b, names); err != nil {
				return err
			}
		default:
			v, err := fieldValue(part, names)
			if err != nil {
				return err
			}
			from, to = v, v
			if step > 1 { // "a/n": from a to the end
				to = hi
			}
		}
		if from < lo || to > hi || from > to {
			return fmt.Errorf("%d-%d is outside %d-%d", from, to, lo, hi)
		}
		for v := from; v <= to; v += step {
			set[v] = true
		}
	}
	return nil
}

func fieldValue(s string, names map[string]int) (int, error) {
	if v, ok := names[strings.ToUpper(s)]; ok {
		return v, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("bad value %q", s)
	}
	return v, nil
}

// dayMatches: when both day fields are restricted, NCrontab requires both (unlike Vixie cron's
// either); a wildcard field matches every day.
func (s *schedule) dayMatches(t time.Time) bool {
	return (s.anyDOM || s.dom[t.Day()]) && (s.anyDOW || s.dow[int(t.Weekday())])
}

// next is the first occurrence strictly after t (in t's location; the runner uses UTC, as the
// host does unless WEBSITE_TIME_ZONE is set). It steps by the largest unit that cannot match,
// so a yearly schedule is found in a few thousand steps.
func (s *schedule) next(t time.Time) (time.Time, error) {
	t = t.Truncate(time.Second).Add(time.Second)
	limit := t.AddDate(5, 0, 0)
	for t.Before(limit) {
		switch {
		case !s.month[int(t.Month())]:
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, t.Location())
		case !s.dayMatches(t):
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, t.Location())
		case !s.hour[t.Hour()]:
			t = t.Truncate(time.Hour).Add(time.Hour)
		case !s.min[t.Minute()]:
			t = t.Truncate(time.Minute).Add(time.Minute)
		case !s.sec[t.Second()]:
			t = t.Add(time.Second)
		default:
			return t, nil
		}
	}
	return time.Time{}, errors.New("schedule " + s.expr + " has no occurrence within five years")
}

// resolveSetting replaces a whole-value %NAME% with the app setting NAME, as the host's
// INameResolver does for binding properties.
func resolveSetting(v string, setting func(string) string) (string, error) {
	if len(v) > 2 && strings.HasPrefix(v, "%") && strings.HasSuffix(v, "%") {
		name := v[1 : len(v)-1]
		val := ""
		if setting != nil {
			val = setting(name)
		}
		if strings.TrimSpace(val) == "" {
			return "", fmt.Errorf("app setting %s (named by %s) is not set", name, v)
		}
		return val, nil
	}
	return v, nil
}

// timerSchedule resolves a timer binding's schedule (%NAME% from the app settings) and parses it.
func timerSchedule(v string, setting func(string) string) (*schedule, error) {
	expr, err := resolveSetting(v, setting)
	if err != nil {
		return nil, err
	}
	return parseSchedule(expr)
}

// timerWatch fires one timer-triggered function on its schedule.
type timerWatch struct {
	r     *Runner
	fn    Function
	trig  Binding
	sched *schedule
	now   func() time.Time
}

// run invokes the function at each occurrence until ctx ends. A failed invocation is logged and
// not retried: the timer trigger has no retries of its own (only a function retry policy,
// which oathpipe does not set); the next occurrence comes as usual.
func (w *timerWatch) run(ctx context.Context) {
	last := time.Time{}
	if w.trig.RunOnStartup {
		w.fire(ctx, last, w.now())
	}
	for {
		now := w.now()
		at, err := w.sched.next(now)
		if err != nil {
			w.r.log.Error("timer stopped", logctx.Function, w.fn.Name, logctx.Error, err)
			return
		}
		if !sleep(ctx, at.Sub(now)) {
			return
		}
		w.fire(ctx, last, at)
		last = at
	}
}

// fire sends one invocation in the host's shape: Data.<name> is the TimerInfo object as
// Newtonsoft writes it (PascalCase: Schedule, ScheduleStatus {Last, Next, LastUpdated},
// IsPastDue), Metadata holds only sys.
func (w *timerWatch) fire(ctx context.Context, last, at time.Time) {
	start := time.Now()
	next, _ := w.sched.next(at)
	info := map[string]any{
		"Schedule":  map[string]any{"AdjustForDST": true},
		"IsPastDue": false,
	}
	if w.trig.UseMonitor == nil || *w.trig.UseMonitor {
		status := map[string]any{"Next": hostTime(next), "LastUpdated": hostTime(at)}
		if !last.IsZero() {
			status["Last"] = hostTime(last)
		} else {
			status["Last"] = hostTime(time.Time{})
		}
		info["ScheduleStatus"] = status
	}
	p := Payload{Data: map[string]any{w.trig.Name: info}, Metadata: map[string]any{"sys": sysData(w.fn.Name, at)}}
	ictx, cancel := context.WithTimeout(ctx, w.r.host.FunctionTimeout)
	_, err := w.r.Invoke(ictx, w.fn.Name, p)
	cancel()
	if ctx.Err() != nil {
		return
	}
	w.r.report(Delivery{Function: w.fn.Name, Trigger: TimerTrigger, Key: hostTime(at), Err: err, Duration: time.Since(start)})
}
