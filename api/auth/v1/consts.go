package authv1

// SignerWarmingUp is what an agent reports in ReportAgentStatusRequest's
// signed_by while it has just started: workloads that followed its previous
// process may still serve SVIDs it cannot see yet, so the auth service holds
// back rotation steps that would drop a key.
const SignerWarmingUp = "warming-up"
