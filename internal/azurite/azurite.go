// Package azurite starts the Azurite storage emulator installed by the project's package.json
// (npm ci) on loopback, on free ports, with in-memory persistence, for tests and the local stack.
package azurite

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Well-known development account of the storage emulator (public, documented by Microsoft).
const (
	Account = "devstoreaccount1"
	Key     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Server is a running Azurite.
type Server struct {
	BlobPort, QueuePort, TablePort int
	cmd                            *exec.Cmd
	done                           chan struct{}
}

// BlobURL, QueueURL and TableURL are the service endpoints.
func (s *Server) BlobURL() string { return fmt.Sprintf("http://127.0.0.1:%d/%s", s.BlobPort, Account) }
func (s *Server) QueueURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/%s", s.QueuePort, Account)
}
func (s *Server) TableURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/%s", s.TablePort, Account)
}

// ConnectionString is the full connection string (azblob does not parse UseDevelopmentStorage=true).
func (s *Server) ConnectionString() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;QueueEndpoint=%s;TableEndpoint=%s;",
		Account, Key, s.BlobURL(), s.QueueURL(), s.TableURL())
}

// Binary finds node_modules/.bin/azurite by walking up from the working directory.
func Binary() (string, error) {
	if p := os.Getenv("OATHPIPE_AZURITE"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "node_modules", ".bin", "azurite")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("azurite not found in node_modules/.bin: run `npm ci` in the project root")
		}
		dir = parent
	}
}

// Start starts Azurite and waits until its three services accept connections. Stop it with Stop.
func Start(ctx context.Context) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		ports, err := freePorts(3)
		if err != nil {
			return nil, err
		}
		s := &Server{BlobPort: ports[0], QueuePort: ports[1], TablePort: ports[2], done: make(chan struct{})}
		s.cmd = exec.Command(bin, "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--inMemoryPersistence",
			"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(s.BlobPort),
			"--queueHost", "127.0.0.1", "--queuePort", strconv.Itoa(s.QueuePort),
			"--tableHost", "127.0.0.1", "--tablePort", strconv.Itoa(s.TablePort))
		s.cmd.Stdout, s.cmd.Stderr = os.Stderr, os.Stderr
		// Its own process group, so Stop ends node and anything it spawned.
		s.cmd.SysProcAttr = procAttr()
		if err := s.cmd.Start(); err != nil {
			return nil, fmt.Errorf("start azurite: %w", err)
		}
		go func() { _ = s.cmd.Wait(); close(s.done) }()
		if lastErr = s.wait(ctx); lastErr == nil {
			return s, nil
		}
		s.Stop()
	}
	return nil, fmt.Errorf("start azurite: %w", lastErr)
}

func (s *Server) wait(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range []int{s.BlobPort, s.QueuePort, s.TablePort} {
		for {
			c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-s.done:
				return errors.New("azurite exited during start")
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("azurite did not listen on port %d within 30s", p)
			}
		}
	}
	return nil
}

// Stop ends Azurite and waits for it to exit.
func (s *Server) Stop() {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

// Pid is the process id of the Azurite process.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
