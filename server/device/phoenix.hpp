#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

/// Phoenix Channels V2 JSON frame codec (`vsn=2.0.0`): `[join_ref, ref, topic, event, payload]`.
/// Pure functions, no shared state: safe to call from any thread.
namespace otahub::device::phoenix {

inline constexpr std::string_view kPhoenixTopic = "phoenix";  ///< Socket-level topic (heartbeat).
inline constexpr std::string_view kHeartbeat = "heartbeat";
inline constexpr std::string_view kPhxJoin = "phx_join";
inline constexpr std::string_view kPhxLeave = "phx_leave";
inline constexpr std::string_view kPhxReply = "phx_reply";
inline constexpr std::string_view kPhxError = "phx_error";
inline constexpr std::string_view kPhxClose = "phx_close";

/// One frame. A ref that was absent (JSON null) is `std::nullopt`.
struct Message {
    std::optional<std::string> join_ref;
    std::optional<std::string> ref;
    std::string topic;
    std::string event;
    nlohmann::json payload;

    friend bool operator==(const Message&, const Message&) = default;
};

/// Bounds applied to untrusted input before and while it is parsed.
struct Limits {
    /// Longest accepted frame text, in bytes.
    std::size_t max_bytes = std::size_t{1} << 20;
    /// Deepest accepted nesting of arrays and objects; the frame array itself is level 1,
    /// so a payload object is level 2. Enforced while parsing, so deep input costs no stack.
    std::size_t max_depth = 32;
};

/// Why a frame was refused.
enum class DecodeErrorCode {
    kTooLarge,    // text longer than Limits::max_bytes
    kNotJson,     // syntax error, invalid UTF-8, trailing garbage, empty input
    kTooDeep,     // nesting deeper than Limits::max_depth
    kNotFrame,    // valid JSON but not an array of exactly 5 elements
    kBadJoinRef,  // join_ref neither string, integer nor null
    kBadRef,      // ref neither string, integer nor null
    kBadTopic,    // topic not a non-empty string
    kBadEvent,    // event not a non-empty string
};

/// Stable lower-case name of a code, for logs and metrics labels.
std::string_view to_string(DecodeErrorCode code);

/// A refused frame: the code, and an ASCII-only reason safe to log or send back.
struct DecodeError {
    DecodeErrorCode code;
    std::string reason;
};

/// Either the decoded message or the error (std::expected is C++23).
class DecodeResult {
  public:
    // Implicit on purpose, so decode can `return message;` and `return error;`.
    DecodeResult(Message message) : result_(std::move(message)) {}
    DecodeResult(DecodeError error) : result_(std::move(error)) {}

    bool has_value() const { return result_.index() == 0; }
    explicit operator bool() const { return has_value(); }

    /// The message; only when has_value().
    Message& value() & { return std::get<Message>(result_); }
    const Message& value() const& { return std::get<Message>(result_); }
    Message&& value() && { return std::get<Message>(std::move(result_)); }
    Message* operator->() { return &value(); }
    const Message* operator->() const { return &value(); }

    /// The error; only when !has_value().
    const DecodeError& error() const { return std::get<DecodeError>(result_); }

  private:
    std::variant<Message, DecodeError> result_;
};

/// Decodes one text frame. Never throws for any input (only std::bad_alloc can escape).
/// Refs may be strings, null or integers; integers (PhoenixClient, used by NervesHubLink 1.x,
/// sends its heartbeat ref as one) become their decimal string. Extra or missing array elements
/// are refused. The payload may be any JSON value; the channel decides what it accepts.
DecodeResult decode(std::string_view text, const Limits& limits = {});

/// Appends the compact JSON text of `message` to `out`. Invalid UTF-8 in any string is
/// replaced by U+FFFD rather than throwing, so the result is always a valid text frame.
void encode_to(std::string& out, const Message& message);

/// The compact JSON text `[join_ref, ref, topic, event, payload]`, null for absent refs.
std::string encode(const Message& message);

/// The `phx_reply` answering `request`: same join_ref, ref and topic,
/// payload `{"status": status, "response": response}`.
Message reply(const Message& request, std::string_view status, nlohmann::json response);

/// A server push. Fast-laned broadcasts carry null refs (`[null,null,"device","update",{…}]`);
/// pushes made by the channel itself (Phoenix.Channel.push) carry its join_ref.
Message push(std::string topic, std::string event, nlohmann::json payload,
             std::optional<std::string> join_ref = std::nullopt);

/// `phx_error` for a channel that crashed: join_ref and ref are both the channel's join_ref,
/// payload `{}` (Phoenix.Socket on_exit_message).
Message error_message(std::string topic, std::optional<std::string> join_ref);

/// `phx_close` for a channel that ended normally, shaped like error_message.
Message close_message(std::string topic, std::optional<std::string> join_ref);

}  // namespace otahub::device::phoenix
