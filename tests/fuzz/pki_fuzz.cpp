// libFuzzer harness for certificate, CRL, CSR and CA-registration input handling
// (server/domain/pki/). The first byte picks the entry point, the rest is the untrusted input:
//   0: Certificate::parse, parse_certificate_chain, decode_base64
//   1: import_crl against the fixed fuzz CA (tests/fuzz/pki/ca.crt)
//   2: sign_csr with the fixed fuzz CA
//   3: validate_ca_registration: "<ca>\0<verification certificate>", token "fuzztoken"
//   4: decrypt_private_key
// Only the documented exceptions (PkiError, KeyDecryptionError) may escape; nothing may crash.
// Built and run by tests/fuzz/run (see tests/fuzz/README.md); the CA is test material only.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "server/domain/pki/ca_registration.hpp"
#include "server/domain/pki/certificate.hpp"
#include "server/domain/pki/crl.hpp"
#include "server/domain/pki/ec_keys.hpp"
#include "server/domain/pki/managed_ca.hpp"
#include "server/domain/pki/pki_error.hpp"

#ifndef OTAHUB_FUZZ_PKI_DIR
#error "OTAHUB_FUZZ_PKI_DIR must name tests/fuzz/pki"
#endif

namespace {

namespace pki = otahub::pki;

void check(bool condition) {
    if (!condition) {
        std::abort();
    }
}

std::string slurp(const char* name) {
    std::ifstream in(std::string(OTAHUB_FUZZ_PKI_DIR) + "/" + name, std::ios::binary);
    check(in.good());
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

const pki::CertifiedKey& fuzz_ca() {
    static const pki::CertifiedKey ca = [] {
        auto cert = pki::Certificate::parse(slurp("ca.crt"));
        check(cert.has_value());
        return pki::CertifiedKey{*cert, slurp("ca.key")};
    }();
    return ca;
}

// 2027-01-01T00:00:00Z: inside the validity of the fuzz CA (2026-2126) and of the seed CRL.
const std::chrono::system_clock::time_point kNow{std::chrono::seconds{1798761600}};

}  // namespace

// otahubd decodes EC certificate keys through OpenSSL's built-in EC method by default
// (OTAHUB_OPENSSL_EC_KEYS=legacy): fuzz that path.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
    check(pki::use_legacy_ec_keys() == pki::EcKeys::kLegacy);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
    switch (data[0] % 5) {
        case 0: {
            auto cert = pki::Certificate::parse(input);
            if (cert) {
                auto again = pki::Certificate::from_pem(cert->pem());
                check(again.has_value());
                check(again->facts().serial == cert->facts().serial);
            }
            auto chain = pki::parse_certificate_chain(input);
            for (const auto& link : chain) {
                check(link.get() != nullptr);
            }
            (void)pki::decode_base64(input);
            break;
        }
        case 1:
            try {
                auto crl = pki::import_crl(input, fuzz_ca().certificate, kNow);
                check(pki::revoked_serials(crl).size() == crl.revoked.size());
            } catch (const pki::PkiError&) {
            }
            break;
        case 2:
            try {
                auto cert = pki::sign_csr(fuzz_ca(), input, "fuzz-device", std::nullopt, kNow);
                check(cert.facts().common_name == "fuzz-device");
            } catch (const pki::PkiError&) {
            }
            break;
        case 3: {
            auto nul = input.find('\0');
            auto ca = input.substr(0, nul);
            auto verification =
                nul == std::string_view::npos ? std::string_view{} : input.substr(nul + 1);
            auto result = pki::validate_ca_registration(ca, verification, "fuzztoken", kNow);
            check(result.ca.has_value() != result.failure.has_value());
            if (result.failure) {
                (void)pki::to_api_error(*result.failure);
            }
            break;
        }
        default:
            try {
                (void)pki::decrypt_private_key(input, "fuzz-secret");
            } catch (const pki::KeyDecryptionError&) {
            }
            break;
    }
    return 0;
}
