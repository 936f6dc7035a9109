package devstack

import "context"

// What the tests do to the app process, as the Functions host would: stop it, crash it, start
// it again. The stack itself only starts it (start) and restarts it when it exits (supervise).

// StartApp starts `oathpipe serve` and the runner (after StopApp or KillApp).
func (s *Stack) StartApp(ctx context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	return s.startApp(ctx)
}

// Restarts counts the times the app was restarted after exiting on its own.
func (s *Stack) Restarts() int {
	s.life.Lock()
	defer s.life.Unlock()
	return s.restarts
}

// StopApp stops the runner (queue messages in flight become visible again) and then the app
// with SIGKILL, as the Functions host does.
func (s *Stack) StopApp() { s.stopApp(false) }

// KillApp kills the app with SIGKILL first, as a crashed instance, then stops the runner: the
// invocations in flight fail and are retried after RetryDelay.
func (s *Stack) KillApp() { s.stopApp(true) }

func (s *Stack) stopApp(crash bool) {
	s.life.Lock()
	defer s.life.Unlock()
	s.stopAppLocked(crash)
}

// AppPID is the process id of the running `oathpipe serve`, or 0.
func (s *Stack) AppPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.app == nil {
		return 0
	}
	return s.app.cmd.Process.Pid
}
