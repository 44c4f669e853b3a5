#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "server/net/asio.hpp"

/// The firmware download of a simulated device: a plain HTTP(S) GET of the update's
/// firmware_url, hashed as it streams (nothing is stored), resumed with Range after a failure.
namespace otahub::sim {

/// What to fetch and what it must turn out to be.
struct DownloadRequest {
    std::string url;         ///< firmware_url of the update push (http or https)
    std::uint64_t size = 0;  ///< announced size in bytes
    std::string checksum;    ///< announced SHA-256, hex (any case); empty: not checked
    std::optional<net::asio::ip::address> source;  ///< local address to bind, if any
    bool interrupt_once = false;  ///< drop the first connection halfway (tests Range resume)
};

/// How it went.
struct DownloadResult {
    bool ok = false;
    std::string error;        ///< why it failed (size or checksum mismatch, HTTP, network)
    std::uint64_t bytes = 0;  ///< bytes received over all attempts
    int attempts = 0;         ///< connections made
    int resumed = 0;          ///< attempts that continued with a Range request
    std::string sha256;       ///< upper-case hex of what was received
};

/// Called as bytes arrive with the verified prefix length and the announced size.
using DownloadProgress = std::function<void(std::uint64_t done, std::uint64_t total)>;

/// Downloads `request` on the calling coroutine's executor: up to 4 attempts, each after the
/// first asking for the missing tail with `Range: bytes=N-`. `tls` verifies https servers (no
/// client certificate is sent). Never throws for network or server misbehaviour.
net::awaitable<DownloadResult> download_firmware(DownloadRequest request, net::ssl::context& tls,
                                                 DownloadProgress progress);

}  // namespace otahub::sim
