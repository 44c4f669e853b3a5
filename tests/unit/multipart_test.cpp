#include "server/http/multipart.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include "server/common/api_error.hpp"

// unit_tests links only otahub_domain; the extractor depends on nothing beyond it (the standard
// library, ApiError, storage helpers), so its one source file is compiled into this test.
#include "server/http/multipart.cpp"  // NOLINT(bugprone-suspicious-include)

namespace otahub::http {
namespace {

namespace fs = std::filesystem;

class Multipart : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() /
               ("otahub-multipart-" + std::to_string(std::random_device{}()));
        fs::create_directories(dir_ / "out");
    }
    void TearDown() override { fs::remove_all(dir_); }

    fs::path write_body(const std::string& bytes) {
        auto path = dir_ / "body";
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        return path;
    }

    MultipartFile extract(const std::string& body, const MultipartLimits& limits = {}) {
        return extract_multipart_file(write_body(body), "XyZ", "firmware", dir_ / "out", limits);
    }

    std::size_t outputs() const {
        return static_cast<std::size_t>(
            std::distance(fs::directory_iterator(dir_ / "out"), fs::directory_iterator()));
    }

    template <class Body>
    int status_of(Body&& body) {
        try {
            body();
        } catch (const ApiError& e) {
            return http_status(e.code());
        }
        return 0;
    }

    fs::path dir_;
};

std::string read_all(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string part(const std::string& name, const std::string& content,
                 const std::string& filename = "") {
    std::string out = "--XyZ\r\nContent-Disposition: form-data; name=\"" + name + "\"";
    if (!filename.empty()) out += "; filename=\"" + filename + "\"";
    out += "\r\n";
    if (!filename.empty()) out += "Content-Type: application/octet-stream\r\n";
    return out + "\r\n" + content + "\r\n";
}

std::string random_bytes(std::size_t size, unsigned seed) {
    std::mt19937 rng{seed};
    std::string out(size, '\0');
    for (auto& c : out) c = static_cast<char>(rng() & 0xff);
    return out;
}

TEST(MultipartBoundary, ReadsTokenAndQuotedBoundaries) {
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=abc123"), "abc123");
    EXPECT_EQ(multipart_boundary("Multipart/Form-Data;BOUNDARY=\"a b;c\""), "a b;c");
    EXPECT_EQ(multipart_boundary("multipart/form-data; charset=utf-8; boundary=----x"), "----x");
    EXPECT_EQ(multipart_boundary("application/octet-stream"), std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-data"), std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary="), std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=\"unterminated"), std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=" + std::string(71, 'a')),
              std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/mixed; boundary=abc"), std::nullopt);
}

TEST_F(Multipart, ExtractsTheFilePartAndKeepsFields) {
    auto result = extract("preamble to ignore\r\n" + part("ttl", "3600") +
                          part("firmware", "FIRMWARE\r\nBYTES--XyZ", "demo.fw") +
                          part("note", "hello") + "--XyZ--\r\nepilogue");
    ASSERT_FALSE(result.file.path().empty());
    EXPECT_EQ(read_all(result.file.path()), "FIRMWARE\r\nBYTES--XyZ");
    EXPECT_EQ(result.size, 20U);
    EXPECT_EQ(result.filename, "demo.fw");
    EXPECT_EQ(result.fields.at("ttl"), "3600");
    EXPECT_EQ(result.fields.at("note"), "hello");
    EXPECT_EQ(result.file.path().parent_path(), dir_ / "out");
}

TEST_F(Multipart, IsByteExactAcrossReadChunkBorders) {
    // Sizes that put the delimiter before, across and after the 256 KiB read boundaries.
    const std::string head = part("x", "y") +
                             "--XyZ\r\nContent-Disposition: form-data; name=\"firmware\"; "
                             "filename=\"f\"\r\n\r\n";
    for (std::size_t base : {kReadChunk, 2 * kReadChunk}) {
        for (std::size_t delta = 0; delta < 12; ++delta) {
            std::size_t size = base - head.size() - 2 + delta - 6;
            auto content = random_bytes(size, static_cast<unsigned>(size));
            // A near-delimiter inside the data must not end the part.
            content.replace(size / 2, 5, "\r\n--X");
            auto result = extract(head + content + "\r\n--XyZ--\r\n");
            ASSERT_EQ(result.size, size);
            ASSERT_EQ(read_all(result.file.path()), content) << "size " << size;
        }
    }
}

TEST_F(Multipart, AcceptsABodyStartingWithTheBoundaryAndPadding) {
    auto result = extract(
        "--XyZ \t\r\nContent-Disposition: form-data; name=firmware\r\n\r\n"
        "abc\r\n--XyZ--");
    EXPECT_EQ(read_all(result.file.path()), "abc");
    EXPECT_EQ(result.filename, "");
}

