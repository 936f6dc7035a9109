package azurite

import (
	"context"
	"net"
	"strconv"
	"syscall"
	"testing"
)

func TestStartStop(t *testing.T) {
	s, err := Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pid := s.Pid()
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(s.TablePort))
	if err != nil {
		t.Fatalf("table port: %v", err)
	}
	c.Close()
	s.Stop()
	if err := syscall.Kill(-pid, 0); err == nil {
		t.Fatalf("azurite process group %d still alive after Stop", pid)
	}
}
