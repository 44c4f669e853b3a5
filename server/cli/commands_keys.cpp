#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <memory>

#include "server/cli/commands.hpp"
#include "server/cli/output.hpp"

namespace otahub::cli {
namespace {

// fwup's .pub file is 44 characters of base64; anything near this size is not a key file.
constexpr std::size_t kMaxKeyFileBytes = 16 * 1024;

struct KeyOptions {
    std::string org;
    std::string name;
    std::string key;
};

std::string keys_path(Context& ctx, const KeyOptions& opts) {
    return "/api/orgs/" + path_segment(ctx.org(opts.org)) + "/keys";
}

std::string trim(std::string text) {
    auto is_space = [](char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; };
    while (!text.empty() && is_space(text.back())) text.pop_back();
    std::size_t start = 0;
    while (start < text.size() && is_space(text[start])) ++start;
    return text.substr(start);
}

/// The key text: the content of the file when `arg` names one (fwup's .pub), else `arg` itself.
std::string key_text(const std::string& arg) {
    struct stat st {};
    if (::stat(arg.c_str(), &st) != 0) return trim(arg);
    if (!S_ISREG(st.st_mode)) throw UsageError(arg + " is not a regular file");
    if (static_cast<std::uint64_t>(st.st_size) > kMaxKeyFileBytes) {
        throw UsageError(arg + " is too large to be a public key file");
    }
    int fd = ::open(arg.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot read " + arg + ": " + std::strerror(errno));
    std::string text;
    char chunk[4096];
    for (;;) {
        auto n = ::read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        text.append(chunk, static_cast<std::size_t>(n));
        if (text.size() > kMaxKeyFileBytes) break;
    }
    ::close(fd);
    return trim(text);
}

}  // namespace

void add_key_commands(CLI::App& app, Context& ctx) {
    auto opts = std::make_shared<KeyOptions>();
    auto* keys =
        app.add_subcommand("keys", "firmware signing keys (Ed25519 public keys) of an org");
    keys->require_subcommand(1);
    keys->add_option("--org", opts->org, "org (env OTAHUB_ORG; default: config `org`)");

    auto* list = keys->add_subcommand("list", "list the keys");
    on_run(list, ctx, [&ctx, opts] {
        auto data = ctx.client().request("GET", keys_path(ctx, *opts));
        if (ctx.json()) return print_json(data);
        print_table(data, {{"NAME", {"name"}}, {"KEY", {"key"}}, {"CREATED", {"inserted_at"}}},
                    "No keys.");
    });

    auto* show = keys->add_subcommand("show", "show one key");
    show->add_option("name", opts->name, "key name")->required();
    on_run(show, ctx, [&ctx, opts] {
        auto data =
            ctx.client().request("GET", keys_path(ctx, *opts) + "/" + path_segment(opts->name));
        if (ctx.json()) return print_json(data);
        print_object(data);
    });

    auto* add =
        keys->add_subcommand("add", "add a public key (fwup's .pub file or its base64 text)");
    add->add_option("name", opts->name, "key name")->required();
    add->add_option("key", opts->key, "a .pub file, or the base64 key itself")->required();
    on_run(add, ctx, [&ctx, opts] {
        auto key = key_text(opts->key);
        if (key.empty()) throw UsageError("the key is empty");
        auto data = ctx.client().request("POST", keys_path(ctx, *opts),
                                         {{"name", opts->name}, {"key", key}});
        if (ctx.json()) return print_json(data);
        print_line("Added key " + text_of(data.value("name", opts->name)));
    });

    auto* remove = keys->add_subcommand("delete", "delete a key (refused while firmware uses it)");
    remove->add_option("name", opts->name, "key name")->required();
    on_run(remove, ctx, [&ctx, opts] {
        auto data =
            ctx.client().request("DELETE", keys_path(ctx, *opts) + "/" + path_segment(opts->name));
        if (ctx.json()) return print_json(data);
        print_line("Deleted key " + printable(opts->name));
    });
}

}  // namespace otahub::cli
