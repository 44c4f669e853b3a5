#include "server/domain/pki/trust_store.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <exception>
#include <new>

namespace otahub::pki {
namespace {

using Clock = std::chrono::system_clock;

// Upper-case hex without separators, so "fa:16:bc" and "FA16BC" name the same thing.
std::string normalize_hex(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        if (c == ':' || c == ' ') {
            continue;
        }
        out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    }
    return out;
}

std::string normalize_serial(std::string_view decimal) {
    const auto first = decimal.find_first_not_of('0');
    return first == std::string_view::npos ? std::string("0") : std::string(decimal.substr(first));
}

std::string revoked_serial_key(std::string_view issuer_ski, std::string_view serial) {
    std::string key(issuer_ski);
    key.push_back('/');
    key.append(serial);
    return key;
}

std::string fingerprint_of(X509* cert) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    if (X509_digest(cert, EVP_sha1(), digest.data(), &length) != 1) {
        return {};
    }
    return to_hex_upper({digest.data(), length});
}

std::string key_id_hex(const ASN1_OCTET_STRING* id) {
    if (id == nullptr) {
        return {};
    }
    return to_hex_upper(
        {ASN1_STRING_get0_data(id), static_cast<std::size_t>(ASN1_STRING_length(id))});
}

std::string serial_decimal(X509* cert) {
    BignumPtr number{ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr)};
    if (!number) {
        return {};
    }
    char* text = BN_bn2dec(number.get());
    if (text == nullptr) {
        return {};
    }
    std::string result(text);
    OPENSSL_free(text);
    return result;
}

int store_ex_index() {
    static const int index = X509_STORE_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

struct Classified {
    VerifyStatus status;
    int x509_error;
};

// Maps OpenSSL's verification error to our reason and the code whose alert the client should get.
Classified classify(int error) {
    switch (error) {
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_CERT_UNTRUSTED:
            return {VerifyStatus::kUnknownCa, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY};
        case X509_V_ERR_CERT_HAS_EXPIRED:
            return {VerifyStatus::kExpired, X509_V_ERR_CERT_HAS_EXPIRED};
        case X509_V_ERR_CERT_NOT_YET_VALID:
            return {VerifyStatus::kNotYetValid, X509_V_ERR_CERT_NOT_YET_VALID};
        case X509_V_ERR_INVALID_PURPOSE:
            return {VerifyStatus::kInvalidPurpose, X509_V_ERR_INVALID_PURPOSE};
        case X509_V_ERR_CERT_REVOKED:
            return {VerifyStatus::kRevoked, X509_V_ERR_CERT_REVOKED};
        case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
            return {VerifyStatus::kBadSignature, error};
        case X509_V_OK:
            // X509_verify_cert failed without saying why: an internal failure.
            return {VerifyStatus::kUnavailable, X509_V_ERR_UNSPECIFIED};
        default:
            return {VerifyStatus::kInvalidCertificate, error};
    }
}

}  // namespace

std::string_view to_string(VerifyStatus status) {
    switch (status) {
        case VerifyStatus::kOk:
            return "ok";
        case VerifyStatus::kUnknownCa:
            return "unknown_ca";
        case VerifyStatus::kExpired:
            return "expired";
        case VerifyStatus::kNotYetValid:
            return "not_yet_valid";
        case VerifyStatus::kInvalidPurpose:
            return "invalid_purpose";
        case VerifyStatus::kRevoked:
            return "revoked";
        case VerifyStatus::kDeviceDisabled:
            return "device_disabled";
        case VerifyStatus::kBadSignature:
            return "bad_signature";
        case VerifyStatus::kInvalidCertificate:
            return "invalid_certificate";
        case VerifyStatus::kUnavailable:
            return "unavailable";
    }
    return "unknown";
}

// ---- TrustSnapshot ----

TrustSnapshot::TrustSnapshot() = default;
TrustSnapshot::~TrustSnapshot() = default;

