#include "server/domain/firmware/fwup_archive.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <zip.h>
#include <nlohmann/json.hpp>

#include "server/domain/firmware/checksums.hpp"
#include "server/domain/firmware/meta_conf.hpp"

namespace otahub::firmware {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kMiB = 1ull << 20;
// 2026-11-23T11:51:52Z, the date of the fixtures.
constexpr std::int64_t kFixtureTime = 1795434712;

fs::path fixtures() { return fs::path(OTAHUB_FIXTURES_DIR) / "fwup"; }

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& path, std::string_view data) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

const nlohmann::json& expected() {
    static const auto json = nlohmann::json::parse(read_file(fixtures() / "expected.json"));
    return json;
}

PublicKey key_file(const std::string& name) {
    auto key = parse_public_key(read_file(fixtures() / name));
    if (!key) {
        throw std::runtime_error("bad key fixture " + name);
    }
    return *key;
}

std::vector<std::string> fixture_names() {
    std::vector<std::string> names;
    for (const auto& item : fs::directory_iterator(fixtures())) {
        if (item.path().extension() == ".fw") {
            names.push_back(item.path().filename().string());
        }
    }
    std::sort(names.begin(), names.end());
    return names;
}

std::string sha256_upper(std::string_view data) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr);
    return hex_upper(std::span<const std::uint8_t>(digest.data(), length));
}

std::string blake2b_lower(std::string_view data) {
    std::array<unsigned char, crypto_generichash_BYTES> hash{};
    crypto_generichash(hash.data(), hash.size(),
                       reinterpret_cast<const unsigned char*>(data.data()), data.size(), nullptr,
                       0);
    auto hex = hex_upper(hash);
    std::transform(hex.begin(), hex.end(), hex.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return hex;
}

// Signs like `fwup -S` with a fwup private key file (base64 of seed || public key).
std::string sign(std::string_view message, const std::string& key_name = "signing.priv") {
    auto text = read_file(fixtures() / key_name);
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
        text.pop_back();
    }
    std::array<unsigned char, crypto_sign_SECRETKEYBYTES> secret{};
    std::size_t length = 0;
    if (sodium_base642bin(secret.data(), secret.size(), text.data(), text.size(), nullptr, &length,
                          nullptr, sodium_base64_VARIANT_ORIGINAL) != 0 ||
        length != secret.size()) {
        throw std::runtime_error("bad private key fixture");
    }
    std::string signature(crypto_sign_BYTES, '\0');
    crypto_sign_detached(reinterpret_cast<unsigned char*>(signature.data()), nullptr,
                         reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                         secret.data());
    return signature;
}

// Runs `body` and returns the check of the FirmwareError it throws ("" if none).
template <typename Body>
std::string failed_check(Body&& body) {
    try {
        body();
    } catch (const FirmwareError& error) {
        return error.check();
    }
    return "";
}

template <typename Body>
std::string failure_message(Body&& body) {
    try {
        body();
    } catch (const FirmwareError& error) {
        return error.what();
    }
    return "";
}

// A libzip source of `size` zero bytes, made on the fly so the test never holds them.
struct ZeroSource {
    std::uint64_t size = 0;
    std::uint64_t offset = 0;
    zip_error_t error{};
};

zip_int64_t zero_callback(void* user, void* data, zip_uint64_t length, zip_source_cmd_t command) {
    auto* source = static_cast<ZeroSource*>(user);
    switch (command) {
        case ZIP_SOURCE_OPEN:
            source->offset = 0;
            return 0;
        case ZIP_SOURCE_READ: {
            auto count = std::min<std::uint64_t>(length, source->size - source->offset);
            std::memset(data, 0, static_cast<std::size_t>(count));
            source->offset += count;
            return static_cast<zip_int64_t>(count);
        }
        case ZIP_SOURCE_CLOSE:
        case ZIP_SOURCE_FREE:
            return 0;
        case ZIP_SOURCE_STAT: {
            auto* stat = static_cast<zip_stat_t*>(data);
            zip_stat_init(stat);
            stat->size = source->size;
            stat->valid |= ZIP_STAT_SIZE;
            return sizeof(zip_stat_t);
        }
        case ZIP_SOURCE_ERROR:
            return zip_error_to_data(&source->error, data, length);
        case ZIP_SOURCE_SUPPORTS:
            return zip_source_make_command_bitmap(ZIP_SOURCE_OPEN, ZIP_SOURCE_READ,
                                                  ZIP_SOURCE_CLOSE, ZIP_SOURCE_STAT,
                                                  ZIP_SOURCE_ERROR, ZIP_SOURCE_FREE, -1);
        default:
            zip_error_set(&source->error, ZIP_ER_OPNOTSUPP, 0);
            return -1;
    }
}

// Builds ZIP archives with libzip, entries in the order added.
class ArchiveBuilder {
  public:
    ArchiveBuilder& add(std::string name, std::string data) {
        entries_.push_back({std::move(name), std::move(data), 0});
        return *this;
    }

    ArchiveBuilder& add_zeros(std::string name, std::uint64_t count) {
        entries_.push_back({std::move(name), {}, count});
        return *this;
    }

