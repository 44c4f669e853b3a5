#include "server/api/firmwares.hpp"

#include "server/app/metrics.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <filesystem>

#include "db/repositories/firmwares_repository.hpp"
#include "db/repositories/keys_repository.hpp"
#include "server/api/context.hpp"
#include "server/api/firmware_url.hpp"
#include "server/api/products.hpp"
#include "server/common/api_error.hpp"
#include "server/domain/firmware/fwup_archive.hpp"
#include "server/domain/semver.hpp"
#include "server/domain/storage/byte_range.hpp"
#include "server/domain/storage/signed_url.hpp"
#include "server/http/multipart.hpp"

namespace otahub::api {
namespace {

namespace fs = std::filesystem;

/// Longest TTL accepted: ten years.
constexpr std::int64_t kMaxTtlSeconds = 10LL * 365 * 86400;

nlohmann::json firmware_json(const db::FirmwareRow& f) {
    return {{"uuid", f.uuid},
            {"product", f.product},
            {"version", f.version},
            {"platform", f.platform},
            {"architecture", f.architecture},
            {"author", f.author},
            {"description", f.description},
            {"misc", f.misc},
            {"vcs_identifier", f.vcs_identifier},
            {"tool", f.tool},
            {"fwup_version", f.fwup_version},
            {"creation_date", f.creation_date},
            {"size", f.size},
            {"sha256", f.sha256},
            {"partial_sha256", f.partial_sha256},
            {"key", f.key_name},
            {"ttl", f.ttl_seconds ? nlohmann::json(*f.ttl_seconds) : nlohmann::json(nullptr)},
            {"ttl_until", f.ttl_until ? nlohmann::json(*f.ttl_until) : nlohmann::json(nullptr)},
            {"inserted_at", f.inserted_at},
            {"updated_at", f.updated_at}};
}

/// A refused upload: 422 naming the failed check in the detail and under "firmware".
[[noreturn]] void refuse(std::string_view check, const std::string& message) {
    throw ApiError(ErrorCode::kUnprocessable,
                   "firmware refused by the " + std::string(check) + " check: " + message,
                   {{"firmware", {std::string(check) + ": " + message}}});
}

std::optional<std::int64_t> parse_ttl(const std::optional<std::string>& text) {
    if (!text || text->empty()) return std::nullopt;
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
    if (ec != std::errc{} || end != text->data() + text->size() || value < 1 ||
        value > kMaxTtlSeconds) {
        throw ApiError(
            ErrorCode::kUnprocessable,
            "ttl must be a whole number of seconds from 1 to " + std::to_string(kMaxTtlSeconds),
            {{"ttl", {"must be a positive whole number of seconds"}}});
    }
    return value;
}

bool starts_with_ci(std::string_view text, std::string_view prefix) {
    if (text.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
    }
    return true;
}

/// Streams a stored firmware with Range/If-Range support (the connection sends the bytes in
/// chunks and drops the body for HEAD).
http::Response serve_firmware(const http::Request& req, const storage::FirmwareStore& store,
                              const db::FirmwareRow& firmware) {
    auto path = store.local_path(firmware.storage_key);
    struct stat st {};
    if (!path || ::stat(path->c_str(), &st) != 0 ||
        static_cast<std::int64_t>(st.st_size) != firmware.size) {
        spdlog::error("firmware {} of org {}: stored file missing or wrong size", firmware.uuid,
                      firmware.org_id);
        throw ApiError(ErrorCode::kNotFound, "firmware file not found");
    }
    const auto size = static_cast<std::uint64_t>(firmware.size);
    const std::string etag = "\"" + firmware.sha256 + "\"";
    auto decision = storage::decide_range(req.header("range"), req.header("if-range"), etag, size);

    if (decision.kind == storage::RangeDecision::Kind::kUnsatisfiable) {
        auto res = http::error_response(
            416, "range not satisfiable for " + std::to_string(size) + " bytes");
        res.set_header("content-range", decision.content_range(size));
        res.set_header("accept-ranges", "bytes");
        res.set_header("etag", etag);
        return res;
    }
    http::Response res;
    res.headers.emplace_back("accept-ranges", "bytes");
    res.headers.emplace_back("etag", etag);
    res.headers.emplace_back("content-type", "application/octet-stream");
    res.headers.emplace_back("content-disposition",
                             "attachment; filename=\"" + firmware.uuid + ".fw\"");
    res.headers.emplace_back("cache-control", "private, no-transform");
    res.file_path = path->string();
    if (decision.kind == storage::RangeDecision::Kind::kPartial) {
        res.status = 206;
        res.file_offset = decision.first;
        res.file_length = decision.length;
        res.headers.emplace_back("content-range", decision.content_range(size));
    } else {
        res.status = 200;
        res.file_offset = 0;
        res.file_length = size;
    }
    if (req.method != "HEAD") metrics::firmware_bytes(res.file_length);
    return res;
}

struct UploadScope {
    OrgScope scope;
    db::ProductRow product;
    std::vector<db::KeyRow> keys;
    std::int64_t user_id = 0;
};

http::Response upload(ApiContext& ctx, storage::FirmwareStore& store, http::Request& req) {
    auto up = ctx.db.transact([&](db::Tx& tx) {
        auto principal = authenticate(tx, req);
        auto scope = require_org(tx, principal, req.param("org"), Role::kManage);
        auto product = require_product(tx, scope, req.param("product"));
        auto keys = db::keys::list(tx, scope.org.id);
        return UploadScope{std::move(scope), std::move(product), std::move(keys),
                           principal.user.id};
    });
    if (req.body_file.empty() || req.body_size == 0) {
        throw ApiError(ErrorCode::kUnprocessable, "no firmware in the request body",
                       {{"firmware", {"can't be blank"}}});
    }

    // The archive: the whole body, or the `firmware` part copied out of a multipart body.
    fs::path archive = req.body_file;
    storage::ScopedFile extracted;
    auto ttl_text = req.query_param("ttl");
    auto content_type = req.header("content-type").value_or("");
    if (starts_with_ci(content_type, "multipart/")) {
        auto boundary = http::multipart_boundary(content_type);
        if (!boundary) {
            throw ApiError(ErrorCode::kBadRequest,
                           "multipart bodies must be multipart/form-data with a boundary");
        }
        auto parts = http::extract_multipart_file(req.body_file, *boundary, "firmware",
                                                  fs::path(req.body_file).parent_path());
        if (parts.file.path().empty() || parts.size == 0) {
            throw ApiError(ErrorCode::kUnprocessable, "the multipart body has no firmware part",
                           {{"firmware", {"can't be blank"}}});
        }
        archive = parts.file.path();
        extracted = std::move(parts.file);
        if (!ttl_text) {
            auto it = parts.fields.find("ttl");
            if (it != parts.fields.end()) ttl_text = it->second;
        }
    }
    auto ttl = parse_ttl(ttl_text);

    std::vector<firmware::PublicKey> public_keys;
    std::vector<std::int64_t> key_ids;  // parallel to public_keys
    for (const auto& key : up.keys) {
        if (auto parsed = firmware::parse_public_key(key.key)) {
            public_keys.push_back(*parsed);
            key_ids.push_back(key.id);
        }
    }
    firmware::VerifyLimits limits;
    limits.max_archive_size = ctx.config.firmware_max_size;
    firmware::FirmwareInfo info;
    try {
        info = firmware::verify_firmware(archive, public_keys, limits);
    } catch (const firmware::FirmwareError& e) {
        std::string message = e.what();
        if (e.check() == firmware::kCheckSignature && public_keys.empty()) {
            message += " (the org has no signing keys: add one with POST /api/orgs/" +
                       up.scope.org.name + "/keys)";
        }
        refuse(e.check(), message);
    }
    if (!info.signing_key_index || *info.signing_key_index >= key_ids.size()) {
        refuse(firmware::kCheckSignature, "not signed by a key of the org");
    }
    if (info.product != up.product.name) {
        refuse("product",
               "the archive is for product '" + info.product + "', not '" + up.product.name + "'");
    }
    if (!semver::parse_version(info.version)) {
        refuse("version", "meta-version '" + info.version + "' is not a valid SemVer version");
    }
    if (info.platform.empty() || info.architecture.empty()) {
        refuse(firmware::kCheckMetadata, "meta-platform and meta-architecture are required");
    }
    if (!storage::valid_firmware_uuid(info.uuid)) {
        refuse(firmware::kCheckMetadata, "unexpected meta-uuid '" + info.uuid + "'");
    }

    db::NewFirmware row;
    row.org_id = up.scope.org.id;
    row.product_id = up.product.id;
    row.org_key_id = key_ids[*info.signing_key_index];
    row.uploaded_by = up.user_id;
    row.uuid = info.uuid;
    row.version = info.version;
    row.platform = info.platform;
    row.architecture = info.architecture;
    row.author = info.author;
    row.description = info.description;
    row.misc = info.misc;
    row.vcs_identifier = info.vcs_identifier;
    row.fwup_version = info.fwup_version;
    row.creation_date = info.creation_date;
    row.size = static_cast<std::int64_t>(info.size);
    row.sha256 = info.sha256;
    row.partial_sha256 = info.partial_sha256;
    row.storage_key = storage::firmware_key(row.org_id, row.uuid);
    row.ttl_seconds = ttl;

    const auto duplicate = [&] {
        return ApiError(ErrorCode::kConflict,
                        "firmware " + info.uuid + " has already been uploaded to this org",
                        {{"firmware", {"uuid: has already been taken"}}});
    };
    // The row and the file go in together: the insert holds the (org, uuid) unique slot, so
    // a concurrent upload of the same archive waits, then fails on it without touching the
    // file; the file is published before the commit and removed again if the commit fails.
    std::optional<storage::StoredObject> placed;
    try {
        auto created = ctx.db.transact([&](db::Tx& tx) {
            if (db::firmwares::find_in_org(tx, row.org_id, row.uuid)) throw duplicate();
            auto inserted = db::firmwares::create(tx, row);
            placed = store.put(row.storage_key, archive);
            return inserted;
        });
        spdlog::info("firmware {} {} {} uploaded to org {} ({} bytes)", created.uuid,
                     created.product, created.version, up.scope.org.name, created.size);
        return http::Response::json(201, firmware_json(created));
    } catch (const db::Conflict&) {
        if (placed) store.remove_if_same(row.storage_key, *placed);
        throw duplicate();
    } catch (...) {
        if (placed) store.remove_if_same(row.storage_key, *placed);
        throw;
    }
}

}  // namespace

std::shared_ptr<storage::FirmwareStore> open_firmware_store(const Config& config) {
    return std::make_shared<storage::LocalFirmwareStore>(fs::path(config.data_dir) / "firmware");
}

void register_firmware_routes(http::Router& router, ApiContext& ctx) {
    std::shared_ptr<storage::FirmwareStore> store = open_firmware_store(ctx.config);
    (void)firmware_url_secret(ctx.config);  // warn at start-up when the secret is missing
    const std::string base = "/api/orgs/:org/products/:product/firmwares";

    router.add("GET", base, [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            auto product = require_product(tx, scope, req.param("product"));
            nlohmann::json list = nlohmann::json::array();
            for (const auto& f : db::firmwares::list(tx, product.id))
                list.push_back(firmware_json(f));
            return http::Response::json(200, list);
        });
    });

    router.add(
        "POST", base, [&ctx, store](http::Request& req) { return upload(ctx, *store, req); },
        http::BodyMode::kSpool);

    const auto find = [](db::Tx& tx, const http::Request& req, Role role) {
        auto scope = require_org(tx, authenticate(tx, req), req.param("org"), role);
        auto product = require_product(tx, scope, req.param("product"));
        auto firmware = db::firmwares::find(tx, product.id, req.param("uuid"));
        if (!firmware) throw ApiError(ErrorCode::kNotFound, "firmware not found");
        return *firmware;
    };

    router.add("GET", base + "/:uuid", [&ctx, find](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            return http::Response::json(200, firmware_json(find(tx, req, Role::kView)));
        });
    });

    router.add("GET", base + "/:uuid/download", [&ctx, find, store](http::Request& req) {
        auto firmware = ctx.db.transact([&](db::Tx& tx) { return find(tx, req, Role::kView); });
        return serve_firmware(req, *store, firmware);
    });

    router.add("DELETE", base + "/:uuid", [&ctx, find, store](http::Request& req) {
        // The row goes first (a deployment's RESTRICT reference makes this a 409), the file
        // after the commit: a crash in between leaves an orphan file, never a row without one.
        auto firmware = ctx.db.transact([&](db::Tx& tx) {
            auto f = find(tx, req, Role::kManage);
            db::firmwares::remove(tx, f.id);
            return f;
        });
        try {
            store->remove(firmware.storage_key);
        } catch (const std::exception& e) {
            spdlog::warn("firmware {} deleted but its file was not: {}", firmware.uuid, e.what());
        }
        return http::Response::no_content();
    });

    // Device downloads: no credentials, the URL carries an expiring HMAC signature.
    router.add("GET", "/firmware/:org_id/:file", [&ctx, store](http::Request& req) {
        const auto& org_text = req.param("org_id");
        const auto& file = req.param("file");
        std::int64_t org_id = 0;
        auto [end, ec] =
            std::from_chars(org_text.data(), org_text.data() + org_text.size(), org_id);
        const std::string uuid = file.size() > 3 ? file.substr(0, file.size() - 3) : "";
        if (ec != std::errc{} || end != org_text.data() + org_text.size() || org_id <= 0 ||
            file.size() <= 3 || file.substr(file.size() - 3) != ".fw" ||
            !storage::valid_firmware_uuid(uuid)) {
            throw ApiError(ErrorCode::kNotFound, "not found");
        }
        auto check = storage::check_download(
            firmware_url_secret(ctx.config), storage::firmware_download_path(org_id, uuid),
            req.query_param("expires").value_or(""), req.query_param("signature").value_or(""),
            std::chrono::system_clock::now());
        switch (check) {
            case storage::SignatureCheck::kValid:
                break;
            case storage::SignatureCheck::kExpired:
                throw ApiError(ErrorCode::kForbidden, "this firmware URL has expired");
            case storage::SignatureCheck::kMalformed:
            case storage::SignatureCheck::kBadSignature:
                throw ApiError(ErrorCode::kForbidden, "invalid firmware URL signature");
        }
        auto firmware = ctx.db.transact(
            [&](db::Tx& tx) { return db::firmwares::find_in_org(tx, org_id, uuid); });
        if (!firmware) throw ApiError(ErrorCode::kNotFound, "firmware not found");
        return serve_firmware(req, *store, *firmware);
    });
}

}  // namespace otahub::api
