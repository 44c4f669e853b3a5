#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "server/cli/commands.hpp"
#include "server/cli/output.hpp"

namespace otahub::cli {
namespace {

// A CSR is a few hundred bytes; anything this large is not one.
constexpr std::size_t kMaxCsrFileBytes = 64 * 1024;

struct CertOptions {
    std::string org;
    std::string product;
    std::string identifier;
    std::string description;
    std::string jitp_product;
    std::vector<std::string> jitp_tags;
    std::string jitp_description;
    std::string ca_serial;
    std::string csr_file;
    std::string out_dir;
    std::string out_file;
    std::string parent_serial;
    int validity_days = 0;
    int days = 30;
};

std::string device_certificates_path(Context& ctx, const CertOptions& opts) {
    return "/api/orgs/" + path_segment(ctx.org(opts.org)) + "/products/" +
           path_segment(ctx.product(opts.product)) + "/devices/" + path_segment(opts.identifier) +
           "/certificates";
}

std::string read_small_file(const std::string& path, std::size_t limit) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw UsageError("cannot read " + path + ": " + std::strerror(errno));
    std::string text;
    char chunk[4096];
    for (;;) {
        auto n = ::read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        text.append(chunk, static_cast<std::size_t>(n));
        if (text.size() > limit) {
            ::close(fd);
            throw UsageError(path + " is too large to be a CSR");
        }
    }
    ::close(fd);
    return text;
}

/// Writes `text` to `path` with `mode` (created fresh, replacing a previous file atomically).
void write_file(const std::filesystem::path& path, const std::string& text, mode_t mode) {
    const auto tmp = path.string() + ".tmp";
    ::unlink(tmp.c_str());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(errno));
    std::size_t done = 0;
    while (done < text.size()) {
        auto n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int err = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(err));
        }
        done += static_cast<std::size_t>(n);
    }
    ::fchmod(fd, mode);  // whatever the umask
    ::close(fd);
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        throw std::runtime_error("cannot write " + path.string() + ": " + std::strerror(errno));
    }
}

std::string chain_text(const nlohmann::json& data) {
    std::string out;
    for (const auto& pem : data.value("ca_chain", nlohmann::json::array())) {
        if (pem.is_string()) out += pem.get<std::string>();
    }
    return out;
}

nlohmann::json issue_body(const CertOptions& opts) {
    nlohmann::json body = nlohmann::json::object();
    if (!opts.ca_serial.empty()) body["ca_serial"] = opts.ca_serial;
    if (opts.validity_days > 0) body["validity_days"] = opts.validity_days;
    return body;
}

void add_options(CLI::App* command, CertOptions& opts) {
    command->add_option("identifier", opts.identifier, "device identifier (the certificate CN)")
        ->required();
    command->add_option("--org", opts.org, "org (env OTAHUB_ORG; default: config `org`)");
    command->add_option("--product", opts.product,
                        "product (env OTAHUB_PRODUCT; default: config `product`)");
    command->add_option("--ca-serial", opts.ca_serial,
                        "serial of the managed CA to sign with (default: the org's newest)");
    command
        ->add_option("--validity-days", opts.validity_days,
                     "certificate lifetime in days (default 3650, capped by the CA)")
        ->check(CLI::Range(1, 36500));
}

void add_ca_commands(CLI::App& app, Context& ctx) {
    auto opts = std::make_shared<CertOptions>();
    auto* ca = app.add_subcommand("ca", "certificate authorities of an org");
    ca->require_subcommand(1);
    ca->add_option("--org", opts->org, "org (env OTAHUB_ORG; default: config `org`)");

    auto* create = ca->add_subcommand(
        "create", "create a hub-managed device CA (P-256; its key never leaves the hub)");
    create->add_option("--description", opts->description, "description");
    create->add_option("--jitp-product", opts->jitp_product,
                       "provision unknown devices into this product at their first connection");
    create->add_option("--jitp-tag", opts->jitp_tags, "tag of just-in-time provisioned devices");
    create->add_option("--jitp-description", opts->jitp_description,
                       "description of just-in-time provisioned devices");
    create->add_option("--out", opts->out_file, "also write the CA certificate (PEM) here");
    create->add_option("--parent", opts->parent_serial,
                       "serial of a managed CA of the org: create an intermediate under it");
    on_run(create, ctx, [&ctx, opts] {
        nlohmann::json body = {{"description", opts->description}};
        if (!opts->parent_serial.empty()) body["parent_serial"] = opts->parent_serial;
        if (!opts->jitp_product.empty()) {
            body["jitp"] = {{"product_name", opts->jitp_product},
                            {"tags", opts->jitp_tags},
                            {"description", opts->jitp_description}};
        } else if (!opts->jitp_tags.empty() || !opts->jitp_description.empty()) {
            throw UsageError("--jitp-tag and --jitp-description need --jitp-product");
        }
        auto data = ctx.client().request(
            "POST", "/api/orgs/" + path_segment(ctx.org(opts->org)) + "/ca_certificates/managed",
            body);
        if (!opts->out_file.empty()) {
            write_file(opts->out_file, data.value("certificate", std::string()), 0644);
        }
        if (ctx.json()) return print_json(data);
        print_line("Created managed CA serial " + text_of(data.value("serial", "")));
        print_line("CRL: " + text_of(data.value("crl_url", "")));
    });
}

