#include "server/domain/pki/ec_keys.hpp"

#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
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

// ---- certificate keys on shared curves ----
//
// OpenSSL's built-in decoder (eckey_pub_decode) builds the key's curve from scratch for every
// certificate it decodes: EC_KEY_new_by_curve_name, two Montgomery setups with a modular inverse
// each, ~5% of the hub's CPU in a handshake benchmark (the certificate on the wire, the session
// in each ticket issued and presented). The decoder below copies a curve built once instead; the
// key it makes is the one OpenSSL's makes (same method, same group, same point checks).
// EVP_PKEY_asn1_set_public replaces all six public-key functions, so the other five are written
// out here as OpenSSL's are (crypto/ec/ec_ameth.c), with public calls.

struct SharedGroup {
    int nid;
    EC_GROUP* group;
};
std::array<SharedGroup, 3> g_groups{
    {{NID_X9_62_prime256v1, nullptr}, {NID_secp384r1, nullptr}, {NID_secp521r1, nullptr}}};
bool g_shared_groups = false;

const EC_GROUP* shared_group(int nid) {
    for (const auto& shared : g_groups) {
        if (shared.nid == nid) return shared.group;
    }
    return nullptr;
}

// An empty EC key on a copy of `group`; nullptr on failure.
EC_KEY* key_with_group(const EC_GROUP* group) {
    EC_KEY* key = EC_KEY_new();
    if (key != nullptr && EC_KEY_set_group(key, group) == 1) return key;
    EC_KEY_free(key);
    return nullptr;
}

// The key's curve from the AlgorithmIdentifier parameters: a named curve (copied from the shared
// group when there is one) or explicit parameters (decoded, as OpenSSL does). In OpenSSL's default
// library context, the only one the hub uses (OpenSSL's decoder takes the certificate's).
EC_KEY* key_on_curve(int parameter_type, const void* parameters) {
    if (parameter_type == V_ASN1_OBJECT) {
        const int nid = OBJ_obj2nid(static_cast<const ASN1_OBJECT*>(parameters));
        const EC_GROUP* group = shared_group(nid);
        return group != nullptr ? key_with_group(group) : EC_KEY_new_by_curve_name(nid);
    }
    if (parameter_type == V_ASN1_SEQUENCE) {
        const auto* encoded = static_cast<const ASN1_STRING*>(parameters);
        const unsigned char* p = ASN1_STRING_get0_data(encoded);
        return d2i_ECParameters(nullptr, &p, ASN1_STRING_length(encoded));
    }
    return nullptr;
}

int pub_decode(EVP_PKEY* pkey, const X509_PUBKEY* pubkey) {
    const unsigned char* point = nullptr;
    int length = 0;
    X509_ALGOR* algorithm = nullptr;
    if (X509_PUBKEY_get0_param(nullptr, &point, &length, &algorithm, pubkey) != 1) return 0;
    int parameter_type = 0;
    const void* parameters = nullptr;
    X509_ALGOR_get0(nullptr, &parameter_type, &parameters, algorithm);
    EC_KEY* key = key_on_curve(parameter_type, parameters);
    if (key == nullptr || o2i_ECPublicKey(&key, &point, length) == nullptr) {
        EC_KEY_free(key);
        ERR_raise(ERR_LIB_EC, EC_R_DECODE_ERROR);
        return 0;
    }
    if (EVP_PKEY_assign_EC_KEY(pkey, key) != 1) {
        EC_KEY_free(key);
        return 0;
    }
    return 1;
}

int pub_encode(X509_PUBKEY* pubkey, const EVP_PKEY* pkey) {
    const EC_KEY* key = EVP_PKEY_get0_EC_KEY(pkey);
    const EC_GROUP* group = key != nullptr ? EC_KEY_get0_group(key) : nullptr;
    if (group == nullptr) {
        ERR_raise(ERR_LIB_EC, EC_R_MISSING_PARAMETERS);
        return 0;
    }
    int parameter_type = V_ASN1_OBJECT;
    void* parameters = nullptr;
    const int nid = EC_GROUP_get_curve_name(group);
    if (EC_GROUP_get_asn1_flag(group) != 0 && nid != NID_undef) {
        ASN1_OBJECT* oid = OBJ_nid2obj(nid);
        if (oid == nullptr || OBJ_length(oid) == 0) {
            ERR_raise(ERR_LIB_EC, EC_R_MISSING_OID);
            return 0;
        }
        parameters = oid;
    } else {
        unsigned char* der = nullptr;
        const int der_length = i2d_ECParameters(key, &der);
        ASN1_STRING* encoded = der_length > 0 ? ASN1_STRING_new() : nullptr;
        if (encoded == nullptr) {
            OPENSSL_free(der);
            ERR_raise(ERR_LIB_EC, ERR_R_EC_LIB);
            return 0;
        }
        ASN1_STRING_set0(encoded, der, der_length);
        parameter_type = V_ASN1_SEQUENCE;
        parameters = encoded;
    }
    unsigned char* point = nullptr;
    const int point_length = i2o_ECPublicKey(key, &point);
    if (point_length > 0 && X509_PUBKEY_set0_param(pubkey, OBJ_nid2obj(EVP_PKEY_EC), parameter_type,
                                                   parameters, point, point_length) == 1) {
        return 1;
    }
    if (parameter_type == V_ASN1_SEQUENCE) ASN1_STRING_free(static_cast<ASN1_STRING*>(parameters));
    OPENSSL_free(point);
    return 0;
}