    void write(const fs::path& path) {
        int error = 0;
        std::unique_ptr<zip_t, decltype(&zip_discard)> archive(
            zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error), &zip_discard);
        ASSERT_TRUE(archive) << "zip_open " << error;
        std::vector<std::unique_ptr<ZeroSource>> zeros;
        for (const auto& entry : entries_) {
            zip_source_t* source = nullptr;
            if (entry.zeros > 0) {
                zeros.push_back(std::make_unique<ZeroSource>());
                zeros.back()->size = entry.zeros;
                zip_error_init(&zeros.back()->error);
                source = zip_source_function(archive.get(), zero_callback, zeros.back().get());
            } else {
                source = zip_source_buffer(archive.get(), entry.data.data(), entry.data.size(), 0);
            }
            ASSERT_NE(source, nullptr);
            auto index = zip_file_add(archive.get(), entry.name.c_str(), source, 0);
            ASSERT_GE(index, 0) << entry.name << ": " << zip_strerror(archive.get());
            auto when = static_cast<zip_uint64_t>(index);
            ASSERT_EQ(zip_file_set_mtime(archive.get(), when, kFixtureTime, 0), 0);
            // The extended timestamp fwup (libarchive) writes, so the date does not depend on
            // the zone the test runs in.
            std::array<zip_uint8_t, 5> stamp = {1, 0, 0, 0, 0};
            auto seconds = static_cast<std::uint32_t>(kFixtureTime);
            for (int i = 0; i < 4; ++i) {
                stamp[static_cast<std::size_t>(1 + i)] =
                    static_cast<zip_uint8_t>(seconds >> (8 * i));
            }
            ASSERT_EQ(zip_file_extra_field_set(archive.get(), when, 0x5455, ZIP_EXTRA_FIELD_NEW,
                                               stamp.data(), stamp.size(), ZIP_FL_CENTRAL),
                      0)
                << zip_strerror(archive.get());
        }
        ASSERT_EQ(zip_close(archive.get()), 0) << zip_strerror(archive.get());
        archive.release();
    }

  private:
    struct Entry {
        std::string name;
        std::string data;
        std::uint64_t zeros;
    };
    std::vector<Entry> entries_;
};

struct Resource {
    std::string name;
    std::string data;
};

std::string meta_conf_for(const std::vector<Resource>& resources, std::string_view extra = "") {
    std::string text =
        "meta-product=demo\n"
        "meta-description=\"Built by the \\\"fwup\\\" tests\"\n"
        "meta-version=1.2.3\n"
        "meta-author=\"otahub tests\"\n"
        "meta-platform=rpi4\n"
        "meta-architecture=aarch64\n";
    text += extra;
    for (const auto& resource : resources) {
        text += "file-resource \"" + resource.name +
                "\" {\nlength=" + std::to_string(resource.data.size()) +
                "\nblake2b-256=" + blake2b_lower(resource.data) + "\n}\n";
    }
    text += "task \"complete\" {\n";
    for (const auto& resource : resources) {
        text += "on-resource \"" + resource.name + "\" {\nfunlist={2,raw_write,0}\n}\n";
    }
    text += "}\n";
    return text;
}

// The archive `fwup -c` then `fwup -S` would make.
ArchiveBuilder firmware(const std::string& meta_conf, const std::vector<Resource>& resources,
                        bool signed_archive = true) {
    ArchiveBuilder builder;
    if (signed_archive) {
        builder.add("meta.conf.ed25519", sign(meta_conf));
    }
    builder.add("meta.conf", meta_conf);
    for (const auto& resource : resources) {
        builder.add("data/" + resource.name, resource.data);
    }
    return builder;
}

std::string pattern(std::size_t size, unsigned seed) {
    std::mt19937 random(seed);
    std::string data(size, '\0');
    for (auto& c : data) {
        c = static_cast<char>(random() % 7);  // compressible, not trivial
    }
    return data;
}

// Rewrites every occurrence of `from` with the same-length `to` in the file's bytes.
void patch_bytes(const fs::path& path, std::string_view from, std::string_view to) {
    ASSERT_EQ(from.size(), to.size());
    auto data = read_file(path);
    std::size_t count = 0;
    for (auto at = data.find(from); at != std::string::npos; at = data.find(from, at + 1)) {
        data.replace(at, from.size(), to);
        ++count;
    }
    ASSERT_EQ(count, 2U) << "local and central name";
    write_file(path, data);
}

void put_le32(std::string& data, std::size_t at, std::uint32_t value) {
    for (int i = 0; i < 4; ++i) {
        data[at + static_cast<std::size_t>(i)] = static_cast<char>(value >> (8 * i));
    }
}

std::uint32_t get_le32(const std::string& data, std::size_t at) {
    std::uint32_t value = 0;
    for (int i = 3; i >= 0; --i) {
        value = (value << 8) | static_cast<unsigned char>(data[at + static_cast<std::size_t>(i)]);
    }
    return value;
}

