-- Rollouts: every update the hub sends to a device (its history), in flight until it ends, and
-- the append-only audit log.

CREATE TABLE device_updates (
    id               BIGSERIAL PRIMARY KEY,
    org_id           BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    device_id        BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    -- NULL for a manual push (POST …/upgrade) or once the deployment is deleted.
    deployment_id    BIGINT REFERENCES deployments (id) ON DELETE SET NULL,
    firmware_id      BIGINT REFERENCES firmwares (id) ON DELETE SET NULL,
    firmware_uuid    TEXT NOT NULL,
    firmware_version TEXT NOT NULL DEFAULT '',
    source           TEXT NOT NULL CHECK (source IN ('deployment', 'manual')),
    status           TEXT NOT NULL DEFAULT 'in_flight'
        CHECK (status IN ('in_flight', 'succeeded', 'failed', 'expired', 'rescheduled', 'cancelled')),
    reason           TEXT,
    -- Last fwup_progress percentage while in flight (copied from the device when it ends).
    progress         INTEGER,
    started_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ
);
-- At most one update in flight per device: concurrent schedulers cannot double-send.
CREATE UNIQUE INDEX device_updates_one_in_flight ON device_updates (device_id)
    WHERE status = 'in_flight';
-- Slot counting per deployment.
CREATE INDEX device_updates_deployment_in_flight ON device_updates (deployment_id)
    WHERE status = 'in_flight';
CREATE INDEX device_updates_expiry ON device_updates (expires_at) WHERE status = 'in_flight';
CREATE INDEX device_updates_device ON device_updates (device_id, id DESC);
CREATE INDEX device_updates_deployment_status ON device_updates (deployment_id, status);

-- Failures counted for the penalty box start after this instant (reset when a penalty starts).
ALTER TABLE devices ADD COLUMN update_failures_since TIMESTAMPTZ;

-- Who did what. Rows are only ever inserted.
CREATE TABLE audit_logs (
    id            BIGSERIAL PRIMARY KEY,
    org_id        BIGINT REFERENCES orgs (id) ON DELETE CASCADE,
    actor_type    TEXT NOT NULL CHECK (actor_type IN ('user', 'device', 'system')),
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource      TEXT NOT NULL,
    details       JSONB NOT NULL DEFAULT '{}',
    request_id    TEXT,
    inserted_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_org_id ON audit_logs (org_id, id DESC);
CREATE INDEX audit_logs_org_action ON audit_logs (org_id, action, id DESC);

CREATE FUNCTION audit_logs_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'audit_logs is append-only'; END $$;
CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();
