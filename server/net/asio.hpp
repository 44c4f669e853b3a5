#pragma once

// The one header that pulls in Asio and Beast. Include it only from server/net, server/device,
// server/events and server/app translation units, never from headers that domain code includes.
#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <exception>
#include <memory>
#include <optional>
#include <string>

namespace otahub::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ssl = boost::asio::ssl;
using tcp = boost::asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;
constexpr auto kAsTuple = asio::as_tuple(asio::use_awaitable);

/// True when `host` is an IPv4 or IPv6 address rather than a name (a client sends SNI and checks
/// the certificate's host name only for names).
bool is_ip_literal(const std::string& host);

/// True for the ways a peer normally goes away (EOF, reset, TLS truncation, timeout, cancel):
/// these are logged at debug level, anything else as a warning.
bool is_benign_disconnect(const boost::system::error_code& ec);

/// Runs `fn` on the worker pool (where blocking database calls are allowed) and resumes the
/// calling coroutine on its own executor with fn's result, rethrowing fn's exception.
/// GCC 12 destroys a prvalue argument of a coroutine call inside a co_await expression twice:
/// pass `fn` as a named variable (std::move) when its captures are not trivially destructible.
template <class F>
awaitable<std::invoke_result_t<F>> run_blocking(asio::thread_pool& pool, F fn) {
    using Result = std::invoke_result_t<F>;
    using Slot = std::conditional_t<std::is_void_v<Result>, bool, std::optional<Result>>;
    auto executor = co_await asio::this_coro::executor;
    // Named, not a temporary of the co_await expression (the GCC 12 bug above released the
    // captured executor twice, freeing the connection's strand while still in use).
    auto initiation = [&pool, executor](auto handler, F work) {
        asio::post(pool,
                   [handler = std::move(handler), work = std::move(work), executor]() mutable {
                       std::exception_ptr failure;
                       Slot value{};
                       try {
                           if constexpr (std::is_void_v<Result>) {
                               work();
                               value = true;
                           } else {
                               value.emplace(work());
                           }
                       } catch (...) {
                           failure = std::current_exception();
                       }
                       auto target = asio::get_associated_executor(handler, executor);
                       asio::post(target, [handler = std::move(handler), failure,
                                           value = std::move(value)]() mutable {
                           std::move(handler)(failure, std::move(value));
                       });
                   });
    };
    auto [error, slot] =
        co_await asio::async_initiate<decltype(kAsTuple), void(std::exception_ptr, Slot)>(
            std::move(initiation), kAsTuple, std::move(fn));
    if (error) std::rethrow_exception(error);
    if constexpr (!std::is_void_v<Result>) {
        co_return std::move(*slot);
    }
}

/// Queues `item` on `batcher` (a db::StatementBatcher) and resumes the calling coroutine on its
/// own executor with the item's result, rethrowing its failure. No worker thread waits for the
/// batch meanwhile. Pass `item` as a named variable (std::move), not a prvalue (see run_blocking).
template <class Batcher>
awaitable<typename Batcher::ResultType> submit_batched(Batcher& batcher,
                                                       typename Batcher::ItemType item) {
    using Answer = std::optional<typename Batcher::ResultType>;
    // Named, not a temporary of the co_await expression (see run_blocking).
    auto initiation = [&batcher](auto handler, typename Batcher::ItemType queued) {
        // The batcher's Done is a std::function (copyable); the handler is not.
        auto owned = std::make_shared<decltype(handler)>(std::move(handler));
        batcher.submit(std::move(queued), [owned](std::exception_ptr error, Answer answer) {
            auto target = asio::get_associated_executor(*owned);
            asio::post(target, [owned, error, answer = std::move(answer)]() mutable {
                std::move (*owned)(error, std::move(answer));
            });
        });
    };
    auto [error, answer] =
        co_await asio::async_initiate<decltype(kAsTuple), void(std::exception_ptr, Answer)>(
            std::move(initiation), kAsTuple, std::move(item));
    if (error) std::rethrow_exception(error);
    co_return std::move(*answer);
}

}  // namespace otahub::net
