#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace otahub::cli {

/// One column of a table: the header and the keys to try in each row, first present wins.
struct Column {
    std::string header;
    std::vector<std::string> keys;
    bool bytes = false;  ///< show a number as a size (12.3 MiB)
};

/// Prints JSON for scripts on stdout (null prints nothing).
void print_json(const nlohmann::json& value);

/// Prints an array of objects as an aligned table on stdout, or `empty_text` when it is empty.
void print_table(const nlohmann::json& rows, const std::vector<Column>& columns,
                 std::string_view empty_text);

/// Prints an object as aligned `key: value` lines on stdout.
void print_object(const nlohmann::json& object);

/// Prints one line on stdout.
void print_line(std::string_view text);

/// A JSON value as display text: strings as they are (control characters replaced), null as "-",
/// short scalar arrays joined with ", ", anything else compact JSON.
std::string text_of(const nlohmann::json& value);

/// A byte count for people: 512 B, 1.5 KiB, 40.0 MiB.
std::string human_bytes(std::uint64_t bytes);

}  // namespace otahub::cli
