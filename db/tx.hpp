#pragma once

// Internal to db/: the only header that exposes libpqxx to repositories.
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "db/database.hpp"

namespace otahub::db {

/// The statements prepared on one pooled connection, by SQL text. A statement is prepared the
/// first time it runs on the connection and executed by name afterwards, so PostgreSQL parses
/// and plans it once per connection instead of once per call. Statements stay prepared for the
/// connection's life (they are not transactional).
class PreparedStatements {
  public:
    /// At most this many per connection; statements beyond it run unprepared.
    static constexpr std::size_t kMax = 512;

    explicit PreparedStatements(bool enabled = true) : enabled_(enabled) {}

    /// The name `sql` runs under on `conn` (registered with libpqxx on first use, which prepares
    /// it on the server when it first runs), or nullptr when it runs unprepared: preparing is
    /// off, or the connection already holds kMax statements.
    const std::string* name_for(pqxx::connection_base& conn, const std::string& sql) {
        if (!enabled_) return nullptr;
        if (auto it = names_.find(sql); it != names_.end()) return &it->second;
        if (names_.size() >= kMax) return nullptr;
        std::string name = "otahub_" + std::to_string(names_.size() + 1);
        conn.prepare(name, sql);
        return &names_.emplace(sql, std::move(name)).first->second;
    }

  private:
    bool enabled_;
    std::unordered_map<std::string, std::string> names_;
};

/// A transaction handed to repositories by Database::run (BEGIN … COMMIT), or statements that
/// each commit on their own, from Database::autocommit.
class Tx {
  public:
    /// What `tx->` runs statements with: libpqxx's exec_params family, through the connection's
    /// prepared statements when there are any (`prepared` may be null: everything unprepared).
    class Statements {
      public:
        Statements(pqxx::transaction_base& work, PreparedStatements* prepared)
            : work_(work), prepared_(prepared) {}

        template <class... Args>
        pqxx::result exec_params(const std::string& sql, Args&&... args) {
            if (const auto* name = prepared_name(sql)) {
                return work_.exec_prepared(*name, std::forward<Args>(args)...);
            }
            return work_.exec_params(sql, std::forward<Args>(args)...);
        }
        template <class... Args>
        pqxx::result exec_params0(const std::string& sql, Args&&... args) {
            if (const auto* name = prepared_name(sql)) {
                return work_.exec_prepared0(*name, std::forward<Args>(args)...);
            }
            return work_.exec_params0(sql, std::forward<Args>(args)...);
        }
        template <class... Args>
        pqxx::row exec_params1(const std::string& sql, Args&&... args) {
            if (const auto* name = prepared_name(sql)) {
                return work_.exec_prepared1(*name, std::forward<Args>(args)...);
            }
            return work_.exec_params1(sql, std::forward<Args>(args)...);
        }
        /// Statements without parameters (scripts, DDL) run as they are, never prepared.
        pqxx::result exec(const std::string& sql) { return work_.exec(sql); }
        pqxx::result exec0(const std::string& sql) { return work_.exec0(sql); }
        pqxx::row exec1(const std::string& sql) { return work_.exec1(sql); }

      private:
        const std::string* prepared_name(const std::string& sql) {
            return prepared_ != nullptr ? prepared_->name_for(work_.conn(), sql) : nullptr;
        }

        pqxx::transaction_base& work_;
        PreparedStatements* prepared_;
    };

    explicit Tx(pqxx::transaction_base& work, PreparedStatements* prepared = nullptr)
        : work_(work), statements_(work, prepared) {}
    pqxx::transaction_base& operator*() { return work_; }
    Statements* operator->() { return &statements_; }

  private:
    pqxx::transaction_base& work_;
    Statements statements_;
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

/// `SELECT i.id FROM unnest($N::bigint[]) ...`: the ids of a bigint[] parameter as rows, to join
/// a table on by primary key. A pooled connection keeps the generic plan PostgreSQL makes at a
/// statement's sixth execution, and `id = ANY($N)` planned while the tables were nearly empty
/// scans the whole table for every call, however large it has grown since. The range on `id`, true
/// for every id, makes PostgreSQL expect one input row instead of unnest's 100, so the join goes
/// through the primary key.
inline std::string id_rows_sql(int param) {
    return "SELECT i.id FROM unnest($" + std::to_string(param) +
           "::bigint[]) AS i(id) WHERE i.id >= 1 AND i.id < 9223372036854775807";
}

/// Seconds since the Unix epoch.
inline std::int64_t epoch_seconds(std::chrono::system_clock::time_point tp) {
    return std::chrono::duration_cast<std::chrono::seconds>(tp.time_since_epoch()).count();
}

}  // namespace otahub::db