std::shared_ptr<const TrustSnapshot> TrustSnapshot::empty() { return build(TrustInputs{}); }

std::shared_ptr<const TrustSnapshot> TrustSnapshot::build(const TrustInputs& inputs,
                                                          std::size_t verify_cache_entries) {
    std::shared_ptr<TrustSnapshot> snapshot{new TrustSnapshot};
    snapshot->verify_cache_limit_ = verify_cache_entries;
    snapshot->store_.reset(X509_STORE_new());
    if (!snapshot->store_) {
        throw std::bad_alloc{};
    }
    const OpensslErrorScope errors;
    X509_STORE* store = snapshot->store_.get();
    X509_STORE_set_ex_data(store, store_ex_index(), snapshot.get());
    X509_STORE_set_verify_cb(store, &TrustSnapshot::on_verify_error);
    X509_STORE_set_check_revocation(store, &TrustSnapshot::check_revocation);

    snapshot->anchors_.reserve(inputs.cas.size());
    for (const RegisteredCa& ca : inputs.cas) {
        const unsigned char* cursor = ca.der.data();
        X509Ptr cert{ca.der.empty() ? nullptr
                                    : d2i_X509(nullptr, &cursor, static_cast<long>(ca.der.size()))};
        if (!cert || cursor != ca.der.data() + ca.der.size()) {
            snapshot->skipped_ca_ids_.push_back(ca.id);
            continue;
        }
        if (!ca.active) {
            continue;
        }
        std::string fingerprint = fingerprint_of(cert.get());
        if (fingerprint.empty() || snapshot->anchor_by_fingerprint_.contains(fingerprint)) {
            continue;  // the same certificate twice: the first registration wins
        }
        if (X509_STORE_add_cert(store, cert.get()) != 1) {
            snapshot->skipped_ca_ids_.push_back(ca.id);
            continue;
        }
        std::string ski = key_id_hex(X509_get0_subject_key_id(cert.get()));
        snapshot->anchor_by_fingerprint_.emplace(std::move(fingerprint), snapshot->anchors_.size());
        snapshot->anchors_.push_back(Anchor{ca, std::move(cert), std::move(ski)});
    }

    for (const std::string& fingerprint : inputs.revoked_fingerprints) {
        snapshot->revoked_fingerprints_.insert(normalize_hex(fingerprint));
    }
    for (const RevokedSerial& revoked : inputs.revoked_serials) {
        snapshot->revoked_serials_.insert(revoked_serial_key(normalize_hex(revoked.issuer_ski),
                                                             normalize_serial(revoked.serial)));
    }
    for (const DisabledDevice& device : inputs.disabled_devices) {
        snapshot->disabled_devices_.emplace(device.org_id, device.identifier);
    }
    return snapshot;
}

const TrustSnapshot* TrustSnapshot::from_store(X509_STORE_CTX* ctx) {
    X509_STORE* store = X509_STORE_CTX_get0_store(ctx);
    if (store == nullptr) {
        return nullptr;
    }
    return static_cast<const TrustSnapshot*>(X509_STORE_get_ex_data(store, store_ex_index()));
}

const TrustSnapshot::Anchor* TrustSnapshot::anchor_for(X509* cert) const {
    const auto found = anchor_by_fingerprint_.find(fingerprint_of(cert));
    return found == anchor_by_fingerprint_.end() ? nullptr : &anchors_[found->second];
}

std::optional<int> TrustSnapshot::deepest_anchor(STACK_OF(X509) * chain) const {
    // Index 0 is the peer's own certificate: never its own trust anchor, even if it is a
    // registered CA.
    const int length = chain == nullptr ? 0 : sk_X509_num(chain);
    for (int i = 1; i < length; ++i) {
        if (anchor_for(sk_X509_value(chain, i)) != nullptr) {
            return i;
        }
    }
    return std::nullopt;
}

