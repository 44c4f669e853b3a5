#pragma once

#include <string>

#include "server/net/asio.hpp"

namespace otahub::net {

/// A TLS 1.2/1.3 server context with modern ciphers only, loaded with the certificate chain
/// and key; throws std::runtime_error naming the file on failure.
ssl::context make_server_context(const std::string& cert_chain_file, const std::string& key_file);

/// A client context for tools and tests: verifies the server against `ca_file` (or the system
/// store when empty) and optionally presents a client certificate.
ssl::context make_client_context(const std::string& ca_file, const std::string& cert_file = {},
                                 const std::string& key_file = {});

}  // namespace otahub::net
