#include "server/app/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <memory>
#include <mutex>

namespace otahub::metrics {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildHistogram;

/// Buckets (seconds) for database waits and transactions.
const prometheus::Histogram::BucketBoundaries& db_buckets() {
    static const prometheus::Histogram::BucketBoundaries buckets{
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
    return buckets;
}

struct Metrics {
    std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
    prometheus::Family<prometheus::Counter>& handshakes =
        BuildCounter()
            .Name("otahub_device_handshakes_total")
            .Help("Device TLS/WebSocket handshakes by result and reason")
            .Register(*registry);
    prometheus::Family<prometheus::Counter>& tls_records =
        BuildCounter()
            .Name("otahub_device_tls_records_total")
            .Help("Accepted device connections by who runs their TLS records (hub or openssl)")
            .Register(*registry);
    prometheus::Counter& joins = BuildCounter()
                                     .Name("otahub_device_joins_total")
                                     .Help("Joins of topic device")
                                     .Register(*registry)
                                     .Add({});
    prometheus::Counter& jitp = BuildCounter()
                                    .Name("otahub_jitp_devices_total")
                                    .Help("Devices created by just-in-time provisioning")
                                    .Register(*registry)
                                    .Add({});
    prometheus::Family<prometheus::Counter>& frames_family =
        BuildCounter()
            .Name("otahub_device_frames_total")
            .Help("Device websocket frames by direction")
            .Register(*registry);
    prometheus::Counter& frames_in = frames_family.Add({{"direction", "in"}});
    prometheus::Counter& frames_out = frames_family.Add({{"direction", "out"}});
    prometheus::Family<prometheus::Counter>& pushes = BuildCounter()
                                                          .Name("otahub_device_pushes_total")
                                                          .Help("Server pushes sent, by event")
                                                          .Register(*registry);
    prometheus::Family<prometheus::Counter>& updates =
        BuildCounter()
            .Name("otahub_updates_total")
            .Help("Updates sent and their outcomes, by status")
            .Register(*registry);
    prometheus::Histogram& db_wait = BuildHistogram()
                                         .Name("otahub_db_pool_wait_seconds")
                                         .Help("Time waiting for a free database connection")
                                         .Register(*registry)
                                         .Add({}, db_buckets());
    prometheus::Histogram& db_transaction = BuildHistogram()
                                                .Name("otahub_db_transaction_seconds")
                                                .Help("Database transaction durations")
                                                .Register(*registry)
                                                .Add({}, db_buckets());
    prometheus::Counter& firmware_bytes = BuildCounter()
                                              .Name("otahub_firmware_bytes_served_total")
                                              .Help("Firmware bytes sent to downloaders")
                                              .Register(*registry)
                                              .Add({});
};

Metrics& instance() {
    static Metrics metrics;
    return metrics;
}

std::string escape_label(const std::string& value) {
    std::string out;
    for (char c : value) {
        if (c == '\\' || c == '"') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

}  // namespace

void handshake(std::string_view result, std::string_view reason) {
    instance()
        .handshakes.Add({{"result", std::string(result)}, {"reason", std::string(reason)}})
        .Increment();
}

void tls_records(std::string_view layer) {
    instance().tls_records.Add({{"layer", std::string(layer)}}).Increment();
}

void join() { instance().joins.Increment(); }
void jitp_created() { instance().jitp.Increment(); }
void frame_in() { instance().frames_in.Increment(); }
void frame_out() { instance().frames_out.Increment(); }

void push(std::string_view event) {
    instance().pushes.Add({{"event", std::string(event)}}).Increment();
}

void update_outcome(std::string_view status) {
    instance().updates.Add({{"status", std::string(status)}}).Increment();
}

void db_wait(double seconds) { instance().db_wait.Observe(seconds); }
void db_transaction(double seconds) { instance().db_transaction.Observe(seconds); }

void firmware_bytes(std::uint64_t bytes) {
    instance().firmware_bytes.Increment(static_cast<double>(bytes));
}

std::string render(const std::vector<GaugeSample>& gauges) {
    std::string out = prometheus::TextSerializer().Serialize(instance().registry->Collect());
    // Scrape-time gauges, grouped by name with one HELP/TYPE header each.
    std::map<std::string, std::vector<const GaugeSample*>> by_name;
    for (const auto& gauge : gauges) by_name[gauge.name].push_back(&gauge);
    for (const auto& [name, samples] : by_name) {
        out += "# HELP " + name + " " + samples.front()->help + "\n";
        out += "# TYPE " + name + " gauge\n";
        for (const auto* sample : samples) {
            out += name;
            if (!sample->labels.empty()) {
                out += '{';
                bool first = true;
                for (const auto& [key, value] : sample->labels) {
                    if (!first) out += ',';
                    first = false;
                    out += key + "=\"" + escape_label(value) + "\"";
                }
                out += '}';
            }
            out += ' ' + std::to_string(sample->value) + "\n";
        }
    }
    return out;
}

}  // namespace otahub::metrics