bool TrustSnapshot::is_revoked(X509* cert, X509* issuer) const {
    if (!revoked_fingerprints_.empty() && revoked_fingerprints_.contains(fingerprint_of(cert))) {
        return true;
    }
    if (revoked_serials_.empty()) {
        return false;
    }
    // The issuer's SKI names the issuing CA; fall back on the certificate's AKI without one.
    std::string issuer_ski = key_id_hex(X509_get0_subject_key_id(issuer));
    if (issuer_ski.empty()) {
        issuer_ski = key_id_hex(X509_get0_authority_key_id(cert));
    }
    return !issuer_ski.empty() &&
           revoked_serials_.contains(revoked_serial_key(issuer_ski, serial_decimal(cert)));
}

// Installed as the store's verify callback: OpenSSL reports each problem here and stops at the
// first one we do not forgive.
int TrustSnapshot::on_verify_error(int ok, X509_STORE_CTX* ctx) {
    if (ok == 1) {
        return 1;
    }
    const TrustSnapshot* self = from_store(ctx);
    if (self == nullptr) {
        return 0;
    }
    const auto anchor = self->deepest_anchor(X509_STORE_CTX_get0_chain(ctx));
    if (!anchor) {
        return 0;
    }
    const int depth = X509_STORE_CTX_get_error_depth(ctx);
    // Certificates above the deepest registered CA are not part of the trust decision: that CA
    // is the anchor, whatever OpenSSL found above it (say, an expired registered root).
    if (depth > *anchor) {
        return 1;
    }
    if (depth != *anchor) {
        return 0;
    }
    switch (X509_STORE_CTX_get_error(ctx)) {
        case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
            // The anchor's own signature, by whatever is above it, does not matter.
            return 1;
        case X509_V_ERR_CERT_HAS_EXPIRED: {
            const Anchor* registered =
                self->anchor_for(sk_X509_value(X509_STORE_CTX_get0_chain(ctx), *anchor));
            return registered != nullptr && !registered->ca.check_expiration ? 1 : 0;
        }
        default:
            return 0;
    }
}

// Installed as the store's revocation check (OpenSSL calls it after building the chain, before
// checking signatures and times, where a CRL check would run).
int TrustSnapshot::check_revocation(X509_STORE_CTX* ctx) {
    const TrustSnapshot* self = from_store(ctx);
    STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(ctx);
    if (self == nullptr || chain == nullptr) {
        return 1;
    }
    const int length = sk_X509_num(chain);
    const int anchor = self->deepest_anchor(chain).value_or(length - 1);
    for (int i = 0; i < anchor; ++i) {
        X509* cert = sk_X509_value(chain, i);
        if (!self->is_revoked(cert, sk_X509_value(chain, i + 1))) {
            continue;
        }
        X509_STORE_CTX_set_error(ctx, X509_V_ERR_CERT_REVOKED);
        X509_STORE_CTX_set_error_depth(ctx, i);
        X509_STORE_CTX_set_current_cert(ctx, cert);
        if (X509_STORE_CTX_get_verify_cb(ctx)(0, ctx) == 0) {
            return 0;
        }
    }
    return 1;
}