// Makes an entry lie about its uncompressed size, in the central directory and local header.
void patch_declared_size(const fs::path& path, const std::string& name, std::uint32_t size) {
    auto data = read_file(path);
    bool patched = false;
    for (auto at = data.find("PK\x01\x02"); at != std::string::npos;
         at = data.find("PK\x01\x02", at + 1)) {
        auto name_length =
            static_cast<std::size_t>(static_cast<unsigned char>(data[at + 28]) |
                                     (static_cast<unsigned char>(data[at + 29]) << 8));
        if (data.compare(at + 46, name_length, name) != 0 || name_length != name.size()) {
            continue;
        }
        put_le32(data, at + 24, size);
        auto local = get_le32(data, at + 42);
        ASSERT_EQ(data.compare(local, 4, "PK\x03\x04"), 0);
        put_le32(data, local + 22, size);
        patched = true;
    }
    ASSERT_TRUE(patched);
    write_file(path, data);
}

// ---------------------------------------------------------------------------------------------
// The real fwup archives.

class FwupFixture : public ::testing::TestWithParam<std::string> {
  protected:
    fs::path path() const { return fixtures() / GetParam(); }
    const nlohmann::json& want() const { return expected().at(GetParam()); }

    // What fwup's verdict for this key means for ours: "" when accepted, else the check.
    std::string expected_check(bool signing_key) const {
        if (want()["metadata"].is_null()) {
            return "zip";
        }
        if (want()[signing_key ? "verifies_with_signing_pub" : "verifies_with_other_pub"]) {
            return "";
        }
        // The tampered archive carries a good signature from signing.priv.
        if (signing_key && GetParam().find("tampered") != std::string::npos) {
            return "resource";
        }
        return "signature";
    }

    void expect_accepted(const FirmwareInfo& info) const {
        const auto& meta = want()["metadata"];
        EXPECT_EQ(info.product, meta["meta-product"]);
        EXPECT_EQ(info.description, meta["meta-description"]);
        EXPECT_EQ(info.version, meta["meta-version"]);
        EXPECT_EQ(info.author, meta["meta-author"]);
        EXPECT_EQ(info.platform, meta["meta-platform"]);
        EXPECT_EQ(info.architecture, meta["meta-architecture"]);
        EXPECT_EQ(info.misc, meta["meta-misc"]);
        EXPECT_EQ(info.vcs_identifier, meta["meta-vcs-identifier"]);
        EXPECT_EQ(info.uuid, meta["meta-uuid"]);
        EXPECT_EQ(info.creation_date, meta["meta-creation-date"]);
        EXPECT_EQ(info.size, want()["size"].get<std::uint64_t>());
        EXPECT_EQ(info.sha256, want()["sha256"]);
        EXPECT_EQ(info.partial_sha256,
                  want()["partials_sha256_1MiB"].get<std::vector<std::string>>());
        EXPECT_EQ(fwup_meta_uuid(info.meta_conf), info.uuid);
    }

    void check_with(const PublicKey& key, bool signing_key) const {
        std::array<PublicKey, 1> keys = {key};
        auto check = expected_check(signing_key);
        if (!check.empty()) {
            EXPECT_EQ(failed_check([&] { verify_firmware(path(), keys); }), check);
            return;
        }
        auto info = verify_firmware(path(), keys);
        EXPECT_TRUE(info.has_signature);
        EXPECT_EQ(info.signing_key_index, 0U);
        expect_accepted(info);
    }
};

TEST_P(FwupFixture, MatchesFwupVerdictWithSigningKey) { check_with(key_file("signing.pub"), true); }

TEST_P(FwupFixture, MatchesFwupVerdictWithOtherKey) { check_with(key_file("other.pub"), false); }

TEST_P(FwupFixture, ReportsWhichKeySigned) {
    std::array<PublicKey, 2> keys = {key_file("other.pub"), key_file("signing.pub")};
    if (!want()["verifies_with_signing_pub"] && !want()["verifies_with_other_pub"]) {
        EXPECT_NE(failed_check([&] { verify_firmware(path(), keys); }), "");
        return;
    }
    auto info = verify_firmware(path(), keys);
    EXPECT_EQ(info.signing_key_index, want()["verifies_with_signing_pub"] ? 1U : 0U);
}

TEST_P(FwupFixture, InspectReadsMetadataWithoutKeys) {
    if (want()["metadata"].is_null()) {
        EXPECT_EQ(failed_check([&] { inspect_firmware(path()); }), "zip");
        return;
    }
    if (GetParam().find("tampered") != std::string::npos) {
        EXPECT_EQ(failed_check([&] { inspect_firmware(path()); }), "resource");
        return;
    }
    auto info = inspect_firmware(path());
    EXPECT_FALSE(info.signing_key_index);
    EXPECT_EQ(info.has_signature, GetParam().find("unsigned") == std::string::npos);
    expect_accepted(info);
}

TEST_P(FwupFixture, DigestsMatchExpected) {
    auto digest = digest_file(path());
    EXPECT_EQ(digest.size, want()["size"].get<std::uint64_t>());
    EXPECT_EQ(digest.sha256, want()["sha256"]);
    EXPECT_EQ(digest.partial_sha256,
              want()["partials_sha256_1MiB"].get<std::vector<std::string>>());
    EXPECT_EQ(sha256_chunks(path()), digest.partial_sha256);
}

