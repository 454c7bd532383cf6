package rbac

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wid-project/wid/internal/core/resource"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func id(path string) spiffeid.ID { return spiffeid.RequireFromPath(td, path) }

func role(name string, allow, deny []resource.SPIFFEGrant, maxTTL time.Duration) *resource.Role {
	r := &resource.Role{
		Header: resource.Header{Kind: resource.KindRole, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
		Spec: resource.RoleSpec{
			Allow:   resource.RoleConditions{SPIFFE: allow},
			Deny:    resource.RoleConditions{SPIFFE: deny},
			Options: resource.RoleOptions{MaxSVIDTTL: resource.Duration(maxTTL)},
		},
	}
	if err := r.Validate(); err != nil {
		panic(fmt.Sprintf("test role is invalid: %v", err))
	}
	return r
}

// grant builds a grant; each SAN goes to ip_sans if it reads as an IP range.
func grant(path string, sans ...string) resource.SPIFFEGrant {
	g := resource.SPIFFEGrant{Path: path}
	for _, s := range sans {
		if _, err := resource.ParseIPRange(s); err == nil {
			g.IPSANs = append(g.IPSANs, s)
		} else {
			g.DNSSANs = append(g.DNSSANs, s)
		}
	}
	return g
}

func TestCheckSVID(t *testing.T) {
	svcIssuer := role("svc-issuer",
		[]resource.SPIFFEGrant{grant("/svc/*", "foo.example.com", "*.web.example.com", "10.0.0.0/8", "192.168.1.1", "fd00::/8")},
		[]resource.SPIFFEGrant{grant("/svc/admin")}, 0)
	dev := role("dev", []resource.SPIFFEGrant{grant("/dev/**")}, nil, 4*time.Hour)
	broad := role("broad", []resource.SPIFFEGrant{grant("/svc/**")}, nil, 0)
	noAdmin := role("no-admin", nil, []resource.SPIFFEGrant{grant("/svc/admin")}, 0)
	sanDeny := role("san-deny", nil, []resource.SPIFFEGrant{grant("/svc/*", "admin.example.com", "*.internal.example.com", "10.9.0.0/16")}, 0)
	openSvc := role("open", []resource.SPIFFEGrant{grant("/svc/*", "*.example.com", "10.0.0.0/8")}, nil, 0)
	plain := role("plain", []resource.SPIFFEGrant{grant("/svc/*")}, nil, 0)
	webSANs := role("web-sans", []resource.SPIFFEGrant{grant("/svc/web", "b.example.com")}, nil, 0)
	otherSANs := role("other-sans", []resource.SPIFFEGrant{grant("/svc/other", "c.example.com")}, nil, 0)
	short := role("short", []resource.SPIFFEGrant{grant("/dev/*")}, nil, 2*time.Hour)
	noGrants := role("viewer", nil, nil, 0)

	tests := []struct {
		name    string
		roles   []*resource.Role
		req     Request
		allowed bool
		check   string
		role    string
		rule    int
		reason  string // exact when set
		maxTTL  time.Duration
	}{
		{name: "no roles", req: Request{ID: id("/svc/web")}, check: CheckNoRoles, maxTTL: DefaultMaxSVIDTTL,
			reason: "no role grants spiffe://example.org/svc/web: the caller holds no roles, so give it a role that allows the path"},
		{name: "allowed", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), TTL: time.Hour}, allowed: true, role: "svc-issuer", rule: 1,
			reason: `role "svc-issuer" allows spiffe://example.org/svc/web (spec.allow.spiffe[1] path /svc/*)`, maxTTL: DefaultMaxSVIDTTL},
		{name: "denied path", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/admin")}, check: CheckDenied, role: "svc-issuer", rule: 1,
			reason: `role "svc-issuer" denies /svc/admin (spec.deny.spiffe[1] path /svc/admin)`},
		{name: "path not granted", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/other")}, check: CheckPathNotGranted,
			reason: "no role grants spiffe://example.org/other: roles [svc-issuer] allow /svc/*"},
		{name: "star is one segment", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web/api")}, check: CheckPathNotGranted},
		{name: "roles without grants", roles: []*resource.Role{noGrants}, req: Request{ID: id("/svc/web")}, check: CheckPathNotGranted,
			reason: "no role grants spiffe://example.org/svc/web: roles [viewer] allow no SPIFFE paths"},
		{name: "several roles listed", roles: []*resource.Role{svcIssuer, dev}, req: Request{ID: id("/x")}, check: CheckPathNotGranted,
			reason: "no role grants spiffe://example.org/x: roles [svc-issuer dev] allow /svc/*, /dev/**"},
		{name: "no ID", roles: []*resource.Role{svcIssuer}, req: Request{}, check: CheckPathNotGranted, reason: "the request names no SPIFFE ID: give the SPIFFE ID to issue"},

		{name: "exact DNS SAN", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"foo.example.com"}}, allowed: true},
		{name: "DNS SAN ignores case", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"FOO.Example.com"}}, allowed: true},
		{name: "wildcard grant one label", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"a.web.example.com"}}, allowed: true},
		{name: "wildcard grant two labels", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"a.b.web.example.com"}}, check: CheckDNSSANNotGranted, role: "svc-issuer", rule: 1},
		{name: "wildcard grant not the apex", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"web.example.com"}}, check: CheckDNSSANNotGranted},
		{name: "requested wildcard equal to grant", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"*.web.example.com"}}, allowed: true},
		{name: "requested wildcard below grant", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"*.a.web.example.com"}}, check: CheckDNSSANNotGranted},
		{name: "DNS SAN not granted", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"foo.example.com", "evil.com"}}, check: CheckDNSSANNotGranted, role: "svc-issuer", rule: 1,
			reason: `DNS SAN "evil.com" is not granted for /svc/web: role "svc-issuer" allows dns_sans [foo.example.com *.web.example.com]`},
		{name: "grant without SANs allows none", roles: []*resource.Role{plain}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"a.example.com"}}, check: CheckDNSSANNotGranted,
			reason: `DNS SAN "a.example.com" is not granted for /svc/web: role "plain" allows no dns_sans`},
		{name: "SAN from a second role's grant", roles: []*resource.Role{plain, webSANs}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"b.example.com"}}, allowed: true, role: "plain", rule: 1},
		{name: "SAN from a grant for another path", roles: []*resource.Role{plain, webSANs, otherSANs}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"c.example.com"}}, check: CheckDNSSANNotGranted,
			reason: `DNS SAN "c.example.com" is not granted for /svc/web: role "plain" allows no dns_sans, role "web-sans" allows dns_sans [b.example.com]`},

		{name: "IP in CIDR", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), IPSANs: []net.IP{net.ParseIP("10.1.2.3")}}, allowed: true},
		{name: "IPv4 as 4 bytes", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), IPSANs: []net.IP{net.IPv4(10, 1, 2, 3).To4()}}, allowed: true},
		{name: "single IP grant", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), IPSANs: []net.IP{net.ParseIP("192.168.1.1")}}, allowed: true},
		{name: "IPv6 in CIDR", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), IPSANs: []net.IP{net.ParseIP("fd00::1")}}, allowed: true},
		{name: "IP next to single grant", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), IPSANs: []net.IP{net.ParseIP("192.168.1.2")}}, check: CheckIPSANNotGranted, role: "svc-issuer", rule: 1,
			reason: `IP SAN 192.168.1.2 is not granted for /svc/web: role "svc-issuer" allows ip_sans [10.0.0.0/8 192.168.1.1 fd00::/8]`},
		{name: "IPv6 loopback", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), IPSANs: []net.IP{net.ParseIP("::1")}}, check: CheckIPSANNotGranted},
		{name: "garbage IP", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), IPSANs: []net.IP{{1, 2, 3}}}, check: CheckIPSANNotGranted},

		{name: "TTL at role max", roles: []*resource.Role{dev}, req: Request{ID: id("/dev/x"), TTL: 4 * time.Hour}, allowed: true, maxTTL: 4 * time.Hour},
		{name: "TTL over role max", roles: []*resource.Role{dev}, req: Request{ID: id("/dev/x"), TTL: 5 * time.Hour}, check: CheckTTLOverMax, role: "dev", maxTTL: 4 * time.Hour,
			reason: `TTL 5h is over the maximum 4h set by role "dev": ask for 4h or less`},
		{name: "TTL over default", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), TTL: 25 * time.Hour}, check: CheckTTLOverMax, maxTTL: 24 * time.Hour,
			reason: "TTL 25h is over the maximum 24h of any SVID: ask for 24h or less"},
		{name: "smallest max wins", roles: []*resource.Role{dev, short, svcIssuer}, req: Request{ID: id("/dev/x"), TTL: 3 * time.Hour}, check: CheckTTLOverMax, role: "short", maxTTL: 2 * time.Hour},
		{name: "unset max ignored", roles: []*resource.Role{svcIssuer, dev}, req: Request{ID: id("/dev/x"), TTL: time.Hour}, allowed: true, role: "dev", maxTTL: 4 * time.Hour},

		{name: "deny beats allow across roles", roles: []*resource.Role{broad, noAdmin}, req: Request{ID: id("/svc/admin")}, check: CheckDenied, role: "no-admin", rule: 1,
			reason: `role "no-admin" denies /svc/admin (spec.deny.spiffe[1] path /svc/admin)`},
		{name: "deny beats allow in either order", roles: []*resource.Role{noAdmin, broad}, req: Request{ID: id("/svc/admin")}, check: CheckDenied, role: "no-admin"},
		{name: "other paths still allowed", roles: []*resource.Role{broad, noAdmin}, req: Request{ID: id("/svc/admin/x")}, allowed: true, role: "broad"},
		{name: "SAN deny ignores requests without that SAN", roles: []*resource.Role{openSvc, sanDeny}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"web.example.com"}}, allowed: true},
		{name: "SAN deny", roles: []*resource.Role{openSvc, sanDeny}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"web.example.com", "admin.example.com"}}, check: CheckDenied, role: "san-deny", rule: 1,
			reason: `role "san-deny" denies DNS SAN "admin.example.com" for /svc/web (spec.deny.spiffe[1] path /svc/* dns_sans [admin.example.com *.internal.example.com])`},
		{name: "SAN deny catches a covering wildcard", roles: []*resource.Role{openSvc, sanDeny}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"*.example.com"}}, check: CheckDenied, role: "san-deny"},
		{name: "SAN deny by wildcard", roles: []*resource.Role{openSvc, sanDeny}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"db.internal.example.com"}}, check: CheckDenied},
		{name: "IP SAN deny", roles: []*resource.Role{openSvc, sanDeny}, req: Request{ID: id("/svc/web"), IPSANs: []net.IP{net.ParseIP("10.9.1.1")}}, check: CheckDenied, role: "san-deny", rule: 1,
			reason: `role "san-deny" denies IP SAN 10.9.1.1 for /svc/web (spec.deny.spiffe[1] path /svc/* ip_sans [10.9.0.0/16])`},
		{name: "IP outside the denied range", roles: []*resource.Role{openSvc, sanDeny}, req: Request{ID: id("/svc/web"), IPSANs: []net.IP{net.ParseIP("10.8.1.1")}}, allowed: true},

		// Check order: no roles -> deny -> path -> SANs -> TTL.
		{name: "deny before TTL", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/admin"), TTL: 48 * time.Hour}, check: CheckDenied},
		{name: "path before SANs", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/other"), DNSSANs: []string{"evil.com"}}, check: CheckPathNotGranted},
		{name: "DNS before IP", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), DNSSANs: []string{"evil.com"}, IPSANs: []net.IP{net.ParseIP("1.1.1.1")}}, check: CheckDNSSANNotGranted},
		{name: "SANs before TTL", roles: []*resource.Role{svcIssuer}, req: Request{ID: id("/svc/web"), IPSANs: []net.IP{net.ParseIP("1.1.1.1")}, TTL: 48 * time.Hour}, check: CheckIPSANNotGranted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := CheckSVID(tt.roles, tt.req)
			if d.Allowed != tt.allowed || d.Check != tt.check {
				t.Fatalf("CheckSVID = allowed %v check %q (%s), want allowed %v check %q", d.Allowed, d.Check, d.Reason, tt.allowed, tt.check)
			}
			if d.Allowed && d.Check != "" {
				t.Errorf("allowed decision has check %q", d.Check)
			}
			if tt.role != "" && d.Role != tt.role {
				t.Errorf("Role = %q, want %q", d.Role, tt.role)
			}
			if tt.rule != 0 && d.Rule != tt.rule {
				t.Errorf("Rule = %d, want %d", d.Rule, tt.rule)
			}
			if tt.reason != "" && d.Reason != tt.reason {
				t.Errorf("Reason = %q\n           want %q", d.Reason, tt.reason)
			}
			if d.Reason == "" {
				t.Error("decision has no Reason")
			}
			want := tt.maxTTL
			if want == 0 {
				want, _ = maxSVIDTTL(tt.roles)
			}
			if d.MaxTTL != want || d.MaxTTL == 0 {
				t.Errorf("MaxTTL = %v, want %v", d.MaxTTL, want)
			}
			err := d.Err()
			if d.Allowed != (err == nil) {
				t.Errorf("Err() = %v for allowed=%v", err, d.Allowed)
			}
			if err != nil && err.Error() != d.Reason {
				t.Errorf("Err() = %q, want the Reason", err)
			}
		})
	}
}

func BenchmarkCheckSVID(b *testing.B) {
	var roles []*resource.Role
	for r := 0; r < 10; r++ {
		var allow []resource.SPIFFEGrant
		for g := 0; g < 10; g++ {
			allow = append(allow, grant(fmt.Sprintf("/team%d/svc%d/*", r, g), fmt.Sprintf("svc%d.team%d.example.com", g, r), "*.internal.example.com", "10.0.0.0/8"))
		}
		deny := []resource.SPIFFEGrant{grant(fmt.Sprintf("/team%d/svc0/admin", r))}
		roles = append(roles, role(fmt.Sprintf("team-%d", r), allow, deny, 12*time.Hour))
	}
	// The last grant of the last role: every grant is looked at.
	req := Request{
		ID:      id("/team9/svc9/api"),
		DNSSANs: []string{"svc9.team9.example.com", "api.internal.example.com"},
		IPSANs:  []net.IP{net.ParseIP("10.1.2.3")},
		TTL:     time.Hour,
	}
	if d := CheckSVID(roles, req); !d.Allowed {
		b.Fatalf("benchmark request refused: %s", d.Reason)
	}
	b.ReportAllocs()
	for b.Loop() {
		CheckSVID(roles, req)
	}
}
