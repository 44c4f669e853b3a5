#include "server/device/phoenix.hpp"

#include <array>
#include <string>
#include <vector>

namespace otahub::device::phoenix {
namespace {

using nlohmann::json;

constexpr std::size_t kFrameArity = 5;

// Builds the DOM like nlohmann's own SAX DOM parser, but refuses, while parsing, nesting deeper
// than the limit and anything that cannot be a frame (a root that is not an array, a sixth
// element). The parser itself is iterative, so no input can exhaust the stack.
class BoundedDomBuilder {
  public:
    enum class Stop { kNone, kSyntax, kTooDeep, kNotFrame };

    BoundedDomBuilder(json& root, std::size_t max_depth) : root_(root), max_depth_(max_depth) {
        stack_.reserve(max_depth < 64 ? max_depth : 64);
    }

    bool null() { return add(json(nullptr)) != nullptr; }
    bool boolean(bool value) { return add(json(value)) != nullptr; }
    bool number_integer(json::number_integer_t value) { return add(json(value)) != nullptr; }
    bool number_unsigned(json::number_unsigned_t value) { return add(json(value)) != nullptr; }
    bool number_float(json::number_float_t value, const std::string& /*text*/) {
        return add(json(value)) != nullptr;
    }
    // The lexer clears its token buffer before each token, so moving the string out is safe.
    bool string(std::string& value) { return add(json(std::move(value))) != nullptr; }
    bool binary(json::binary_t& value) { return add(json::binary(std::move(value))) != nullptr; }

    bool start_object(std::size_t /*elements*/) { return open(json::value_t::object); }
    bool key(std::string& key) {
        object_element_ = &(*stack_.back())[std::move(key)];
        return true;
    }
    bool end_object() {
        stack_.pop_back();
        return true;
    }

    bool start_array(std::size_t /*elements*/) { return open(json::value_t::array); }
    bool end_array() {
        stack_.pop_back();
        return true;
    }

    bool parse_error(std::size_t position, const std::string& /*last_token*/,
                     const json::exception& ex) {
        stop_ = Stop::kSyntax;
        position_ = position;
        message_ = ex.what();
        return false;
    }

    Stop stop() const { return stop_; }
    std::size_t position() const { return position_; }
    const std::string& message() const { return message_; }

  private:
    bool open(json::value_t type) {
        if (stack_.size() >= max_depth_) {
            stop_ = Stop::kTooDeep;
            return false;
        }
        json* container = add(json(type));
        if (container == nullptr) {
            return false;
        }
        stack_.push_back(container);
        return true;
    }

    // Places a complete value (or a new empty container) and returns where it now lives.
    json* add(json&& value) {
        if (stack_.empty()) {
            if (!value.is_array()) {
                stop_ = Stop::kNotFrame;
                return nullptr;
            }
            root_ = std::move(value);
            return &root_;
        }
        json& parent = *stack_.back();
        if (parent.is_array()) {
            if (stack_.size() == 1 && parent.size() == kFrameArity) {
                stop_ = Stop::kNotFrame;
                return nullptr;
            }
            parent.push_back(std::move(value));
            return &parent.back();
        }
        *object_element_ = std::move(value);
        return object_element_;
    }

