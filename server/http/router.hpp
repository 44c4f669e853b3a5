#pragma once

#include <functional>
#include <string>
#include <vector>

#include "server/http/message.hpp"

namespace otahub::http {

/// A request handler; runs on a database worker thread, may block, throws ApiError for errors.
using Handler = std::function<Response(Request&)>;

/// How the connection should read a route's body.
enum class BodyMode {
    kMemory,  // up to the API body limit, in Request::body
    kSpool,   // streamed to a temporary file (Request::body_file), up to the upload limit
};

struct Route {
    std::string method;
    std::string pattern;
    std::vector<std::string> segments;
    Handler handler;
    BodyMode body_mode = BodyMode::kMemory;
};

/// Result of looking a request up.
struct RouteMatch {
    const Route* route = nullptr;
    std::map<std::string, std::string> params;
    std::vector<std::string> allowed_methods;  // when the path exists under other methods
    bool bad_path = false;                     // undecodable percent-encoding
};

/// Sees every response a handler returned (not errors it threw), on the handler's thread, after
/// the handler finished; used for the audit log. Exceptions it throws are logged and dropped.
using Observer = std::function<void(const Request&, const Route&, const Response&)>;

/// Maps (method, path pattern with :params) to handlers. Literal segments win over parameters.
/// Built once at start-up, read concurrently afterwards.
class Router {
  public:
    void add(std::string method, std::string pattern, Handler handler,
             BodyMode body_mode = BodyMode::kMemory);
    RouteMatch match(const std::string& method, const std::string& raw_path) const;
    /// Runs the matched handler and turns errors into the JSON error envelope.
    Response dispatch(Request& request, const RouteMatch& match) const;
    const std::vector<Route>& routes() const { return routes_; }
    /// Installs the observer of handled requests (at start-up, before serving).
    void set_observer(Observer observer) { observer_ = std::move(observer); }

  private:
    std::vector<Route> routes_;
    Observer observer_;
};

/// The JSON error envelope for an error code and detail.
Response error_response(int status, const std::string& detail);

}  // namespace otahub::http
