// The one translation unit that compiles Asio, Asio's SSL support and Beast when the build uses
// separate compilation (BOOST_ASIO_SEPARATE_COMPILATION); header-only builds need nothing here.
#if defined(BOOST_ASIO_SEPARATE_COMPILATION)
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
#endif

#include "server/net/asio.hpp"

namespace otahub::net {

bool is_ip_literal(const std::string& host) {
    boost::system::error_code ec;
    asio::ip::make_address(host, ec);
    return !ec;
}

}  // namespace otahub::net
