#pragma once

#include <cstdlib>
#include <memory>
#include <pqxx/pqxx>
#include <random>
#include <string>

#include "db/database.hpp"

namespace otahub::db::testing {

/// A fresh database on the throwaway cluster (OTAHUB_TEST_DATABASE_URL), dropped on destruction.
class TestDatabase {
public:
    TestDatabase() {
        const char* admin = std::getenv("OTAHUB_TEST_DATABASE_URL");
        if (admin == nullptr || *admin == '\0') {
            throw std::runtime_error("OTAHUB_TEST_DATABASE_URL is not set (deploy/test sets it)");
        }
        admin_url_ = admin;
        std::random_device rd;
        name_ = "otahub_dbtest_" + std::to_string(rd()) + std::to_string(rd());
        exec_admin("CREATE DATABASE " + name_);
        auto slash = admin_url_.rfind('/');
        auto query = admin_url_.find('?', slash);
        url_ = admin_url_.substr(0, slash + 1) + name_ +
               (query == std::string::npos ? "" : admin_url_.substr(query));
    }
    ~TestDatabase() {
        try {
            exec_admin("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
        } catch (const std::exception&) {
            // Best effort: the whole cluster is thrown away after the run.
        }
    }
    TestDatabase(const TestDatabase&) = delete;
    TestDatabase& operator=(const TestDatabase&) = delete;

    const std::string& url() const { return url_; }
    const std::string& name() const { return name_; }

private:
    void exec_admin(const std::string& sql) {
        pqxx::connection conn{admin_url_};
        pqxx::nontransaction tx{conn};
        tx.exec0(sql);
    }

    std::string admin_url_;
    std::string name_;
    std::string url_;
};

}  // namespace otahub::db::testing
