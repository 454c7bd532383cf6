// Package audit is wid's append-only, hash-chained event log: every
// issuance, denial, join, login, resource change and rotation step. Events
// are made durable in batches (group commit) before Emit returns. It must
// never record private keys or join-token secrets.
package audit

import "time"

// Event types.
const (
	TypeX509SVIDIssued = "svid.x509.issued"
	TypeJWTSVIDIssued  = "svid.jwt.issued"
	TypeWITSVIDIssued  = "svid.wit.issued"
	TypeSVIDDenied     = "svid.denied"
	// TypeX509SVIDRevoked: an X509-SVID's serial was revoked.
	TypeX509SVIDRevoked = "svid.x509.revoked"
	TypeJoin            = "bot.join"
	TypeJoinDenied      = "bot.join.denied"
	TypeBotCertRenewed  = "bot.cert.renewed"
	// TypeUserCertRenewed: a login moved to a rotated user CA.
	TypeUserCertRenewed = "user.cert.renewed"
	// TypeLogin: a user logged in and got a user certificate.
	TypeLogin = "user.login"
	// TypeLoginDenied: a login was refused; the reason says why.
	TypeLoginDenied     = "user.login.denied"
	TypeResourceCreated = "resource.created"
	TypeResourceUpdated = "resource.updated"
	TypeResourceDeleted = "resource.deleted"
	TypeAccessDenied    = "access.denied"
	TypeTrustDomainInit = "trust_domain.created"
	TypeAuthStarted     = "auth.started"
	TypeCARotation      = "ca.rotation"
	// TypeCAImport: an upstream CA was put above the spiffe CA, or a
	// signed intermediate imported (CSR mode); refusals too.
	TypeCAImport = "ca.import"
	// TypeCACSR: a CSR for a new spiffe CA intermediate key was made.
	TypeCACSR = "ca.csr"
	// TypeFederationRefreshed: a foreign trust domain's bundle changed.
	TypeFederationRefreshed = "federation.bundle.refreshed"
	// TypeFederationRefreshFailed: fetching a foreign bundle failed or the
	// bundle was refused; the last good one is kept.
	TypeFederationRefreshFailed = "federation.bundle.refresh_failed"
	// TypeAgentConnect: an agent opened its state stream (WatchAgent).
	TypeAgentConnect = "agent.connect"
	// TypeWorkloadAttest: an agent attested a workload and says what it got.
	TypeWorkloadAttest = "workload.attest"
	// TypeDenialsDropped: refusals not recorded one by one because their
	// source sent too many; the details count them per source.
	TypeDenialsDropped = "audit.denials.dropped"
)

// Types is every event type above, so that a client can refuse a filter on
// a type that no event has (it would match nothing, silently).
var Types = []string{
	TypeX509SVIDIssued, TypeJWTSVIDIssued, TypeWITSVIDIssued, TypeSVIDDenied,
	TypeJoin, TypeJoinDenied, TypeBotCertRenewed, TypeUserCertRenewed,
	TypeLogin, TypeLoginDenied, TypeResourceCreated, TypeResourceUpdated,
	TypeResourceDeleted, TypeAccessDenied, TypeTrustDomainInit, TypeAuthStarted,
	TypeCARotation, TypeCAImport, TypeCACSR, TypeAgentConnect, TypeWorkloadAttest, TypeDenialsDropped,
	TypeFederationRefreshed, TypeFederationRefreshFailed,
	TypeX509SVIDRevoked,
}

// DetailCertificate is the details key of an X509-SVID issuance's leaf
// certificate, standard base64 of its DER. Certificates are public (the
// peer shows them in every handshake), so the log may hold them; with them
// an auditor, or the dashboard's detail pane, sees exactly what was issued.
const DetailCertificate = "certificate"

// Outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeDenied  = "denied"
	OutcomeError   = "error"
)

// Event is one audit record. JSON field names are stable: they are what
// `widctl audit ls --format json` prints and what the hash covers.
type Event struct {
	Seq        int64             `json:"seq"`
	Time       time.Time         `json:"time"`
	Type       string            `json:"type"`
	Actor      string            `json:"actor"`
	Host       string            `json:"host,omitempty"`
	RemoteAddr string            `json:"remote_addr,omitempty"`
	SPIFFEID   string            `json:"spiffe_id,omitempty"`
	SVIDType   string            `json:"svid_type,omitempty"`
	Serial     string            `json:"serial,omitempty"`
	TTLSeconds int64             `json:"ttl_seconds,omitempty"`
	DNSSANs    []string          `json:"dns_sans,omitempty"`
	IPSANs     []string          `json:"ip_sans,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Outcome    string            `json:"outcome"`
	Reason     string            `json:"reason,omitempty"`
	Resource   string            `json:"resource,omitempty"`
	Details    map[string]string `json:"details,omitempty"`
	PrevHash   string            `json:"prev_hash,omitempty"`
	Hash       string            `json:"hash,omitempty"`
}
