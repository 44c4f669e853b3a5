#include "server/cli/output.hpp"

#include <cstdio>
#include <iostream>

#include "server/cli/client.hpp"

namespace otahub::cli {
namespace {

constexpr std::size_t kMaxInlineItems = 8;

/// Display width, counting UTF-8 code points rather than bytes.
std::size_t width_of(std::string_view text) {
    std::size_t width = 0;
    for (unsigned char c : text) {
        if ((c & 0xC0) != 0x80) ++width;
    }
    return width;
}

std::string cell(const nlohmann::json& row, const Column& column) {
    if (!row.is_object()) return "-";
    for (const auto& key : column.keys) {
        // "a.b" reads a nested field.
        const nlohmann::json* value = &row;
        std::size_t start = 0;
        while (value != nullptr) {
            const auto dot = key.find('.', start);
            const auto part = key.substr(start, dot == std::string::npos ? dot : dot - start);
            auto it = value->is_object() ? value->find(part) : value->end();
            value = (value->is_object() && it != value->end()) ? &*it : nullptr;
            if (dot == std::string::npos) break;
            start = dot + 1;
        }
        if (value == nullptr || value->is_null()) continue;
        if (column.bytes && value->is_number_unsigned()) {
            return human_bytes(value->get<std::uint64_t>());
        }
        return text_of(*value);
    }
    return "-";
}

void print_row(const std::vector<std::string>& cells, const std::vector<std::size_t>& widths) {
    std::string line;
    for (std::size_t i = 0; i < cells.size(); ++i) {
        line += cells[i];
        if (i + 1 < cells.size()) line.append(widths[i] - width_of(cells[i]) + 2, ' ');
    }
    std::cout << line << '\n';
}

}  // namespace

void print_json(const nlohmann::json& value) {
    if (value.is_null()) return;
    // Invalid UTF-8 from the server is replaced rather than aborting the dump.
    std::cout << value.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
}

void print_table(const nlohmann::json& rows, const std::vector<Column>& columns,
                 std::string_view empty_text) {
    if (!rows.is_array() || rows.empty()) {
        std::cout << empty_text << '\n';
        return;
    }
    std::vector<std::vector<std::string>> table;
    std::vector<std::string> header;
    for (const auto& column : columns) header.push_back(column.header);
    table.push_back(std::move(header));
    for (const auto& row : rows) {
        std::vector<std::string> cells;
        for (const auto& column : columns) cells.push_back(cell(row, column));
        table.push_back(std::move(cells));
    }
    std::vector<std::size_t> widths(columns.size(), 0);
    for (const auto& cells : table) {
        for (std::size_t i = 0; i < cells.size(); ++i) {
            widths[i] = std::max(widths[i], width_of(cells[i]));
        }
    }
    for (const auto& cells : table) print_row(cells, widths);
}

void print_object(const nlohmann::json& object) {
    if (!object.is_object()) {
        std::cout << text_of(object) << '\n';
        return;
    }
    std::size_t width = 0;
    for (const auto& [key, value] : object.items()) width = std::max(width, width_of(key));
    for (const auto& [key, value] : object.items()) {
        std::string label = printable(key) + ":";
        label.append(width - width_of(key) + 1, ' ');
        if (key == "size" && value.is_number_unsigned()) {
            auto bytes = value.get<std::uint64_t>();
            std::cout << label << bytes << " (" << human_bytes(bytes) << ")\n";
        } else {
            std::cout << label << text_of(value) << '\n';
        }
    }
}

void print_line(std::string_view text) { std::cout << text << '\n'; }

std::string text_of(const nlohmann::json& value) {
    if (value.is_null()) return "-";
    if (value.is_string()) return printable(value.get<std::string>());
    if (value.is_array()) {
        bool scalars = true;
        for (const auto& item : value) scalars = scalars && !item.is_structured();
        if (value.empty()) return "(none)";
        if (!scalars) {
            return printable(value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
        }
        if (value.size() > kMaxInlineItems) return "(" + std::to_string(value.size()) + " items)";
        std::string out;
        for (const auto& item : value) {
            if (!out.empty()) out += ", ";
            out += text_of(item);
        }
        return out;
    }
    return printable(value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::string human_bytes(std::uint64_t bytes) {
    static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    if (bytes < 1024) return std::to_string(bytes) + " B";
    double value = static_cast<double>(bytes);
    std::size_t unit = 0;
    while (value >= 1024 && unit + 1 < std::size(kUnits)) {
        value /= 1024;
        ++unit;
    }
    char text[32];
    std::snprintf(text, sizeof text, "%.1f %s", value, kUnits[unit]);
    return text;
}

}  // namespace otahub::cli
