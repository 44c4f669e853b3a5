#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "db/database.hpp"
#include "db/repositories/managed_ca_repository.hpp"

namespace otahub::db {

/// A device as the API and the device endpoint see it (a `devices` row with its product, org
/// and online state).
struct DeviceRow {
    std::int64_t id = 0;
    std::int64_t org_id = 0;
    std::int64_t product_id = 0;
    std::string product_name{};
    std::string org_name{};
    std::string identifier{};
    std::string description{};
    std::vector<std::string> tags{};
    bool updates_enabled = true;
    std::optional<std::string> updates_blocked_until{};
    bool disabled = false;
    bool deleted = false;
    std::optional<std::string> firmware_uuid{};
    std::optional<std::string> version{};
    std::optional<std::string> platform{};
    std::optional<std::string> architecture{};
    std::optional<std::string> firmware_product{};
    /// The reported firmware metadata (null when the device never joined).
    nlohmann::json firmware_metadata{};
    std::optional<std::string> device_api_version{};
    std::string firmware_validation_status{"unknown"};
    bool firmware_auto_revert_detected = false;
    std::vector<std::string> connection_types{};
    std::optional<std::string> network_interface{};
    std::optional<std::string> update_status{};
    std::optional<std::string> update_status_reason{};
    std::optional<std::string> update_status_at{};
    std::optional<int> update_progress{};
    std::optional<std::string> update_stage{};
    std::optional<std::string> first_seen_at{};
    std::optional<std::string> last_seen_at{};
    std::optional<std::string> connected_at{};
    /// A connected session on a live node.
    bool online = false;
    /// The node holding that session.
    std::optional<std::string> node{};
    std::string inserted_at{};
    std::string updated_at{};
};

/// A `device_certificates` row.
struct DeviceCertificateRow {
    std::int64_t id = 0;
    std::int64_t org_id = 0;
    std::int64_t device_id = 0;
    std::string serial{};
    std::optional<std::string> aki{};
    std::optional<std::string> ski{};
    std::string not_before{};
    std::string not_after{};
    std::string fingerprint{};
    std::string public_key_fingerprint{};
    bool revoked = false;
    std::optional<std::string> revoked_at{};
    std::optional<std::string> last_used_at{};
    std::string inserted_at{};
};

/// What is stored for a new device certificate.
struct NewDeviceCertificate {
    std::int64_t org_id = 0;
    std::int64_t device_id = 0;
    std::string serial{};
    std::string aki{};
    std::string ski{};
    std::chrono::system_clock::time_point not_before{};
    std::chrono::system_clock::time_point not_after{};
    std::string fingerprint{};
    std::string public_key_fingerprint{};
    std::vector<std::uint8_t> der{};
};

/// Filters and page of a device listing.
struct DeviceQuery {
    std::int64_t product_id = 0;
    std::optional<std::string> tag{};
    std::optional<bool> online{};
    std::optional<std::string> version{};
    std::optional<std::string> identifier_prefix{};
    /// Only devices whose live session is on this node.
    std::optional<std::string> node{};
    int page = 1;
    int page_size = 50;
};

/// One page of devices and the count of all matches.
struct DevicePage {
    std::vector<DeviceRow> devices{};
    std::int64_t total = 0;
};

/// Firmware facts a device reported when joining topic `device`.
struct FirmwareReport {
    std::optional<std::string> uuid{};
    std::optional<std::string> version{};
    std::optional<std::string> platform{};
    std::optional<std::string> architecture{};
    std::optional<std::string> product{};
    std::optional<std::string> device_api_version{};
    std::optional<std::string> currently_downloading_uuid{};
    /// `validated`, `not_validated` or `unknown`.
    std::string validation_status{"unknown"};
    bool auto_revert_detected = false;
    /// Everything reported (nerves_fw_ prefix stripped), as stored in `firmware_metadata`.
    nlohmann::json metadata = nlohmann::json::object();
};

/// Devices, their certificates and connections.
namespace devices {

/// The live (not deleted) device of an org by identifier.
std::optional<DeviceRow> find(Tx& tx, std::int64_t org_id, const std::string& identifier);
/// A device by id, deleted or not.
std::optional<DeviceRow> find_by_id(Tx& tx, std::int64_t id);
/// The device of an org by identifier, including a soft-deleted one.
std::optional<DeviceRow> find_any(Tx& tx, std::int64_t org_id, const std::string& identifier);
/// A page of a product's live devices, by identifier.
DevicePage list(Tx& tx, const DeviceQuery& query);
/// Creates a device, or revives a soft-deleted one with that identifier (fresh settings).
DeviceRow create(Tx& tx, std::int64_t org_id, std::int64_t product_id,
                 const std::string& identifier, const std::string& description,
                 const std::vector<std::string>& tags);
/// Creates the device unless (org, identifier) exists; returns the device either way (JITP:
/// concurrent first connections of one device end with one row). `created`, when given, tells
/// whether this call inserted it (only that connection audits the provisioning).
DeviceRow create_if_missing(Tx& tx, std::int64_t org_id, std::int64_t product_id,
                            const std::string& identifier, const std::string& description,
                            const std::vector<std::string>& tags, bool* created = nullptr);
/// Sets the editable settings.
DeviceRow update(Tx& tx, std::int64_t id, const std::string& description,
                 const std::vector<std::string>& tags, bool updates_enabled, bool disabled);
/// Soft-deletes a device.
void soft_delete(Tx& tx, std::int64_t id);

/// What a join's observers need to know, read by the statement that stores the join.
struct JoinFacts {
    /// The device has an update in flight (rollouts::in_flight would find it).
    bool update_in_flight = false;
    /// The connecting certificate has rotation work (managed_ca::rotation_work_sql).
    bool rotation_work = false;
};

/// One device's join, as devices::record_joins stores it.
struct JoinRecord {
    std::int64_t device_id = 0;
    /// What the device reported (shared with the join's observers); never null.
    std::shared_ptr<const FirmwareReport> report{};
    /// The connecting certificate's fingerprint and CA.
    std::string fingerprint{};
    std::int64_t ca_id = 0;
};

/// Stores what each device reported when joining and, in the same statement, reads the facts
/// its join observers start from: one round trip for the joins that arrive together instead of
/// three per join. One result per record, in order; no two records may name the same device
/// (PostgreSQL updates a row once per statement). A device that no longer exists is not
/// updated; its facts are still read.
std::vector<JoinFacts> record_joins(Tx& tx, const std::vector<JoinRecord>& joins);
/// Stores a status_update (`rescheduled` with delay_for minutes also blocks updates until then).
void record_status(Tx& tx, std::int64_t id, const std::string& status,
                   const std::optional<std::string>& reason,
                   const std::optional<std::int64_t>& delay_for_minutes);
/// Stores an fwup_progress / update_progress.
void record_progress(Tx& tx, std::int64_t id, int value, const std::optional<std::string>& stage);
/// Stores the connection types (`connection_types` event).
void record_connection_types(Tx& tx, std::int64_t id, const std::vector<std::string>& types);
/// Marks the running firmware validated (`firmware_validated` event).
void record_firmware_validated(Tx& tx, std::int64_t id);
/// Stores the network interface the device downloads over.
void record_network_interface(Tx& tx, std::int64_t id, const std::string& interface_name);

// ---- certificates ----

/// The certificate with that DER fingerprint (any device, revoked or not).
std::optional<DeviceCertificateRow> find_certificate_by_fingerprint(Tx& tx,
                                                                    const std::string& fingerprint);
/// Certificates of an org's devices with that public key fingerprint.
std::vector<DeviceCertificateRow> certificates_by_public_key(Tx& tx, std::int64_t org_id,
                                                             const std::string& public_key_fp);
/// Number of certificates (revoked or not) of a device whose public key is not `public_key_fp`.
std::int64_t count_certificates_with_other_key(Tx& tx, std::int64_t device_id,
                                               const std::string& public_key_fp);
/// Inserts a certificate; returns nullopt when that fingerprint is already stored.
std::optional<DeviceCertificateRow> insert_certificate(Tx& tx, const NewDeviceCertificate& cert);
/// A device's certificates that are not revoked, oldest first.
std::vector<DeviceCertificateRow> list_certificates(Tx& tx, std::int64_t device_id);
/// A device's certificate by decimal serial.
std::optional<DeviceCertificateRow> find_certificate(Tx& tx, std::int64_t device_id,
                                                     const std::string& serial);
/// Marks a certificate revoked.
void revoke_certificate(Tx& tx, std::int64_t certificate_id);

// ---- connections and nodes ----

/// The few device columns a connecting device is admitted on.
struct DeviceIdentity {
    std::int64_t id = 0;
    std::int64_t org_id = 0;
    std::int64_t product_id = 0;
    std::string identifier{};
    bool disabled = false;
    bool deleted = false;
};

/// A stored certificate presented again, with its device.
struct KnownCertificate {
    std::int64_t id = 0;
    bool revoked = false;
    /// The device owning it (nullopt if that row is gone).
    std::optional<DeviceIdentity> device{};
};

/// Everything a connection of an already-known certificate is decided on.
struct ConnectionCheck {
    /// The CA's CRL state for this certificate (managed_ca::crl_refusal decides).
    managed_ca::CrlState crl{};
    /// The stored certificate with this fingerprint, if any.
    std::optional<KnownCertificate> certificate{};
    /// The connection opened by check_open_or_provision, when the check admitted it.
    std::optional<std::int64_t> connection_id{};
};

/// What check_open_or_provision created.
struct Provisioned {
    std::int64_t device_id = 0;
    std::int64_t org_id = 0;
    std::int64_t product_id = 0;
    std::string identifier{};
    /// Set when the certificate was stored and the connection opened; nullopt when another
    /// connection stored the same certificate first (the device and its audit entry stay).
    std::optional<std::int64_t> connection_id{};
};

/// What check_open_or_provision found or did.
struct CheckOrProvision {
    /// What the statement read for the attempt, and the connection it opened for a known
    /// certificate (`certificate` is unset when the device was provisioned).
    ConnectionCheck check{};
    /// Set when the statement created the device (the plain JITP case).
    std::optional<Provisioned> provisioned{};
};

/// One connection to decide in check_open_or_provision.
struct ConnectionAttempt {
    /// The CA the certificate chained to, and its organization.
    std::int64_t ca_id = 0;
    std::int64_t org_id = 0;
    /// Whether the CA issued the leaf itself (its CRL is consulted for the serial).
    bool issued_by_ca = false;
    /// Whether to provision (JITP) when the certificate is not stored: the CA has a profile as
    /// far as the caller knows (the statement checks it too).
    bool jitp = false;
    /// The certificate's common name: the new device's identifier.
    std::string identifier{};
    /// The certificate (its device_id is ignored); its fingerprint is never empty.
    NewDeviceCertificate certificate{};
    std::string remote_address{};
};

/// For each attempt of `batch`: reads the CRL state of its CA for its serial (the serial is
/// looked up only when `issued_by_ca`) and the certificate stored with its fingerprint, with its
/// device; when what it reads admits the connection (no CRL refusal, managed_ca::crl_admits_sql;
/// a stored certificate, not revoked, of a device of the attempt's organization neither deleted
/// nor disabled), does what open_connection_and_notify does with the stored certificate on node
/// `node_id`, NOTIFYing `event` with `connection_id` and `device_id` added (`connection_id` is set
/// exactly when the connection was opened). In the same statement, for each attempt with `jitp`
/// whose certificate is not stored and whose CA's CRL admits it, JITP in the plain case: the CA
/// has a JITP profile, the identifier is not empty, and neither a certificate with its public key
/// in the organization nor a device (even deleted) with that identifier is stored. Then it creates
/// the device from the profile (connected and seen now), records `device.provisioned` in the audit
/// log, stores the certificate and opens the connection with its writes, without the
/// device_connected NOTIFY (a device created just now has no older session to close). `provisioned`
/// without a `connection_id`: a concurrent connection stored the same certificate first (the device
/// and its audit entry stay). Neither the check's connection nor `provisioned`: the caller decides
/// (refusal, or a transaction). One result per attempt, in order. No two attempts of a batch may
/// share a fingerprint, or an organization with an identifier or a public key fingerprint: the
/// statement matches what it wrote to attempts by them. One round trip for any number of
/// connections, new (two before 2026-12-05) or known.
std::vector<CheckOrProvision> check_open_or_provision(Tx& tx,
                                                      const std::vector<ConnectionAttempt>& batch,
                                                      const std::string& node_id,
                                                      const std::string& event);

/// Opens a session row for the device on `node_id`; updates connected_at, first/last seen, and
/// the last use (at most once a minute) of CA `ca_id` and of certificate `certificate_id` when
/// given; and NOTIFYs the event channel with `event` (a JSON object) plus `connection_id` (sent
/// at COMMIT inside a transaction). One statement. Returns the connection id (a larger id is a
/// newer connection).
std::int64_t open_connection_and_notify(Tx& tx, std::int64_t device_id, const std::string& node_id,
                                        const std::string& remote_address,
                                        const std::string& fingerprint, std::int64_t ca_id,
                                        std::optional<std::int64_t> certificate_id,
                                        const std::string& event);
/// A session that ended, as the node saw it.
struct ConnectionClose {
    std::int64_t connection_id = 0;
    std::string reason{};
    /// When it ended (the node's clock); written as the disconnection and last-seen time,
    /// bounded by the database's now() and by the connection's start.
    std::chrono::system_clock::time_point at{};
};

/// Marks a session disconnected (no-op when already so) and writes the device's last_seen_at.
void close_connection(Tx& tx, std::int64_t connection_id, const std::string& reason);
/// close_connection for many sessions in one statement; a device's last_seen_at never goes back.
/// Returns how many sessions it marked disconnected.
std::int64_t close_connections(Tx& tx, const std::vector<ConnectionClose>& closes);
/// Writes last_seen_at = now() for these devices and their open sessions.
void touch_last_seen(Tx& tx, const std::vector<std::int64_t>& device_ids);
/// Of these live sessions (device id, certificate fingerprint), the ones that must end: device
/// deleted or disabled, or certificate revoked. Returns (device id, reason) pairs.
std::vector<std::pair<std::int64_t, std::string>> sessions_to_close(
    Tx& tx, const std::vector<std::pair<std::int64_t, std::string>>& sessions);
/// Registers or refreshes a node's heartbeat.
void heartbeat_node(Tx& tx, const std::string& node_id);
/// Marks every connected session of the node disconnected (start-up and shutdown); returns
/// how many.
std::int64_t disconnect_node(Tx& tx, const std::string& node_id, const std::string& reason);
/// A hub node and how many of one org's devices it holds.
struct NodeRow {
    std::string node_id{};
    std::string started_at{};
    std::string heartbeat_at{};
    /// Heartbeat recent enough (otahub_node_ttl()): its sessions count as online.
    bool alive = false;
    std::int64_t connected_devices = 0;
};
/// Every node seen in the last day, with the count of `org_id`'s devices connected to it.
std::vector<NodeRow> nodes(Tx& tx, std::int64_t org_id);
/// Marks connected sessions of nodes whose heartbeat is stale disconnected; returns how many.
std::int64_t sweep_dead_nodes(Tx& tx);

}  // namespace devices
}  // namespace otahub::db
