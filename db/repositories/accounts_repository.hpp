#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "db/database.hpp"
#include "server/domain/accounts.hpp"

namespace otahub::db {

struct OrgRow {
    std::int64_t id = 0;
    std::string name;
    std::string inserted_at;
    std::string updated_at;
};

struct UserRow {
    std::int64_t id = 0;
    std::string email;
    std::string name;
    std::string password_hash;
    std::string inserted_at;
};

struct MemberRow {
    UserRow user;
    Role role = Role::kView;
};

/// Orgs, users, memberships and API tokens.
namespace accounts {

OrgRow create_org(Tx& tx, const std::string& name);
std::optional<OrgRow> find_org(Tx& tx, const std::string& name);
/// Orgs the user belongs to, with the user's role in each.
std::vector<std::pair<OrgRow, Role>> orgs_of_user(Tx& tx, std::int64_t user_id);

UserRow create_user(Tx& tx, const std::string& email, const std::string& name,
                    const std::string& password_hash);
std::optional<UserRow> find_user_by_email(Tx& tx, const std::string& email);
void set_password(Tx& tx, std::int64_t user_id, const std::string& password_hash);

/// Adds or changes a membership.
void upsert_member(Tx& tx, std::int64_t org_id, std::int64_t user_id, Role role);
std::optional<Role> role_of(Tx& tx, std::int64_t org_id, std::int64_t user_id);
std::vector<MemberRow> members(Tx& tx, std::int64_t org_id);
std::optional<MemberRow> member(Tx& tx, std::int64_t org_id, const std::string& email);
bool remove_member(Tx& tx, std::int64_t org_id, std::int64_t user_id);
std::int64_t count_admins(Tx& tx, std::int64_t org_id);

void create_token(Tx& tx, std::int64_t user_id, const std::string& digest, const std::string& note);
/// The user owning a token digest (and marks the token used), or nullopt.
std::optional<UserRow> user_for_token(Tx& tx, const std::string& digest);

}  // namespace accounts
}  // namespace otahub::db
