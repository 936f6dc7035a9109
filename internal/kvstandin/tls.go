package kvstandin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http/httptest"
	"time"
)

// Running is a stand-in serving HTTPS.
type Running struct {
	URL    string // https://127.0.0.1:port, the vault URL to give the client
	CAPEM  []byte // the server's self-signed certificate, PEM: trust it (OATHPIPE_CA_FILE)
	Server *Server
	ts     *httptest.Server
}

// Close stops the server.
func (r *Running) Close() { r.ts.Close() }

// StartTLS serves a new stand-in over TLS on 127.0.0.1 on a free port.
func StartTLS(opts Options) (*Running, error) { return Listen("127.0.0.1:0", opts) }

// Listen serves a new stand-in over TLS on addr (host:port) with a fresh self-signed
// certificate for 127.0.0.1, ::1 and localhost.
func Listen(addr string, opts Options) (*Running, error) {
	cert, certPEM, err := selfSigned()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("key vault stand-in: listen on %s: %w", addr, err)
	}
	srv := New(opts)
	ts := httptest.NewUnstartedServer(srv)
	_ = ts.Listener.Close()
	ts.Listener = ln
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	ts.StartTLS()
	return &Running{URL: ts.URL, CAPEM: certPEM, Server: srv, ts: ts}, nil
}

func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("key vault stand-in: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("key vault stand-in: certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "oathpipe Key Vault stand-in", Organization: []string{"oathpipe local"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("key vault stand-in: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("key vault stand-in: parse certificate: %w", err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pemBytes, nil
}
