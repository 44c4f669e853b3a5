#include "server/sim/firmware_download.hpp"

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <array>
#include <boost/url/parse.hpp>
#include <cctype>
#include <chrono>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "server/domain/crypto.hpp"
#include "server/domain/pki/openssl_ptr.hpp"

namespace otahub::sim {

namespace {

using namespace net;
namespace http = beast::http;

constexpr int kMaxAttempts = 4;
constexpr auto kIoTimeout = std::chrono::seconds(30);
constexpr std::size_t kChunkBytes = 16 * 1024;

struct Target {
    bool tls = false;
    std::string host;
    std::string port;
    std::string path;
};

Target parse_target(const std::string& url) {
    auto parsed = boost::urls::parse_uri(url);
    if (!parsed) throw std::runtime_error("invalid firmware_url");
    Target target;
    if (parsed->scheme() == "https") {
        target.tls = true;
    } else if (parsed->scheme() != "http") {
        throw std::runtime_error("firmware_url scheme is neither http nor https");
    }
    target.host = std::string(parsed->host());  // an IPv6 literal keeps its brackets here
    if (target.host.size() > 2 && target.host.front() == '[') {
        target.host = target.host.substr(1, target.host.size() - 2);
    }
    target.port = parsed->has_port() ? std::string(parsed->port()) : (target.tls ? "443" : "80");
    target.path = std::string(parsed->encoded_path());
    if (target.path.empty()) target.path = "/";
    if (parsed->has_query()) target.path += "?" + std::string(parsed->encoded_query());
    return target;
}

/// Running state across attempts: bytes hashed so far (the prefix of the file).
struct Progress {
    pki::EvpMdCtxPtr sha{EVP_MD_CTX_new()};
    std::uint64_t offset = 0;
    std::uint64_t received = 0;

    void reset() {
        if (!sha || EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr) != 1) {
            throw std::runtime_error("SHA-256 unavailable");
        }
        offset = 0;
    }
};

/// One GET on an established stream, appending to `state`; throws on any failure.
template <class Stream>
awaitable<void> fetch(Stream& stream, const Target& target, const DownloadRequest& request,
                      Progress& state, const DownloadProgress& progress) {
    http::request<http::empty_body> req{http::verb::get, target.path, 11};
    req.set(http::field::host, target.host + ":" + target.port);
    req.set(http::field::user_agent, "otahub-sim");
    const bool ranged = state.offset > 0;
    if (ranged) req.set(http::field::range, "bytes=" + std::to_string(state.offset) + "-");
    beast::get_lowest_layer(stream).expires_after(kIoTimeout);
    co_await http::async_write(stream, req, use_awaitable);

    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);
    co_await http::async_read_header(stream, buffer, parser, use_awaitable);
    const auto status = parser.get().result();
    if (ranged && status == http::status::ok) {
        state.reset();  // the server ignored Range: start over
    } else if (ranged && status == http::status::partial_content) {
        auto range = parser.get()[http::field::content_range];
        const std::string want = "bytes " + std::to_string(state.offset) + "-";
        if (range.substr(0, want.size()) != want) {
            throw std::runtime_error("unexpected Content-Range");
        }
    } else if (status != http::status::ok) {
        throw std::runtime_error("HTTP " + std::to_string(static_cast<unsigned>(status)));
    }

    std::array<char, kChunkBytes> chunk{};
    const std::uint64_t break_at = request.interrupt_once ? request.size / 2 : 0;
    while (!parser.is_done()) {
        parser.get().body().data = chunk.data();
        parser.get().body().size = chunk.size();
        beast::get_lowest_layer(stream).expires_after(kIoTimeout);
        auto [ec, unused] = co_await http::async_read(stream, buffer, parser, kAsTuple);
        (void)unused;
        const std::size_t got = chunk.size() - parser.get().body().size;
        if (got > 0) {
            if (EVP_DigestUpdate(state.sha.get(), chunk.data(), got) != 1) {
                throw std::runtime_error("SHA-256 failed");
            }
            state.offset += got;
            state.received += got;
            if (state.offset > request.size) throw std::runtime_error("larger than announced");
            if (progress) progress(state.offset, request.size);
        }
        if (ec && ec != http::error::need_buffer) throw boost::system::system_error(ec);
        if (break_at > 0 && state.offset >= break_at && state.received == state.offset) {
            throw std::runtime_error("interrupted on purpose (--interrupt-downloads)");
        }
    }
}

