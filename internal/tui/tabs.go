package tui

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"
	authv1 "github.com/wid-project/wid/api/auth/v1"
)

func cut(s string, w int) string { return ansi.Truncate(s, w, "…") }

func eventTime(e *authv1.AuditEvent) time.Time {
	if e.Time == nil {
		return time.Time{}
	}
	return e.Time.AsTime()
}

// svidEvent says whether e belongs on the SVIDs tab.
func svidEvent(e *authv1.AuditEvent) bool {
	switch e.Type {
	case "svid.x509.issued", "svid.jwt.issued", "svid.wit.issued", "svid.denied":
		return true
	}
	return false
}

func denied(e *authv1.AuditEvent) bool { return e.Type == "svid.denied" || e.Outcome == "denied" }

// asker is who asked: the actor, and the workload when an agent asked for one.
func asker(e *authv1.AuditEvent) string {
	s := e.Actor
	a := e.Attributes
	var w []string
	if v := a["workload.unix.pid"]; v != "" {
		w = append(w, "pid "+v)
	}
	if v := a["workload.unix.uid"]; v != "" {
		w = append(w, "uid "+v)
	}
	if v := a["workload.unix.path"]; v != "" {
		w = append(w, v)
	}
	if len(w) > 0 {
		s += " (" + strings.Join(w, " ") + ")"
	}
	return s
}

// shortID drops the scheme and trust domain, which the header shows, from
// a SPIFFE ID; the detail pane keeps the full ID.
func shortID(id string) string {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return id
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[i:]
	}
	return id
}

func svidType(e *authv1.AuditEvent) string {
	if e.SvidType != "" {
		return e.SvidType
	}
	if p := strings.Split(e.Type, "."); len(p) == 3 && p[0] == "svid" {
		return p[1]
	}
	return "-"
}

// lifeBar shows how much of an SVID's life remains; the last 20% is warning-coloured.
func lifeBar(e *authv1.AuditEvent, now time.Time, st styles, w int) string {
	if e.TtlSeconds <= 0 {
		return "-"
	}
	ttl := time.Duration(e.TtlSeconds) * time.Second
	left := eventTime(e).Add(ttl).Sub(now)
	label := fmtTTL(ttl)
	if left <= 0 {
		return st.dim.Render(label + " expired")
	}
	frac := float64(left) / float64(ttl)
	n := min(int(frac*float64(w)+0.5), w)
	bar := strings.Repeat("█", n) + strings.Repeat("░", w-n)
	if frac <= 0.2 {
		return label + " " + st.warn.Render(bar) + "!"
	}
	return label + " " + st.ok.Render(bar)
}

