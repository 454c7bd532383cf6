package resource

import (
	"fmt"
	"net/netip"
	"strings"
)

// ValidateDNSSAN checks a DNS SAN as roles and workload identities write it:
// a DNS name (web.example.com) or a wildcard over exactly one leftmost label
// (*.example.com). Letters are compared without regard to case.
func ValidateDNSSAN(s string) error {
	if problem := dnsProblem(s); problem != "" {
		return fmt.Errorf("DNS SAN %s %s", quote(s), problem)
	}
	return nil
}

// dnsProblem says what is wrong with a DNS SAN, as the end of a sentence
// that starts with the name, or returns "".
func dnsProblem(s string) string {
	switch {
	case s == "":
		return "is empty: write a DNS name such as web.example.com"
	case len(s) > 253:
		return fmt.Sprintf("is %d bytes long, over the 253 bytes a DNS name may have: shorten it", len(s))
	case s == "*":
		return "would allow every name: list the names, or write *.example.com for one label under a domain"
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return "is an IP address: put it in ip_sans instead"
	}
	name := strings.TrimPrefix(s, "*.")
	if strings.Contains(name, "*") {
		return "has a * that is not the whole leftmost label: write *.example.com to allow one label, or the full name"
	}
	if strings.HasSuffix(name, ".") {
		return "ends with \".\": remove the trailing dot"
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return "has an empty label: remove the extra \".\""
		}
		if len(label) > 63 {
			return fmt.Sprintf("has the label %s, longer than the 63 bytes a DNS label may have: shorten it", quote(label))
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Sprintf("has the label %q, which starts or ends with \"-\": DNS labels start and end with a letter or digit", label)
		}
		for _, r := range label {
			if !isDNSChar(r) {
				return fmt.Sprintf("has the character %q: DNS names use only letters, digits, '-' and '.'", r)
			}
		}
	}
	return ""
}

func isDNSChar(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
		return true
	}
	return false
}

// ParseIPRange reads an ip_sans entry of a role grant: a CIDR (10.0.0.0/8,
// fd00::/8) or a single address, which stands for a /32 or /128.
func ParseIPRange(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("IP range %s is not a CIDR: write it like 10.0.0.0/8 or fd00::/8", quote(s))
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, fmt.Errorf("IP range %s is an IPv4 range written as IPv6: write it in IPv4 form, like 10.0.0.0/8", quote(s))
		}
		if m := p.Masked(); m != p {
			return netip.Prefix{}, fmt.Errorf("IP range %s has bits set after the prefix length: write %s", quote(s), m)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("IP SAN %s is neither an IP address nor a CIDR: write it like 10.1.2.3 or 10.0.0.0/8", quote(s))
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("IP SAN %s has a zone, which certificates cannot carry: write it without %%%s", quote(s), a.Zone())
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