VerifyResult TrustSnapshot::verify(X509* leaf, STACK_OF(X509) * untrusted, Clock::time_point now,
                                   X509StackPtr* verified_chain) const {
    VerifyResult result;
    if (leaf == nullptr) {
        result.status = VerifyStatus::kInvalidCertificate;
        result.x509_error = X509_V_ERR_UNSPECIFIED;
        return result;
    }
    const OpensslErrorScope errors;
    result.leaf = read_certificate_facts(leaf);
    std::optional<VerifyKey> key;
    if (result.leaf && verify_cache_limit_ > 0) {
        key = verify_key(*result.leaf, leaf, untrusted);
        if (key && accepted_before(*key, leaf, now, result, verified_chain)) {
            return result;
        }
    }

    X509StoreCtxPtr ctx{X509_STORE_CTX_new()};
    if (!ctx || X509_STORE_CTX_init(ctx.get(), store_.get(), leaf, untrusted) != 1) {
        result.status = VerifyStatus::kUnavailable;
        result.x509_error = X509_V_ERR_UNSPECIFIED;
        return result;
    }
    X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
    X509_VERIFY_PARAM_set_time(param, Clock::to_time_t(now));
    X509_VERIFY_PARAM_set_depth(param, kMaxVerifyDepth);
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
    X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);

    const int verified = X509_verify_cert(ctx.get());
    if (verified != 1) {
        const Classified classified = classify(X509_STORE_CTX_get_error(ctx.get()));
        result.status = classified.status;
        result.x509_error = classified.x509_error;
        result.error_depth = std::max(0, X509_STORE_CTX_get_error_depth(ctx.get()));
        // Name the registered CA the refused chain reached, for per-CA refusal counts.
        STACK_OF(X509)* partial = X509_STORE_CTX_get0_chain(ctx.get());
        if (const auto depth = deepest_anchor(partial)) {
            if (const Anchor* reached = anchor_for(sk_X509_value(partial, *depth))) {
                result.ca = MatchedCa{reached->ca.id, reached->ca.org_id, reached->ca.jitp,
                                      reached->ski, *depth};
            }
        }
        return result;
    }

    STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(ctx.get());
    const auto anchor_depth = deepest_anchor(chain);
    const Anchor* anchor = anchor_depth ? anchor_for(sk_X509_value(chain, *anchor_depth)) : nullptr;
    if (anchor == nullptr) {
        // Only a registered CA can anchor, so OpenSSL cannot succeed without one; stay safe.
        result.status = VerifyStatus::kUnknownCa;
        result.x509_error = X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY;
        return result;
    }
    result.ca =
        MatchedCa{anchor->ca.id, anchor->ca.org_id, anchor->ca.jitp, anchor->ski, *anchor_depth};
    if (!result.leaf) {
        result.status = VerifyStatus::kInvalidCertificate;
        result.x509_error = X509_V_ERR_UNSPECIFIED;
        return result;
    }
    if (disabled_devices_.contains({anchor->ca.org_id, result.leaf->common_name})) {
        result.status = VerifyStatus::kDeviceDisabled;
        result.x509_error = X509_V_ERR_CERT_REJECTED;
        return result;
    }
    result.status = VerifyStatus::kOk;
    result.x509_error = X509_V_OK;
    if (key) {
        remember_accepted(*key, chain, *result.ca, anchor->ca.check_expiration);
    }
    if (verified_chain != nullptr) {
        verified_chain->reset(X509_STORE_CTX_get1_chain(ctx.get()));
    }
    return result;
}

std::size_t TrustSnapshot::VerifyKeyHash::operator()(const VerifyKey& key) const noexcept {
    // The key is a SHA-256 digest: any eight of its bytes are as good a hash as any.
    std::size_t hash = 0;
    std::memcpy(&hash, key.data(), sizeof hash);
    return hash;
}

