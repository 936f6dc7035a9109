package pipeline

import "testing"

func TestStageOrder(t *testing.T) {
	order := []Stage{"", StageStarted, StageVaulted, StageEnqueued, StageDone}
	for i, a := range order {
		for j, b := range order {
			if got, want := a.Before(b), i < j; got != want {
				t.Errorf("%q.Before(%q) = %v, want %v", a, b, got, want)
			}
		}
	}
	for _, c := range []struct {
		s    Stage
		want bool
	}{{StageStarted, true}, {StageDone, true}, {"", false}, {"sideways", false}, {"Done", false}} {
		if c.s.Known() != c.want {
			t.Errorf("%q.Known() = %v", c.s, !c.want)
		}
	}
	if Stage("sideways").Before(StageStarted) != true || StageStarted.Before("sideways") {
		t.Error("an unknown stage must come before every known one")
	}
}

func TestRowStatusCounts(t *testing.T) {
	settled := map[RowStatus]bool{
		StatusRejected: true, StatusVaulted: false, StatusQueued: false, StatusAvailable: true,
		StatusAssigned: true, StatusActivated: true, StatusFailed: true, StatusRetired: true, "": false, "sideways": false,
	}
	for s, want := range settled {
		if s.Settled() != want {
			t.Errorf("%q.Settled() = %v, want %v", s, !want, want)
		}
	}
	for _, c := range []struct {
		from, to RowStatus
		want     int
	}{
		{StatusVaulted, StatusActivated, -1}, {StatusQueued, StatusFailed, -1}, {StatusFailed, StatusVaulted, +1},
		{StatusActivated, StatusAvailable, 0}, {StatusVaulted, StatusQueued, 0}, {StatusRetired, StatusRetired, 0},
	} {
		if got := c.from.PendingDelta(c.to); got != c.want {
			t.Errorf("%q → %q: PendingDelta %d, want %d", c.from, c.to, got, c.want)
		}
	}
}
