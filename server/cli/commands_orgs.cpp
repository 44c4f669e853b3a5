#include <CLI/CLI.hpp>
#include <memory>

#include "server/cli/commands.hpp"
#include "server/cli/output.hpp"

namespace otahub::cli {
namespace {

const std::vector<std::string> kRoles = {"admin", "manage", "view"};

struct OrgOptions {
    std::string name;  // positional org name (show, create)
    std::string org;   // --org for `orgs users`
    std::string email;
    std::string role;
    std::string user_name;
    std::string password;
};

std::string users_path(Context& ctx, const OrgOptions& opts) {
    return "/api/orgs/" + path_segment(ctx.org(opts.org)) + "/users";
}

void show_member(Context& ctx, const nlohmann::json& data, const std::string& verb) {
    if (ctx.json()) {
        print_json(data);
        return;
    }
    print_line(verb + " " + text_of(data.value("email", "")) + " (" +
               text_of(data.value("role", "")) + ")");
}

}  // namespace

void add_org_commands(CLI::App& app, Context& ctx) {
    auto opts = std::make_shared<OrgOptions>();
    auto* orgs = app.add_subcommand("orgs", "organisations and their members");
    orgs->require_subcommand(1);

    auto* list = orgs->add_subcommand("list", "list the orgs you belong to");
    on_run(list, ctx, [&ctx] {
        auto data = ctx.client().request("GET", "/api/orgs");
        if (ctx.json()) return print_json(data);
        print_table(data, {{"NAME", {"name"}}, {"ROLE", {"role"}}, {"CREATED", {"inserted_at"}}},
                    "No orgs.");
    });

    auto* show = orgs->add_subcommand("show", "show one org");
    show->add_option("org", opts->name, "org name")->required();
    on_run(show, ctx, [&ctx, opts] {
        auto data = ctx.client().request("GET", "/api/orgs/" + path_segment(opts->name));
        if (ctx.json()) return print_json(data);
        print_object(data);
    });

    auto* create = orgs->add_subcommand("create", "create an org (you become its admin)");
    create->add_option("name", opts->name, "org name")->required();
    on_run(create, ctx, [&ctx, opts] {
        auto data = ctx.client().request("POST", "/api/orgs", {{"name", opts->name}});
        if (ctx.json()) return print_json(data);
        print_line("Created org " + text_of(data.value("name", opts->name)));
    });

    auto* users = orgs->add_subcommand("users", "members of an org");
    users->require_subcommand(1);
    users->add_option("--org", opts->org, "org (env OTAHUB_ORG; default: config `org`)");

    auto* users_list = users->add_subcommand("list", "list the members");
    on_run(users_list, ctx, [&ctx, opts] {
        auto data = ctx.client().request("GET", users_path(ctx, *opts));
        if (ctx.json()) return print_json(data);
        print_table(data, {{"EMAIL", {"email"}}, {"NAME", {"name"}}, {"ROLE", {"role"}}},
                    "No members.");
    });

    auto* add = users->add_subcommand(
        "add", "add a user to the org; with --name and --password the user is created first");
    add->add_option("email", opts->email, "the user's email")->required();
    add->add_option("--role", opts->role, "admin, manage or view")
        ->required()
        ->check(CLI::IsMember(kRoles));
    add->add_option("--name", opts->user_name, "display name of a new user");
    add->add_option("--password", opts->password, "password of a new user");
    on_run(add, ctx, [&ctx, opts] {
        nlohmann::json body = {{"email", opts->email}, {"role", opts->role}};
        if (!opts->user_name.empty()) body["name"] = opts->user_name;
        if (!opts->password.empty()) body["password"] = opts->password;
        auto data = ctx.client().request("POST", users_path(ctx, *opts), body);
        show_member(ctx, data, "Added");
    });

    auto* set_role = users->add_subcommand("set-role", "change a member's role");
    set_role->add_option("email", opts->email, "the member's email")->required();
    set_role->add_option("role", opts->role, "admin, manage or view")
        ->required()
        ->check(CLI::IsMember(kRoles));
    on_run(set_role, ctx, [&ctx, opts] {
        auto data =
            ctx.client().request("PUT", users_path(ctx, *opts) + "/" + path_segment(opts->email),
                                 {{"role", opts->role}});
        show_member(ctx, data, "Updated");
    });

    auto* remove = users->add_subcommand("remove", "remove a member from the org");
    remove->add_option("email", opts->email, "the member's email")->required();
    on_run(remove, ctx, [&ctx, opts] {
        auto data = ctx.client().request("DELETE",
                                         users_path(ctx, *opts) + "/" + path_segment(opts->email));
        if (ctx.json()) return print_json(data);
        print_line("Removed " + printable(opts->email));
    });
}

}  // namespace otahub::cli
