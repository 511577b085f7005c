package limits

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// ClientIP is the address r came from: the socket's peer, unless that peer
// is in a trusted prefix; then the rightmost X-Forwarded-For address that is
// not trusted (each trusted proxy appends the address it saw, so everything
// left of the first untrusted entry was written by the client and is not
// believed); if every entry is trusted, the leftmost. No X-Forwarded-For,
// or an entry that does not parse before an untrusted one is found, gives the
// socket's address. Entries may carry a port ("1.2.3.4:5", "[::1]:5"); empty
// entries are skipped. (RFC 7239's Forwarded header is not read.) IPv4-mapped IPv6 addresses are reported as IPv4, and
// zones are dropped.
//
// The result is the zero Addr only if r.RemoteAddr does not parse (never
// for a request net/http served).
func ClientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer, _ := ParseAddr(r.RemoteAddr)
	if !peer.IsValid() || !contains(trusted, peer) {
		return peer
	}
	values := r.Header.Values("X-Forwarded-For")
	last := peer
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for v != "" {
			var elem string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				v, elem = v[:j], v[j+1:]
			} else {
				v, elem = "", v
			}
			elem = strings.TrimSpace(elem)
			if elem == "" {
				continue
			}
			ip, err := ParseAddr(elem)
			if err != nil {
				return peer
			}
			if !contains(trusted, ip) {
				return ip
			}
			last = ip
		}
	}
	return last
}

// ParseAddr parses an address with or without a port ("1.2.3.4",
// "1.2.3.4:80", "::1", "[::1]", "[::1]:80"), unmapping IPv4-in-IPv6 and
// dropping any zone.
func ParseAddr(s string) (netip.Addr, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), nil
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, errNotIP
	}
	return ip.Unmap().WithZone(""), nil
}

var errNotIP = errors.New("not an IP address")

func contains(prefixes []netip.Prefix, ip netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// ParsePrefixes parses a comma-separated list of CIDRs or single addresses
// (a single address is its own /32 or /128). IPv4-mapped prefixes are
// unmapped, as ClientIP unmaps addresses. Empty entries are skipped.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if strings.Contains(e, "/") {
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR (10.0.0.0/8) or an address", e)
			}
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			out = append(out, p.Masked())
			continue
		}
		ip, err := netip.ParseAddr(e)
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Errorf("%q is not a CIDR (10.0.0.0/8) or an address", e)
		}
		ip = ip.Unmap()
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out, nil
}
