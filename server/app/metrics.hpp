#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

/// Process-wide Prometheus metrics (prometheus-cpp). Every recording function is thread-safe and
/// cheap (atomic adds); `render` produces the text exposition format for `GET /metrics`.
namespace otahub::metrics {

/// A gauge value computed at scrape time (live sessions, in-flight updates, ...).
struct GaugeSample {
    std::string name;
    std::string help;
    std::map<std::string, std::string> labels;
    double value = 0;
};

/// A device TLS/WebSocket handshake ended: `result` "accepted" or "refused", with the reason
/// ("ok", "unknown_ca", "revoked", "disabled", ...).
void handshake(std::string_view result, std::string_view reason);
/// Who runs an accepted device connection's TLS records: "hub" (net::Tls13Records, OpenSSL's
/// connection state freed) or "openssl" (TLS 1.2, or OTAHUB_DEVICE_TLS_RECORDS=openssl).
void tls_records(std::string_view layer);
/// A device joined topic `device`.
void join();
/// A device was created by just-in-time provisioning.
void jitp_created();
/// Device websocket frames received / sent.
void frame_in();
void frame_out();
/// A server push sent to a device (`update`, `reboot`, ...).
void push(std::string_view event);
/// An update started ("sent") or ended ("succeeded", "failed", "rescheduled", "expired",
/// "cancelled").
void update_outcome(std::string_view status);
/// Time a caller waited for a database connection, and a transaction's duration.
void db_wait(double seconds);
void db_transaction(double seconds);
/// Firmware bytes sent to downloaders.
void firmware_bytes(std::uint64_t bytes);

/// The text exposition of every metric, with `gauges` added.
std::string render(const std::vector<GaugeSample>& gauges);

}  // namespace otahub::metrics
