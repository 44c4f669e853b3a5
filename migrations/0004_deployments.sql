-- Deployments: which firmware the devices of a product should run, under which conditions, and
-- how fast it rolls out (NervesHub's deployment groups, one release each).
CREATE TABLE deployments (
    id                                 BIGSERIAL PRIMARY KEY,
    org_id                             BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    product_id                         BIGINT NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    name                               TEXT NOT NULL,
    -- RESTRICT: firmware a deployment points at cannot be deleted (409 "still referenced").
    firmware_id                        BIGINT NOT NULL REFERENCES firmwares (id) ON DELETE RESTRICT,
    -- Elixir Version requirement; '' = any version.
    conditions_version                 TEXT NOT NULL DEFAULT '',
    conditions_tags                    TEXT[] NOT NULL DEFAULT '{}',
    tag_operator                       TEXT NOT NULL DEFAULT 'and' CHECK (tag_operator IN ('and', 'or')),
    is_active                          BOOLEAN NOT NULL DEFAULT false,
    -- 0 = unlimited.
    concurrent_updates                 INTEGER NOT NULL DEFAULT 10 CHECK (concurrent_updates >= 0),
    inflight_update_expiration_minutes INTEGER NOT NULL DEFAULT 60
        CHECK (inflight_update_expiration_minutes > 0),
    device_failure_threshold           INTEGER NOT NULL DEFAULT 3 CHECK (device_failure_threshold > 0),
    device_failure_rate_amount         INTEGER NOT NULL DEFAULT 5 CHECK (device_failure_rate_amount > 0),
    device_failure_rate_seconds        INTEGER NOT NULL DEFAULT 180
        CHECK (device_failure_rate_seconds > 0),
    penalty_timeout_minutes            INTEGER NOT NULL DEFAULT 1440
        CHECK (penalty_timeout_minutes > 0),
    -- Fleet: pause the deployment after this many failed updates.
    failure_threshold                  INTEGER NOT NULL DEFAULT 50 CHECK (failure_threshold > 0),
    failed_updates                     INTEGER NOT NULL DEFAULT 0,
    paused_reason                      TEXT,
    notes                              TEXT NOT NULL DEFAULT '',
    inserted_at                        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX deployments_product_id_name_key ON deployments (product_id, name);
CREATE INDEX deployments_firmware_id ON deployments (firmware_id);
CREATE INDEX deployments_active ON deployments (product_id) WHERE is_active;
