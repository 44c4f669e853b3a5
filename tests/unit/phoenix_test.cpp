#include "server/device/phoenix.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace otahub::device::phoenix {
namespace {

using nlohmann::json;
using namespace std::string_view_literals;

// The literal frames of the NervesHub device protocol reference (nerveshub.md §1.10).
const std::vector<std::string> kReferenceFrames = {
    R"(["1","1","device","phx_join",{"nerves_fw_uuid":"9e2c…","nerves_fw_version":"1.2.3","nerves_fw_product":"my_app","nerves_fw_architecture":"aarch64","nerves_fw_platform":"rpi4","nerves_fw_author":"The Nerves Team","nerves_fw_description":"","nerves_fw_vcs_identifier":"","nerves_fw_misc":"","nerves_fw_application_part0_devpath":"/dev/mmcblk0p3","fwup_version":"1.13.0","device_api_version":"2.3.0","console_version":"2.0.0","fwup_public_keys":"on_connect","archive_public_keys":"on_connect","currently_downloading_uuid":null,"meta":{"firmware_auto_revert_detected":false,"firmware_validated":true}}])",
    R"(["1","1","device","phx_reply",{"status":"ok","response":{}}])",
    R"(["1","1","device","phx_reply",{"status":"error","response":{"error":"could not connect"}}])",
    R"([null,null,"device","fwup_public_keys",{"keys":["<base64 32-byte ed25519 key>"]}])",
    R"([null,null,"device","extensions:get",{}])",
    R"([null,null,"device","update",{"update_available":true,"firmware_url":"https://<bucket>.s3.amazonaws.com/firmware/42/<uuid>.fw?X-Amz-Algorithm=…&X-Amz-Expires=86400&…","firmware_meta":{"architecture":"aarch64","author":"…","description":"…","misc":null,"platform":"rpi4","product":"my_app","uuid":"<uuid>","vcs_identifier":null,"version":"1.2.4"},"size":41943040,"checksum":"3F…","partials_checksums":["A1…","B2…"],"deployment_id":17}])",
    R"(["1","5","device","status_update",{"status":"received"}])",
    R"(["1","6","device","status_update",{"status":"started","downloader_network_interface":"wlan0"}])",
    R"(["1","7","device","fwup_progress",{"stage":"downloading","value":42}])",
    R"(["1","8","device","fwup_progress",{"stage":"updating","value":100}])",
    R"(["1","9","device","status_update",{"status":"completed"}])",
    R"([null,"10","phoenix","heartbeat",{}])",
    R"([null,"10","phoenix","phx_reply",{"status":"ok","response":{}}])",
    R"(["2","11","extensions","phx_join",{"health":"0.0.1","geo":"0.0.1"}])",
    R"(["2","11","extensions","phx_reply",{"status":"ok","response":["health","geo"]}])",
    R"(["2","12","extensions","health:attached",{}])",
    R"(["2",null,"extensions","health:check",{}])",
    R"(["2","13","extensions","health:report",{"value":{"timestamp":"2026-08-12T01:02:03Z","metadata":{},"alarms":{},"metrics":{"cpu_usage_percent":12.5},"checks":{},"connectivity":{}}}])",
};

DecodeErrorCode error_of(std::string_view text, const Limits& limits = {}) {
    auto result = decode(text, limits);
    EXPECT_FALSE(result) << "accepted: " << text.substr(0, 80);
    return result ? DecodeErrorCode::kTooLarge : result.error().code;
}

std::string nested_payload_frame(std::size_t payload_depth) {
    return R"(["1","2","device","x",)" + std::string(payload_depth, '[') +
           std::string(payload_depth, ']') + "]";
}

TEST(PhoenixCodec, ReferenceFramesRoundTrip) {
    for (const auto& text : kReferenceFrames) {
        SCOPED_TRACE(text);
        auto decoded = decode(text);
        ASSERT_TRUE(decoded) << decoded.error().reason;
        std::string encoded = encode(decoded.value());
        // nlohmann::json orders object keys, so compare as JSON, then as messages.
        EXPECT_EQ(json::parse(encoded), json::parse(text));
        auto again = decode(encoded);
        ASSERT_TRUE(again);
        EXPECT_EQ(again.value(), decoded.value());
    }
}

TEST(PhoenixCodec, DecodesJoinFields) {
    auto decoded = decode(kReferenceFrames[0]);
    ASSERT_TRUE(decoded);
    EXPECT_EQ(decoded->join_ref, "1");
    EXPECT_EQ(decoded->ref, "1");
    EXPECT_EQ(decoded->topic, "device");
    EXPECT_EQ(decoded->event, kPhxJoin);
    EXPECT_EQ(decoded->payload["device_api_version"], "2.3.0");
    EXPECT_TRUE(decoded->payload["currently_downloading_uuid"].is_null());
    EXPECT_EQ(decoded->payload["meta"]["firmware_validated"], true);
    EXPECT_EQ(decoded->payload.size(), 17U);
}

TEST(PhoenixCodec, EncodesByteExactWhenKeysAreOrdered) {
    for (std::string_view text : {
             R"([null,null,"device","extensions:get",{}])",
             R"([null,"10","phoenix","heartbeat",{}])",
             R"(["1","5","device","status_update",{"status":"received"}])",
             R"(["1","7","device","fwup_progress",{"stage":"downloading","value":42}])",
             R"(["2",null,"extensions","health:check",{}])",
         }) {
        auto decoded = decode(text);
        ASSERT_TRUE(decoded);
        EXPECT_EQ(encode(decoded.value()), text);
    }
}

TEST(PhoenixCodec, LegacyNullJoinRefIsAccepted) {
    auto decoded = decode(R"([null,"7","device","fwup_progress",{"value":10}])");
    ASSERT_TRUE(decoded);
    EXPECT_EQ(decoded->join_ref, std::nullopt);
    EXPECT_EQ(decoded->ref, "7");
    EXPECT_EQ(encode(decoded.value()), R"([null,"7","device","fwup_progress",{"value":10}])");
}

TEST(PhoenixCodec, IntegerRefsBecomeDecimalStrings) {
    auto decoded = decode(R"([null,5,"phoenix","heartbeat",{}])");
    ASSERT_TRUE(decoded);
    EXPECT_EQ(decoded->ref, "5");
    decoded = decode(R"([-3,18446744073709551615,"device","x",{}])");
    ASSERT_TRUE(decoded);
    EXPECT_EQ(decoded->join_ref, "-3");
    EXPECT_EQ(decoded->ref, "18446744073709551615");
    EXPECT_EQ(
        encode(reply(decoded.value(), "ok", json::object())),
        R"(["-3","18446744073709551615","device","phx_reply",{"response":{},"status":"ok"}])");
}

TEST(PhoenixCodec, RefusesRefsOfOtherTypes) {
    EXPECT_EQ(error_of(R"([1.5,"1","device","x",{}])"), DecodeErrorCode::kBadJoinRef);
    EXPECT_EQ(error_of(R"([true,"1","device","x",{}])"), DecodeErrorCode::kBadJoinRef);
    EXPECT_EQ(error_of(R"([{},"1","device","x",{}])"), DecodeErrorCode::kBadJoinRef);
    EXPECT_EQ(error_of(R"(["1",["1"],"device","x",{}])"), DecodeErrorCode::kBadRef);
    EXPECT_EQ(error_of(R"(["1",1e3,"device","x",{}])"), DecodeErrorCode::kBadRef);
    EXPECT_EQ(error_of(R"(["1",false,"device","x",{}])"), DecodeErrorCode::kBadRef);
}

TEST(PhoenixCodec, RefusesWrongArity) {
    EXPECT_EQ(error_of("[]"), DecodeErrorCode::kNotFrame);
    EXPECT_EQ(error_of(R"(["1","1","device","x"])"), DecodeErrorCode::kNotFrame);
    EXPECT_EQ(error_of(R"(["1","1","device","x",{},{}])"), DecodeErrorCode::kNotFrame);
    EXPECT_EQ(error_of(R"(["1","1","device","x",{},null,null,null])"), DecodeErrorCode::kNotFrame);
}

TEST(PhoenixCodec, RefusesRootsThatAreNotArrays) {
    // The V1 map serializer is not spoken by the device endpoint.
    EXPECT_EQ(error_of(R"({"topic":"device","event":"phx_join","payload":{},"ref":"1"})"),
              DecodeErrorCode::kNotFrame);
    EXPECT_EQ(error_of(R"("device")"), DecodeErrorCode::kNotFrame);
    EXPECT_EQ(error_of("42"), DecodeErrorCode::kNotFrame);
    EXPECT_EQ(error_of("null"), DecodeErrorCode::kNotFrame);
}

TEST(PhoenixCodec, RefusesBadTopicAndEvent) {
    EXPECT_EQ(error_of(R"(["1","1",7,"x",{}])"), DecodeErrorCode::kBadTopic);
    EXPECT_EQ(error_of(R"(["1","1",null,"x",{}])"), DecodeErrorCode::kBadTopic);
    EXPECT_EQ(error_of(R"(["1","1","","x",{}])"), DecodeErrorCode::kBadTopic);
    EXPECT_EQ(error_of(R"(["1","1","device",["x"],{}])"), DecodeErrorCode::kBadEvent);
    EXPECT_EQ(error_of(R"(["1","1","device",null,{}])"), DecodeErrorCode::kBadEvent);
    EXPECT_EQ(error_of(R"(["1","1","device","",{}])"), DecodeErrorCode::kBadEvent);
}

TEST(PhoenixCodec, AcceptsAnyJsonPayload) {
    for (std::string_view payload : {"[1,2]", "\"text\"", "null", "3.25", "true", "{}"}) {
        auto decoded = decode(R"(["1","1","device","x",)" + std::string(payload) + "]");
        ASSERT_TRUE(decoded) << payload;
        EXPECT_EQ(decoded->payload, json::parse(payload));
    }
}

TEST(PhoenixCodec, EnforcesDepthAtTheLimit) {
    // Frame array (1) + 31 nested payload arrays = 32 levels: accepted; one more is refused.
    EXPECT_TRUE(decode(nested_payload_frame(31)));
    EXPECT_EQ(error_of(nested_payload_frame(32)), DecodeErrorCode::kTooDeep);
    Limits shallow;
    shallow.max_depth = 2;
    EXPECT_TRUE(decode(R"(["1","1","device","x",{"a":1}])", shallow));
    EXPECT_EQ(error_of(R"(["1","1","device","x",{"a":{}}])", shallow), DecodeErrorCode::kTooDeep);
}

TEST(PhoenixCodec, RefusesDeepNestingWithoutRecursion) {
    std::string arrays(100'000, '[');
    EXPECT_EQ(error_of(arrays), DecodeErrorCode::kTooDeep);
    EXPECT_EQ(error_of(arrays + std::string(100'000, ']')), DecodeErrorCode::kTooDeep);
    std::string objects = R"(["1","1","device","x",)";
    for (int i = 0; i < 100'000; ++i) {
        objects += R"({"a":)";
    }
    EXPECT_EQ(error_of(objects), DecodeErrorCode::kTooDeep);
    // A megabyte of brackets is refused as too deep, not as too large, and costs no stack.
    Limits unlimited;
    unlimited.max_bytes = std::string::npos;
    EXPECT_EQ(error_of(std::string(1U << 20, '['), unlimited), DecodeErrorCode::kTooDeep);
}

TEST(PhoenixCodec, EnforcesMaxBytes) {
    std::string head = R"(["1","1","device","x",")";
    std::string tail = "\"]";
    std::size_t limit = Limits{}.max_bytes;
    std::string exact = head + std::string(limit - head.size() - tail.size(), 'a') + tail;
    ASSERT_EQ(exact.size(), limit);
    EXPECT_TRUE(decode(exact));
    std::string over = head + std::string(limit - head.size() - tail.size() + 1, 'a') + tail;
    EXPECT_EQ(error_of(over), DecodeErrorCode::kTooLarge);
    Limits small;
    small.max_bytes = 16;
    EXPECT_EQ(error_of(R"([null,"10","phoenix","heartbeat",{}])", small),
              DecodeErrorCode::kTooLarge);
}

TEST(PhoenixCodec, InvalidUtf8IsAnErrorNotAnException) {
    for (std::string_view text : {
             std::string_view("[\"1\",\"1\",\"device\",\"x\",{\"a\":\"\xff\"}]"),
             std::string_view("[\"1\",\"1\",\"dev\xc3\",\"x\",{}]"),                // truncated
             std::string_view("[\"1\",\"1\",\"device\",\"\xc0\xaf\",{}]"),          // overlong '/'
             std::string_view("[\"1\",\"1\",\"device\",\"\xed\xa0\x80\",{}]"),      // surrogate
             std::string_view("[\"1\",\"1\",\"device\",\"\xf4\x90\x80\x80\",{}]"),  // > U+10FFFF
             std::string_view("[\"1\",\"1\",\"device\",\"x\",{}]\x80"),
             std::string_view(R"(["1","1","device","\ud800",{}])"),  // unpaired escape
         }) {
        DecodeResult result = Message{};
        ASSERT_NO_THROW(result = decode(text));
        ASSERT_FALSE(result);
        EXPECT_EQ(result.error().code, DecodeErrorCode::kNotJson);
        // The reason is printable ASCII, so it can be logged or put into JSON.
        for (char c : result.error().reason) {
            EXPECT_TRUE(c >= 0x20 && c < 0x7f) << result.error().reason;
        }
        EXPECT_NO_THROW((void)json(result.error().reason).dump());
    }
}

TEST(PhoenixCodec, AcceptsValidMultibyteUtf8) {
    auto decoded = decode(
        "[\"1\",\"1\",\"device\",\"x\",{\"t\":\"h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}]");
    ASSERT_TRUE(decoded);
    EXPECT_EQ(decoded->payload["t"], "h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    EXPECT_EQ(encode(decoded.value()),
              "[\"1\",\"1\",\"device\",\"x\",{\"t\":\"h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}]");
}

TEST(PhoenixCodec, RefusesTrailingGarbageAndEmptyInput) {
    EXPECT_EQ(error_of(R"([null,"10","phoenix","heartbeat",{}] x)"), DecodeErrorCode::kNotJson);
    EXPECT_EQ(error_of(R"([null,"10","phoenix","heartbeat",{}][])"), DecodeErrorCode::kNotJson);
    // nlohmann's lexer alone would stop at the NUL and accept the frame.
    EXPECT_EQ(error_of("[null,\"10\",\"phoenix\",\"heartbeat\",{}]\0"sv),
              DecodeErrorCode::kNotJson);
    EXPECT_EQ(error_of("[null,\"10\",\"phoenix\",\"heartbeat\",{}]\0junk"sv),
              DecodeErrorCode::kNotJson);
    EXPECT_EQ(error_of("[null,\"1\0\",\"phoenix\",\"heartbeat\",{}]"sv), DecodeErrorCode::kNotJson);
    EXPECT_EQ(error_of(""), DecodeErrorCode::kNotJson);
    EXPECT_EQ(error_of("   "), DecodeErrorCode::kNotJson);
    EXPECT_EQ(error_of(R"([null,"10","phoenix","heartbeat",{})"), DecodeErrorCode::kNotJson);
    EXPECT_EQ(error_of(R"([null,"10","phoenix","heartbeat",{},])"), DecodeErrorCode::kNotJson);
    EXPECT_EQ(error_of(R"([null,"1","d","x",{"n":1e400}])"), DecodeErrorCode::kNotJson);
    EXPECT_EQ(error_of(R"([null,"1","d","x",{/*c*/}])"), DecodeErrorCode::kNotJson);
    EXPECT_TRUE(decode(" \n\t[null,\"10\",\"phoenix\",\"heartbeat\",{}] \r\n"));
}

TEST(PhoenixCodec, ReasonNamesTheProblem) {
    auto result = decode(R"(["1","1","device","x",{}] junk)");
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().reason.find("not JSON at byte"), std::string::npos)
        << result.error().reason;
    EXPECT_EQ(to_string(result.error().code), "not_json");
    EXPECT_EQ(to_string(DecodeErrorCode::kTooDeep), "too_deep");
}

TEST(PhoenixCodec, DuplicateKeysKeepTheLastValue) {
    auto decoded = decode(R"(["1","1","device","x",{"a":1,"a":{"b":2}}])");
    ASSERT_TRUE(decoded);
    EXPECT_EQ(decoded->payload, json::parse(R"({"a":{"b":2}})"));
}

TEST(PhoenixHelpers, ReplyEchoesRefsAndTopic) {
    auto join = decode(kReferenceFrames[0]);
    ASSERT_TRUE(join);
    EXPECT_EQ(encode(reply(join.value(), "ok", json::object())),
              R"(["1","1","device","phx_reply",{"response":{},"status":"ok"}])");
    EXPECT_EQ(
        encode(reply(join.value(), "error", {{"error", "could not connect"}})),
        R"(["1","1","device","phx_reply",{"response":{"error":"could not connect"},"status":"error"}])");
    auto heartbeat = decode(R"([null,"10","phoenix","heartbeat",{}])");
    ASSERT_TRUE(heartbeat);
    EXPECT_EQ(encode(reply(heartbeat.value(), "ok", json::object())),
              R"([null,"10","phoenix","phx_reply",{"response":{},"status":"ok"}])");
    auto extensions = decode(kReferenceFrames[13]);
    ASSERT_TRUE(extensions);
    EXPECT_EQ(encode(reply(extensions.value(), "ok", json::array({"health", "geo"}))),
              R"(["2","11","extensions","phx_reply",{"response":["health","geo"],"status":"ok"}])");
}

TEST(PhoenixHelpers, PushIsFastLanedWithNullRefs) {
    EXPECT_EQ(encode(push("device", "reboot", json::object())),
              R"([null,null,"device","reboot",{}])");
    auto update = push("device", "update", {{"update_available", true}, {"deployment_id", 17}});
    EXPECT_EQ(encode(update),
              R"([null,null,"device","update",{"deployment_id":17,"update_available":true}])");
    EXPECT_EQ(
        encode(push("device", "scripts/run", {{"text", "1+1"}, {"ref", "connecting_code"}}, "1")),
        R"(["1",null,"device","scripts/run",{"ref":"connecting_code","text":"1+1"}])");
}

TEST(PhoenixHelpers, ErrorAndCloseCarryTheJoinRefTwice) {
    EXPECT_EQ(encode(error_message("device", "3")), R"(["3","3","device","phx_error",{}])");
    EXPECT_EQ(encode(close_message("extensions", "2")), R"(["2","2","extensions","phx_close",{}])");
    EXPECT_EQ(encode(close_message("device", std::nullopt)),
              R"([null,null,"device","phx_close",{}])");
}

TEST(PhoenixEncode, EscapesStrings) {
    Message message{
        "a\"b", "c\\d", "t\n\t\r\b\f", std::string("e\x01\x1f\x7f", 4), {{"k\"", "v\n"}}};
    std::string encoded = encode(message);
    EXPECT_EQ(encoded, R"(["a\"b","c\\d","t\n\t\r\b\f","e\u0001\u001f)"
                       "\x7f"
                       R"(",{"k\"":"v\n"}])");
    auto decoded = decode(encoded);
    ASSERT_TRUE(decoded);
    EXPECT_EQ(decoded.value(), message);
}

TEST(PhoenixEncode, ReplacesInvalidUtf8InsteadOfThrowing) {
    Message message{std::string("\xff"),
                    std::string("r\xc3"),
                    std::string("dev\xed\xa0\x80ice"),
                    "ev\xc3\xa9nt",
                    {{"k", std::string("\xfe\xff")}}};
    std::string encoded;
    ASSERT_NO_THROW(encoded = encode(message));
    auto decoded = decode(encoded);
    ASSERT_TRUE(decoded) << decoded.error().reason;
    EXPECT_EQ(decoded->join_ref, "\xef\xbf\xbd");
    EXPECT_EQ(decoded->ref, "r\xef\xbf\xbd");
    EXPECT_EQ(decoded->topic, "dev\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdice");
    EXPECT_EQ(decoded->event, "ev\xc3\xa9nt");
    EXPECT_TRUE(decoded->payload["k"].is_string());
}

TEST(PhoenixEncode, EncodeToAppends) {
    std::string out = "prefix:";
    encode_to(out, push("device", "identify", json::object()));
    EXPECT_EQ(out, R"(prefix:[null,null,"device","identify",{}])");
    EXPECT_EQ(encode(Message{}), R"([null,null,"","",null])");
}

}  // namespace
}  // namespace otahub::device::phoenix