INSTANTIATE_TEST_SUITE_P(Fwup, FwupFixture, ::testing::ValuesIn(fixture_names()),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                             auto name = param.param;
                             for (auto& c : name) {
                                 if (!std::isalnum(static_cast<unsigned char>(c))) {
                                     c = '_';
                                 }
                             }
                             return name;
                         });

TEST(FwupFixtures, EveryFixtureHasAnExpectation) {
    auto names = fixture_names();
    EXPECT_EQ(names.size(), expected().size());
    for (const auto& name : names) {
        EXPECT_TRUE(expected().contains(name)) << name;
    }
}

// ---------------------------------------------------------------------------------------------
// Archives built here, most of them hostile.

class FwupArchive : public ::testing::Test {
  protected:
    void SetUp() override {
        std::random_device seed;
        dir_ = fs::temp_directory_path() / ("otahub-fwup-" + std::to_string(seed()));
        fs::create_directories(dir_);
        keys_ = {key_file("signing.pub")};
    }

    void TearDown() override {
        std::error_code ignored;
        fs::remove_all(dir_, ignored);
    }

    fs::path file(const std::string& name = "test.fw") const { return dir_ / name; }

    std::string check_of(const fs::path& path, const VerifyLimits& limits = {}) const {
        return failed_check([&] { verify_firmware(path, keys_, limits); });
    }

    std::string message_of(const fs::path& path, const VerifyLimits& limits = {}) const {
        return failure_message([&] { verify_firmware(path, keys_, limits); });
    }

    // A valid signed archive plus one extra entry named `name`.
    fs::path with_extra_entry(const std::string& name) {
        std::vector<Resource> resources = {{"rootfs.img", pattern(5000, 1)}};
        auto builder = firmware(meta_conf_for(resources), resources);
        builder.add(name, "evil");
        builder.write(file());
        return file();
    }

    fs::path dir_;
    std::vector<PublicKey> keys_;
};

TEST_F(FwupArchive, AcceptsAWellFormedSignedArchive) {
    std::vector<Resource> resources = {
        {"rootfs.img", pattern(300000, 2)}, {"boot/zImage", pattern(70000, 3)}, {"empty.bin", ""}};
    auto meta = meta_conf_for(resources, "meta-misc='single \\'quoted\\''\n");
    firmware(meta, resources).write(file());

    auto info = verify_firmware(file(), keys_);
    EXPECT_EQ(info.signing_key_index, 0U);
    EXPECT_EQ(info.product, "demo");
    EXPECT_EQ(info.description, "Built by the \"fwup\" tests");
    EXPECT_EQ(info.misc, "single 'quoted'");
    EXPECT_EQ(info.version, "1.2.3");
    EXPECT_EQ(info.uuid, fwup_meta_uuid(meta));
    EXPECT_EQ(info.creation_date, "2026-11-23T11:51:52Z");
    EXPECT_EQ(info.meta_conf, meta);
    EXPECT_EQ(info.size, fs::file_size(file()));
    EXPECT_EQ(info.sha256, sha256_upper(read_file(file())));
}

TEST_F(FwupArchive, AcceptsASparseResource) {
    auto data = pattern(3000, 4);
    auto meta = meta_conf_for({},
                              "file-resource \"sparse.img\" {\n  length = {1000, 4096, 2000}\n"
                              "  blake2b-256 = \"" +
                                  blake2b_lower(data) + "\"\n}\n");
    ArchiveBuilder()
        .add("meta.conf.ed25519", sign(meta))
        .add("meta.conf", meta)
        .add("data/sparse.img", data)
        .write(file());
    EXPECT_EQ(verify_firmware(file(), keys_).product, "demo");
}

TEST_F(FwupArchive, RefusesZipSlipNames) {
    for (const std::string name : {"data/../../etc/passwd", "/etc/passwd", "data\\..\\evil",
                                   "data/./x", "data//x", "data/x/", "../meta.conf"}) {
        with_extra_entry(name);
        EXPECT_EQ(check_of(file()), "layout") << name;
    }
}

TEST_F(FwupArchive, RefusesANulInAName) {
    with_extra_entry("data/evil_name");
    patch_bytes(file(), "data/evil_name", std::string_view("data/evil\0name", 14));
    EXPECT_EQ(check_of(file()), "layout");
}

TEST_F(FwupArchive, RefusesDuplicateNames) {
    std::vector<Resource> resources = {{"rootfs.img", pattern(5000, 1)}};
    auto builder = firmware(meta_conf_for(resources), resources);
    builder.add("data/rootfs.imX", pattern(5000, 1));
    builder.write(file());
    patch_bytes(file(), "data/rootfs.imX", "data/rootfs.img");
    EXPECT_EQ(check_of(file()), "layout");
    EXPECT_NE(message_of(file()).find("twice"), std::string::npos);
}

TEST_F(FwupArchive, RefusesAnEntryOutsideData) {
    with_extra_entry("README.txt");
    EXPECT_EQ(check_of(file()), "layout");
}

