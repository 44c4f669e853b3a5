// The one translation unit that compiles Asio, Asio's SSL support and Beast when the build uses
// separate compilation (BOOST_ASIO_SEPARATE_COMPILATION); header-only builds need nothing here.
#if defined(BOOST_ASIO_SEPARATE_COMPILATION)
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
#endif
namespace otahub::net {
/// Anchors this translation unit in the otahub_asio library.
int asio_impl_anchor = 0;
}  // namespace otahub::net