std::optional<TrustSnapshot::VerifyKey> TrustSnapshot::verify_key(
    const CertificateFacts& leaf, X509* leaf_cert, STACK_OF(X509) * untrusted) const {
    // What OpenSSL's verification depends on besides this snapshot and the time: the leaf and
    // the intermediates the peer sent (a copy of the leaf among them changes nothing).
    const EvpMdCtxPtr md{EVP_MD_CTX_new()};
    if (!md || EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) != 1 ||
        EVP_DigestUpdate(md.get(), leaf.der.data(), leaf.der.size()) != 1) {
        return std::nullopt;
    }
    const int count = untrusted == nullptr ? 0 : sk_X509_num(untrusted);
    for (int i = 0; i < count; ++i) {
        X509* cert = sk_X509_value(untrusted, i);
        if (cert == leaf_cert || X509_cmp(cert, leaf_cert) == 0) {
            continue;
        }
        unsigned char* der = nullptr;
        const int length = i2d_X509(cert, &der);
        if (length <= 0) {
            return std::nullopt;
        }
        const std::array<unsigned char, 1> separator{0};
        const bool hashed = EVP_DigestUpdate(md.get(), separator.data(), separator.size()) == 1 &&
                            EVP_DigestUpdate(md.get(), der, static_cast<std::size_t>(length)) == 1;
        OPENSSL_free(der);
        if (!hashed) {
            return std::nullopt;
        }
    }
    VerifyKey key{};
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(md.get(), key.data(), &length) != 1 || length != key.size()) {
        return std::nullopt;
    }
    return key;
}

bool TrustSnapshot::accepted_before(const VerifyKey& key, X509* leaf, Clock::time_point now,
                                    VerifyResult& result, X509StackPtr* verified_chain) const {
    std::optional<MatchedCa> ca;
    std::vector<X509Ptr> issuers;
    bool anchor_expiry_checked = true;
    {
        const std::lock_guard lock{verify_cache_mutex_};
        const auto found = verify_cache_.find(key);
        if (found == verify_cache_.end()) {
            return false;
        }
        ca = found->second.ca;
        issuers.reserve(found->second.issuers.size());
        for (const X509Ptr& issuer : found->second.issuers) {
            issuers.push_back(share_x509(issuer.get()));
        }
        anchor_expiry_checked = found->second.anchor_expiry_checked;
    }
    // The times OpenSSL checks (X509_cmp_time, as it does), from the leaf up to the registered
    // CA, whose expiry it forgives when the CA says so (on_verify_error). Outside them: not a
    // hit; OpenSSL's verification decides and reports.
    time_t at = Clock::to_time_t(now);
    const auto valid = [&at](X509* cert, bool check_expiry) {
        if (X509_cmp_time(X509_get0_notBefore(cert), &at) >= 0) {
            return false;
        }
        const int after = X509_cmp_time(X509_get0_notAfter(cert), &at);
        return after != 0 && (!check_expiry || after > 0);
    };
    if (!valid(leaf, true)) {
        return false;
    }
    for (std::size_t i = 0; i < issuers.size(); ++i) {
        const bool anchor = i + 1 == issuers.size();
        if (!valid(issuers[i].get(), !anchor || anchor_expiry_checked)) {
            return false;
        }
    }
    if (verified_chain != nullptr) {
        X509StackPtr chain{sk_X509_new_null()};
        if (!chain || sk_X509_push(chain.get(), leaf) <= 0) {
            return false;
        }
        X509_up_ref(leaf);
        for (X509Ptr& issuer : issuers) {
            if (sk_X509_push(chain.get(), issuer.get()) <= 0) {
                return false;
            }
            issuer.release();  // the stack holds it now
        }
        *verified_chain = std::move(chain);
    }
    result.status = VerifyStatus::kOk;
    result.x509_error = X509_V_OK;
    result.error_depth = 0;
    result.ca = std::move(ca);
    verify_cache_hits_.fetch_add(1, std::memory_order_relaxed);
    return true;
}

void TrustSnapshot::remember_accepted(const VerifyKey& key, STACK_OF(X509) * chain,
                                      const MatchedCa& ca, bool anchor_expiry_checked) const {
    Accepted accepted{ca, {}, anchor_expiry_checked};
    accepted.issuers.reserve(static_cast<std::size_t>(ca.depth));
    for (int i = 1; i <= ca.depth; ++i) {
        accepted.issuers.push_back(share_x509(sk_X509_value(chain, i)));
    }
    const std::lock_guard lock{verify_cache_mutex_};
    if (verify_cache_.contains(key)) {
        return;  // two handshakes of one device at once: the first one's entry stands
    }
    if (verify_cache_.size() >= verify_cache_limit_) {
        verify_cache_.erase(verify_cache_order_.front());  // full: forget the oldest
        verify_cache_order_.pop_front();
    }
    verify_cache_order_.push_back(key);
    verify_cache_.emplace(key, std::move(accepted));
}

