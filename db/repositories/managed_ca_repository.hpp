#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "db/database.hpp"

namespace otahub::db {

/// A hub-managed CA: its `ca_certificates` row facts and its encrypted private key.
struct ManagedCaRow {
    std::int64_t id = 0;
    std::int64_t org_id = 0;
    std::string serial{};
    std::string ski{};
    std::string fingerprint{};
    bool active = true;
    /// The CA certificate in DER.
    std::vector<std::uint8_t> der{};
    /// `pki::encrypt_private_key` output.
    std::string encrypted_key{};
};

/// The CRL imported for a custom CA, with the CA's policy for a missing CRL.
struct CrlInfo {
    /// `accept` or `refuse`.
    std::string missing_crl{"accept"};
    /// Whether a CRL is stored.
    bool present = false;
    std::optional<std::string> crl_number{};
    std::optional<std::string> this_update{};
    std::optional<std::string> next_update{};
    std::int64_t revoked_count = 0;
    std::optional<std::string> updated_at{};
    /// The CRL's nextUpdate has passed.
    bool expired = false;
};

/// A CRL to store (already verified against its CA).
struct NewCrl {
    std::vector<std::uint8_t> der{};
    std::optional<std::string> crl_number{};
    std::chrono::system_clock::time_point this_update{};
    std::optional<std::chrono::system_clock::time_point> next_update{};
    /// Revoked serials (decimal) and their revocation times.
    std::vector<std::pair<std::string, std::chrono::system_clock::time_point>> revoked{};
};

/// A revoked certificate of a managed CA, for the CRL the hub issues.
struct RevokedDeviceCertificate {
    std::string serial{};
    std::int64_t revoked_at_epoch = 0;
};

/// A device certificate as rotation sees it.
struct RotationCertificate {
    std::int64_t id = 0;
    std::int64_t org_id = 0;
    std::int64_t device_id = 0;
    std::string serial{};
    std::string fingerprint{};
    std::string aki{};
    std::string not_after{};
    std::int64_t not_after_epoch = 0;
    bool revoked = false;
    std::optional<std::int64_t> replaced_by_id{};
    std::optional<std::string> renew_requested_at{};
    std::optional<std::string> retire_after{};
};

/// A certificate whose rotation finished or advanced (for audit rows and session closing).
struct RetiredCertificate {
    std::int64_t id = 0;
    std::int64_t org_id = 0;
    std::int64_t device_id = 0;
    std::string device_identifier{};
    std::string serial{};
    std::string fingerprint{};
};

/// Hub-managed CAs, imported CRLs and certificate rotation state.
namespace managed_ca {

/// Stores the encrypted key of the newly created CA `ca_id`.
void store_key(Tx& tx, std::int64_t ca_id, const std::string& encrypted_key);
/// The managed CA with that id (nullopt when it is not managed or does not exist).
std::optional<ManagedCaRow> find(Tx& tx, std::int64_t ca_id);
/// The org's managed CA with that decimal serial.
std::optional<ManagedCaRow> find_by_serial(Tx& tx, std::int64_t org_id, const std::string& serial);
/// A managed CA by the SHA-1 fingerprint of its certificate (upper-case hex).
std::optional<ManagedCaRow> find_by_fingerprint(Tx& tx, const std::string& fingerprint);
/// The org's newest managed CA with that SKI (the issuer of a device certificate with that AKI).
std::optional<ManagedCaRow> find_by_ski(Tx& tx, std::int64_t org_id, const std::string& ski);
/// The DER of any registered CA.
std::optional<std::vector<std::uint8_t>> ca_der(Tx& tx, std::int64_t ca_id);
/// The org's newest active managed CA.
std::optional<ManagedCaRow> latest(Tx& tx, std::int64_t org_id);
/// Whether the CA is hub-managed.
bool is_managed(Tx& tx, std::int64_t ca_id);
/// Revoked device certificates issued by the CA (their AKI is its SKI) in its org.
std::vector<RevokedDeviceCertificate> revoked_certificates(Tx& tx, std::int64_t org_id,
                                                           const std::string& ca_ski);

/// The CRL state of a CA.
CrlInfo crl_info(Tx& tx, std::int64_t ca_id);
/// The cRLNumber and thisUpdate (epoch seconds) of the stored CRL, if any.
std::optional<std::pair<std::optional<std::string>, std::int64_t>> crl_order(Tx& tx,
                                                                             std::int64_t ca_id);
/// Replaces the CA's CRL and its entries.
void store_crl(Tx& tx, std::int64_t ca_id, const NewCrl& crl);
/// Sets the missing-CRL policy (`accept` or `refuse`).
void set_missing_crl_policy(Tx& tx, std::int64_t ca_id, const std::string& policy);
/// What crl_refusal decides on, read by crl_state_subquery.
struct CrlState {
    /// The CA's missing-CRL policy; nullopt when there is no such CA.
    std::optional<std::string> missing_crl_policy{};
    bool has_crl = false;
    bool expired = false;
    bool listed = false;
};
/// The same check as a subquery, for statements that do more in the same round trip: `ca`,
/// `serial` and `issued` are parameter placeholders (`$1` …). Its four columns, in CrlState's
/// order; no row when there is no such CA.
std::string crl_state_subquery(std::string_view ca, std::string_view serial,
                               std::string_view issued);
/// Why a certificate chaining to the CA must be refused by the CA's CRL state read with
/// crl_state_subquery, or nullopt: its serial is listed (only looked up when it was issued by
/// the CA itself), or the CA's policy refuses a missing or expired CRL.
std::optional<std::string> crl_refusal(const CrlState& state);
/// crl_refusal's rule in SQL: true when it finds nothing to refuse. The arguments name the four
/// columns read by crl_state_subquery (all NULL when there is no such CA). Keep the two in step:
/// tests/db/connection_check_test.cpp checks that they agree on every CRL state.
std::string crl_admits_sql(std::string_view policy, std::string_view has_crl,
                           std::string_view expired, std::string_view listed);
/// Device certificates of the org issued by `ca_ski` with one of `serials` (device id and
/// fingerprint), to close their sessions.
std::vector<std::pair<std::int64_t, std::string>> certificates_with_serials(
    Tx& tx, std::int64_t org_id, const std::string& ca_ski,
    const std::vector<std::string>& serials);

/// Whether a device connecting with the certificate `fingerprint` through CA `ca_id` has
/// rotation work (a certificate it replaces awaits retirement, or the CA is hub-managed: renewal
/// checks), as a boolean SQL expression over two placeholders or columns (index lookups per row,
/// never a hashed scan); devices::record_joins reads it with the join. When false, there is
/// nothing to do on join.
std::string rotation_work_sql(std::string_view fingerprint, std::string_view ca_id);
/// The certificate with that fingerprint.
std::optional<RotationCertificate> find_certificate(Tx& tx, const std::string& fingerprint);
/// The device's newest usable certificate (not revoked, not replaced), by last use then id.
std::optional<RotationCertificate> current_certificate(Tx& tx, std::int64_t device_id);
/// Records that the device was asked to renew the certificate.
void mark_renew_requested(Tx& tx, std::int64_t certificate_id);
/// Records that `successor_id` replaces `certificate_id`.
void set_replaced_by(Tx& tx, std::int64_t certificate_id, std::int64_t successor_id);
/// The device connected with `fingerprint`: the certificates it replaces retire after
/// `grace` (those not already scheduled). Returns them.
std::vector<RetiredCertificate> schedule_retirement(Tx& tx, const std::string& fingerprint,
                                                    std::chrono::seconds grace);
/// Revokes every certificate whose retirement time has come; returns them.
std::vector<RetiredCertificate> retire_due(Tx& tx);

}  // namespace managed_ca
}  // namespace otahub::db
