#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

namespace otahub::cli {

/// Where and how to reach the hub's admin API.
struct Endpoint {
    std::string url;      ///< `http[s]://host[:port][/prefix]`
    std::string ca_file;  ///< PEM bundle that signs the server certificate; empty: system store
    std::string token;    ///< bearer token; empty: send none
};

/// A non-2xx answer from the API; what() is the one-line description of the error envelope.
class ApiFailure : public std::runtime_error {
  public:
    /// An answer with that status and body.
    ApiFailure(int status, std::string_view body);
    /// The HTTP status.
    int status() const { return status_; }

  private:
    int status_;
};

/// The hub could not be reached or the exchange broke off (DNS, TCP, TLS, timeout, bad answer).
class ConnectionError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/// Called as bytes move, with the count so far and the total (0 when unknown).
using ProgressFn = std::function<void(std::uint64_t done, std::uint64_t total)>;

/// A small synchronous HTTP/1.1 client for the admin API (one connection per request). Not
/// thread-safe: use from one thread.
class Client {
  public:
    /// Checks the URL and loads the CA bundle; throws std::invalid_argument for a bad URL and
    /// std::runtime_error for an unreadable CA bundle.
    explicit Client(Endpoint endpoint);
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;
    Client(Client&&) noexcept;
    Client& operator=(Client&&) noexcept;

    /// Sends a request with a JSON body (none when `body` is null) and returns the answer's
    /// `data` (null for an empty answer). Throws ApiFailure or ConnectionError.
    nlohmann::json request(std::string_view method, const std::string& path,
                           const nlohmann::json& body = nullptr);
    /// POSTs the file as a raw `application/octet-stream` body, read and sent in chunks, and
    /// returns the answer's `data`. Throws ApiFailure, ConnectionError, or std::runtime_error when
    /// the file cannot be read.
    nlohmann::json upload(const std::string& path, const std::string& file,
                          const ProgressFn& progress);
    /// GETs `path` and streams a 2xx body to `out_file` (through `out_file.part`, renamed at the
    /// end; "-" writes to stdout). Returns the byte count. Throws like upload().
    std::uint64_t download(const std::string& path, const std::string& out_file,
                           const ProgressFn& progress);

    /// The URL this client talks to.
    const std::string& url() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters).
std::string path_segment(std::string_view text);

/// The one-line text for an error answer: `<status>: <detail> (<field>: <msg>; …)`, with control
/// characters removed; falls back to the body's first line or the status text.
std::string describe_error(int status, std::string_view body);

/// Replaces control characters (terminal escapes, newlines) in server-supplied text.
std::string printable(std::string_view text);

}  // namespace otahub::cli