TrustSnapshot::VerifyCacheStats TrustSnapshot::verify_cache_stats() const {
    const std::lock_guard lock{verify_cache_mutex_};
    return {verify_cache_.size(), verify_cache_hits_.load(std::memory_order_relaxed)};
}

// ---- TrustStore ----

TrustStore::TrustStore() : current_(TrustSnapshot::empty()) {}

std::shared_ptr<const TrustSnapshot> TrustStore::current() const {
    const std::lock_guard lock{mutex_};
    return current_;
}

void TrustStore::replace(std::shared_ptr<const TrustSnapshot> next) {
    if (!next) {
        return;
    }
    // `next` leaves holding the old snapshot, which it frees (if last) after the lock is gone.
    const std::lock_guard lock{mutex_};
    current_.swap(next);
}

namespace {

// The provider `TrustStore::provider` hands out: a named type, so the verification callback can
// find the store behind it and report refusals to the store's observer.
struct StoreProvider {
    const TrustStore* store;
    std::shared_ptr<const TrustSnapshot> operator()() const { return store->current(); }
};

}  // namespace

std::function<std::shared_ptr<const TrustSnapshot>()> TrustStore::provider() const {
    return StoreProvider{this};
}

void TrustStore::set_refusal_observer(std::function<void(const Refusal&)> observer) {
    std::shared_ptr<const std::function<void(const Refusal&)>> shared;
    if (observer) {
        shared = std::make_shared<const std::function<void(const Refusal&)>>(std::move(observer));
    }
    const std::lock_guard lock{mutex_};
    refusal_observer_ = std::move(shared);
}

void TrustStore::notify_refusal(const Refusal& refusal) const noexcept {
    std::shared_ptr<const std::function<void(const Refusal&)>> observer;
    {
        const std::lock_guard lock{mutex_};
        observer = refusal_observer_;
    }
    if (!observer) {
        return;
    }
    try {
        (*observer)(refusal);
    } catch (...) {
        // The refusal stands whatever the observer does.
    }
}

// ---- TLS integration ----

namespace {

struct VerificationConfig {
    std::function<std::shared_ptr<const TrustSnapshot>()> current_snapshot;
    ClientVerificationOptions options;
};

void free_config(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*idx*/, long /*argl*/,
                 void* /*argp*/) {
    delete static_cast<VerificationConfig*>(ptr);
}

void free_result(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*idx*/, long /*argl*/,
                 void* /*argp*/) {
    delete static_cast<VerifyResult*>(ptr);
}

// SSL_dup copies ex_data pointers; give the copy its own result so each SSL frees its own.
int dup_result(CRYPTO_EX_DATA* /*to*/, const CRYPTO_EX_DATA* /*from*/, void** from_d, int /*idx*/,
               long /*argl*/, void* /*argp*/) {
    auto* source = static_cast<VerifyResult*>(*from_d);
    if (source == nullptr) {
        return 1;
    }
    try {
        *from_d = new VerifyResult(*source);
        return 1;
    } catch (const std::bad_alloc&) {
        *from_d = nullptr;
        return 0;
    }
}

int ctx_ex_index() {
    static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_config);
    return index;
}

int ssl_ex_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, dup_result, free_result);
    return index;
}

void remember(SSL* ssl, VerifyResult result) {
    if (ssl == nullptr) {
        return;
    }
    auto stored = std::make_unique<VerifyResult>(std::move(result));
    delete static_cast<VerifyResult*>(SSL_get_ex_data(ssl, ssl_ex_index()));
    if (SSL_set_ex_data(ssl, ssl_ex_index(), stored.get()) == 1) {
        stored.release();
    } else {
        SSL_set_ex_data(ssl, ssl_ex_index(), nullptr);
    }
}

