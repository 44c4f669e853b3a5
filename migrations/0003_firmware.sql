-- Firmware: org signing keys (fwup Ed25519 public keys) and verified firmware archives.

CREATE TABLE org_keys (
    id          BIGSERIAL PRIMARY KEY,
    org_id      BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    -- base64 of the raw 32-byte Ed25519 public key, as `fwup -g` writes fwup-key.pub.
    key         TEXT NOT NULL,
    inserted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX org_keys_org_id_name_key ON org_keys (org_id, name);
CREATE UNIQUE INDEX org_keys_org_id_key_key ON org_keys (org_id, key);

CREATE TABLE firmwares (
    id             BIGSERIAL PRIMARY KEY,
    org_id         BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    -- RESTRICT: a product (or key) cannot go while firmware files depend on it; deleting the
    -- firmware through the API removes its file too.
    product_id     BIGINT NOT NULL REFERENCES products (id) ON DELETE RESTRICT,
    org_key_id     BIGINT NOT NULL REFERENCES org_keys (id) ON DELETE RESTRICT,
    -- fwup's meta-uuid (lower-case 8-4-4-4-12), what devices report as nerves_fw_uuid.
    uuid           TEXT NOT NULL CHECK (uuid ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'),
    version        TEXT NOT NULL,
    platform       TEXT NOT NULL,
    architecture   TEXT NOT NULL,
    author         TEXT NOT NULL DEFAULT '',
    description    TEXT NOT NULL DEFAULT '',
    misc           TEXT NOT NULL DEFAULT '',
    vcs_identifier TEXT NOT NULL DEFAULT '',
    fwup_version   TEXT NOT NULL DEFAULT '',
    tool           TEXT NOT NULL DEFAULT 'fwup',
    -- meta-creation-date as fwup -m reports it (UTC ISO 8601), '' when unknown.
    creation_date  TEXT NOT NULL DEFAULT '',
    size           BIGINT NOT NULL CHECK (size > 0),
    -- SHA-256 of the file and of each 1 MiB of it, upper-case hex (NervesHub's checksum and
    -- partials_checksums).
    sha256         TEXT NOT NULL,
    partial_sha256 TEXT[] NOT NULL,
    -- Where the bytes are, relative to the storage backend: "<org_id>/<uuid>.fw".
    storage_key    TEXT NOT NULL,
    uploaded_by    BIGINT REFERENCES users (id) ON DELETE SET NULL,
    -- TTL (NervesHub 2018-2023): firmware no deployment references is deleted once ttl_until
    -- has passed. ttl_until = last unreferenced time + ttl_seconds; NULL while referenced or
    -- when the firmware has no TTL.
    ttl_seconds    BIGINT CHECK (ttl_seconds > 0),
    ttl_until      TIMESTAMPTZ,
    inserted_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (ttl_until IS NULL OR ttl_seconds IS NOT NULL)
);
-- The same archive may live in several orgs, once per org (its storage key is per org).
CREATE UNIQUE INDEX firmwares_org_id_uuid_key ON firmwares (org_id, uuid);
CREATE INDEX firmwares_product_id ON firmwares (product_id, inserted_at);
CREATE INDEX firmwares_org_key_id ON firmwares (org_key_id);
CREATE INDEX firmwares_ttl_until ON firmwares (ttl_until) WHERE ttl_until IS NOT NULL;
