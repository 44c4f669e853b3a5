#include "server/net/tls13_records.hpp"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/test_pki.hpp"

namespace otahub::net {
namespace {

using test_support::TestCa;
using test_support::TestCert;
using test_support::TestPki;
using Status = Tls13Records::Status;

// A TLS 1.3 connection over an in-memory BIO pair: OpenSSL on both ends for the handshake, then
// the server side's records handed to Tls13Records, talking to the unchanged OpenSSL client.
class Tls13RecordsTest : public ::testing::Test {
  protected:
    const TestCa server_root_ = TestPki::make_root("Records Server Root");
    const TestCert server_cert_ = server_root_.issue_server_cert();

    struct BioFree {
        void operator()(BIO* bio) const { BIO_free(bio); }
    };

    struct Connection {
        pki::SslPtr client;
        pki::SslPtr server;
        std::unique_ptr<BIO, BioFree> bio;  // our end of the pair once the server SSL is gone
        std::unique_ptr<Tls13Records> records;
        std::vector<std::uint8_t> injected;  // bytes `receive` returns before the BIO's

        Tls13Records::Transport receive() {
            return [this](void* buffer, std::size_t bytes) -> std::ptrdiff_t {
                if (!injected.empty()) {
                    const std::size_t n = std::min(bytes, injected.size());
                    std::memcpy(buffer, injected.data(), n);
                    injected.erase(injected.begin(), injected.begin() + static_cast<long>(n));
                    return static_cast<std::ptrdiff_t>(n);
                }
                const int rc = BIO_read(bio.get(), buffer, static_cast<int>(bytes));
                return rc > 0 ? rc : -EAGAIN;
            };
        }
        Tls13Records::Sender send() {
            return [this](const void* buffer, std::size_t bytes) -> std::ptrdiff_t {
                const int rc = BIO_write(bio.get(), buffer, static_cast<int>(bytes));
                return rc > 0 ? rc : -EAGAIN;
            };
        }
        // Everything the client can read now (its SSL_read until it would block).
        std::string client_reads() {
            std::string got;
            char chunk[4096];
            for (;;) {
                const int rc = SSL_read(client.get(), chunk, sizeof chunk);
                if (rc <= 0) break;
                got.append(chunk, static_cast<std::size_t>(rc));
            }
            return got;
        }
        // Reads exactly `bytes` through the records (the client's data is already in the pair).
        std::string server_reads(std::size_t bytes) {
            std::string got(bytes, '\0');
            std::size_t have = 0;
            while (have < bytes) {
                const auto r = records->read(got.data() + have, bytes - have, receive(), send());
                if (r.status != Status::kDone) break;
                have += r.bytes;
            }
            got.resize(have);
            return got;
        }
        // Writes all of `data` through the records, draining the client when the pair is full.
        std::string server_writes_and_client_reads(const std::string& data) {
            std::string got;
            std::size_t sent = 0;
            while (sent < data.size()) {
                const auto r = records->write(data.data() + sent, data.size() - sent, send());
                if (r.status == Status::kDone) {
                    sent += r.bytes;
                } else if (r.status == Status::kWantWrite) {
                    const std::string drained = client_reads();
                    if (drained.empty()) break;  // the client cannot read: no progress, fail
                    got += drained;
                } else {
                    break;
                }
            }
            return got + client_reads();
        }
    };