Refusal refusal_of(const VerifyResult& result) {
    Refusal refusal;
    refusal.reason = result.status;
    refusal.x509_error = result.x509_error;
    if (result.leaf) {
        refusal.serial = result.leaf->serial;
        refusal.common_name = result.leaf->common_name;
        refusal.issuer = result.leaf->issuer;
        refusal.fingerprint = result.leaf->fingerprint;
    }
    if (result.ca) {
        refusal.ca_id = result.ca->id;
        refusal.org_id = result.ca->org_id;
    }
    return refusal;
}

VerifyResult internal_failure() {
    VerifyResult result;
    result.status = VerifyStatus::kUnavailable;
    result.x509_error = X509_V_ERR_UNSPECIFIED;
    return result;
}

// OpenSSL's certificate verification callback: runs our verification instead of
// X509_verify_cert and reports the outcome through the store context OpenSSL gave us.
int verify_client_certificate(X509_STORE_CTX* store_ctx, void* arg) {
    const auto* config = static_cast<const VerificationConfig*>(arg);
    auto* ssl = static_cast<SSL*>(
        X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx()));

    VerifyResult result;
    X509StackPtr chain;
    // Exceptions must not cross OpenSSL's C frames: any failure here refuses the handshake.
    try {
        std::shared_ptr<const TrustSnapshot> snapshot;
        if (config != nullptr && config->current_snapshot) {
            snapshot = config->current_snapshot();
        }
        if (snapshot) {
            const auto now = config->options.clock ? config->options.clock() : Clock::now();
            result = snapshot->verify(X509_STORE_CTX_get0_cert(store_ctx),
                                      X509_STORE_CTX_get0_untrusted(store_ctx), now, &chain);
        } else {
            result = internal_failure();
            if (X509* leaf = X509_STORE_CTX_get0_cert(store_ctx); leaf != nullptr) {
                result.leaf = read_certificate_facts(leaf);
            }
        }
    } catch (const std::exception&) {
        result = internal_failure();
    }

    if (result.ok()) {
        X509_STORE_CTX_set_error(store_ctx, X509_V_OK);
        if (chain) {
            X509_STORE_CTX_set0_verified_chain(store_ctx, chain.release());
        }
    } else {
        X509_STORE_CTX_set_error(store_ctx, result.x509_error);
        X509_STORE_CTX_set_error_depth(store_ctx, result.error_depth);
    }
    const bool accepted = result.ok();
    try {
        const StoreProvider* store_provider =
            config != nullptr ? config->current_snapshot.target<StoreProvider>() : nullptr;
        const bool observed = config != nullptr && config->options.on_refusal;
        if (!accepted && (observed || store_provider != nullptr)) {
            const Refusal refusal = refusal_of(result);
            remember(ssl, std::move(result));
            if (store_provider != nullptr) {
                store_provider->store->notify_refusal(refusal);
            }
            if (observed) {
                config->options.on_refusal(refusal);
            }
        } else {
            remember(ssl, std::move(result));
        }
    } catch (...) {
        // A throwing hook or a failed allocation changes nothing: the decision above stands,
        // and no exception may unwind through OpenSSL's frames.
        return accepted ? 1 : 0;
    }
    return accepted ? 1 : 0;
}

