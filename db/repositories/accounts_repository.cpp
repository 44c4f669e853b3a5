#include "db/repositories/accounts_repository.hpp"

#include "db/tx.hpp"

namespace otahub::db::accounts {
namespace {

constexpr const char* kOrgColumns =
    "o.id, o.name, iso8601(o.inserted_at), iso8601(o.updated_at)";
constexpr const char* kUserColumns =
    "u.id, u.email, u.name, u.password_hash, iso8601(u.inserted_at)";

OrgRow org_from(const pqxx::row& row, int at = 0) {
    return OrgRow{row[at].as<std::int64_t>(), row[at + 1].as<std::string>(),
                  row[at + 2].as<std::string>(), row[at + 3].as<std::string>()};
}

UserRow user_from(const pqxx::row& row, int at = 0) {
    return UserRow{row[at].as<std::int64_t>(), row[at + 1].as<std::string>(),
                   row[at + 2].as<std::string>(), row[at + 3].as<std::string>(),
                   row[at + 4].as<std::string>()};
}

Role role_from(const pqxx::field& f) { return parse_role(f.as<std::string>()).value_or(Role::kView); }

}  // namespace

OrgRow create_org(Tx& tx, const std::string& name) {
    auto r = tx->exec_params1(std::string("INSERT INTO orgs AS o (name) VALUES ($1) RETURNING ") +
                                  kOrgColumns,
                              name);
    return org_from(r);
}

std::optional<OrgRow> find_org(Tx& tx, const std::string& name) {
    auto r = tx->exec_params(std::string("SELECT ") + kOrgColumns +
                                 " FROM orgs o WHERE lower(o.name) = lower($1)",
                             name);
    if (r.empty()) return std::nullopt;
    return org_from(r[0]);
}

std::vector<std::pair<OrgRow, Role>> orgs_of_user(Tx& tx, std::int64_t user_id) {
    auto r = tx->exec_params(std::string("SELECT ") + kOrgColumns +
                                 ", m.role FROM orgs o JOIN org_users m ON m.org_id = o.id "
                                 "WHERE m.user_id = $1 ORDER BY o.name",
                             user_id);
    std::vector<std::pair<OrgRow, Role>> out;
    for (const auto& row : r) out.emplace_back(org_from(row), role_from(row[4]));
    return out;
}

UserRow create_user(Tx& tx, const std::string& email, const std::string& name,
                    const std::string& password_hash) {
    auto r = tx->exec_params1(
        std::string("INSERT INTO users AS u (email, name, password_hash) VALUES ($1, $2, $3) "
                    "RETURNING ") +
            kUserColumns,
        email, name, password_hash);
    return user_from(r);
}

std::optional<UserRow> find_user_by_email(Tx& tx, const std::string& email) {
    auto r = tx->exec_params(std::string("SELECT ") + kUserColumns +
                                 " FROM users u WHERE lower(u.email) = lower($1)",
                             email);
    if (r.empty()) return std::nullopt;
    return user_from(r[0]);
}

void set_password(Tx& tx, std::int64_t user_id, const std::string& password_hash) {
    tx->exec_params0("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1",
                     user_id, password_hash);
}

void upsert_member(Tx& tx, std::int64_t org_id, std::int64_t user_id, Role role) {
    tx->exec_params0(
        "INSERT INTO org_users (org_id, user_id, role) VALUES ($1, $2, $3) "
        "ON CONFLICT (org_id, user_id) DO UPDATE SET role = EXCLUDED.role, updated_at = now()",
        org_id, user_id, std::string(to_string(role)));
}

std::optional<Role> role_of(Tx& tx, std::int64_t org_id, std::int64_t user_id) {
    auto r = tx->exec_params("SELECT role FROM org_users WHERE org_id = $1 AND user_id = $2",
                             org_id, user_id);
    if (r.empty()) return std::nullopt;
    return role_from(r[0][0]);
}

std::vector<MemberRow> members(Tx& tx, std::int64_t org_id) {
    auto r = tx->exec_params(std::string("SELECT ") + kUserColumns +
                                 ", m.role FROM users u JOIN org_users m ON m.user_id = u.id "
                                 "WHERE m.org_id = $1 ORDER BY u.email",
                             org_id);
    std::vector<MemberRow> out;
    for (const auto& row : r) out.push_back(MemberRow{user_from(row), role_from(row[5])});
    return out;
}

std::optional<MemberRow> member(Tx& tx, std::int64_t org_id, const std::string& email) {
    auto r = tx->exec_params(std::string("SELECT ") + kUserColumns +
                                 ", m.role FROM users u JOIN org_users m ON m.user_id = u.id "
                                 "WHERE m.org_id = $1 AND lower(u.email) = lower($2)",
                             org_id, email);
    if (r.empty()) return std::nullopt;
    return MemberRow{user_from(r[0]), role_from(r[0][5])};
}

bool remove_member(Tx& tx, std::int64_t org_id, std::int64_t user_id) {
    auto r = tx->exec_params("DELETE FROM org_users WHERE org_id = $1 AND user_id = $2", org_id,
                             user_id);
    return r.affected_rows() > 0;
}

std::int64_t count_admins(Tx& tx, std::int64_t org_id) {
    return tx
        ->exec_params1("SELECT count(*) FROM org_users WHERE org_id = $1 AND role = 'admin'",
                       org_id)[0]
        .as<std::int64_t>();
}

void create_token(Tx& tx, std::int64_t user_id, const std::string& digest,
                  const std::string& note) {
    tx->exec_params0("INSERT INTO user_tokens (user_id, token_hash, note) VALUES ($1, $2, $3)",
                     user_id, pqxx::binarystring(digest), note);
}

std::optional<UserRow> user_for_token(Tx& tx, const std::string& digest) {
    // Touch last_used_at at most once a minute so reads do not turn into a write per request.
    auto r = tx->exec_params(
        std::string("WITH t AS (UPDATE user_tokens SET last_used_at = now() "
                    "WHERE token_hash = $1 AND (last_used_at IS NULL OR "
                    "last_used_at < now() - interval '1 minute') RETURNING user_id) "
                    "SELECT ") +
            kUserColumns +
            " FROM users u WHERE u.id = (SELECT user_id FROM user_tokens WHERE token_hash = $1)",
        pqxx::binarystring(digest));
    if (r.empty()) return std::nullopt;
    return user_from(r[0]);
}

}  // namespace otahub::db::accounts
