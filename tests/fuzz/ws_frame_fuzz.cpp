// libFuzzer harness for the device endpoint's byte stream after TLS: the HTTP Upgrade request
// (Beast's parser with the hub's header limit), then WebSocket frames (Beast's decoder with the
// hub's message limit), each accepted text message going through the Phoenix decoder. The
// input is what a client sends; the harness plays the server side over an in-memory stream.
// Built and run by tests/fuzz/run (see tests/fuzz/README.md).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "server/device/phoenix.hpp"

namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace websocket = boost::beast::websocket;

// The defaults of otahub::device::DeviceServerOptions, kept small so the fuzzer is not slowed
// by megabyte allocations; the limits' code paths are the same.
constexpr std::size_t kMaxUpgradeHeaderBytes = 8 * 1024;
constexpr std::size_t kMaxMessageBytes = 64 * 1024;
constexpr int kMaxMessages = 64;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    boost::asio::io_context ioc;
    std::string_view input(reinterpret_cast<const char*>(data), size);

    // The upgrade request, read as device_server.cpp reads it.
    beast::test::stream upgrade{ioc, input};
    upgrade.close_remote();  // EOF after the input
    beast::error_code ec;
    beast::flat_buffer buffer{kMaxUpgradeHeaderBytes};
    bhttp::request_parser<bhttp::empty_body> parser;
    parser.header_limit(kMaxUpgradeHeaderBytes);
    parser.body_limit(0);
    bhttp::read(upgrade, buffer, parser, ec);
    if (ec || !websocket::is_upgrade(parser.get())) {
        return 0;
    }

    // Whatever followed the request are the client's frames.
    auto rest = buffer.data();
    beast::test::stream server{ioc};
    beast::test::stream client{ioc};
    server.connect(client);
    server.append(std::string_view(static_cast<const char*>(rest.data()), rest.size()));
    server.close_remote();
    websocket::stream<beast::test::stream&> ws{server};
    ws.read_message_max(kMaxMessageBytes);
    ws.accept(parser.release(), ec);
    if (ec) {
        return 0;
    }
    for (int i = 0; i < kMaxMessages; ++i) {
        beast::flat_buffer message;
        ws.read(message, ec);
        if (ec) {
            break;
        }
        if (ws.got_text()) {
            auto bytes = message.data();
            std::string_view text(static_cast<const char*>(bytes.data()), bytes.size());
            (void)otahub::device::phoenix::decode(text);
        }
    }
    return 0;
}