TEST_F(Multipart, HandlesAnEmptyFileAndAMissingFilePart) {
    auto empty = extract(part("firmware", "", "f.fw") + "--XyZ--\r\n");
    ASSERT_FALSE(empty.file.path().empty());
    EXPECT_EQ(empty.size, 0U);
    auto none = extract(part("ttl", "5") + "--XyZ--\r\n");
    EXPECT_TRUE(none.file.path().empty());
    EXPECT_EQ(none.fields.at("ttl"), "5");
}

TEST_F(Multipart, DiscardsOtherFileParts) {
    auto result = extract(part("other", std::string(200000, 'z'), "big.bin") +
                          part("firmware", "fw", "f") + "--XyZ--\r\n");
    EXPECT_EQ(read_all(result.file.path()), "fw");
    EXPECT_EQ(result.fields.count("other"), 0U);
    EXPECT_EQ(outputs(), 1U);
}

TEST_F(Multipart, RemovesThePartFileWhenTheResultDies) {
    fs::path path;
    {
        auto result = extract(part("firmware", "fw", "f") + "--XyZ--\r\n");
        path = result.file.path();
        EXPECT_TRUE(fs::exists(path));
    }
    EXPECT_FALSE(fs::exists(path));
}

TEST_F(Multipart, RefusesMalformedBodiesAndLeavesNoFiles) {
    const std::vector<std::string> bodies = {
        "",                                                            // empty
        "no boundary at all",                                          // no delimiter
        part("firmware", std::string(100000, 'a'), "f"),               // no close delimiter
        part("firmware", "abc", "f").substr(0, 60),                    // cut inside the part
        "--XyZ\r\nContent-Disposition: form-data; name=\"firmware\"",  // ends in headers
        "--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--",       // no disposition
        "--XyZ\r\nContent-Disposition: attachment; name=a\r\n\r\nx\r\n--XyZ--",
        "--XyZ\r\nContent-Disposition: form-data; filename=a\r\n\r\nx\r\n--XyZ--",  // no name
        "--XyZ\r\nno colon here\r\n\r\nx\r\n--XyZ--",
        "--XyZjunk\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--XyZ--",
        "--XyZ\nContent-Disposition: form-data; name=a\n\nx\n--XyZ--",        // bare LF
        part("firmware", "a", "f") + part("firmware", "b", "g") + "--XyZ--",  // two files
    };
    for (const auto& body : bodies) {
        EXPECT_EQ(status_of([&] { extract(body); }), 400) << body.substr(0, 80);
        EXPECT_EQ(outputs(), 0U) << body.substr(0, 80);
    }
}

TEST_F(Multipart, EnforcesTheLimits) {
    MultipartLimits limits;
    limits.max_field_size = 10;
    limits.max_header_size = 200;
    limits.max_parts = 3;
    EXPECT_EQ(status_of([&] { extract(part("ttl", std::string(11, '1')) + "--XyZ--", limits); }),
              400);
    EXPECT_NO_THROW(extract(part("ttl", std::string(10, '1')) + "--XyZ--", limits));
    EXPECT_EQ(status_of([&] {
                  extract("--XyZ\r\nX-Long: " + std::string(300, 'h') +
                              "\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--XyZ--",
                          limits);
              }),
              400);
    EXPECT_EQ(status_of([&] {
                  extract(
                      part("a", "1") + part("b", "2") + part("c", "3") + part("d", "4") + "--XyZ--",
                      limits);
              }),
              400);
    EXPECT_EQ(outputs(), 0U);
}

TEST_F(Multipart, SurvivesRandomBodies) {
    // Fuzz-style: random mutations of a valid body never crash and never leave files behind
    // unless a result is returned.
    const std::string valid =
        part("ttl", "60") + part("firmware", "0123456789", "f.fw") + "--XyZ--";
    std::mt19937 rng{42};
    for (int i = 0; i < 500; ++i) {
        std::string body = valid;
        int edits = 1 + static_cast<int>(rng() % 4);
        for (int e = 0; e < edits; ++e) {
            auto at = rng() % body.size();
            switch (rng() % 3) {
                case 0:
                    body[at] = static_cast<char>(rng() & 0xff);
                    break;
                case 1:
                    body.erase(at, 1 + rng() % 8);
                    break;
                default:
                    body.insert(at, 1, "\r\n-\"X;="[rng() % 7]);
                    break;
            }
            if (body.empty()) body = "x";
        }
        try {
            auto result = extract(body);
        } catch (const ApiError& e) {
            ASSERT_EQ(http_status(e.code()), 400);
        }
        ASSERT_EQ(outputs(), 0U);
    }
}

}  // namespace
}  // namespace otahub::http