int pub_cmp(const EVP_PKEY* a, const EVP_PKEY* b) {
    const EC_KEY* key_a = EVP_PKEY_get0_EC_KEY(a);
    const EC_KEY* key_b = EVP_PKEY_get0_EC_KEY(b);
    const EC_GROUP* group = key_b != nullptr ? EC_KEY_get0_group(key_b) : nullptr;
    const EC_POINT* point_a = key_a != nullptr ? EC_KEY_get0_public_key(key_a) : nullptr;
    const EC_POINT* point_b = key_b != nullptr ? EC_KEY_get0_public_key(key_b) : nullptr;
    if (group == nullptr || point_a == nullptr || point_b == nullptr) return -2;
    switch (EC_POINT_cmp(group, point_a, point_b, nullptr)) {
        case 0:
            return 1;
        case 1:
            return 0;
        default:
            return -2;
    }
}

int pub_print(BIO* out, const EVP_PKEY* pkey, int indent, ASN1_PCTX* /*context*/) {
    const EC_KEY* key = EVP_PKEY_get0_EC_KEY(pkey);
    const EC_GROUP* group = key != nullptr ? EC_KEY_get0_group(key) : nullptr;
    if (group == nullptr) return 0;
    unsigned char* point = nullptr;
    const std::size_t point_length =
        EC_KEY_key2buf(key, EC_KEY_get_conv_form(key), &point, nullptr);
    const bool ok =
        BIO_indent(out, indent, 128) == 1 &&
        BIO_printf(out, "Public-Key: (%d bit)\n", EC_GROUP_order_bits(group)) > 0 &&
        (point_length == 0 || (BIO_indent(out, indent, 128) == 1 && BIO_printf(out, "pub:\n") > 0 &&
                               ASN1_buf_print(out, point, point_length, indent + 4) == 1)) &&
        ECPKParameters_print(out, group, indent) == 1;
    OPENSSL_free(point);
    return ok ? 1 : 0;
}

int pkey_size(const EVP_PKEY* pkey) { return ECDSA_size(EVP_PKEY_get0_EC_KEY(pkey)); }

int pkey_bits(const EVP_PKEY* pkey) {
    const EC_KEY* key = EVP_PKEY_get0_EC_KEY(pkey);
    const EC_GROUP* group = key != nullptr ? EC_KEY_get0_group(key) : nullptr;
    return group != nullptr ? EC_GROUP_order_bits(group) : 0;
}

bool build_shared_groups() {
    for (auto& shared : g_groups) {
        shared.group = EC_GROUP_new_by_curve_name(shared.nid);
        if (shared.group == nullptr) {
            for (auto& built : g_groups) {
                EC_GROUP_free(built.group);
                built.group = nullptr;
            }
            return false;
        }
    }
    return true;
}

// Registers the decoder above in front of OpenSSL's own EC public-key method (an application
// method of the same type is found first). False, with nothing registered, when anything fails.
bool install_shared_decoder() {
    const EVP_PKEY_ASN1_METHOD* builtin = EVP_PKEY_asn1_find(nullptr, EVP_PKEY_EC);
    if (builtin == nullptr) return false;
    int id = 0;
    int base_id = 0;
    int flags = 0;
    const char* info = nullptr;
    const char* pem = nullptr;
    if (EVP_PKEY_asn1_get0_info(&id, &base_id, &flags, &info, &pem, builtin) != 1) return false;
    EVP_PKEY_ASN1_METHOD* method = EVP_PKEY_asn1_new(id, flags, pem, info);
    if (method == nullptr) return false;
    EVP_PKEY_asn1_copy(method, builtin);
    EVP_PKEY_asn1_set_public(method, pub_decode, pub_encode, pub_cmp, pub_print, pkey_size,
                             pkey_bits);
    if (EVP_PKEY_asn1_add0(method) != 1) {
        EVP_PKEY_asn1_free(method);
        return false;
    }
    return true;  // OpenSSL keeps the method until exit
}

// ---- key shares on shared curves ----
//
// libssl makes each ECDHE key share through this method: EVP_PKEY_CTX_set_group_name, which
// OpenSSL's control answers by building the curve from scratch again (~1.6% of a handshake's
// CPU), then paramgen or keygen. For the shared curves the control below only remembers the group
// (in the context's application data, as engine methods keep their state; a context whose
// application data someone else set goes OpenSSL's way), and paramgen/keygen copy it; anything
// else on such a context first gives OpenSSL's method its curve as before.