TEST_F(FwupArchive, RefusesAResourceMetaConfDoesNotName) {
    with_extra_entry("data/unlisted.bin");
    EXPECT_EQ(check_of(file()), "resource");
}

TEST_F(FwupArchive, RefusesAMissingResource) {
    std::vector<Resource> listed = {{"rootfs.img", pattern(5000, 1)}, {"extra.img", "abc"}};
    std::vector<Resource> stored = {listed[0]};
    firmware(meta_conf_for(listed), stored).write(file());
    EXPECT_EQ(check_of(file()), "resource");
    EXPECT_NE(message_of(file()).find("missing"), std::string::npos);
}

TEST_F(FwupArchive, RefusesAResourceOfTheWrongLength) {
    std::vector<Resource> listed = {{"rootfs.img", pattern(5000, 1)}};
    std::vector<Resource> stored = {{"rootfs.img", pattern(5001, 1)}};
    firmware(meta_conf_for(listed), stored).write(file());
    EXPECT_EQ(check_of(file()), "resource");
}

TEST_F(FwupArchive, RefusesAResourceWithTheWrongHash) {
    std::vector<Resource> listed = {{"rootfs.img", pattern(5000, 1)}};
    std::vector<Resource> stored = {{"rootfs.img", pattern(5000, 2)}};
    firmware(meta_conf_for(listed), stored).write(file());
    EXPECT_EQ(check_of(file()), "resource");
}