// A resumed session (TLS session ticket) skips the certificate exchange and with it the
// verification hook: re-verify the certificate the session was established with against the
// snapshot in force now (revocations, disabled devices and CAs, expiry) and record the result as
// the hook does. A certificate that no longer passes falls back to a full handshake, where the
// hook refuses it with the usual alert and log line.
SSL_TICKET_RETURN on_session_ticket(SSL* ssl, SSL_SESSION* session,
                                    const unsigned char* /*key_name*/, size_t /*key_name_length*/,
                                    SSL_TICKET_STATUS status, void* arg) {
    switch (status) {
        case SSL_TICKET_SUCCESS:
        case SSL_TICKET_SUCCESS_RENEW:
            break;
        case SSL_TICKET_FATAL_ERR_MALLOC:
        case SSL_TICKET_FATAL_ERR_OTHER:
            return SSL_TICKET_RETURN_ABORT;
        default:  // no ticket, empty, or not ours (another key): full handshake, new ticket
            return SSL_TICKET_RETURN_IGNORE_RENEW;
    }
    const auto* config = static_cast<const VerificationConfig*>(arg);
    X509* leaf = session != nullptr ? SSL_SESSION_get0_peer(session) : nullptr;
    if (config == nullptr || !config->current_snapshot || leaf == nullptr) {
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    }
    try {
        const auto snapshot = config->current_snapshot();
        if (!snapshot) return SSL_TICKET_RETURN_IGNORE_RENEW;
        const auto now = config->options.clock ? config->options.clock() : Clock::now();
        VerifyResult result = snapshot->verify(leaf, nullptr, now);
        if (!result.ok()) return SSL_TICKET_RETURN_IGNORE_RENEW;
        remember(ssl, std::move(result));
    } catch (...) {
        return SSL_TICKET_RETURN_IGNORE_RENEW;  // no exception crosses OpenSSL's frames
    }
    return status == SSL_TICKET_SUCCESS_RENEW ? SSL_TICKET_RETURN_USE_RENEW : SSL_TICKET_RETURN_USE;
}

}  // namespace

void install_client_verification(
    SSL_CTX* ctx, std::function<std::shared_ptr<const TrustSnapshot>()> current_snapshot,
    ClientVerificationOptions options) {
    if (ctx == nullptr) {
        return;
    }
    auto config = std::make_unique<VerificationConfig>(
        VerificationConfig{std::move(current_snapshot), std::move(options)});
    const int mode = SSL_VERIFY_PEER |
                     (config->options.require_certificate ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
    // The context owns the configuration through its ex_data (freed with the context).
    auto* previous = static_cast<VerificationConfig*>(SSL_CTX_get_ex_data(ctx, ctx_ex_index()));
    if (SSL_CTX_set_ex_data(ctx, ctx_ex_index(), config.get()) != 1) {
        throw std::bad_alloc{};
    }
    delete previous;
    auto* installed = config.release();
    SSL_CTX_set_cert_verify_callback(ctx, verify_client_certificate, installed);
    SSL_CTX_set_verify(ctx, mode, nullptr);
    // A renegotiation would skip this verification. A resumed session skips it too, so tickets
    // stay off here (net::enable_session_tickets turns them on) and any ticket that does come
    // back is re-verified against the current snapshot first (on_session_ticket). No stateful
    // session cache: a ticket is the only way to resume.
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_ticket_cb(ctx, nullptr, on_session_ticket, installed);
}

std::optional<VerifyResult> verification_result(const SSL* ssl) {
    if (ssl == nullptr) {
        return std::nullopt;
    }
    const auto* stored = static_cast<const VerifyResult*>(SSL_get_ex_data(ssl, ssl_ex_index()));
    if (stored == nullptr) {
        return std::nullopt;
    }
    return *stored;
}

std::optional<VerifyResult> take_verification_result(SSL* ssl) {
    if (ssl == nullptr) {
        return std::nullopt;
    }
    std::unique_ptr<VerifyResult> stored{
        static_cast<VerifyResult*>(SSL_get_ex_data(ssl, ssl_ex_index()))};
    if (!stored) {
        return std::nullopt;
    }
    SSL_set_ex_data(ssl, ssl_ex_index(), nullptr);  // cannot fail: the slot exists already
    return std::move(*stored);
}

}  // namespace otahub::pki
