// Package loopback decides whether an endpoint is on this machine: the one rule for where a
// bearer token may go over plain HTTP, where the offline credential of the local stand-ins may
// be sent, and where Key Vault's challenge-resource check is relaxed. It imports only the
// standard library, so every adapter and the settings can share it.
package loopback

import (
	"net"
	"net/url"
	"strings"
)

// URL reports whether u's host is localhost or a loopback address.
func URL(u string) bool {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return false
	}
	return Host(p.Hostname())
}

// Host reports whether host (no port) is localhost or a loopback address.
func Host(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// PlainHTTP reports whether u is a plain-HTTP URL on loopback: the only place an Azure SDK
// client may send a bearer token without TLS (Azurite, the local stand-ins).
func PlainHTTP(u string) bool { return strings.HasPrefix(u, "http://") && URL(u) }
