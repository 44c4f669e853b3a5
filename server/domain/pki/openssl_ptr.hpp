#pragma once

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace otahub::pki {

/// Deleter calling an OpenSSL free function; lets `std::unique_ptr` own OpenSSL objects.
template <typename T, void (*Free)(T*)>
struct OpensslDeleter {
    void operator()(T* ptr) const { Free(ptr); }
};

/// Owned `X509`.
using X509Ptr = std::unique_ptr<X509, OpensslDeleter<X509, X509_free>>;
/// Owned `X509_REQ`.
using X509ReqPtr = std::unique_ptr<X509_REQ, OpensslDeleter<X509_REQ, X509_REQ_free>>;
/// Owned `X509_NAME`.
using X509NamePtr = std::unique_ptr<X509_NAME, OpensslDeleter<X509_NAME, X509_NAME_free>>;
/// Owned `X509_EXTENSION`.
using X509ExtensionPtr =
    std::unique_ptr<X509_EXTENSION, OpensslDeleter<X509_EXTENSION, X509_EXTENSION_free>>;
/// Owned `X509_STORE`.
using X509StorePtr = std::unique_ptr<X509_STORE, OpensslDeleter<X509_STORE, X509_STORE_free>>;
/// Owned `X509_STORE_CTX`.
using X509StoreCtxPtr =
    std::unique_ptr<X509_STORE_CTX, OpensslDeleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
/// Owned `EVP_PKEY`.
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, OpensslDeleter<EVP_PKEY, EVP_PKEY_free>>;
/// Owned `EVP_MD_CTX`.
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, OpensslDeleter<EVP_MD_CTX, EVP_MD_CTX_free>>;
/// Owns an EVP_PKEY_CTX.
using EvpPkeyCtxPtr =
    std::unique_ptr<EVP_PKEY_CTX, OpensslDeleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
/// Owned `BIGNUM`.
using BignumPtr = std::unique_ptr<BIGNUM, OpensslDeleter<BIGNUM, BN_free>>;
/// Owned `ASN1_INTEGER`.
using Asn1IntegerPtr =
    std::unique_ptr<ASN1_INTEGER, OpensslDeleter<ASN1_INTEGER, ASN1_INTEGER_free>>;
/// Owned `ASN1_TIME`.
using Asn1TimePtr = std::unique_ptr<ASN1_TIME, OpensslDeleter<ASN1_TIME, ASN1_TIME_free>>;
/// Owned `BASIC_CONSTRAINTS`.
using BasicConstraintsPtr =
    std::unique_ptr<BASIC_CONSTRAINTS, OpensslDeleter<BASIC_CONSTRAINTS, BASIC_CONSTRAINTS_free>>;
/// Owned `GENERAL_NAMES` (a stack of `GENERAL_NAME`, freed with its elements).
using GeneralNamesPtr =
    std::unique_ptr<GENERAL_NAMES, OpensslDeleter<GENERAL_NAMES, GENERAL_NAMES_free>>;
/// Owned `BIO` (a single BIO, not a chain).
using BioPtr = std::unique_ptr<BIO, OpensslDeleter<BIO, BIO_free_all>>;
/// Owned `SSL_CTX`.
using SslCtxPtr = std::unique_ptr<SSL_CTX, OpensslDeleter<SSL_CTX, SSL_CTX_free>>;
/// Owned `SSL`.
using SslPtr = std::unique_ptr<SSL, OpensslDeleter<SSL, SSL_free>>;

namespace detail {
inline void free_x509_stack(STACK_OF(X509) * stack) { sk_X509_pop_free(stack, X509_free); }
}  // namespace detail

/// Owned `STACK_OF(X509)`, freeing the certificates it holds too.
using X509StackPtr =
    std::unique_ptr<STACK_OF(X509), OpensslDeleter<STACK_OF(X509), detail::free_x509_stack>>;

/// Drops the OpenSSL errors raised during its lifetime, leaving errors queued before it alone.
/// Use one wherever untrusted input may make OpenSSL fail, so failures never leak to later code.
class OpensslErrorScope {
  public:
    OpensslErrorScope() { ERR_set_mark(); }
    ~OpensslErrorScope() { ERR_pop_to_mark(); }
    OpensslErrorScope(const OpensslErrorScope&) = delete;
    OpensslErrorScope& operator=(const OpensslErrorScope&) = delete;
};

/// A new owning reference to `cert` (up-ref), or null for null.
inline X509Ptr share_x509(X509* cert) {
    if (cert != nullptr) {
        X509_up_ref(cert);
    }
    return X509Ptr{cert};
}

/// A new owning reference to `key` (up-ref), or null for null.
inline EvpPkeyPtr share_pkey(EVP_PKEY* key) {
    if (key != nullptr) {
        EVP_PKEY_up_ref(key);
    }
    return EvpPkeyPtr{key};
}

}  // namespace otahub::pki