void add_device_cert_commands(CLI::App& app, Context& ctx) {
    auto opts = std::make_shared<CertOptions>();
    auto* device = app.add_subcommand("device", "device operations");
    device->require_subcommand(1);
    auto* cert = device->add_subcommand("cert", "device certificates from a hub-managed CA");
    cert->require_subcommand(1);

    auto* sign = cert->add_subcommand("sign",
                                      "sign a device CSR (the CN is forced to the "
                                      "identifier); prints the certificate");
    add_options(sign, *opts);
    sign->add_option("--csr", opts->csr_file, "CSR file (PEM or DER)")->required();
    sign->add_option("--out", opts->out_file, "write the certificate (PEM) here, not to stdout");
    on_run(sign, ctx, [&ctx, opts] {
        auto body = issue_body(*opts);
        body["csr"] = read_small_file(opts->csr_file, kMaxCsrFileBytes);
        auto data =
            ctx.client().request("POST", device_certificates_path(ctx, *opts) + "/sign", body);
        if (ctx.json()) return print_json(data);
        const auto pem = data.value("certificate", std::string());
        if (opts->out_file.empty()) {
            std::fputs(pem.c_str(), stdout);
            return;
        }
        write_file(opts->out_file, pem, 0644);
        print_line("Wrote certificate serial " + text_of(data.value("serial", "")) + " to " +
                   printable(opts->out_file));
    });

    auto* create =
        cert->add_subcommand("create", "create a key and certificate for a device (development)");
    add_options(create, *opts);
    create->add_option("--out", opts->out_dir, "directory for cert.pem, key.pem (0600), ca.pem")
        ->required();
    on_run(create, ctx, [&ctx, opts] {
        auto data = ctx.client().request("POST", device_certificates_path(ctx, *opts) + "/create",
                                         issue_body(*opts));
        const std::filesystem::path dir{opts->out_dir};
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) throw std::runtime_error("cannot create " + dir.string() + ": " + ec.message());
        write_file(dir / "key.pem", data.value("private_key", std::string()), 0600);
        write_file(dir / "cert.pem", data.value("certificate", std::string()), 0644);
        write_file(dir / "ca.pem", chain_text(data), 0644);
        if (ctx.json()) {
            data.erase("private_key");
            return print_json(data);
        }
        print_line("Wrote cert.pem, key.pem and ca.pem for " + printable(opts->identifier) +
                   " (serial " + text_of(data.value("serial", "")) + ") to " +
                   printable(dir.string()));
    });
}

void add_report_commands(CLI::App& app, Context& ctx) {
    auto opts = std::make_shared<CertOptions>();
    auto* reports = app.add_subcommand("reports", "reports on an org");
    reports->require_subcommand(1);
    reports->add_option("--org", opts->org, "org (env OTAHUB_ORG; default: config `org`)");
    auto* certificates = reports->add_subcommand(
        "certificates",
        "device certificates and CAs expiring soon, devices refused with bad certificates");
    certificates->add_option("--days", opts->days, "expiring within this many days (default 30)")
        ->check(CLI::Range(0, 3650));
    on_run(certificates, ctx, [&ctx, opts] {
        auto data = ctx.client().request(
            "GET", "/api/orgs/" + path_segment(ctx.org(opts->org)) +
                       "/reports/certificates?days=" + std::to_string(opts->days));
        if (ctx.json()) return print_json(data);
        const auto days = std::to_string(opts->days);
        print_line("Device certificates expiring within " + days + " days:");
        print_table(data.value("expiring_certificates", nlohmann::json::array()),
                    {{"DEVICE", {"identifier"}},
                     {"PRODUCT", {"product"}},
                     {"SERIAL", {"serial"}},
                     {"NOT AFTER", {"not_after"}},
                     {"EXPIRED", {"expired"}},
                     {"RENEW ASKED", {"renew_requested_at"}}},
                    "  none");
        print_line("");
        print_line("CAs expiring within " + days + " days:");
        print_table(data.value("expiring_cas", nlohmann::json::array()),
                    {{"SERIAL", {"serial"}},
                     {"SUBJECT", {"subject"}},
                     {"NOT AFTER", {"not_after"}},
                     {"MANAGED", {"managed"}},
                     {"ACTIVE", {"active"}}},
                    "  none");
        print_line("");
        print_line("Devices refused with revoked, unknown or expired certificates (last " +
                   text_of(data.value("recent_days", nlohmann::json(7))) + " days):");
        print_table(data.value("refused_devices", nlohmann::json::array()),
                    {{"DEVICE", {"identifier"}},
                     {"CATEGORY", {"category"}},
                     {"REASON", {"reason"}},
                     {"CA", {"ca_serial"}},
                     {"REFUSALS", {"refusals"}},
                     {"LAST", {"last_at"}}},
                    "  none");
    });
}

}  // namespace

void add_cert_commands(CLI::App& app, Context& ctx) {
    add_ca_commands(app, ctx);
    add_device_cert_commands(app, ctx);
    add_report_commands(app, ctx);
}

}  // namespace otahub::cli