func fmtTTL(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

func svidColumns(mk *marks) []column {
	return []column{
		{title: "TIME", width: 8, cell: func(e *authv1.AuditEvent, _ time.Time, _ styles) string {
			return eventTime(e).UTC().Format("15:04:05")
		}},
		{title: "SPIFFE ID", flex: 3, cell: func(e *authv1.AuditEvent, _ time.Time, _ styles) string { return shortID(e.SpiffeId) }},
		{title: "TYPE", width: 4, cell: func(e *authv1.AuditEvent, _ time.Time, _ styles) string { return svidType(e) }},
		{title: "ASKED BY", flex: 2, cell: func(e *authv1.AuditEvent, _ time.Time, _ styles) string { return asker(e) }},
		{title: "TTL LEFT · SERIAL/JTI", flex: 3, cell: func(e *authv1.AuditEvent, now time.Time, st styles) string {
			if denied(e) {
				return st.denied.Render("DENIED") + " " + e.Reason
			}
			// A revoked certificate's remaining life no longer matters.
			if mk.isRevoked(e) {
				return st.denied.Render("REVOKED") + " " + e.Serial
			}
			cell := lifeBar(e, now, st, 10) + " " + e.Serial
			if mk.lockOn(e, now) != nil {
				return st.warn.Render("LOCKED") + " " + cell
			}
			return cell
		}},
	}
}

func attestEvent(e *authv1.AuditEvent) bool { return e.Type == "workload.attest" }

func short(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func attestColumns() []column {
	attr := func(k string) func(*authv1.AuditEvent, time.Time, styles) string {
		return func(e *authv1.AuditEvent, _ time.Time, _ styles) string { return e.Attributes[k] }
	}
	return []column{
		{title: "TIME", width: 8, cell: func(e *authv1.AuditEvent, _ time.Time, _ styles) string {
			return eventTime(e).UTC().Format("15:04:05")
		}},
		{title: "HOST", width: 10, cell: func(e *authv1.AuditEvent, _ time.Time, _ styles) string { return e.Host }},
		{title: "PID", width: 6, cell: attr("workload.unix.pid")},
		{title: "UID", width: 5, cell: attr("workload.unix.uid")},
		{title: "PATH / POD", flex: 2, cell: func(e *authv1.AuditEvent, _ time.Time, _ styles) string {
			// A Kubernetes workload is named by its pod; the binary comes after.
			a := e.Attributes
			if ns, pod := a["workload.kubernetes.namespace"], a["workload.kubernetes.pod_name"]; ns != "" || pod != "" {
				s := ns + "/" + pod
				if sa := a["workload.kubernetes.service_account"]; sa != "" {
					s += " sa:" + sa
				}
				return s + " " + a["workload.unix.path"]
			}
			return a["workload.unix.path"]
		}},
		{title: "SHA256", width: 8, cell: func(e *authv1.AuditEvent, _ time.Time, _ styles) string {
			return short(e.Attributes["workload.unix.sha256"], 8)
		}},
		{title: "IDENTITIES / FAILED CONDITION", flex: 3, cell: func(e *authv1.AuditEvent, _ time.Time, st styles) string {
			if ids := e.Details["spiffe_ids"]; ids != "" {
				var short []string
				for _, id := range strings.Split(ids, ",") {
					short = append(short, shortID(strings.TrimSpace(id)))
				}
				return strings.Join(short, ", ")
			}
			return st.denied.Render("none") + " " + e.Reason
		}},
	}
}

// bundleView renders the trust bundle: each CA of the trust domain with its
// rotation phase, sequence and keys when the caller may list CAs, else the
// bundle's X.509 authorities and JWT keys.
func bundleView(b *authv1.GetBundleResponse, cas []*authv1.CAInfo, now time.Time, st styles, w, h int) string {
	if b == nil {
		return st.dim.Render("waiting for the bundle…")
	}
	var lines []string
	lines = append(lines, st.title.Render(fmt.Sprintf("Trust domain %s · bundle sequence %d", b.TrustDomain, b.Sequence)), "")
	if len(cas) > 0 {
		return clip(append(lines, caLines(cas, now, st)...), w, h)
	}
	lines = append(lines, st.header.Render("X.509 authorities"))
	rest := b.X509Pem
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			lines = append(lines, st.denied.Render("unreadable certificate: "+err.Error()))
			continue
		}
		sum := sha256.Sum256(c.Raw)
		state := st.ok.Render("valid")
		if now.After(c.NotAfter) {
			state = st.denied.Render("expired")
		}
		lines = append(lines,
			fmt.Sprintf("  sha256:%s  %s", short(hex.EncodeToString(sum[:]), 16), keyAlg(c)),
			fmt.Sprintf("    not before %s  not after %s  %s", c.NotBefore.UTC().Format(time.DateTime), c.NotAfter.UTC().Format(time.DateTime), state))
	}
	lines = append(lines, "", st.header.Render("JWT keys"))
	var jwks struct {
		Keys []struct {
			Kid, Kty, Crv, Alg, Use string
		} `json:"keys"`
	}
	_ = json.Unmarshal(b.Jwks, &jwks)
	n := 0
	for _, k := range jwks.Keys {
		if k.Use != "jwt-svid" {
			continue
		}
		n++
		alg := k.Kty
		if k.Crv != "" {
			alg += " " + k.Crv
		}
		lines = append(lines, fmt.Sprintf("  kid %s  %s", k.Kid, alg))
	}
	if n == 0 {
		lines = append(lines, st.dim.Render("  none"))
	}
	return clip(lines, w, h)
}

// caLines shows each CA: its phase (and where an automatic rotation goes
// next), sequence, and every key with its state.
func caLines(cas []*authv1.CAInfo, now time.Time, st styles) []string {
	var lines []string
	for _, c := range cas {
		phase := c.Phase
		style := st.ok
		if c.Phase != "standby" {
			style = st.warn
			phase = c.Phase + " (" + c.Mode + ")"
			if c.NextPhase != "" {
				phase += " -> " + c.NextPhase
				if c.NextStepAt != nil {
					phase += " in " + c.NextStepAt.AsTime().Sub(now).Round(time.Second).String()
				}
			}
		}
		lines = append(lines, st.header.Render(fmt.Sprintf("%-6s", c.Type))+"  "+style.Render(phase)+st.dim.Render(fmt.Sprintf("  seq %d", c.Sequence)))
		for _, k := range c.Keys {
			if k.State == "retired" {
				continue
			}
			name := short(strings.TrimPrefix(k.Fingerprint, "sha256:"), 16)
			if k.Kid != "" {
				name += " kid " + short(k.Kid, 12)
			}
			state := st.ok.Render("active    ")
			if k.State != "active" {
				state = st.warn.Render(fmt.Sprintf("%-10s", k.State))
			}
			lines = append(lines, fmt.Sprintf("  %s %s  %s  until %s", state, name, k.Algorithm, k.NotAfter.AsTime().UTC().Format(time.DateOnly)))
		}
	}
	return lines
}

func keyAlg(c *x509.Certificate) string {
	return c.PublicKeyAlgorithm.String() + " / " + c.SignatureAlgorithm.String()
}

// clip fits lines into w x h.
func clip(lines []string, w, h int) string {
	if len(lines) > h {
		lines = lines[:h]
	}
	for i := range lines {
		lines[i] = fit(lines[i], w)
	}
	for len(lines) < h {
		lines = append(lines, "")
	}
	return strings.Join(lines, "\n")
}
