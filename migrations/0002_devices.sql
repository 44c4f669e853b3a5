-- Devices: registered CAs (with just-in-time provisioning profiles), devices, device
-- certificates, device connections and node heartbeats.

-- A CA certificate an org registered (proof of possession checked by the API). Device
-- certificates chain to one of these; the TLS handshake trusts the active ones.
CREATE TABLE ca_certificates (
    id               BIGSERIAL PRIMARY KEY,
    org_id           BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    serial           TEXT NOT NULL,                 -- decimal, as NervesHub stores it
    ski              TEXT NOT NULL,                 -- upper-case hex
    aki              TEXT,                          -- upper-case hex, NULL when absent
    subject          TEXT NOT NULL DEFAULT '',
    fingerprint      TEXT NOT NULL,                 -- upper-case hex SHA-1 of the DER
    not_before       TIMESTAMPTZ NOT NULL,
    not_after        TIMESTAMPTZ NOT NULL,
    der              BYTEA NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    active           BOOLEAN NOT NULL DEFAULT true,
    check_expiration BOOLEAN NOT NULL DEFAULT false,
    -- JITP profile: NULL product = no just-in-time provisioning.
    jitp_product_id  BIGINT REFERENCES products (id) ON DELETE SET NULL,
    jitp_tags        TEXT[] NOT NULL DEFAULT '{}',
    jitp_description TEXT NOT NULL DEFAULT '',
    last_used_at     TIMESTAMPTZ,
    inserted_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- One certificate is registered once, by one org.
CREATE UNIQUE INDEX ca_certificates_fingerprint_key ON ca_certificates (fingerprint);
CREATE UNIQUE INDEX ca_certificates_org_id_serial_key ON ca_certificates (org_id, serial);
CREATE INDEX ca_certificates_ski ON ca_certificates (ski);
CREATE INDEX ca_certificates_jitp_product_id ON ca_certificates (jitp_product_id);

CREATE TABLE devices (
    id                             BIGSERIAL PRIMARY KEY,
    org_id                         BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    product_id                     BIGINT NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    identifier                     TEXT NOT NULL,
    description                    TEXT NOT NULL DEFAULT '',
    tags                           TEXT[] NOT NULL DEFAULT '{}',
    updates_enabled                BOOLEAN NOT NULL DEFAULT true,
    updates_blocked_until          TIMESTAMPTZ,
    -- Refused at connection (HTTP 403) while set.
    disabled                       BOOLEAN NOT NULL DEFAULT false,
    -- Soft delete (NervesHub's deleted_at): hidden from the API, refused at connection.
    deleted_at                     TIMESTAMPTZ,
    -- Firmware the device reported in its last join (what deployments resolve on).
    firmware_uuid                  TEXT,
    version                        TEXT,
    platform                       TEXT,
    architecture                   TEXT,
    firmware_product               TEXT,
    -- Every reported nerves_fw_* key (prefix stripped), fwup_version and meta, as sent.
    firmware_metadata              JSONB,
    device_api_version             TEXT,
    firmware_validation_status     TEXT NOT NULL DEFAULT 'unknown'
        CHECK (firmware_validation_status IN ('validated', 'not_validated', 'unknown')),
    firmware_auto_revert_detected  BOOLEAN NOT NULL DEFAULT false,
    currently_downloading_uuid     TEXT,
    connection_types               TEXT[] NOT NULL DEFAULT '{}',
    network_interface              TEXT,
    -- Last update status and progress the device reported (status_update, fwup_progress).
    update_status                  TEXT,
    update_status_reason           TEXT,
    update_status_at               TIMESTAMPTZ,
    update_progress                INTEGER,
    update_stage                   TEXT,
    update_progress_at             TIMESTAMPTZ,
    first_seen_at                  TIMESTAMPTZ,
    last_seen_at                   TIMESTAMPTZ,    -- last_communication, written throttled
    connected_at                   TIMESTAMPTZ,    -- start of the latest connection
    inserted_at                    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX devices_org_id_identifier_key ON devices (org_id, identifier);
CREATE INDEX devices_product_id ON devices (product_id) WHERE deleted_at IS NULL;
CREATE INDEX devices_tags ON devices USING gin (tags);
CREATE INDEX devices_product_version ON devices (product_id, version);

CREATE TABLE device_certificates (
    id                     BIGSERIAL PRIMARY KEY,
    org_id                 BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    device_id              BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    serial                 TEXT NOT NULL,            -- decimal
    aki                    TEXT,                     -- upper-case hex
    ski                    TEXT,                     -- upper-case hex
    not_before             TIMESTAMPTZ NOT NULL,
    not_after              TIMESTAMPTZ NOT NULL,
    fingerprint            TEXT NOT NULL,            -- upper-case hex SHA-1 of the DER
    public_key_fingerprint TEXT NOT NULL,            -- upper-case hex SHA-1 of the SPKI DER
    der                    BYTEA NOT NULL,
    -- Revoked certificates stay, so the handshake keeps refusing them.
    revoked_at             TIMESTAMPTZ,
    last_used_at           TIMESTAMPTZ,
    inserted_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX device_certificates_fingerprint_key ON device_certificates (fingerprint);
CREATE UNIQUE INDEX device_certificates_device_id_serial_key ON device_certificates (device_id, serial);
CREATE INDEX device_certificates_org_public_key ON device_certificates (org_id, public_key_fingerprint);
CREATE INDEX device_certificates_revoked ON device_certificates (id) WHERE revoked_at IS NOT NULL;

-- Hub nodes and their heartbeats: a node whose heartbeat is stale is dead, and so are the
-- connections it held.
CREATE TABLE nodes (
    node_id      TEXT PRIMARY KEY,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per device websocket session. "Online" = a connected row on a live node.
CREATE TABLE device_connections (
    id                BIGSERIAL PRIMARY KEY,
    device_id         BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    node_id           TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'connected'
        CHECK (status IN ('connected', 'disconnected')),
    remote_address    TEXT NOT NULL DEFAULT '',
    certificate_fingerprint TEXT,
    connected_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    disconnected_at   TIMESTAMPTZ,
    disconnect_reason TEXT
);
CREATE INDEX device_connections_device_connected ON device_connections (device_id)
    WHERE status = 'connected';
CREATE INDEX device_connections_node_connected ON device_connections (node_id)
    WHERE status = 'connected';
CREATE INDEX device_connections_device_id ON device_connections (device_id, id DESC);

-- Seconds after which a node without a heartbeat is considered dead.
CREATE FUNCTION otahub_node_ttl() RETURNS INTERVAL
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT INTERVAL '30 seconds' $$;

-- Whether a device has a connected session on a live node.
CREATE FUNCTION device_online(p_device_id BIGINT) RETURNS BOOLEAN
    LANGUAGE sql STABLE
    AS $$
    SELECT EXISTS (
        SELECT 1 FROM device_connections c JOIN nodes n ON n.node_id = c.node_id
        WHERE c.device_id = p_device_id AND c.status = 'connected'
          AND n.heartbeat_at > now() - otahub_node_ttl())
    $$;
