// libFuzzer harness for the Phoenix V2 frame codec.
//
// Build and run (from the repository root):
//   clang++-14 -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
//       -I. -I/usr/include tests/fuzz/phoenix_fuzz.cpp server/device/phoenix.cpp -o
//       /tmp/phoenix_fuzz
//   (one command line)
//   mkdir -p /tmp/phoenix_corpus
//   /tmp/phoenix_fuzz /tmp/phoenix_corpus tests/fuzz/corpus/phoenix -max_total_time=30
//
// Checks, for every input:
//  1. decode never throws or crashes; when it accepts, encode → decode gives the same message and
//     encode is a fixpoint (encode(decode(encode(m))) == encode(m)).
//  2. the input split on 0x1E into join_ref, ref, topic, event and a string payload always
//     encodes to a frame that decodes; for valid UTF-8 fields the strings come back unchanged and
//     the escaping is byte-identical to nlohmann's serializer.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "server/device/phoenix.hpp"

namespace {

using otahub::device::phoenix::decode;
using otahub::device::phoenix::DecodeErrorCode;
using otahub::device::phoenix::encode;
using otahub::device::phoenix::Limits;
using otahub::device::phoenix::Message;

void check(bool condition) {
    if (!condition) {
        std::abort();
    }
}

// Re-encoding may grow the text (1e5 → 100000.0), so the size limit is lifted on re-decode.
Limits unlimited_size() {
    Limits limits;
    limits.max_bytes = std::string::npos;
    return limits;
}

void round_trip(std::string_view text) {
    auto decoded = decode(text);
    if (!decoded) {
        check(!decoded.error().reason.empty());
        return;
    }
    const std::string encoded = encode(decoded.value());
    auto again = decode(encoded, unlimited_size());
    check(again.has_value());
    check(again.value() == decoded.value());
    check(encode(again.value()) == encoded);
}

// nlohmann's strict serializer throws on ill-formed UTF-8; used here as the reference validator.
bool nlohmann_escape(const std::string& text, std::string& escaped) {
    try {
        escaped = nlohmann::json(text).dump();
        return true;
    } catch (const nlohmann::json::type_error&) {
        return false;
    }
}

void encode_arbitrary_fields(std::string_view data) {
    std::vector<std::string> fields;
    std::size_t start = 0;
    while (fields.size() < 4) {
        const std::size_t end = data.find('\x1e', start);
        if (end == std::string_view::npos) {
            break;
        }
        fields.emplace_back(data.substr(start, end - start));
        start = end + 1;
    }
    if (fields.size() < 4) {
        return;
    }
    const std::string payload_text(data.substr(start));
    Message message{fields[0], fields[1], fields[2], fields[3], nlohmann::json(payload_text)};
    const std::string encoded = encode(message);
    auto decoded = decode(encoded, unlimited_size());
    if (fields[2].empty()) {
        check(!decoded && decoded.error().code == DecodeErrorCode::kBadTopic);
        return;
    }
    if (fields[3].empty()) {
        check(!decoded && decoded.error().code == DecodeErrorCode::kBadEvent);
        return;
    }
    check(decoded.has_value());
    check(decoded->payload.is_string());
    const std::optional<std::string>* refs[] = {&decoded->join_ref, &decoded->ref};
    const std::string* names[] = {&decoded->topic, &decoded->event};
    for (int i = 0; i < 4; ++i) {
        const std::string& got = i < 2 ? **refs[i] : *names[i - 2];
        std::string escaped;
        if (nlohmann_escape(fields[static_cast<std::size_t>(i)], escaped)) {
            check(got == fields[static_cast<std::size_t>(i)]);
            Message one{std::nullopt, std::nullopt, fields[static_cast<std::size_t>(i)], "e",
                        nullptr};
            check(encode(one) == "[null,null," + escaped + ",\"e\",null]");
        }
    }
    std::string escaped_payload;
    if (nlohmann_escape(payload_text, escaped_payload)) {
        check(decoded->payload.get_ref<const std::string&>() == payload_text);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    round_trip(text);
    encode_arbitrary_fields(text);
    return 0;
}
