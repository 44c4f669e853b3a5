#include "server/domain/pki/ec_keys.hpp"

#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <atomic>
#include <memory>
#include <mutex>

// The ENGINE and EVP_PKEY_METHOD interfaces are deprecated in OpenSSL 3 but still the only way to
// route certificate key decoding around the provider decoders in 3.0.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace otahub::pki {
namespace {

std::once_flag g_once;
std::atomic<EcKeys> g_in_use{EcKeys::kProvider};
std::string g_why;

// A copy of OpenSSL's built-in EC method; the engine hands it out and frees it at exit.
EVP_PKEY_METHOD* g_ec_method = nullptr;
const int kNids[] = {EVP_PKEY_EC};

int engine_pkey_methods(ENGINE* /*engine*/, EVP_PKEY_METHOD** method, const int** nids, int nid) {
    if (method == nullptr) {
        *nids = kNids;
        return 1;
    }
    *method = nid == EVP_PKEY_EC ? g_ec_method : nullptr;
    return *method != nullptr ? 1 : 0;
}

std::string openssl_reason(const char* what) {
    std::string text = what;
    if (const unsigned long code = ERR_get_error(); code != 0) {
        char reason[256];
        ERR_error_string_n(code, reason, sizeof reason);
        text += ": ";
        text += reason;
    }
    ERR_clear_error();
    return text;
}

void install() {
    if (EVP_default_properties_is_fips_enabled(nullptr) != 0) {
        g_why = "OpenSSL is in FIPS mode";
        return;
    }
    const EVP_PKEY_METHOD* builtin = EVP_PKEY_meth_find(EVP_PKEY_EC);
    if (builtin == nullptr) {
        g_why = "this OpenSSL has no built-in EC key method";
        return;
    }
    g_ec_method = EVP_PKEY_meth_new(EVP_PKEY_EC, 0);
    if (g_ec_method == nullptr) {
        g_why = openssl_reason("EVP_PKEY_meth_new");
        return;
    }
    EVP_PKEY_meth_copy(g_ec_method, builtin);
    ENGINE* engine = ENGINE_new();
    if (engine == nullptr || ENGINE_set_id(engine, "otahub-ec") != 1 ||
        ENGINE_set_name(engine, "otahub: OpenSSL's built-in EC key method") != 1 ||
        ENGINE_set_pkey_meths(engine, engine_pkey_methods) != 1 || ENGINE_init(engine) != 1) {
        g_why = openssl_reason("cannot set up the EC engine");
        if (engine != nullptr)
            ENGINE_free(engine);  // frees g_ec_method with it
        else
            EVP_PKEY_meth_free(g_ec_method);
        g_ec_method = nullptr;
        return;
    }
    const bool registered = ENGINE_set_default_pkey_meths(engine) == 1;
    if (!registered) g_why = openssl_reason("ENGINE_set_default_pkey_meths");
    // The method table keeps its own reference while registered; ours are released either way.
    ENGINE_finish(engine);
    ENGINE_free(engine);
    if (registered) {
        g_in_use = EcKeys::kLegacy;
    } else {
        g_ec_method = nullptr;
    }
}

}  // namespace

EcKeys use_legacy_ec_keys(std::string* why) {
    std::call_once(g_once, install);
    if (why != nullptr) *why = g_why;
    return g_in_use.load();
}

EcKeys ec_keys_in_use() { return g_in_use.load(); }

bool legacy_ec_keys_pay_off() { return OpenSSL_version_num() < 0x30200000UL; }

EVP_PKEY* generate_ec_key(const char* curve) {
    // OpenSSL maps the name "EC" to its EC type and from there to the registered ENGINE; the
    // provider's key manager is also registered under the algorithm's OID, which maps to no
    // legacy type, so fetching by OID reaches the provider whether or not the ENGINE is there.
    using CtxPtr = std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)>;
    const CtxPtr ctx{EVP_PKEY_CTX_new_from_name(nullptr, "1.2.840.10045.2.1", nullptr),
                     EVP_PKEY_CTX_free};
    EVP_PKEY* key = nullptr;
    // With the ENGINE registered, OpenSSL queues a harmless "command not supported" while it
    // looks for the new key's legacy methods; only a failure's errors are left for the caller.
    ERR_set_mark();
    if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 ||
        EVP_PKEY_CTX_set_group_name(ctx.get(), curve) != 1 ||
        EVP_PKEY_generate(ctx.get(), &key) != 1) {
        ERR_clear_last_mark();
        return nullptr;
    }
    ERR_pop_to_mark();
    return key;
}

EVP_PKEY* key_for_signing(EVP_PKEY* key) {
    if (key == nullptr) return nullptr;
    if (ec_keys_in_use() != EcKeys::kLegacy || EVP_PKEY_get_base_id(key) != EVP_PKEY_EC) {
        return EVP_PKEY_up_ref(key) == 1 ? key : nullptr;
    }
    // A built-in key copies as well as a provider one (whose EC_KEY is OpenSSL's cached export).
    EVP_PKEY* copy = EVP_PKEY_new();
    if (copy == nullptr ||
        EVP_PKEY_set1_EC_KEY(copy, const_cast<EC_KEY*>(EVP_PKEY_get0_EC_KEY(key))) != 1) {
        EVP_PKEY_free(copy);
        return nullptr;
    }
    return copy;
}

}  // namespace otahub::pki

#pragma GCC diagnostic pop
