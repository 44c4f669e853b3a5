#include <CLI/CLI.hpp>
#include <memory>

#include "server/cli/commands.hpp"
#include "server/cli/output.hpp"

namespace otahub::cli {
namespace {

struct ProductOptions {
    std::string org;
    std::string name;
    std::string new_name;
};

std::string products_path(Context& ctx, const ProductOptions& opts) {
    return "/api/orgs/" + path_segment(ctx.org(opts.org)) + "/products";
}

std::string product_path(Context& ctx, const ProductOptions& opts) {
    return products_path(ctx, opts) + "/" + path_segment(opts.name);
}

}  // namespace

void add_product_commands(CLI::App& app, Context& ctx) {
    auto opts = std::make_shared<ProductOptions>();
    auto* products = app.add_subcommand("products", "products of an org");
    products->require_subcommand(1);
    products->add_option("--org", opts->org, "org (env OTAHUB_ORG; default: config `org`)");

    auto* list = products->add_subcommand("list", "list the products");
    on_run(list, ctx, [&ctx, opts] {
        auto data = ctx.client().request("GET", products_path(ctx, *opts));
        if (ctx.json()) return print_json(data);
        print_table(data,
                    {{"NAME", {"name"}}, {"CREATED", {"inserted_at"}}, {"UPDATED", {"updated_at"}}},
                    "No products.");
    });

    auto* show = products->add_subcommand("show", "show one product");
    show->add_option("name", opts->name, "product name")->required();
    on_run(show, ctx, [&ctx, opts] {
        auto data = ctx.client().request("GET", product_path(ctx, *opts));
        if (ctx.json()) return print_json(data);
        print_object(data);
    });

    auto* create = products->add_subcommand("create", "create a product");
    create->add_option("name", opts->name, "product name (as in the firmware's meta-product)")
        ->required();
    on_run(create, ctx, [&ctx, opts] {
        auto data = ctx.client().request("POST", products_path(ctx, *opts), {{"name", opts->name}});
        if (ctx.json()) return print_json(data);
        print_line("Created product " + text_of(data.value("name", opts->name)));
    });

    auto* rename = products->add_subcommand("rename", "rename a product");
    rename->add_option("name", opts->name, "current name")->required();
    rename->add_option("new_name", opts->new_name, "new name")->required();
    on_run(rename, ctx, [&ctx, opts] {
        auto data =
            ctx.client().request("PUT", product_path(ctx, *opts), {{"name", opts->new_name}});
        if (ctx.json()) return print_json(data);
        print_line("Renamed product " + printable(opts->name) + " to " +
                   text_of(data.value("name", opts->new_name)));
    });

    auto* remove = products->add_subcommand("delete", "delete a product");
    remove->add_option("name", opts->name, "product name")->required();
    on_run(remove, ctx, [&ctx, opts] {
        auto data = ctx.client().request("DELETE", product_path(ctx, *opts));
        if (ctx.json()) return print_json(data);
        print_line("Deleted product " + printable(opts->name));
    });
}

}  // namespace otahub::cli
