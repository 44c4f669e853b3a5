#pragma once

// Rows the db tests of device connections start from: a registered CA and device certificates.

#include <chrono>
#include <cstdint>
#include <string>

#include "db/repositories/ca_certificates_repository.hpp"
#include "db/repositories/devices_repository.hpp"

namespace otahub::db::testing {

/// A CA of `org_id` (serial 1001, SKI "CA:SKI", "CN=fleet CA"), valid from an hour ago for a day.
inline NewCaCertificate fleet_ca(std::int64_t org_id) {
    NewCaCertificate ca;
    ca.org_id = org_id;
    ca.serial = "1001";
    ca.ski = "CA:SKI";
    ca.subject = "CN=fleet CA";
    ca.fingerprint = "CAFP";
    ca.not_before = std::chrono::system_clock::now() - std::chrono::hours(1);
    ca.not_after = std::chrono::system_clock::now() + std::chrono::hours(24);
    ca.der = {0x30, 0x00};
    return ca;
}

/// A certificate of `device_id` issued by fleet_ca; its key and SKI derive from the fingerprint.
inline NewDeviceCertificate fleet_certificate(std::int64_t org_id, std::int64_t device_id,
                                              const std::string& serial,
                                              const std::string& fingerprint) {
    NewDeviceCertificate cert;
    cert.org_id = org_id;
    cert.device_id = device_id;
    cert.serial = serial;
    cert.aki = "CA:SKI";
    cert.ski = "SKI:" + fingerprint;
    cert.not_before = std::chrono::system_clock::now() - std::chrono::hours(1);
    cert.not_after = std::chrono::system_clock::now() + std::chrono::hours(24);
    cert.fingerprint = fingerprint;
    cert.public_key_fingerprint = "KEY:" + fingerprint;
    cert.der = {0x30, 0x00};
    return cert;
}

}  // namespace otahub::db::testing
