#include "server/device/registry.hpp"

namespace otahub::device {

void SessionRegistry::add(const std::shared_ptr<SessionHandle>& session) {
    std::shared_ptr<SessionHandle> to_close;
    bool close_new = false;
    {
        const std::lock_guard lock{mutex_};
        auto& slot = by_device_[session->info().device_id];
        if (auto existing = slot.lock(); existing && existing != session) {
            if (existing->info().connection_id > session->info().connection_id) {
                close_new = true;
            } else {
                to_close = std::move(existing);
                slot = session;
            }
        } else {
            slot = session;
        }
    }
    // Close outside the lock: close() only posts to the session's strand, but stay safe.
    if (to_close) to_close->close(1000, "replaced by a newer connection");
    if (close_new) session->close(1000, "replaced by a newer connection");
}

void SessionRegistry::remove(const SessionHandle& session) {
    const std::lock_guard lock{mutex_};
    auto it = by_device_.find(session.info().device_id);
    if (it == by_device_.end()) return;
    auto current = it->second.lock();
    if (!current || current.get() == &session) by_device_.erase(it);
}

std::size_t SessionRegistry::close_matching(const SessionFilter& filter, std::uint16_t code,
                                            const std::string& reason) {
    std::vector<std::shared_ptr<SessionHandle>> matches;
    {
        const std::lock_guard lock{mutex_};
        auto consider = [&](const std::weak_ptr<SessionHandle>& weak) {
            auto session = weak.lock();
            if (!session) return;
            const auto& info = session->info();
            if (filter.fingerprint && info.fingerprint != *filter.fingerprint) return;
            if (filter.ca_id && info.ca_id != *filter.ca_id) return;
            if (filter.older_than && info.connection_id >= *filter.older_than) return;
            matches.push_back(std::move(session));
        };
        if (filter.device_id) {
            if (auto it = by_device_.find(*filter.device_id); it != by_device_.end()) {
                consider(it->second);
            }
        } else {
            for (const auto& [id, weak] : by_device_) consider(weak);
        }
    }
    for (const auto& session : matches) session->close(code, reason);
    return matches.size();
}

std::size_t SessionRegistry::close_all(std::uint16_t code, const std::string& reason) {
    return close_matching(SessionFilter{}, code, reason);
}

bool SessionRegistry::push(std::int64_t device_id, std::string event, nlohmann::json payload) {
    std::shared_ptr<SessionHandle> session;
    {
        const std::lock_guard lock{mutex_};
        auto it = by_device_.find(device_id);
        if (it != by_device_.end()) session = it->second.lock();
    }
    if (!session) return false;
    session->push(std::move(event), std::move(payload));
    return true;
}

bool SessionRegistry::push_frame(std::int64_t device_id, std::shared_ptr<const std::string> frame,
                                 std::string event) {
    std::shared_ptr<SessionHandle> session;
    {
        const std::lock_guard lock{mutex_};
        auto it = by_device_.find(device_id);
        if (it != by_device_.end()) session = it->second.lock();
    }
    if (!session) return false;
    session->push_frame(std::move(frame), std::move(event));
    return true;
}

bool SessionRegistry::has(std::int64_t device_id) const {
    const std::lock_guard lock{mutex_};
    auto it = by_device_.find(device_id);
    return it != by_device_.end() && !it->second.expired();
}

std::size_t SessionRegistry::size() const {
    const std::lock_guard lock{mutex_};
    return by_device_.size();
}

std::vector<std::shared_ptr<SessionHandle>> SessionRegistry::snapshot() const {
    std::vector<std::shared_ptr<SessionHandle>> out;
    const std::lock_guard lock{mutex_};
    out.reserve(by_device_.size());
    for (const auto& [id, weak] : by_device_) {
        if (auto session = weak.lock()) out.push_back(std::move(session));
    }
    return out;
}

}  // namespace otahub::device
