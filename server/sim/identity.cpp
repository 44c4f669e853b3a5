#include "server/sim/identity.hpp"

#include <openssl/pem.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "server/domain/pki/managed_ca.hpp"

namespace otahub::sim {

namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path.string());
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

void write_file(const fs::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) throw std::runtime_error("cannot write " + path.string());
}

BIO* memory_bio(const std::string& text) {
    return BIO_new_mem_buf(text.data(), static_cast<int>(text.size()));
}

/// Every certificate of a PEM text, in order.
std::vector<pki::X509Ptr> read_certificates(const std::string& pem, const std::string& what) {
    pki::OpensslErrorScope errors;
    pki::BioPtr bio{memory_bio(pem)};
    std::vector<pki::X509Ptr> certs;
    while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
        certs.emplace_back(cert);
    }
    if (certs.empty()) throw std::runtime_error(what + ": no PEM certificate");
    return certs;
}

pki::EvpPkeyPtr read_key(const std::string& pem, const std::string& what) {
    pki::OpensslErrorScope errors;
    pki::BioPtr bio{memory_bio(pem)};
    pki::EvpPkeyPtr key{PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)};
    if (!key) throw std::runtime_error(what + ": no PEM private key");
    return key;
}

Identity parse_identity(std::string id, const std::string& cert_pem, const std::string& key_pem,
                        const std::string& where) {
    Identity identity;
    identity.id = std::move(id);
    auto certs = read_certificates(cert_pem, where + "/cert.pem");
    identity.cert = std::move(certs.front());
    for (std::size_t i = 1; i < certs.size(); ++i) identity.chain.push_back(std::move(certs[i]));
    identity.key = read_key(key_pem, where + "/key.pem");
    if (X509_check_private_key(identity.cert.get(), identity.key.get()) != 1) {
        ERR_clear_error();
        throw std::runtime_error(where + ": key.pem does not match cert.pem");
    }
    return identity;
}

std::vector<Identity> generate(const Options& options) {
    auto ca_cert = pki::Certificate::from_pem(read_file(options.ca_cert));
    if (!ca_cert) throw std::runtime_error(options.ca_cert + ": not a PEM certificate");
    pki::CertifiedKey ca{*ca_cert, read_file(options.ca_key)};
    read_key(ca.private_key_pem, options.ca_key);  // a clear error before the first leaf
    if (!options.save_certs_dir.empty()) fs::create_directories(options.save_certs_dir);
    const auto now = std::chrono::system_clock::now();
    std::vector<Identity> identities;
    identities.reserve(options.devices);
    for (std::size_t i = 0; i < options.devices; ++i) {
        std::string id = options.prefix + std::to_string(options.first_index + i);
        pki::CertifiedKey leaf = pki::create_device_certificate(ca, id, std::nullopt, now);
        std::string cert_pem = leaf.certificate.pem();
        if (!options.save_certs_dir.empty()) {
            fs::path dir = fs::path(options.save_certs_dir) / id;
            fs::create_directories(dir);
            write_file(dir / "cert.pem", cert_pem);
            write_file(dir / "key.pem", leaf.private_key_pem);
            fs::permissions(dir / "key.pem", fs::perms::owner_read | fs::perms::owner_write);
        }
        identities.push_back(parse_identity(id, cert_pem, leaf.private_key_pem, id));
    }
    return identities;
}

std::vector<Identity> load(const Options& options) {
    std::vector<fs::path> dirs;
    for (const auto& entry : fs::directory_iterator(options.certs_dir)) {
        if (entry.is_directory() && fs::exists(entry.path() / "cert.pem")) {
            dirs.push_back(entry.path());
        }
    }
    std::sort(dirs.begin(), dirs.end());
    if (options.devices != 0 && dirs.size() > options.devices) dirs.resize(options.devices);
    if (dirs.empty()) throw std::runtime_error(options.certs_dir + ": no <id>/cert.pem found");
    std::vector<Identity> identities;
    identities.reserve(dirs.size());
    for (const auto& dir : dirs) {
        identities.push_back(parse_identity(dir.filename().string(), read_file(dir / "cert.pem"),
                                            read_file(dir / "key.pem"), dir.string()));
    }
    return identities;
}

}  // namespace

std::vector<Identity> make_identities(const Options& options) {
    try {
        return options.certs_dir.empty() ? generate(options) : load(options);
    } catch (const fs::filesystem_error& error) {
        throw std::runtime_error(error.what());
    }
}

bool use_identity(SSL* ssl, const Identity& identity) {
    if (SSL_use_certificate(ssl, identity.cert.get()) != 1) return false;
    if (SSL_use_PrivateKey(ssl, identity.key.get()) != 1) return false;
    for (const auto& extra : identity.chain) {
        if (SSL_add1_chain_cert(ssl, extra.get()) != 1) return false;
    }
    return true;
}

}  // namespace otahub::sim
