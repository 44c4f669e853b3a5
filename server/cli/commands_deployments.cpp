// otahub deployments list|show|create|update|delete|preview, and the per-device rollout commands:
// otahub device resolution|updates|upgrade|reboot|identify|clear-penalty.
#include <CLI/CLI.hpp>
#include <memory>

#include "server/cli/commands.hpp"
#include "server/cli/output.hpp"

namespace otahub::cli {
namespace {

struct DeploymentOptions {
    std::string org;
    std::string product;
    std::string name;
    std::string firmware;
    std::string version;
    std::vector<std::string> tags;
    std::string tag_operator;
    std::string state;
    int concurrent_updates = -1;
    std::string notes;
    bool draft = false;
};

struct DeviceOptions {
    std::string org;
    std::string product;
    std::string identifier;
    std::string uuid;
};

std::string product_path(Context& ctx, const std::string& org, const std::string& product) {
    return "/api/orgs/" + path_segment(ctx.org(org)) + "/products/" +
           path_segment(ctx.product(product));
}

std::string deployments_path(Context& ctx, const DeploymentOptions& o) {
    return product_path(ctx, o.org, o.product) + "/deployments";
}

std::string device_path(Context& ctx, const DeviceOptions& o) {
    return product_path(ctx, o.org, o.product) + "/devices/" + path_segment(o.identifier);
}

/// The request body from the options that were given.
nlohmann::json deployment_body(const CLI::App& command, const DeploymentOptions& o) {
    nlohmann::json body = nlohmann::json::object();
    if (!o.name.empty()) body["name"] = o.name;
    if (!o.firmware.empty()) body["firmware"] = o.firmware;
    nlohmann::json conditions = nlohmann::json::object();
    if (command.count("--version") > 0) conditions["version"] = o.version;
    if (command.count("--tag") > 0) conditions["tags"] = o.tags;
    if (!o.tag_operator.empty()) conditions["tag_operator"] = o.tag_operator;
    if (!conditions.empty()) body["conditions"] = conditions;
    if (!o.state.empty()) body["state"] = o.state;
    if (o.concurrent_updates >= 0) body["concurrent_updates"] = o.concurrent_updates;
    if (command.count("--notes") > 0) body["notes"] = o.notes;
    return body;
}

void add_field_options(CLI::App* command, DeploymentOptions& o) {
    command->add_option("--firmware", o.firmware, "firmware UUID");
    command->add_option("--version", o.version,
                        "version requirement of the devices (Elixir syntax, e.g. \"~> 1.2\"; "
                        "\"\" = any)");
    command->add_option("--tag", o.tags, "device tag the deployment requires (repeat)");
    command->add_option("--tag-operator", o.tag_operator, "and (all tags) or or (any tag)")
        ->check(CLI::IsMember({"and", "or"}));
    command->add_option("--state", o.state, "on or off")->check(CLI::IsMember({"on", "off"}));
    command
        ->add_option("--concurrent-updates", o.concurrent_updates,
                     "devices updating at once (0 = unlimited)")
        ->check(CLI::Range(0, 1000000));
    command->add_option("--notes", o.notes, "free text");
}

void print_preview(const nlohmann::json& data) {
    print_line("Matching devices: " + text_of(data.value("matching_devices", 0)) +
               ", eligible now: " + text_of(data.value("eligible_devices", 0)));
    print_table(data.value("devices", nlohmann::json::array()),
                {{"DEVICE", {"identifier"}}, {"ELIGIBLE", {"eligible"}}, {"REASON", {"reason"}}},
                "No devices.");
}

CLI::App* device_command(CLI::App& app) {
    try {
        return app.get_subcommand("device");
    } catch (const CLI::OptionNotFound&) {
        auto* device = app.add_subcommand("device", "device operations");
        device->require_subcommand(1);
        return device;
    }
}

}  // namespace

void add_deployment_commands(CLI::App& app, Context& ctx) {
    auto o = std::make_shared<DeploymentOptions>();
    auto* deployments = app.add_subcommand("deployments", "deployments of a product");
    deployments->require_subcommand(1);
    deployments->add_option("--org", o->org, "org (env OTAHUB_ORG; default: config `org`)");
    deployments->add_option("--product", o->product,
                            "product (env OTAHUB_PRODUCT; default: config `product`)");

    auto* list = deployments->add_subcommand("list", "list the deployments");
    on_run(list, ctx, [&ctx, o] {
        auto data = ctx.client().request("GET", deployments_path(ctx, *o));
        if (ctx.json()) return print_json(data);
        print_table(data,
                    {{"NAME", {"name"}},
                     {"STATE", {"state"}},
                     {"FIRMWARE", {"firmware_version"}},
                     {"VERSION", {"conditions.version"}},
                     {"TAGS", {"conditions.tags"}},
                     {"LIMIT", {"concurrent_updates"}},
                     {"PAUSED", {"paused_reason"}}},
                    "No deployments.");
    });

    auto* show = deployments->add_subcommand("show", "show a deployment and its counts");
    show->add_option("name", o->name, "deployment name")->required();
    on_run(show, ctx, [&ctx, o] {
        auto data =
            ctx.client().request("GET", deployments_path(ctx, *o) + "/" + path_segment(o->name));
        if (ctx.json()) return print_json(data);
        print_object(data);
    });

    auto* create = deployments->add_subcommand("create", "create a deployment");
    create->add_option("name", o->name, "deployment name")->required();
    add_field_options(create, *o);
    on_run(create, ctx, [&ctx, o, create] {
        auto data =
            ctx.client().request("POST", deployments_path(ctx, *o), deployment_body(*create, *o));
        if (ctx.json()) return print_json(data);
        print_line("Created deployment " + text_of(data.value("name", o->name)) + " (" +
                   text_of(data.value("state", "")) + ")");
    });

    auto* update = deployments->add_subcommand("update", "change a deployment");
    update->add_option("name", o->name, "deployment name")->required();
    add_field_options(update, *o);
    on_run(update, ctx, [&ctx, o, update] {
        auto body = deployment_body(*update, *o);
        body.erase("name");
        auto data = ctx.client().request(
            "PUT", deployments_path(ctx, *o) + "/" + path_segment(o->name), body);
        if (ctx.json()) return print_json(data);
        print_line("Updated deployment " + text_of(data.value("name", o->name)) + " (" +
                   text_of(data.value("state", "")) + ")");
    });

    auto* remove = deployments->add_subcommand("delete", "delete a deployment");
    remove->add_option("name", o->name, "deployment name")->required();
    on_run(remove, ctx, [&ctx, o] {
        auto data =
            ctx.client().request("DELETE", deployments_path(ctx, *o) + "/" + path_segment(o->name));
        if (ctx.json()) return print_json(data);
        print_line("Deleted deployment " + printable(o->name));
    });

    auto* preview = deployments->add_subcommand(
        "preview", "which devices a deployment (or, with --draft, a draft) would update");
    preview->add_option("name", o->name, "deployment name")->required();
    preview->add_flag("--draft", o->draft, "preview the options given instead of a stored one");
    add_field_options(preview, *o);
    on_run(preview, ctx, [&ctx, o, preview] {
        nlohmann::json data;
        if (o->draft) {
            data = ctx.client().request("POST", deployments_path(ctx, *o) + "/preview",
                                        deployment_body(*preview, *o));
        } else {
            data = ctx.client().request(
                "GET", deployments_path(ctx, *o) + "/" + path_segment(o->name) + "/preview");
        }
        if (ctx.json()) return print_json(data);
        print_preview(data);
    });

    // Per-device rollout commands under `device`.
    auto d = std::make_shared<DeviceOptions>();
    auto* device = device_command(app);
    auto with_target = [d](CLI::App* command) {
        command->add_option("identifier", d->identifier, "device identifier")->required();
        command->add_option("--org", d->org, "org (env OTAHUB_ORG; default: config `org`)");
        command->add_option("--product", d->product,
                            "product (env OTAHUB_PRODUCT; default: config `product`)");
    };

    auto* resolution = device->add_subcommand(
        "resolution", "which deployment the device resolves to, and why the others do not");
    with_target(resolution);
    on_run(resolution, ctx, [&ctx, d] {
        auto data = ctx.client().request("GET", device_path(ctx, *d) + "/resolution");
        if (ctx.json()) return print_json(data);
        const auto& chosen = data["deployment"];
        print_line("Deployment: " + (chosen.is_object() ? text_of(chosen["name"]) + " → " +
                                                              text_of(chosen["firmware_version"])
                                                        : std::string("none")));
        print_line(std::string("Eligible: ") + (data.value("eligible", false) ? "yes" : "no") +
                   (data.value("reason", std::string()).empty()
                        ? ""
                        : " (" + text_of(data["reason"]) + ")"));
        print_table(data.value("deployments", nlohmann::json::array()),
                    {{"DEPLOYMENT", {"deployment"}},
                     {"VERDICT", {"verdict"}},
                     {"RULE", {"exclusion", "blocker"}},
                     {"REASON", {"reason"}}},
                    "No deployments in this product.");
    });

    auto* updates = device->add_subcommand("updates", "update history of a device");
    with_target(updates);
    on_run(updates, ctx, [&ctx, d] {
        auto data = ctx.client().request("GET", device_path(ctx, *d) + "/updates");
        if (ctx.json()) return print_json(data);
        print_table(data,
                    {{"STARTED", {"started_at"}},
                     {"FIRMWARE", {"firmware_version"}},
                     {"DEPLOYMENT", {"deployment", "source"}},
                     {"STATUS", {"status"}},
                     {"PROGRESS", {"progress"}},
                     {"REASON", {"reason"}}},
                    "No updates.");
    });

    auto* upgrade = device->add_subcommand(
        "upgrade", "send one firmware to the device now (turns its automatic updates off)");
    with_target(upgrade);
    upgrade->add_option("--uuid", d->uuid, "firmware UUID")->required();
    on_run(upgrade, ctx, [&ctx, d] {
        auto data =
            ctx.client().request("POST", device_path(ctx, *d) + "/upgrade", {{"uuid", d->uuid}});
        if (ctx.json()) return print_json(data);
        print_line("Sent firmware " + printable(d->uuid) + " to " + printable(d->identifier) +
                   (data.value("online", false) ? "" : " (offline: on its next connection)"));
    });

    for (const char* action : {"reboot", "identify"}) {
        auto* command = device->add_subcommand(action, std::string(action) + " the device");
        with_target(command);
        on_run(command, ctx, [&ctx, d, action] {
            auto data = ctx.client().request("POST", device_path(ctx, *d) + "/" + action);
            if (ctx.json()) return print_json(data);
            print_line(std::string("Sent ") + action + " to " + printable(d->identifier));
        });
    }

    auto* clear = device->add_subcommand("clear-penalty", "take the device out of the penalty box");
    with_target(clear);
    on_run(clear, ctx, [&ctx, d] {
        ctx.client().request("DELETE", device_path(ctx, *d) + "/penalty");
        if (ctx.json()) return;
        print_line("Cleared the penalty box of " + printable(d->identifier));
    });
}

}  // namespace otahub::cli