awaitable<void> attempt(const Target& target, const DownloadRequest& request, ssl::context& tls,
                        Progress& state, const DownloadProgress& progress) {
    auto executor = co_await asio::this_coro::executor;
    tcp::resolver resolver{executor};
    auto endpoints = co_await resolver.async_resolve(target.host, target.port, use_awaitable);
    beast::tcp_stream tcp_stream{executor};
    boost::system::error_code last = asio::error::host_not_found;
    for (const auto& entry : endpoints) {
        auto endpoint = entry.endpoint();
        auto& socket = tcp_stream.socket();
        boost::system::error_code ec;
        if (socket.is_open()) socket.close(ec);
        socket.open(endpoint.protocol(), ec);
        if (ec) {
            last = ec;
            continue;
        }
        if (request.source && request.source->is_v4() == endpoint.address().is_v4()) {
            socket.bind(tcp::endpoint{*request.source, 0}, ec);
        }
        tcp_stream.expires_after(kIoTimeout);
        std::tie(ec) = co_await tcp_stream.async_connect(endpoint, kAsTuple);
        if (!ec) {
            last = {};
            break;
        }
        last = ec;
    }
    if (last) throw boost::system::system_error(last, "connect");
    if (!target.tls) {
        co_await fetch(tcp_stream, target, request, state, progress);
        co_return;
    }
    beast::ssl_stream<beast::tcp_stream> stream{std::move(tcp_stream), tls};
    if (!net::is_ip_literal(target.host)) {
        SSL_set_tlsext_host_name(stream.native_handle(), target.host.c_str());
    }
    stream.set_verify_callback(ssl::host_name_verification(target.host));
    co_await stream.async_handshake(ssl::stream_base::client, use_awaitable);
    co_await fetch(stream, target, request, state, progress);
    // The body is complete; a missing close_notify from the server is no concern here.
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
    co_await stream.async_shutdown(kAsTuple);
}

}  // namespace

awaitable<DownloadResult> download_firmware(DownloadRequest request, ssl::context& tls,
                                            DownloadProgress progress) {
    DownloadResult result;
    Progress state;
    try {
        state.reset();
        const Target target = parse_target(request.url);
        auto executor = co_await asio::this_coro::executor;
        asio::steady_timer pause{executor};
        for (int i = 0; i < kMaxAttempts; ++i) {
            if (i > 0) {
                pause.expires_after(std::chrono::milliseconds(250 * i));
                co_await pause.async_wait(kAsTuple);
            }
            ++result.attempts;
            if (state.offset > 0) ++result.resumed;
            try {
                co_await attempt(target, request, tls, state, progress);
                result.error.clear();
                break;
            } catch (const std::exception& error) {
                result.error = error.what();
                request.interrupt_once = false;
            }
        }
    } catch (const std::exception& error) {
        result.error = error.what();
    }
    result.bytes = state.received;
    if (!result.error.empty()) co_return result;

    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(state.sha.get(), digest.data(), &length) != 1) {
        result.error = "SHA-256 failed";
        co_return result;
    }
    result.sha256 =
        crypto::hex(std::string_view(reinterpret_cast<const char*>(digest.data()), length), true);
    if (state.offset != request.size) {
        result.error = "size mismatch: got " + std::to_string(state.offset) + ", announced " +
                       std::to_string(request.size);
        co_return result;
    }
    std::string want = request.checksum;
    for (char& c : want) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (!want.empty() && want != result.sha256) {
        result.error = "checksum mismatch";
        co_return result;
    }
    result.ok = true;
    co_return result;
}

}  // namespace otahub::sim
