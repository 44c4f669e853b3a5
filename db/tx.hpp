#pragma once

// Internal to db/: the only header that exposes libpqxx to repositories.
#include <pqxx/pqxx>

#include "db/database.hpp"

namespace otahub::db {

/// A transaction handed to repositories by Database::run.
class Tx {
public:
    explicit Tx(pqxx::work& work) : work_(work) {}
    pqxx::work& operator*() { return work_; }
    pqxx::work* operator->() { return &work_; }

private:
    pqxx::work& work_;
};

/// Reads an optional text column.
inline std::optional<std::string> opt_string(const pqxx::field& f) {
    if (f.is_null()) return std::nullopt;
    return f.as<std::string>();
}

}  // namespace otahub::db