    // `ciphersuite` restricts the client's TLS 1.3 suites; `tickets` is the server's count.
    Connection connect(const char* ciphersuite = nullptr, int tickets = 1, bool remember = true,
                       bool tls12 = false, bool take = true) {
        Connection c;
        server_ctx_ = test_support::make_server_ctx(server_cert_);
        if (remember) remember_tls13_secrets(server_ctx_.get());
        SSL_CTX_set_num_tickets(server_ctx_.get(), static_cast<std::size_t>(tickets));
        client_ctx_ = test_support::make_client_ctx(
            tls12 ? test_support::TlsVersion::kTls12 : test_support::TlsVersion::kTls13,
            server_root_, nullptr);
        if (ciphersuite != nullptr) SSL_CTX_set_ciphersuites(client_ctx_.get(), ciphersuite);
        c.client.reset(SSL_new(client_ctx_.get()));
        c.server.reset(SSL_new(server_ctx_.get()));
        BIO* client_bio = nullptr;
        BIO* server_bio = nullptr;
        BIO_new_bio_pair(&client_bio, 0, &server_bio, 0);
        SSL_set_bio(c.client.get(), client_bio, client_bio);
        SSL_set_bio(c.server.get(), server_bio, server_bio);
        BIO_up_ref(server_bio);  // kept for the records after the server SSL is freed
        c.bio.reset(server_bio);
        SSL_set_connect_state(c.client.get());
        SSL_set_accept_state(c.server.get());
        bool client_done = false;
        bool server_done = false;
        for (int round = 0; round < 20 && !(client_done && server_done); ++round) {
            if (!client_done) client_done = SSL_do_handshake(c.client.get()) == 1;
            if (!server_done) server_done = SSL_do_handshake(c.server.get()) == 1;
        }
        EXPECT_TRUE(client_done && server_done);
        if (take) c.records = Tls13Records::take_over(c.server.get());
        if (c.records) c.server.reset();  // as TlsSocket does: nothing of the SSL is needed
        return c;
    }

