#pragma once

// Internal to db/: the only header that exposes libpqxx to repositories.
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <string_view>
#include <vector>

#include "db/database.hpp"

namespace otahub::db {

/// A transaction handed to repositories by Database::run (BEGIN … COMMIT), or statements that
/// each commit on their own, from Database::autocommit.
class Tx {
  public:
    explicit Tx(pqxx::transaction_base& work) : work_(work) {}
    pqxx::transaction_base& operator*() { return work_; }
    pqxx::transaction_base* operator->() { return &work_; }

  private:
    pqxx::transaction_base& work_;
};

/// Reads an optional text column.
inline std::optional<std::string> opt_string(const pqxx::field& f) {
    if (f.is_null()) return std::nullopt;
    return f.as<std::string>();
}

/// A nullable text parameter (libpqxx 6 has no std::optional parameters).
inline const char* nullable(const std::optional<std::string>& value) {
    return value ? value->c_str() : nullptr;
}

/// Reads a column holding a JSON array of strings (e.g. `to_jsonb(tags)`); other items are skipped.
inline std::vector<std::string> string_array(const pqxx::field& field) {
    std::vector<std::string> out;
    if (field.is_null()) return out;
    for (const auto& item : nlohmann::json::parse(field.as<std::string>())) {
        if (item.is_string()) out.push_back(item.get<std::string>());
    }
    return out;
}

/// A JSON array parameter, for `ARRAY(SELECT jsonb_array_elements_text($n::jsonb))`.
inline std::string json_array(const std::vector<std::string>& items) {
    return nlohmann::json(items).dump();
}

/// Reads a one-dimensional text[] column in PostgreSQL's array output syntax; NULL items are
/// skipped. Not pqxx::array_parser: libpqxx 6.4 asserts (aborts the process) on an unquoted
/// item holding a single quote, e.g. {O'Brien}, which PostgreSQL prints without quotes.
inline std::vector<std::string> text_array(const pqxx::field& field) {
    std::vector<std::string> out;
    if (field.is_null()) return out;
    const std::string_view text{field.c_str(), field.size()};
    std::size_t i = 0;
    if (!text.empty() && text[0] == '[') {  // explicit bounds: "[0:1]={a,b}"
        i = text.find('=');
        if (i == std::string_view::npos) return out;
        ++i;
    }
    if (i >= text.size() || text[i] != '{') return out;
    ++i;
    while (i < text.size() && text[i] != '}') {
        std::string item;
        const bool quoted = text[i] == '"';
        if (quoted) {
            ++i;
            while (i < text.size() && text[i] != '"') {
                if (text[i] == '\\' && i + 1 < text.size()) ++i;
                item += text[i++];
            }
            ++i;  // the closing quote
        } else {
            while (i < text.size() && text[i] != ',' && text[i] != '}') item += text[i++];
        }
        if (quoted || item != "NULL") out.push_back(std::move(item));
        if (i < text.size() && text[i] == ',') ++i;
    }
    return out;
}

/// A text[] literal parameter: {"a","b"} with quotes and backslashes escaped.
inline std::string array_literal(const std::vector<std::string>& items) {
    std::string out = "{";
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += ',';
        out += '"';
        for (char c : items[i]) {
            if (c == '"' || c == '\\') out += '\\';
            out += c;
        }
        out += '"';
    }
    return out + "}";
}

/// A bigint[] literal parameter: {1,2,3}.
inline std::string id_array_literal(const std::vector<std::int64_t>& ids) {
    std::string out = "{";
    for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i > 0) out += ',';
        out += std::to_string(ids[i]);
    }
    return out + "}";
}

/// Seconds since the Unix epoch.
inline std::int64_t epoch_seconds(std::chrono::system_clock::time_point tp) {
    return std::chrono::duration_cast<std::chrono::seconds>(tp.time_since_epoch()).count();
}

}  // namespace otahub::db
