#include <CLI/CLI.hpp>
#include <filesystem>
#include <memory>

#include "server/cli/commands.hpp"
#include "server/cli/output.hpp"
#include "server/cli/progress.hpp"

namespace otahub::cli {
namespace {

struct FirmwareOptions {
    std::string org;
    std::string product;
    std::string file;
    std::string uuid;
    std::string out;
    std::uint64_t ttl = 0;  // 0: the hub's default
};

std::string firmwares_path(Context& ctx, const FirmwareOptions& opts) {
    return "/api/orgs/" + path_segment(ctx.org(opts.org)) + "/products/" +
           path_segment(ctx.product(opts.product)) + "/firmwares";
}

std::string firmware_path(Context& ctx, const FirmwareOptions& opts) {
    return firmwares_path(ctx, opts) + "/" + path_segment(opts.uuid);
}

void upload(Context& ctx, const FirmwareOptions& opts) {
    auto path = firmwares_path(ctx, opts);
    if (opts.ttl > 0) path += "?ttl=" + std::to_string(opts.ttl);
    auto client = ctx.client();
    Progress progress("upload", std::filesystem::path(opts.file).filename().string());
    auto data = client.upload(
        path, opts.file,
        [&progress](std::uint64_t done, std::uint64_t total) { progress.update(done, total); });
    progress.finish();
    if (ctx.json()) return print_json(data);
    auto field = [&data](const char* key) {
        return data.is_object() ? text_of(data.value(key, nlohmann::json())) : std::string("-");
    };
    print_line("Uploaded firmware " + field("uuid") + ": " + field("product") + " " +
               field("version") + " (" + field("platform") + "/" + field("architecture") + ")");
}

void download(Context& ctx, const FirmwareOptions& opts) {
    auto out = opts.out.empty() ? opts.uuid + ".fw" : opts.out;
    if (opts.out.empty() && opts.uuid.find('/') != std::string::npos) {
        throw UsageError("give --out FILE for this UUID");
    }
    auto path = firmware_path(ctx, opts) + "/download";
    auto client = ctx.client();
    Progress progress("download", out == "-" ? std::string("to stdout") : out);
    auto bytes = client.download(path, out, [&progress](std::uint64_t done, std::uint64_t total) {
        progress.update(done, total);
    });
    progress.finish();
    if (out == "-") return;
    if (ctx.json()) return print_json({{"file", out}, {"size", bytes}});
    print_line("Saved " + human_bytes(bytes) + " to " + out);
}

}  // namespace

void add_firmware_commands(CLI::App& app, Context& ctx) {
    auto opts = std::make_shared<FirmwareOptions>();
    auto* firmware = app.add_subcommand("firmware", "firmware of a product");
    firmware->require_subcommand(1);
    firmware->add_option("--org", opts->org, "org (env OTAHUB_ORG; default: config `org`)");
    firmware->add_option("--product", opts->product,
                         "product (env OTAHUB_PRODUCT; default: config `product`)");

    auto* up = firmware->add_subcommand("upload", "upload a signed fwup .fw archive");
    up->add_option("file", opts->file, "the .fw file")->required()->check(CLI::ExistingFile);
    up->add_option("--ttl", opts->ttl, "seconds to keep it while no deployment uses it")
        ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{10} * 365 * 24 * 3600));
    on_run(up, ctx, [&ctx, opts] { upload(ctx, *opts); });

    auto* list = firmware->add_subcommand("list", "list the product's firmware");
    on_run(list, ctx, [&ctx, opts] {
        auto data = ctx.client().request("GET", firmwares_path(ctx, *opts));
        if (ctx.json()) return print_json(data);
        print_table(data,
                    {{"UUID", {"uuid"}},
                     {"VERSION", {"version"}},
                     {"PLATFORM", {"platform"}},
                     {"ARCHITECTURE", {"architecture"}},
                     {"SIZE", {"size"}, true},
                     {"UPLOADED", {"uploaded_at", "inserted_at"}}},
                    "No firmware.");
    });

    auto* show = firmware->add_subcommand("show", "show one firmware");
    show->add_option("uuid", opts->uuid, "firmware UUID")->required();
    on_run(show, ctx, [&ctx, opts] {
        auto data = ctx.client().request("GET", firmware_path(ctx, *opts));
        if (ctx.json()) return print_json(data);
        print_object(data);
    });

    auto* remove = firmware->add_subcommand("delete", "delete a firmware (refused while deployed)");
    remove->add_option("uuid", opts->uuid, "firmware UUID")->required();
    on_run(remove, ctx, [&ctx, opts] {
        auto data = ctx.client().request("DELETE", firmware_path(ctx, *opts));
        if (ctx.json()) return print_json(data);
        print_line("Deleted firmware " + printable(opts->uuid));
    });

    auto* down = firmware->add_subcommand("download", "download a firmware archive");
    down->add_option("uuid", opts->uuid, "firmware UUID")->required();
    down->add_option("--out,-o", opts->out, "file to write (default UUID.fw; - for stdout)");
    on_run(down, ctx, [&ctx, opts] { download(ctx, *opts); });
}

}  // namespace otahub::cli
