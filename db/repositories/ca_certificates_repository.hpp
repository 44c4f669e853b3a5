#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "db/database.hpp"
#include "server/domain/pki/trust_store.hpp"

namespace otahub::db {

/// A just-in-time provisioning profile of a CA: devices first seen with a certificate of this CA
/// are created in `product_id` with these tags and description.
struct JitpProfile {
    /// Product the devices are created in.
    std::int64_t product_id = 0;
    /// Its name (read-only, for output).
    std::string product_name{};
    /// Tags given to the new devices.
    std::vector<std::string> tags{};
    /// Description given to the new devices.
    std::string description{};
};

/// A `ca_certificates` row.
struct CaCertificateRow {
    std::int64_t id = 0;
    std::int64_t org_id = 0;
    std::string serial{};
    std::string ski{};
    std::optional<std::string> aki{};
    std::string subject{};
    std::string fingerprint{};
    std::string not_before{};
    std::string not_after{};
    std::string description{};
    bool active = true;
    bool check_expiration = false;
    std::optional<JitpProfile> jitp{};
    std::optional<std::string> last_used_at{};
    std::string inserted_at{};
    std::string updated_at{};
};

/// What is stored for a newly registered CA.
struct NewCaCertificate {
    std::int64_t org_id = 0;
    std::string serial{};
    std::string ski{};
    std::string aki{};
    std::string subject{};
    std::string fingerprint{};
    std::chrono::system_clock::time_point not_before{};
    std::chrono::system_clock::time_point not_after{};
    std::vector<std::uint8_t> der{};
    std::string description{};
    std::optional<JitpProfile> jitp{};
};

/// Registered CA certificates of orgs.
namespace ca_certificates {

/// Inserts a CA; a duplicate fingerprint or (org, serial) raises Conflict.
CaCertificateRow create(Tx& tx, const NewCaCertificate& ca);
/// The CAs of an org, oldest first.
std::vector<CaCertificateRow> list(Tx& tx, std::int64_t org_id);
/// The CA of an org with that decimal serial.
std::optional<CaCertificateRow> find(Tx& tx, std::int64_t org_id, const std::string& serial);
/// Any org's CA with that DER fingerprint (for "already registered" checks).
std::optional<CaCertificateRow> find_by_fingerprint(Tx& tx, const std::string& fingerprint);
/// The CA with that id.
std::optional<CaCertificateRow> find_by_id(Tx& tx, std::int64_t id);
/// Sets active, description and the JITP profile (nullopt removes it).
CaCertificateRow update(Tx& tx, std::int64_t id, bool active, const std::string& description,
                        const std::optional<JitpProfile>& jitp);
/// Deletes a CA.
void remove(Tx& tx, std::int64_t id);

/// Everything the TLS handshake trusts and refuses: every CA (active or not, with its JITP flag)
/// and the fingerprints of revoked device certificates.
pki::TrustInputs load_trust_inputs(Tx& tx);

}  // namespace ca_certificates
}  // namespace otahub::db