int (*g_original_ctrl)(EVP_PKEY_CTX*, int, int, void*) = nullptr;
int (*g_original_paramgen)(EVP_PKEY_CTX*, EVP_PKEY*) = nullptr;
int (*g_original_keygen)(EVP_PKEY_CTX*, EVP_PKEY*) = nullptr;

bool is_shared_group(const void* group) {
    return std::any_of(g_groups.begin(), g_groups.end(),
                       [group](const SharedGroup& shared) { return shared.group == group; });
}

// The shared curve remembered for `ctx`; nullptr when none, or when the application data is
// someone else's (then this method never touches it).
const EC_GROUP* chosen_group(EVP_PKEY_CTX* ctx) {
    void* data = EVP_PKEY_CTX_get_app_data(ctx);
    return is_shared_group(data) ? static_cast<const EC_GROUP*>(data) : nullptr;
}

// Hands a remembered curve to OpenSSL's method (which then holds it as if it had been asked).
int give_curve_to_openssl(EVP_PKEY_CTX* ctx) {
    const EC_GROUP* group = chosen_group(ctx);
    if (group == nullptr) return 1;
    EVP_PKEY_CTX_set_app_data(ctx, nullptr);
    return g_original_ctrl(ctx, EVP_PKEY_CTRL_EC_PARAMGEN_CURVE_NID, EC_GROUP_get_curve_name(group),
                           nullptr);
}

int key_share_ctrl(EVP_PKEY_CTX* ctx, int type, int p1, void* p2) {
    if (type == EVP_PKEY_CTRL_EC_PARAMGEN_CURVE_NID) {
        void* data = EVP_PKEY_CTX_get_app_data(ctx);
        const bool ours = data == nullptr || is_shared_group(data);
        if (const EC_GROUP* group = shared_group(p1); group != nullptr && ours) {
            EVP_PKEY_CTX_set_app_data(ctx, const_cast<EC_GROUP*>(group));
            return 1;
        }
        if (ours) EVP_PKEY_CTX_set_app_data(ctx, nullptr);
        return g_original_ctrl(ctx, type, p1, p2);
    }
    if (give_curve_to_openssl(ctx) <= 0) return 0;
    return g_original_ctrl(ctx, type, p1, p2);
}

// A new EC key on `group` in `pkey`, with a fresh key pair when `generate`.
int key_on_group(EVP_PKEY* pkey, const EC_GROUP* group, bool generate) {
    EC_KEY* key = key_with_group(group);
    if (key == nullptr || EVP_PKEY_assign_EC_KEY(pkey, key) != 1) {
        EC_KEY_free(key);
        return 0;
    }
    return generate ? EC_KEY_generate_key(key) : 1;  // pkey owns the key either way
}

int key_share_paramgen(EVP_PKEY_CTX* ctx, EVP_PKEY* pkey) {
    const EC_GROUP* group = chosen_group(ctx);
    return group != nullptr ? key_on_group(pkey, group, false) : g_original_paramgen(ctx, pkey);
}

int key_share_keygen(EVP_PKEY_CTX* ctx, EVP_PKEY* pkey) {
    const EC_GROUP* group = chosen_group(ctx);
    // A context made from a key generates on that key's curve, as OpenSSL's keygen does.
    if (group == nullptr || EVP_PKEY_CTX_get0_pkey(ctx) != nullptr) {
        if (give_curve_to_openssl(ctx) <= 0) return 0;
        return g_original_keygen(ctx, pkey);
    }
    return key_on_group(pkey, group, true);
}

// Wraps the method's control, paramgen and keygen as above. (OpenSSL 3.0 cannot duplicate a
// paramgen or keygen context, so the remembered curve never needs copying.)
void share_key_share_curves(EVP_PKEY_METHOD* method) {
    int (*ctrl_str)(EVP_PKEY_CTX*, const char*, const char*) = nullptr;
    EVP_PKEY_meth_get_ctrl(method, &g_original_ctrl, &ctrl_str);
    int (*paramgen_init)(EVP_PKEY_CTX*) = nullptr;
    int (*keygen_init)(EVP_PKEY_CTX*) = nullptr;
    EVP_PKEY_meth_get_paramgen(method, &paramgen_init, &g_original_paramgen);
    EVP_PKEY_meth_get_keygen(method, &keygen_init, &g_original_keygen);
    if (g_original_ctrl == nullptr || g_original_paramgen == nullptr ||
        g_original_keygen == nullptr) {
        return;
    }
    EVP_PKEY_meth_set_ctrl(method, key_share_ctrl, ctrl_str);
    EVP_PKEY_meth_set_paramgen(method, paramgen_init, key_share_paramgen);
    EVP_PKEY_meth_set_keygen(method, keygen_init, key_share_keygen);
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
    // The curves are built before the method is in use (a key share made through it needs them).
    const bool curves = build_shared_groups();
    if (curves) share_key_share_curves(g_ec_method);
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
        g_shared_groups = curves && install_shared_decoder();
        if (!g_shared_groups) ERR_clear_error();  // decoding stays with OpenSSL's own decoder
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

bool ec_curves_shared() { return ec_keys_in_use() == EcKeys::kLegacy && g_shared_groups; }

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