    json& root_;
    std::size_t max_depth_;
    // Pointers stay valid: a container on the stack is the last element of its parent array
    // (which cannot grow until it is closed) or a node of its parent's std::map.
    std::vector<json*> stack_;
    json* object_element_ = nullptr;
    Stop stop_ = Stop::kNone;
    std::size_t position_ = 0;
    std::string message_;
};

// Keeps a parser message printable and short: it may quote the offending (possibly invalid
// UTF-8) input, and the reason ends up in logs and JSON.
std::string sanitized(std::string_view text) {
    constexpr std::size_t kMaxReason = 200;
    if (auto prefix_end = text.find("] ");
        text.starts_with("[json.exception.") && prefix_end != std::string_view::npos) {
        text.remove_prefix(prefix_end + 2);
    }
    std::string out;
    out.reserve(text.size() < kMaxReason ? text.size() : kMaxReason);
    for (char c : text) {
        if (out.size() == kMaxReason) {
            break;
        }
        auto byte = static_cast<unsigned char>(c);
        out.push_back(byte >= 0x20 && byte < 0x7f ? c : '?');
    }
    return out;
}

DecodeError make_error(DecodeErrorCode code, std::string reason) {
    return DecodeError{code, std::move(reason)};
}

// Refs are opaque strings to Phoenix; integers are accepted because PhoenixClient sends its
// heartbeat ref unconverted.
bool take_ref(json& value, std::optional<std::string>& out) {
    switch (value.type()) {
        case json::value_t::null:
            out.reset();
            return true;
        case json::value_t::string:
            out.emplace(std::move(*value.get_ptr<std::string*>()));
            return true;
        case json::value_t::number_integer:
            out.emplace(std::to_string(value.get<json::number_integer_t>()));
            return true;
        case json::value_t::number_unsigned:
            out.emplace(std::to_string(value.get<json::number_unsigned_t>()));
            return true;
        default:
            return false;
    }
}

bool take_name(json& value, std::string& out) {
    auto* text = value.get_ptr<std::string*>();
    if (text == nullptr || text->empty()) {
        return false;
    }
    out = std::move(*text);
    return true;
}

// Length of the well-formed UTF-8 sequence (RFC 3629) starting at s[i], or 0 if ill-formed.
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
    auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    auto continuation = [&](std::size_t k, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
        return k < s.size() && at(k) >= lo && at(k) <= hi;
    };
    unsigned char lead = at(i);
    if (lead >= 0xC2 && lead <= 0xDF) {
        return continuation(i + 1) ? 2 : 0;
    }
    if (lead >= 0xE0 && lead <= 0xEF) {
        unsigned char lo = lead == 0xE0 ? 0xA0 : 0x80;
        unsigned char hi = lead == 0xED ? 0x9F : 0xBF;
        return continuation(i + 1, lo, hi) && continuation(i + 2) ? 3 : 0;
    }
    if (lead >= 0xF0 && lead <= 0xF4) {
        unsigned char lo = lead == 0xF0 ? 0x90 : 0x80;
        unsigned char hi = lead == 0xF4 ? 0x8F : 0xBF;
        return continuation(i + 1, lo, hi) && continuation(i + 2) && continuation(i + 3) ? 4 : 0;
    }
    return 0;
}

// Escapes like nlohmann's serializer (same escapes, no ensure_ascii) and replaces ill-formed
// UTF-8 with U+FFFD like its error_handler_t::replace. Clean ASCII runs are appended in one go.
void append_string(std::string& out, std::string_view s) {
    static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
    static constexpr std::array<char, 16> kHex = {'0', '1', '2', '3', '4', '5', '6', '7',
                                                  '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'};
    out.push_back('"');
    std::size_t run_start = 0;
    std::size_t i = 0;
    while (i < s.size()) {
        auto byte = static_cast<unsigned char>(s[i]);
        if (byte >= 0x20 && byte < 0x80 && byte != '"' && byte != '\\') {
            ++i;
            continue;
        }
        out.append(s.substr(run_start, i - run_start));
        if (byte >= 0x80) {
            if (std::size_t length = utf8_sequence_length(s, i); length != 0) {
                out.append(s.substr(i, length));
                i += length;
            } else {
                out.append(kReplacement);
                ++i;
            }
        } else {
            switch (byte) {
                case '"':
                    out.append("\\\"");
                    break;
                case '\\':
                    out.append("\\\\");
                    break;
                case '\b':
                    out.append("\\b");
                    break;
                case '\f':
                    out.append("\\f");
                    break;
                case '\n':
                    out.append("\\n");
                    break;
                case '\r':
                    out.append("\\r");
                    break;
                case '\t':
                    out.append("\\t");
                    break;
                default:
                    out.append("\\u00");
                    out.push_back(kHex[byte >> 4]);
                    out.push_back(kHex[byte & 0x0F]);
                    break;
            }
            ++i;
        }
        run_start = i;
    }
    out.append(s.substr(run_start));
    out.push_back('"');
}

void append_ref(std::string& out, const std::optional<std::string>& ref) {
    if (ref) {
        append_string(out, *ref);
    } else {
        out.append("null");
    }
}

Message lifecycle_message(std::string topic, std::string_view event,
                          std::optional<std::string> join_ref) {
    Message message;
    message.ref = join_ref;
    message.join_ref = std::move(join_ref);
    message.topic = std::move(topic);
    message.event = event;
    message.payload = json::object();
    return message;
}

}  // namespace

std::string_view to_string(DecodeErrorCode code) {
    switch (code) {
        case DecodeErrorCode::kTooLarge:
            return "too_large";
        case DecodeErrorCode::kNotJson:
            return "not_json";
        case DecodeErrorCode::kTooDeep:
            return "too_deep";
        case DecodeErrorCode::kNotFrame:
            return "not_frame";
        case DecodeErrorCode::kBadJoinRef:
            return "bad_join_ref";
        case DecodeErrorCode::kBadRef:
            return "bad_ref";
        case DecodeErrorCode::kBadTopic:
            return "bad_topic";
        case DecodeErrorCode::kBadEvent:
            return "bad_event";
    }
    return "unknown";
}

