#include "server/device/ws_session.hpp"

#include "server/app/metrics.hpp"

#include <spdlog/spdlog.h>

#include "db/repositories/devices_repository.hpp"
#include "server/device/phoenix.hpp"
#include "server/device/presence.hpp"

namespace otahub::device {
namespace {

namespace websocket = net::beast::websocket;
namespace phx = phoenix;

/// A device that does not read its socket is cut off past this much queued output.
constexpr std::size_t kMaxOutboxBytes = 4 * 1024 * 1024;

std::uint16_t close_code_for(phx::DecodeErrorCode code) {
    switch (code) {
        case phx::DecodeErrorCode::kTooLarge:
            return websocket::close_code::too_big;
        case phx::DecodeErrorCode::kTooDeep:
            return websocket::close_code::policy_error;
        default:
            return websocket::close_code::bad_payload;
    }
}

std::string describe_end(const boost::system::error_code& ec, const WsStream& ws) {
    if (ec == websocket::error::closed) {
        const auto& reason = ws.reason();
        return "closed by device (code " + std::to_string(reason.code) + ")";
    }
    if (ec == net::beast::error::timeout) return "idle timeout";
    if (ec == websocket::error::message_too_big || ec == websocket::error::buffer_overflow) {
        return "frame too large";
    }
    return ec.message();
}

}  // namespace

WsSession::WsSession(WsStream ws, SessionInfo info, SessionDeps deps)
    : ws_(std::move(ws)),
      info_(std::move(info)),
      deps_(deps),
      channel_(info_, deps.db, deps.hooks),
      wake_(ws_.get_executor()),
      last_seen_mark_(std::chrono::steady_clock::now()) {}

void WsSession::close(std::uint16_t code, std::string reason) {
    net::asio::post(ws_.get_executor(),
                    [self = shared_from_this(), code, reason = std::move(reason)]() mutable {
                        self->request_close(code, std::move(reason));
                    });
}

void WsSession::push(std::string event, nlohmann::json payload) {
    net::asio::post(ws_.get_executor(), [self = shared_from_this(), event = std::move(event),
                                         payload = std::move(payload)]() mutable {
        if (self->closing_ || !self->channel_.joined()) return;
        metrics::push(event);
        self->enqueue(phx::encode(phx::push("device", std::move(event), std::move(payload))));
    });
}

void WsSession::push_frame(std::shared_ptr<const std::string> frame, std::string event) {
    net::asio::post(ws_.get_executor(), [self = shared_from_this(), frame = std::move(frame),
                                         event = std::move(event)] {
        if (self->closing_ || !self->channel_.joined()) return;
        metrics::push(event);
        self->enqueue(*frame);
    });
}

void WsSession::enqueue(std::string text) {
    if (closing_) return;
    outbox_bytes_ += text.size();
    outbox_.push_back(std::move(text));
    if (outbox_bytes_ > kMaxOutboxBytes) {
        outbox_.clear();
        outbox_bytes_ = 0;
        request_close(websocket::close_code::policy_error, "device does not read its socket");
        return;
    }
    wake_.cancel();
}

void WsSession::request_close(std::uint16_t code, std::string reason) {
    if (closing_) return;
    closing_ = true;
    end_reason_ = reason;
    // A close reason travels in a control frame: at most 123 bytes.
    if (reason.size() > 120) reason.resize(120);
    pending_close_ = websocket::close_reason{static_cast<websocket::close_code>(code), reason};
    wake_.cancel();
}

net::awaitable<void> WsSession::write_loop(std::shared_ptr<WsSession> self) {
    auto& s = *self;
    for (;;) {
        if (s.reader_done_) break;
        if (!s.outbox_.empty()) {
            std::string text = std::move(s.outbox_.front());
            s.outbox_.pop_front();
            s.outbox_bytes_ -= std::min(s.outbox_bytes_, text.size());
            s.ws_.text(true);
            auto [ec, n] = co_await s.ws_.async_write(net::asio::buffer(text), net::kAsTuple);
            if (ec) break;
            metrics::frame_out();
            continue;
        }
        if (s.pending_close_) {
            auto reason = *s.pending_close_;
            s.pending_close_.reset();
            auto [ec] = co_await s.ws_.async_close(reason, net::kAsTuple);
            (void)ec;
            break;
        }
        s.wake_.expires_at(net::asio::steady_timer::time_point::max());
        auto [ec] = co_await s.wake_.async_wait(net::kAsTuple);
        (void)ec;
    }
}

// Its own coroutine, so what it holds while the statement runs is not part of the read loop's
// frame, which every session keeps for its whole life.
net::awaitable<bool> WsSession::run_step(ChannelStep& step, const phx::Message& message) {
    try {
        if (step.join) {
            auto record = std::move(step.join->record);
            *step.join->facts = co_await net::submit_batched(deps_.joins, std::move(record));
        } else {
            auto work = std::move(step.work);
            co_await net::run_blocking(deps_.workers, std::move(work));
        }
        co_return true;
    } catch (const std::exception& e) {
        spdlog::warn("device={} {} on {} failed: {}", info_.identifier, message.event,
                     message.topic, e.what());
    }
    co_return false;
}

net::awaitable<void> WsSession::read_loop() {
    net::beast::flat_buffer buffer;
    const phx::Limits limits{};
    for (;;) {
        // Wait for the next frame with no buffer of ours: Beast reads its header (and the start
        // of the payload) into the stream's own fixed read buffer and answers pings meanwhile.
        // Reading straight into `buffer` would allocate ~1.5 KiB before the wait, and an idle
        // session would hold it until its next message.
        // The empty buffer must not be null: Beast's UTF-8 check of a text frame computes
        // `data - 3` on it, which wraps around for a null pointer and faults.
        static char no_bytes[1];
        auto [ec, none] =
            co_await ws_.async_read_some(net::asio::mutable_buffer{no_bytes, 0}, net::kAsTuple);
        (void)none;
        // An empty message is complete already; any other is read whole, sized to its frame.
        if (!ec && !ws_.is_message_done()) {
            auto [read_ec, n] = co_await ws_.async_read(buffer, net::kAsTuple);
            (void)n;
            ec = read_ec;
        }
        if (ec) {
            if (end_reason_.empty()) end_reason_ = describe_end(ec, ws_);
            break;
        }
        metrics::frame_in();
        const auto now = std::chrono::steady_clock::now();
        if (now - last_seen_mark_ >= kLastSeenWriteInterval) {
            last_seen_mark_ = now;
            deps_.presence.mark_seen(info_.device_id);
        }
        if (closing_) {
            buffer.consume(buffer.size());
            continue;  // draining until the device answers our close
        }
        if (!ws_.got_text()) {
            buffer.consume(buffer.size());
            spdlog::info("device={} sent a binary frame; closing (vsn=2.0.0 is JSON text)",
                         info_.identifier);
            request_close(websocket::close_code::unknown_data, "binary frames are not supported");
            continue;
        }
        const auto data = buffer.cdata();
        auto decoded = phx::decode(
            std::string_view(static_cast<const char*>(data.data()), data.size()), limits);
        buffer.consume(buffer.size());
        // An idle session keeps no read buffer (~1.5 KiB per device otherwise); one allocation
        // per message is cheap next to decoding it.
        buffer.shrink_to_fit();
        if (!decoded) {
            spdlog::info("device={} sent a malformed frame ({}); closing", info_.identifier,
                         decoded.error().reason);
            request_close(close_code_for(decoded.error().code), "malformed frame");
            continue;
        }
        auto step = channel_.handle(decoded.value());
        bool work_ok = true;
        if (step.join || step.work) work_ok = co_await run_step(step, decoded.value());
        const std::vector<phx::Message>* replies = work_ok ? &step.replies : &step.on_failure;
        for (const auto& reply : *replies) enqueue(phx::encode(reply));
        // Observers go after the replies are queued: what they push follows the reply.
        if (work_ok && step.after) net::asio::post(deps_.workers, std::move(step.after));
    }
}

net::awaitable<void> WsSession::run(std::shared_ptr<WsSession> self) {
    const auto started = std::chrono::steady_clock::now();
    self->deps_.registry.add(self);
    auto executor = self->ws_.get_executor();
    net::asio::co_spawn(executor, write_loop(self),
                        [id = self->info_.identifier](std::exception_ptr e) {
                            if (!e) return;
                            try {
                                std::rethrow_exception(e);
                            } catch (const std::exception& ex) {
                                spdlog::warn("device={} writer ended: {}", id, ex.what());
                            }
                        });
    try {
        co_await self->read_loop();
    } catch (const std::exception& e) {
        self->end_reason_ = std::string("internal error: ") + e.what();
        spdlog::error("device={} session failed: {}", self->info_.identifier, e.what());
    }
    self->reader_done_ = true;
    self->closing_ = true;
    self->wake_.cancel();
    self->deps_.registry.remove(*self);
    if (auto& socket = net::beast::get_lowest_layer(self->ws_); socket.is_open()) {
        boost::system::error_code ignored;
        socket.close(ignored);
    }

    const auto info = self->info_;
    const auto reason = self->end_reason_.empty() ? std::string("closed") : self->end_reason_;
    const auto seconds =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started)
            .count();
    spdlog::info("device={} disconnected: {} (connection {} lasted {} s)", info.identifier, reason,
                 info.connection_id, seconds);
    // Written with the ends of other sessions, by one statement (Presence): a disconnection
    // does not wait for the database.
    self->deps_.presence.connection_closed(info.connection_id, reason);
    for (const auto& hook : self->deps_.hooks.on_disconnect) {
        try {
            hook(info);
        } catch (const std::exception& e) {
            spdlog::warn("device={} hook on_disconnect failed: {}", info.identifier, e.what());
        }
    }
}

}  // namespace otahub::device
