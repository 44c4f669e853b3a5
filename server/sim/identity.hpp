#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <string>
#include <vector>

#include "server/domain/pki/openssl_ptr.hpp"
#include "server/sim/options.hpp"

/// Client certificates of simulated devices: generated from a CA or loaded from a directory.
namespace otahub::sim {

/// One device's identity, parsed once so connections only take references (a few KB each).
struct Identity {
    std::string id;                   ///< device identifier (the certificate's CN)
    pki::X509Ptr cert;                ///< the leaf
    std::vector<pki::X509Ptr> chain;  ///< intermediates sent after the leaf
    pki::EvpPkeyPtr key;              ///< the leaf's private key
};

/// Identities for the run: `options.devices` P-256 leaves signed by --ca-cert/--ca-key (CN =
/// prefix + index, clientAuth, SKI/AKI), or every `<id>/cert.pem` + `key.pem` under --certs
/// (sorted, at most `options.devices` when non-zero). Throws std::runtime_error with a one-line
/// reason on unreadable or invalid input.
std::vector<Identity> make_identities(const Options& options);

/// Installs `identity` as the client certificate of one TLS connection; false on failure.
bool use_identity(SSL* ssl, const Identity& identity);

}  // namespace otahub::sim
