package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/shared/logctx"
)

// offlineEnv is a complete, valid configuration whose endpoints are all closed loopback ports:
// `serve` must start with it, since it makes no network call before listening.
func offlineEnv(t testing.TB, port int) map[string]string {
	return map[string]string{
		"FUNCTIONS_CUSTOMHANDLER_PORT": strconv.Itoa(port),
		"SeedStorage":                  "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;",
		"OATHPIPE_KEYVAULT_URL":        "https://127.0.0.1:9/",
		"OATHPIPE_GRAPH_URL":           "https://127.0.0.1:9",
		"OATHPIPE_OFFLINE_TOKEN":       "test-token",
		"OATHPIPE_LOG_LEVEL":           "debug",
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestServeBadSettingsExitNamingTheSetting(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  map[string]string
		mention []string
	}{
		{"nothing set", nil, []string{"FUNCTIONS_CUSTOMHANDLER_PORT", "OATHPIPE_KEYVAULT_URL", "SeedStorage__blobServiceUri"}},
		{"bad budget", map[string]string{"OATHPIPE_HTTP_BUDGET": "forever"}, []string{"OATHPIPE_HTTP_BUDGET"}},
		{"bad port", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "http"}, []string{"FUNCTIONS_CUSTOMHANDLER_PORT"}},
		{"bad activation", map[string]string{"OATHPIPE_ACTIVATION": "sometimes"}, []string{"OATHPIPE_ACTIVATION"}},
		{"missing CA file", map[string]string{"OATHPIPE_CA_FILE": "/nonexistent/ca.pem"}, []string{"OATHPIPE_CA_FILE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			if tc.change != nil {
				env = offlineEnv(t, 7071)
				for k, v := range tc.change {
					env[k] = v
				}
			}
			var stderr bytes.Buffer
			code := serve(context.Background(), func(k string) string { return env[k] }, io.Discard, &stderr, nil)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			for _, m := range tc.mention {
				if !strings.Contains(stderr.String(), m) {
					t.Errorf("stderr does not name %s:\n%s", m, stderr.String())
				}
			}
		})
	}
}

func TestServeAnswersHostAndShutsDown(t *testing.T) {
	port := freePort(t)
	env := offlineEnv(t, port)
	env["OATHPIPE_REQUIRED_ROLE"] = "Tokens.Assign"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan int, 1)
	var stdout, stderr syncBuffer
	go func() { done <- serve(ctx, func(k string) string { return env[k] }, &stdout, &stderr, ready) }()
	var addr string
	select {
	case addr = <-ready:
	case code := <-done:
		t.Fatalf("serve exited %d: %s", code, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not start")
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	if want := "127.0.0.1:" + strconv.Itoa(port); addr != want {
		t.Errorf("listening on %s, want %s (loopback only: the host dials 127.0.0.1)", addr, want)
	}

	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET / = %d", resp.StatusCode)
	}

	// An HTTP invocation the role check refuses: answered without any upstream call.
	payload := `{"Data":{"req":{"Url":"https://x/api/tokens/1/assignment","Method":"GET","Params":{"serial":"1"},"Headers":{}}},"Metadata":{}}`
	resp, err = http.Post(base+"/TokenAssignment", "application/json", strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var answer struct {
		Outputs struct {
			Res struct {
				StatusCode int `json:"statusCode"`
			} `json:"res"`
		}
	}
	if err := json.Unmarshal(body, &answer); err != nil || resp.StatusCode != 200 || answer.Outputs.Res.StatusCode != 403 ||
		resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("TokenAssignment answer %d %q: %s (%v)", resp.StatusCode, resp.Header.Get("Content-Type"), body, err)
	}

	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit %d after shutdown: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	if !strings.Contains(stdout.String(), `"msg":"oathpipe serve listening"`) {
		t.Errorf("no JSON start log line on stdout:\n%s", stdout.String())
	}
}

// TestServeCommandExitCodes runs `oathpipe serve` through the command dispatch.
func TestServeCommandExitCodes(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"serve", "-h"}, io.Discard, &stderr); code != exitOK {
		t.Errorf("serve -h exit %d", code)
	}
	if code := run([]string{"serve", "extra"}, io.Discard, &stderr); code != exitUsage {
		t.Errorf("serve extra exit %d", code)
	}
}

// BenchmarkServeStart measures settings + wiring + listen: the host waits at most 60 s (Flex
// 30 s) for the port, and the goal is well under a second.
func BenchmarkServeStart(b *testing.B) {
	for b.Loop() {
		port := freePort(b)
		env := offlineEnv(b, port)
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan string, 1)
		done := make(chan int, 1)
		go func() { done <- serve(ctx, func(k string) string { return env[k] }, io.Discard, io.Discard, ready) }()
		select {
		case <-ready:
		case code := <-done:
			b.Fatalf("serve exited %d", code)
		}
		cancel()
		<-done
	}
}

// syncBuffer is a bytes.Buffer safe for the server goroutine and the test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestLogStreams: the host records every stderr line of a custom handler as an Error (unless it
// says "warn"), so records below WARN go to stdout and only WARN and ERROR to stderr.
func TestLogStreams(t *testing.T) {
	var out, errOut bytes.Buffer
	log := newLogger(&out, &errOut, "debug").With("function", "ImportSeeds")
	log.Debug("d")
	log.Info("i")
	log.Warn("w")
	log.Error("e")
	if o := out.String(); !strings.Contains(o, `"msg":"d"`) || !strings.Contains(o, `"msg":"i"`) || strings.Contains(o, `"msg":"w"`) || strings.Contains(o, `"msg":"e"`) {
		t.Errorf("stdout:\n%s", o)
	}
	e := errOut.String()
	if strings.Contains(e, `"msg":"i"`) || strings.Contains(e, `"msg":"d"`) || !strings.Contains(e, `"level":"WARN"`) || !strings.Contains(e, `"msg":"e"`) {
		t.Errorf("stderr:\n%s", e)
	}
	if !strings.Contains(e, `"function":"ImportSeeds"`) || !strings.Contains(out.String(), `"function":"ImportSeeds"`) {
		t.Errorf("attributes lost on one stream")
	}
	// The logctx handler is installed: ids carried by the context reach both streams.
	ctx := logctx.WithInvocation(context.Background(), "inv-1")
	log.InfoContext(ctx, "c")
	log.WarnContext(ctx, "cw")
	lineOf := func(stream, msg string) string {
		for _, l := range strings.Split(stream, "\n") {
			if strings.Contains(l, `"msg":"`+msg+`"`) {
				return l
			}
		}
		return ""
	}
	if !strings.Contains(lineOf(out.String(), "c"), `"invocationId":"inv-1"`) ||
		!strings.Contains(lineOf(errOut.String(), "cw"), `"invocationId":"inv-1"`) {
		t.Errorf("the context's invocation id is not logged:\n%s\n%s", out.String(), errOut.String())
	}
	quiet := newLogger(&out, &errOut, "warn")
	if quiet.Enabled(context.Background(), slog.LevelInfo) || !quiet.Enabled(context.Background(), slog.LevelWarn) {
		t.Errorf("level not honoured")
	}
}