DecodeResult decode(std::string_view text, const Limits& limits) {
    if (text.size() > limits.max_bytes) {
        return make_error(DecodeErrorCode::kTooLarge, "frame of " + std::to_string(text.size()) +
                                                          " bytes exceeds " +
                                                          std::to_string(limits.max_bytes));
    }
    // nlohmann's lexer takes a NUL byte for the end of input, so "[…]\0junk" would pass. Valid
    // JSON never holds a raw NUL (inside strings it must be escaped).
    if (auto nul = text.find('\0'); nul != std::string_view::npos) {
        return make_error(DecodeErrorCode::kNotJson,
                          "not JSON at byte " + std::to_string(nul) + ": NUL byte");
    }
    json frame;
    BoundedDomBuilder builder(frame, limits.max_depth);
    // sax_parse reports every syntax and UTF-8 error through the handler: nothing is thrown.
    bool parsed = json::sax_parse(text.data(), text.data() + text.size(), &builder,
                                  json::input_format_t::json, /*strict=*/true,
                                  /*ignore_comments=*/false);
    if (!parsed) {
        switch (builder.stop()) {
            case BoundedDomBuilder::Stop::kTooDeep:
                return make_error(DecodeErrorCode::kTooDeep,
                                  "nesting deeper than " + std::to_string(limits.max_depth));
            case BoundedDomBuilder::Stop::kNotFrame:
                return make_error(DecodeErrorCode::kNotFrame, "not an array of 5 elements");
            case BoundedDomBuilder::Stop::kSyntax:
            case BoundedDomBuilder::Stop::kNone:
                break;
        }
        return make_error(DecodeErrorCode::kNotJson, "not JSON at byte " +
                                                         std::to_string(builder.position()) + ": " +
                                                         sanitized(builder.message()));
    }
    if (!frame.is_array() || frame.size() != kFrameArity) {
        return make_error(DecodeErrorCode::kNotFrame, "not an array of 5 elements");
    }
    Message message;
    if (!take_ref(frame[0], message.join_ref)) {
        return make_error(DecodeErrorCode::kBadJoinRef,
                          "join_ref is not a string, integer or null");
    }
    if (!take_ref(frame[1], message.ref)) {
        return make_error(DecodeErrorCode::kBadRef, "ref is not a string, integer or null");
    }
    if (!take_name(frame[2], message.topic)) {
        return make_error(DecodeErrorCode::kBadTopic, "topic is not a non-empty string");
    }
    if (!take_name(frame[3], message.event)) {
        return make_error(DecodeErrorCode::kBadEvent, "event is not a non-empty string");
    }
    message.payload = std::move(frame[4]);
    return message;
}

void encode_to(std::string& out, const Message& message) {
    out.push_back('[');
    append_ref(out, message.join_ref);
    out.push_back(',');
    append_ref(out, message.ref);
    out.push_back(',');
    append_string(out, message.topic);
    out.push_back(',');
    append_string(out, message.event);
    out.push_back(',');
    // The serializer writes straight into `out` (what json::dump does internally), saving a copy
    // of the payload text.
    nlohmann::detail::serializer<json> serializer(
        nlohmann::detail::output_adapter<char, std::string>(out), ' ',
        json::error_handler_t::replace);
    serializer.dump(message.payload, /*pretty_print=*/false, /*ensure_ascii=*/false,
                    /*indent_step=*/0);
    out.push_back(']');
}

std::string encode(const Message& message) {
    std::string out;
    // Refs, names and punctuation; the payload grows it as needed.
    out.reserve(32 + message.topic.size() + message.event.size() +
                (message.join_ref ? message.join_ref->size() : 0) +
                (message.ref ? message.ref->size() : 0));
    encode_to(out, message);
    return out;
}

Message reply(const Message& request, std::string_view status, json response) {
    Message message;
    message.join_ref = request.join_ref;
    message.ref = request.ref;
    message.topic = request.topic;
    message.event = kPhxReply;
    message.payload = json::object();
    message.payload.emplace("status", status);
    message.payload.emplace("response", std::move(response));
    return message;
}

Message push(std::string topic, std::string event, json payload,
             std::optional<std::string> join_ref) {
    return Message{std::move(join_ref), std::nullopt, std::move(topic), std::move(event),
                   std::move(payload)};
}

Message error_message(std::string topic, std::optional<std::string> join_ref) {
    return lifecycle_message(std::move(topic), kPhxError, std::move(join_ref));
}

Message close_message(std::string topic, std::optional<std::string> join_ref) {
    return lifecycle_message(std::move(topic), kPhxClose, std::move(join_ref));
}

}  // namespace otahub::device::phoenix
