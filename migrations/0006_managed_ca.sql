-- Certificate lifecycle: hub-managed CAs (private key encrypted at rest), imported CRLs of
-- custom CAs with a per-CA policy for a missing CRL, and certificate rotation over the device
-- channel.

-- The private key of a CA the hub generated. Encrypted with AES-256-GCM under a key derived
-- from OTAHUB_SECRET_KEY (pki::encrypt_private_key); never stored in clear.
CREATE TABLE managed_ca_keys (
    ca_certificate_id BIGINT PRIMARY KEY REFERENCES ca_certificates (id) ON DELETE CASCADE,
    encrypted_key     TEXT NOT NULL,
    inserted_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What the handshake does for a custom CA without a current CRL (none imported, or its
-- nextUpdate has passed): 'accept' (logged) or 'refuse'.
ALTER TABLE ca_certificates ADD COLUMN missing_crl TEXT NOT NULL DEFAULT 'accept'
    CHECK (missing_crl IN ('accept', 'refuse'));

-- The latest CRL imported for a custom CA (replaced whole by a newer upload).
CREATE TABLE ca_crls (
    ca_certificate_id BIGINT PRIMARY KEY REFERENCES ca_certificates (id) ON DELETE CASCADE,
    der               BYTEA NOT NULL,
    crl_number        NUMERIC,
    this_update       TIMESTAMPTZ NOT NULL,
    next_update       TIMESTAMPTZ,
    revoked_count     INTEGER NOT NULL DEFAULT 0,
    inserted_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The serials the CA's current CRL revokes (decimal), checked at every connection.
CREATE TABLE ca_crl_entries (
    ca_certificate_id BIGINT NOT NULL REFERENCES ca_certificates (id) ON DELETE CASCADE,
    serial            TEXT NOT NULL,
    revoked_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (ca_certificate_id, serial)
);

-- Rotation: the certificate that replaces this one (issued from a `certificate_csr`), when the
-- device was last asked to renew it, and when it retires (revoked by the hub) once the device
-- connected with its successor.
ALTER TABLE device_certificates
    ADD COLUMN replaced_by_id BIGINT REFERENCES device_certificates (id) ON DELETE SET NULL,
    ADD COLUMN renew_requested_at TIMESTAMPTZ,
    ADD COLUMN retire_after TIMESTAMPTZ;
CREATE INDEX device_certificates_replaced_by ON device_certificates (replaced_by_id)
    WHERE replaced_by_id IS NOT NULL;
CREATE INDEX device_certificates_retire_after ON device_certificates (retire_after)
    WHERE retire_after IS NOT NULL AND revoked_at IS NULL;
