-- Audit and reports (issue 3): refused device handshakes counted per hour, CA and reason (one
-- upserted row each, never one per attempt), and a lookup of audit rows by request id (the
-- router records a generic row for a mutating request unless its handler recorded one).

CREATE INDEX audit_logs_request_id ON audit_logs (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX audit_logs_org_inserted_at ON audit_logs (org_id, inserted_at);

CREATE TABLE handshake_refusals (
    -- Start of the hour (UTC) the refusals happened in.
    hour              TIMESTAMPTZ NOT NULL,
    -- The registered CA the refused chain ended at; 0 when unknown (no registered CA).
    ca_certificate_id BIGINT NOT NULL DEFAULT 0,
    -- The org of that CA; NULL when the CA is unknown.
    org_id            BIGINT REFERENCES orgs (id) ON DELETE CASCADE,
    -- Why: the TLS verification status (unknown_ca, expired, revoked, ...) or the upgrade
    -- refusal (crl_missing, not_registered, device_disabled, ...).
    reason            TEXT NOT NULL,
    -- Where it was refused: 'tls' (handshake alert) or 'upgrade' (HTTP 401/403).
    stage             TEXT NOT NULL CHECK (stage IN ('tls', 'upgrade')),
    count             BIGINT NOT NULL DEFAULT 0,
    -- A few distinct leaf common names and serials seen (capped), for reports.
    common_names      TEXT[] NOT NULL DEFAULT '{}',
    serials           TEXT[] NOT NULL DEFAULT '{}',
    first_at          TIMESTAMPTZ NOT NULL,
    last_at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (hour, ca_certificate_id, reason, stage)
);
CREATE INDEX handshake_refusals_org ON handshake_refusals (org_id, hour DESC);