TEST_F(FwupArchive, RefusesUpperCaseHashesLikeFwup) {
    auto data = pattern(100, 5);
    auto hash = blake2b_lower(data);
    std::transform(hash.begin(), hash.end(), hash.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    auto meta =
        meta_conf_for({}, "file-resource \"a\" {\nlength=100\nblake2b-256=" + hash + "\n}\n");
    ArchiveBuilder()
        .add("meta.conf.ed25519", sign(meta))
        .add("meta.conf", meta)
        .add("data/a", data)
        .write(file());
    EXPECT_EQ(check_of(file()), "resource");
}

TEST_F(FwupArchive, RefusesADeclaredCompressionBomb) {
    std::vector<Resource> none;
    auto builder = firmware(meta_conf_for(none), none);
    builder.add_zeros("data/zeros.img", 200 * kMiB);
    builder.write(file());
    EXPECT_LT(fs::file_size(file()), 2 * kMiB);

    VerifyLimits small_entries;
    small_entries.max_entry_size = 64 * kMiB;
    EXPECT_EQ(check_of(file(), small_entries), "size");

    VerifyLimits small_total;
    small_total.max_total_size = 100 * kMiB;
    EXPECT_EQ(check_of(file(), small_total), "size");

    VerifyLimits low_ratio;
    low_ratio.max_ratio = 100;
    EXPECT_EQ(check_of(file(), low_ratio), "size");
}

TEST_F(FwupArchive, StopsInflatingABombThatLiesAboutItsSize) {
    // meta.conf and the headers agree on 1 MiB; the deflate stream holds 200 MiB of zeros.
    auto meta = meta_conf_for({}, "file-resource \"zeros.img\" {\nlength=1048576\nblake2b-256=" +
                                      blake2b_lower(std::string(kMiB, '\0')) + "\n}\n");
    ArchiveBuilder()
        .add("meta.conf.ed25519", sign(meta))
        .add("meta.conf", meta)
        .add_zeros("data/zeros.img", 200 * kMiB)
        .write(file());
    patch_declared_size(file(), "data/zeros.img", static_cast<std::uint32_t>(kMiB));

    auto start = std::chrono::steady_clock::now();
    auto message = message_of(file());
    auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(check_of(file()), "size") << message;
    // Stopping at the declared size means inflating about 1 MiB, not 200.
    EXPECT_LT(elapsed, std::chrono::seconds(2));
}

TEST_F(FwupArchive, RefusesAnOversizedMetaConf) {
    std::vector<Resource> resources = {{"rootfs.img", pattern(5000, 1)}};
    auto meta = meta_conf_for(resources, "# " + std::string(4000, 'x') + "\n");
    firmware(meta, resources).write(file());
    VerifyLimits limits;
    limits.max_meta_conf = 1024;
    EXPECT_EQ(check_of(file(), limits), "size");
    EXPECT_EQ(check_of(file()), "");
}

TEST_F(FwupArchive, RefusesTooManyEntries) {
    std::vector<Resource> resources = {{"a", "1"}, {"b", "2"}, {"c", "3"}};
    firmware(meta_conf_for(resources), resources).write(file());
    VerifyLimits limits;
    limits.max_entries = 4;
    EXPECT_EQ(check_of(file(), limits), "size");
    limits.max_entries = 5;
    EXPECT_EQ(check_of(file(), limits), "");
}

TEST_F(FwupArchive, RefusesAnArchiveOverTheSizeLimit) {
    std::vector<Resource> resources = {{"rootfs.img", pattern(5000, 1)}};
    firmware(meta_conf_for(resources), resources).write(file());
    VerifyLimits limits;
    limits.max_archive_size = 1000;
    EXPECT_EQ(check_of(file(), limits), "size");
}

TEST_F(FwupArchive, RefusesAnEmptyFile) {
    write_file(file(), "");
    EXPECT_EQ(check_of(file()), "zip");
}

TEST_F(FwupArchive, RefusesRandomBytes) {
    for (unsigned seed = 0; seed < 20; ++seed) {
        std::mt19937 random(seed);
        std::string data(static_cast<std::size_t>(1 + random() % 70000), '\0');
        for (auto& c : data) {
            c = static_cast<char>(random());
        }
        if (seed % 2 == 0) {
            data.replace(0, 4, "PK\x03\x04");
        }
        write_file(file(), data);
        EXPECT_EQ(check_of(file()), "zip") << seed;
    }
}

TEST_F(FwupArchive, RefusesTrailingBytes) {
    std::vector<Resource> resources = {{"rootfs.img", pattern(5000, 1)}};
    firmware(meta_conf_for(resources), resources).write(file());
    write_file(file(), read_file(file()) + "trailing");
    EXPECT_EQ(check_of(file()), "zip");
}

TEST_F(FwupArchive, RefusesATruncatedArchive) {
    std::vector<Resource> resources = {{"rootfs.img", pattern(50000, 1)}};
    firmware(meta_conf_for(resources), resources).write(file());
    auto data = read_file(file());
    write_file(file(), data.substr(0, data.size() / 2));
    EXPECT_EQ(check_of(file()), "zip");
}

TEST_F(FwupArchive, RefusesAnEntryHiddenFromTheCentralDirectory) {
    // fwup on the device streams local headers; libzip reads the central directory. An entry
    // only the stream sees must not pass.
    auto path = with_extra_entry("data/hidden.bin");
    auto data = read_file(path);
    auto record = data.rfind("PK\x01\x02");
    ASSERT_EQ(data.compare(record + 46, 15, "data/hidden.bin"), 0);
    auto end = data.rfind("PK\x05\x06");
    auto length = end - record;
    data.erase(record, length);
    end -= length;
    for (std::size_t field : {8U, 10U}) {
        data[end + field] = static_cast<char>(data[end + field] - 1);
    }
    put_le32(data, end + 12, get_le32(data, end + 12) - static_cast<std::uint32_t>(length));
    write_file(path, data);
    EXPECT_EQ(check_of(path), "layout");
}

TEST_F(FwupArchive, RefusesEntriesSharingData) {
    // Two central records pointing at one local header, the overlapping-entries bomb.
    std::vector<Resource> resources = {{"a.img", pattern(5000, 1)}, {"b.img", pattern(5000, 1)}};
    firmware(meta_conf_for(resources), resources).write(file());
    auto data = read_file(file());
    std::vector<std::size_t> records;
    for (auto at = data.find("PK\x01\x02"); at != std::string::npos;
         at = data.find("PK\x01\x02", at + 1)) {
        records.push_back(at);
    }
    ASSERT_EQ(records.size(), 4U);
    put_le32(data, records[3] + 42, get_le32(data, records[2] + 42));
    write_file(file(), data);
    EXPECT_EQ(check_of(file()), "layout");
}

TEST_F(FwupArchive, RefusesASignatureOfTheWrongLength) {
    std::vector<Resource> resources = {{"rootfs.img", pattern(5000, 1)}};
    auto meta = meta_conf_for(resources);
    ArchiveBuilder()
        .add("meta.conf.ed25519", sign(meta).substr(0, 63))
        .add("meta.conf", meta)
        .add("data/rootfs.img", resources[0].data)
        .write(file());
    EXPECT_EQ(check_of(file()), "signature");
}

TEST_F(FwupArchive, RefusesUnsignedAndUnknownKeys) {
    std::vector<Resource> resources = {{"rootfs.img", pattern(5000, 1)}};
    auto meta = meta_conf_for(resources);
    firmware(meta, resources, false).write(file("unsigned.fw"));
    EXPECT_EQ(message_of(file("unsigned.fw")), "unsigned");
    EXPECT_EQ(check_of(file("unsigned.fw")), "signature");
    EXPECT_EQ(inspect_firmware(file("unsigned.fw")).product, "demo");

    firmware(meta, resources).write(file("signed.fw"));
    std::array<PublicKey, 1> other = {key_file("other.pub")};
    EXPECT_EQ(failure_message([&] { verify_firmware(file("signed.fw"), other); }),
              "signed by an unknown key");
    EXPECT_EQ(failed_check([&] { verify_firmware(file("signed.fw"), {}); }), "signature");
}

TEST_F(FwupArchive, RefusesASignatureOverOtherBytes) {
    std::vector<Resource> resources = {{"rootfs.img", pattern(5000, 1)}};
    auto meta = meta_conf_for(resources);
    ArchiveBuilder()
        .add("meta.conf.ed25519", sign(meta + " "))
        .add("meta.conf", meta)
        .add("data/rootfs.img", resources[0].data)
        .write(file());
    EXPECT_EQ(message_of(file()), "signed by an unknown key");
}

TEST_F(FwupArchive, RefusesMetaConfAfterData) {
    std::vector<Resource> resources = {{"rootfs.img", pattern(5000, 1)}};
    auto meta = meta_conf_for(resources);
    ArchiveBuilder()
        .add("meta.conf.ed25519", sign(meta))
        .add("data/rootfs.img", resources[0].data)
        .add("meta.conf", meta)
        .write(file("late-meta.fw"));
    EXPECT_EQ(check_of(file("late-meta.fw")), "layout");

    ArchiveBuilder()
        .add("meta.conf", meta)
        .add("meta.conf.ed25519", sign(meta))
        .add("data/rootfs.img", resources[0].data)
        .write(file("late-signature.fw"));
    EXPECT_EQ(check_of(file("late-signature.fw")), "layout");

    ArchiveBuilder().add("data/rootfs.img", resources[0].data).write(file("no-meta.fw"));
    EXPECT_EQ(check_of(file("no-meta.fw")), "layout");
}

TEST_F(FwupArchive, RefusesMissingMetadata) {
    std::vector<Resource> resources = {{"rootfs.img", pattern(5000, 1)}};
    auto meta = meta_conf_for(resources);
    auto without = meta;
    without.erase(without.find("meta-platform=rpi4\n"), std::string("meta-platform=rpi4\n").size());
    firmware(without, resources).write(file());
    EXPECT_EQ(check_of(file()), "metadata");
    EXPECT_NE(message_of(file()).find("meta-platform"), std::string::npos);
}

TEST_F(FwupArchive, RefusesUnparsableMetaConf) {
    std::vector<Resource> resources = {{"rootfs.img", pattern(5000, 1)}};
    auto meta = meta_conf_for(resources) + "task \"broken\" {\n";
    firmware(meta, resources).write(file());
    EXPECT_EQ(check_of(file()), "metadata");
}

// ---------------------------------------------------------------------------------------------
// meta.conf, the libconfuse text.

TEST(FwupMetaConf, ParsesTheFixtureText) {
    // The fixture's own meta.conf, as the archive stores it.
    auto meta = inspect_firmware(fixtures() / "demo-1.0.0.fw").meta_conf;
    auto conf = parse_meta_conf(meta);
    EXPECT_EQ(conf.get("meta-product"), "demo");
    EXPECT_EQ(conf.get("meta-description"), "Demo firmware 1.0.0 for tests");
    EXPECT_EQ(conf.get("meta-uuid"), "b880ed2c-f90d-5c40-79b0-4fef802439b4");
    EXPECT_EQ(conf.get("meta-creation-date"), "");
    ASSERT_EQ(conf.resources.size(), 1U);
    EXPECT_EQ(conf.resources[0].name, "rootfs.img");
    EXPECT_EQ(conf.resources[0].data_size, 262144U);
    EXPECT_EQ(conf.resources[0].blake2b_256,
              "7dc827311a349b1b03b16392da013a0dacb63020e856a53995cb0fc8b7bb0cc8");
}

TEST(FwupMetaConf, HandlesLibconfuseSyntax) {
    auto conf = parse_meta_conf(
        "# a comment\n"
        "// another\n"
        "/* a block\n comment */\n"
        "meta-product = \"tab\\there \\\"q\\\" \\x41\\101 \\\n"
        "continued\"\n"
        "meta-version = '1.0.0'   meta-platform=rpi4 # trailing\n"
        "meta-author = \"${FWUP_META_UUID}\"\n"
        "meta-misc = \"${NOT_SET:-fallback}${NOT_SET}\"\n"
        "meta-unknown-thing = {1, 2, 3}\n"
        "define(FOO, \"bar\")\n"
        "require-fwup-version = \"1.0.0\"\n"
        "mbr mbr-a { partition 0 { block-offset = 63 type = 0xc boot = true } }\n"
        "file-resource \"a\" { length = 0x10 blake2b-256 = x }\n"
        "file-resource b { length = {010, 5, 3} length += {7} }\n"
        "file-resource \"c\" { }\n"
        "uboot-environment uboot-env { block-offset = 2048 block-count = 16 }\n"
        "task complete {\n"
        "  require-partition-offset(0, 1024)\n"
        "  on-init { funlist = {\"2\", \"mbr_write\", \"mbr-a\"} }\n"
        "  on-resource a { funlist = {2, raw_write, 0,} }\n"
        "  on-finish { }\n"
        "}\n");
    EXPECT_EQ(conf.get("meta-product"), "tab\there \"q\" AA continued");
    EXPECT_EQ(conf.get("meta-version"), "1.0.0");
    EXPECT_EQ(conf.get("meta-platform"), "rpi4");
    EXPECT_EQ(conf.get("meta-author"), conf.get("meta-uuid"));
    EXPECT_EQ(conf.get("meta-misc"), "fallback");
    EXPECT_EQ(conf.meta.count("meta-unknown-thing"), 0U);
    ASSERT_EQ(conf.resources.size(), 3U);
    EXPECT_EQ(conf.resources[0].data_size, 16U);
    EXPECT_EQ(conf.resources[0].blake2b_256, "x");
    EXPECT_EQ(conf.resources[1].name, "b");
    EXPECT_EQ(conf.resources[1].length, (std::vector<std::uint64_t>{8, 5, 3, 7}));
    EXPECT_EQ(conf.resources[1].data_size, 11U);
    EXPECT_EQ(conf.resources[2].data_size, 0U);
}

TEST(FwupMetaConf, ParsingStopsAtANulByte) {
    std::string text("meta-product=demo\n", 18);
    text += std::string("\0garbage {{{", 12);
    auto conf = parse_meta_conf(text);
    EXPECT_EQ(conf.get("meta-product"), "demo");
    EXPECT_EQ(conf.get("meta-uuid"), fwup_meta_uuid(text));
}

TEST(FwupMetaConf, RefusesWhatLibconfuseOrFwupRefuses) {
    for (const std::string text : {
             "meta-product = \"unterminated\n",
             "meta-product = 'unterminated\n",
             "meta-product = \"bad \\9 escape\"\n",
             "meta-product = \"bad \\777 escape\"\n",
             "task a {\n",
             "}\n",
             "meta-product\n",
             "meta-product = {a, b}\n",
             "meta-product += a\n",
             "meta-product x { }\n",
             "meta-uuid = \"00000000-0000-0000-0000-000000000000\"\n",
             "file-resource = x\n",
             "file-resource { }\n",
             "file-resource a { length = -1 }\n",
             "file-resource a { length = 12x }\n",
             "file-resource a { length = 99999999999999999999 }\n",
             "file-resource a { } file-resource a { }\n",
             "file-resource a { blake2b-256 = {a} }\n",
             "a = {1 2}\n",
             "f(a b)\n",
             "x y z\n",
             "= 1\n",
         }) {
        EXPECT_THROW(parse_meta_conf(text), MetaConfError) << text;
    }
}

TEST(FwupMetaConf, SurvivesDeepNesting) {
    std::string deep;
    for (int i = 0; i < 100000; ++i) {
        deep += "a {";
    }
    EXPECT_THROW(parse_meta_conf(deep), MetaConfError);
}

TEST(FwupMetaConf, ComputesFwupsUuid) {
    auto meta = inspect_firmware(fixtures() / "demo-2.0.0.fw").meta_conf;
    EXPECT_EQ(fwup_meta_uuid(meta), expected()["demo-2.0.0.fw"]["metadata"]["meta-uuid"]);
}

// ---------------------------------------------------------------------------------------------
// Keys and checksums.

TEST(FwupPublicKey, DecodesFwupKeyFiles) {
    auto text = read_file(fixtures() / "signing.pub");
    auto key = parse_public_key(text);
    ASSERT_TRUE(key);
    EXPECT_EQ(parse_public_key(" " + text + "\n"), key);
    EXPECT_NE(parse_public_key(read_file(fixtures() / "other.pub")), key);
}

TEST(FwupPublicKey, RefusesWhatIsNotA32ByteKey) {
    auto text = read_file(fixtures() / "signing.pub");
    EXPECT_FALSE(parse_public_key(""));
    EXPECT_FALSE(parse_public_key("   \n"));
    EXPECT_FALSE(parse_public_key(text.substr(0, 43)));
    EXPECT_FALSE(parse_public_key(text + "AAAA"));
    EXPECT_FALSE(parse_public_key("not base64 at all, not base64 at all, not b="));
    // base64 of 31 and 33 bytes.
    EXPECT_FALSE(parse_public_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="));
    EXPECT_FALSE(parse_public_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="));
    // The private key file is 64 bytes.
    EXPECT_FALSE(parse_public_key(read_file(fixtures() / "signing.priv")));
    // 32 zero bytes: a small-order point that verifies nothing.
    EXPECT_FALSE(parse_public_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
}

TEST(FwupChecksums, HashesChunksOfAnySize) {
    auto path =
        fs::temp_directory_path() / ("otahub-chunks-" + std::to_string(std::random_device()()));
    auto data = pattern(10000, 9);
    write_file(path, data);
    for (std::uint64_t chunk : {1ULL, 999ULL, 1000ULL, 4096ULL, 10000ULL, 1ULL << 20}) {
        auto digest = digest_file(path, chunk);
        EXPECT_EQ(digest.size, data.size());
        EXPECT_EQ(digest.sha256, sha256_upper(data));
        ASSERT_EQ(digest.partial_sha256.size(), (data.size() + chunk - 1) / chunk) << chunk;
        for (std::size_t i = 0; i < digest.partial_sha256.size(); ++i) {
            EXPECT_EQ(digest.partial_sha256[i], sha256_upper(std::string_view(data).substr(
                                                    i * chunk, static_cast<std::size_t>(chunk))));
        }
    }
    write_file(path, "");
    auto empty = digest_file(path);
    EXPECT_EQ(empty.size, 0U);
    EXPECT_EQ(empty.sha256, sha256_upper(""));
    EXPECT_TRUE(empty.partial_sha256.empty());
    fs::remove(path);
    EXPECT_THROW(digest_file(path), std::system_error);
}

}  // namespace
}  // namespace otahub::firmware
