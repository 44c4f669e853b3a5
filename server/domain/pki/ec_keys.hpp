#pragma once

#include <openssl/evp.h>

#include <string>

namespace otahub::pki {

/// Which OpenSSL code path decodes and runs EC (P-256, P-384) keys in this process.
enum class EcKeys {
    kProvider,  ///< OpenSSL 3's provider framework (OpenSSL's default)
    kLegacy,    ///< OpenSSL's built-in EC key method, as in OpenSSL 1.1
};

/// Makes OpenSSL decode and use EC public keys through its built-in EC key method instead of the
/// provider decoders. OpenSSL 3.0 decodes the key of every X.509 certificate through
/// `OSSL_DECODER_CTX_new_for_pkey`, which rebuilds its whole decoder chain on each call: about
/// 130 µs of CPU per P-256 certificate here, and a device handshake decodes one to three (the
/// certificate on the wire, the session ticket issued, the ticket presented). The 1.1-style decode
/// takes about 20 µs. It works by registering a process-wide ENGINE whose only content is a copy
/// of OpenSSL's own EC key method, the one switch OpenSSL 3.0 honours for this. Curves, point
/// validation (a point off the curve is refused when decoded) and signature checks are OpenSSL's
/// own either way; keys loaded from PEM or generated stay with the providers.
///
/// Does nothing and returns kProvider when OpenSSL runs in FIPS mode (the FIPS provider must do
/// every operation) or refuses the registration; `why`, when given, then says why. Call it once,
/// before other threads use OpenSSL; later calls return what the first one did.
EcKeys use_legacy_ec_keys(std::string* why = nullptr);

/// What `use_legacy_ec_keys` put in force (kProvider until it succeeded).
EcKeys ec_keys_in_use();

/// Whether certificate keys decoded by the built-in method copy their curve (P-256, P-384,
/// P-521) from one built at start instead of building it for each certificate (OpenSSL's own
/// decoder does; ~5% of a device handshake's CPU). Part of `use_legacy_ec_keys`; false before it
/// or when that registration failed (decoding then stays with OpenSSL's decoder). ECDHE key
/// shares made through the method copy the same curves whenever they could be built.
bool ec_curves_shared();

/// Whether the running OpenSSL rebuilds its decoders for every key, which is what
/// `use_legacy_ec_keys` avoids: true before OpenSSL 3.2, whose decoder cache makes the provider
/// path fast as well.
bool legacy_ec_keys_pay_off();

/// A fresh EC key on `curve` ("P-256", "P-384") made by OpenSSL's default provider, whichever
/// method is in force: once `use_legacy_ec_keys` is on, `EVP_EC_gen("P-256")` goes to the
/// built-in method, which knows no NIST curve names ("invalid curve"). The caller owns the key;
/// nullptr on failure (OpenSSL's error queue says why).
EVP_PKEY* generate_ec_key(const char* curve);

/// `key`, made fit to sign certificates, CRLs and CSRs (X509_sign and the like): once
/// `use_legacy_ec_keys` is on, OpenSSL 3.0 gives every EC key a context of the built-in method,
/// and a provider key then cannot produce its AlgorithmIdentifier ("command not supported"), so an
/// EC provider key is copied into a built-in one. Any other key comes back as is. Returns a new
/// reference the caller frees; nullptr on failure.
EVP_PKEY* key_for_signing(EVP_PKEY* key);

}  // namespace otahub::pki