    pki::SslCtxPtr server_ctx_;
    pki::SslCtxPtr client_ctx_;
};

class Tls13RecordsSuite : public Tls13RecordsTest,
                          public ::testing::WithParamInterface<const char*> {};

TEST_P(Tls13RecordsSuite, ApplicationDataBothWaysAcrossRecordSizes) {
    auto c = connect(GetParam());
    ASSERT_TRUE(c.records);
    ASSERT_EQ(SSL_write(c.client.get(), "hello", 5), 5);
    EXPECT_EQ(c.server_reads(5), "hello");

    std::string big(40000, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
    // Three records, the pair (17 KiB) filling up in between: partial sends resume.
    EXPECT_EQ(c.server_writes_and_client_reads(big), big);
    EXPECT_EQ(std::string(SSL_get_cipher_name(c.client.get())), GetParam());

    // 40,000 bytes from the client arrive in records the reader hands out in small pieces.
    std::size_t written = 0;
    std::string got;
    while (written < big.size()) {
        const int n =
            SSL_write(c.client.get(), big.data() + written,
                      static_cast<int>(std::min<std::size_t>(10000, big.size() - written)));
        ASSERT_GT(n, 0);
        written += static_cast<std::size_t>(n);
        got += c.server_reads(static_cast<std::size_t>(n));
    }
    EXPECT_EQ(got, big);
}

INSTANTIATE_TEST_SUITE_P(AllTls13Suites, Tls13RecordsSuite,
                         ::testing::Values("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                           "TLS_CHACHA20_POLY1305_SHA256"));

TEST_F(Tls13RecordsTest, TicketsSentBeforeTheHandOverSetTheWriteSequence) {
    for (int tickets : {0, 1, 2}) {
        auto c = connect(nullptr, tickets);
        ASSERT_TRUE(c.records) << tickets;
        // The client reads the tickets first (sequence 0..n-1), then our record (n).
        EXPECT_EQ(c.server_writes_and_client_reads("after tickets"), "after tickets") << tickets;
    }
}

TEST_F(Tls13RecordsTest, ClientKeyUpdateIsFollowedAndAnsweredWhenRequested) {
    auto c = connect();
    ASSERT_TRUE(c.records);
    for (int round = 0; round < 2; ++round) {
        ASSERT_EQ(SSL_key_update(c.client.get(), SSL_KEY_UPDATE_REQUESTED), 1);
        ASSERT_EQ(SSL_write(c.client.get(), "after update", 12), 12);  // KeyUpdate goes first
        EXPECT_EQ(c.server_reads(12), "after update") << round;
        // Our KeyUpdate went out before this record: the client decrypts it with our new key.
        EXPECT_EQ(c.server_writes_and_client_reads("reply"), "reply") << round;
    }
    ASSERT_EQ(SSL_key_update(c.client.get(), SSL_KEY_UPDATE_NOT_REQUESTED), 1);
    ASSERT_EQ(SSL_write(c.client.get(), "quiet", 5), 5);
    EXPECT_EQ(c.server_reads(5), "quiet");
    EXPECT_EQ(c.records->queued_bytes(), 0U);
    EXPECT_EQ(c.server_writes_and_client_reads("still"), "still");
}

TEST_F(Tls13RecordsTest, CloseNotifyEndsTheStreamBothWays) {
    auto c = connect();
    ASSERT_TRUE(c.records);
    c.client_reads();                            // the ticket
    ASSERT_EQ(SSL_shutdown(c.client.get()), 0);  // ours sent, theirs not yet received
    char byte = 0;
    EXPECT_EQ(c.records->read(&byte, 1, c.receive(), c.send()).status, Status::kEof);
    EXPECT_EQ(c.records->close_notify(c.send()).status, Status::kDone);
    EXPECT_EQ(SSL_read(c.client.get(), &byte, 1), 0);
    EXPECT_EQ(SSL_get_error(c.client.get(), 0), SSL_ERROR_ZERO_RETURN);
    // Nothing more may be written after close_notify.
    EXPECT_EQ(c.records->write("x", 1, c.send()).status, Status::kError);
}

TEST_F(Tls13RecordsTest, TamperedRecordIsRefusedWithBadRecordMac) {
    auto c = connect();
    ASSERT_TRUE(c.records);
    ASSERT_EQ(SSL_write(c.client.get(), "secret", 6), 6);
    std::vector<std::uint8_t> record(64);
    const int n = BIO_read(c.bio.get(), record.data(), static_cast<int>(record.size()));
    ASSERT_GT(n, 5);
    record.resize(static_cast<std::size_t>(n));
    record[7] ^= 0x01;  // one ciphertext bit
    c.injected = record;
    char out[16];
    const auto r = c.records->read(out, sizeof out, c.receive(), c.send());
    EXPECT_EQ(r.status, Status::kError);
    EXPECT_EQ(r.ssl_reason, SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC);
    // The client hears why: a bad_record_mac alert.
    c.client_reads();
    EXPECT_EQ(SSL_get_error(c.client.get(), -1), SSL_ERROR_SSL);
    EXPECT_NE(std::string(ERR_reason_error_string(ERR_peek_last_error())).find("bad record mac"),
              std::string::npos);
    ERR_clear_error();
    // The stream stays broken.
    EXPECT_EQ(c.records->read(out, sizeof out, c.receive(), c.send()).status, Status::kError);
    EXPECT_EQ(c.records->write("x", 1, c.send()).status, Status::kError);
}

TEST_F(Tls13RecordsTest, MalformedRecordHeadersAreRefused) {
    const std::vector<std::pair<std::vector<std::uint8_t>, int>> cases = {
        {{0x17, 0x03, 0x03, 0x48, 0x01}, SSL_R_ENCRYPTED_LENGTH_TOO_LONG},  // 2^14 + 257
        {{0x16, 0x03, 0x03, 0x00, 0x20}, SSL_R_UNEXPECTED_RECORD},          // plaintext handshake
        {{0x17, 0x03, 0x01, 0x00, 0x20}, SSL_R_UNEXPECTED_RECORD},          // wrong legacy version
        {{0x17, 0x03, 0x03, 0x00, 0x10}, SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC},  // < tag
    };
    for (const auto& [header, reason] : cases) {
        auto c = connect();
        ASSERT_TRUE(c.records);
        c.injected = header;
        char out[16];
        const auto r = c.records->read(out, sizeof out, c.receive(), c.send());
        EXPECT_EQ(r.status, Status::kError);
        EXPECT_EQ(r.ssl_reason, reason);
    }
}

TEST_F(Tls13RecordsTest, StreamEndingWithoutCloseNotifyIsATruncation) {
    auto c = connect();
    ASSERT_TRUE(c.records);
    const auto eof = [](void*, std::size_t) -> std::ptrdiff_t { return 0; };
    char out[16];
    const auto r = c.records->read(out, sizeof out, eof, c.send());
    EXPECT_EQ(r.status, Status::kError);
    EXPECT_EQ(r.ssl_reason, SSL_R_UNEXPECTED_EOF_WHILE_READING);
    const auto reset = [](void*, std::size_t) -> std::ptrdiff_t { return -ECONNRESET; };
    auto d = connect();
    const auto broken = d.records->read(out, sizeof out, reset, d.send());
    EXPECT_EQ(broken.status, Status::kError);
    EXPECT_EQ(broken.sys_errno, ECONNRESET);
}

TEST_F(Tls13RecordsTest, ReaderWaitsForMoreBytesWithoutLosingAPartialRecord) {
    auto c = connect();
    ASSERT_TRUE(c.records);
    ASSERT_EQ(SSL_write(c.client.get(), "piecewise", 9), 9);
    std::vector<std::uint8_t> record(128);
    const int n = BIO_read(c.bio.get(), record.data(), static_cast<int>(record.size()));
    ASSERT_GT(n, 8);
    // Hand the record over three bytes at a time, "would block" in between.
    std::size_t fed = 0;
    std::string got;
    char out[32];
    for (int guard = 0; guard < 100 && got.size() < 9; ++guard) {
        const auto r = c.records->read(
            out, sizeof out,
            [&](void* buffer, std::size_t bytes) -> std::ptrdiff_t {
                if (fed >= static_cast<std::size_t>(n)) return -EAGAIN;
                const std::size_t k =
                    std::min<std::size_t>({3, bytes, static_cast<std::size_t>(n) - fed});
                std::memcpy(buffer, record.data() + fed, k);
                fed += k;
                return static_cast<std::ptrdiff_t>(k);
            },
            c.send());
        if (r.status == Status::kDone)
            got.append(out, r.bytes);
        else
            ASSERT_EQ(r.status, Status::kWantRead);
    }
    EXPECT_EQ(got, "piecewise");
}

TEST_F(Tls13RecordsTest, OnlyTls13ConnectionsOfAPreparedContextAreTakenOver) {
    auto tls12 = connect(nullptr, 1, true, /*tls12=*/true);
    EXPECT_FALSE(tls12.records);  // OpenSSL keeps it
    auto unprepared = connect(nullptr, 1, /*remember=*/false);
    EXPECT_FALSE(unprepared.records);
    EXPECT_FALSE(Tls13Records::take_over(nullptr));
}

TEST_F(Tls13RecordsTest, ForgottenSecretsLeaveTheConnectionWorkingWithOpenSsl) {
    for (const bool tls12 : {false, true}) {
        auto c = connect(nullptr, 1, true, tls12, /*take=*/false);
        ASSERT_TRUE(c.server);
        forget_tls13_secrets(c.server.get());
        EXPECT_FALSE(Tls13Records::take_over(c.server.get())) << "tls12=" << tls12;
        ASSERT_EQ(SSL_write(c.server.get(), "hello", 5), 5);
        EXPECT_EQ(c.client_reads(), "hello");
        ASSERT_EQ(SSL_write(c.client.get(), "back", 4), 4);
        char got[8] = {};
        EXPECT_EQ(SSL_read(c.server.get(), got, sizeof got), 4);
        EXPECT_EQ(std::string(got, 4), "back");
    }
    forget_tls13_secrets(nullptr);  // harmless
}

}  // namespace
}  // namespace otahub::net
