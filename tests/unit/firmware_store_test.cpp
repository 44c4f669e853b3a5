#include "server/domain/storage/firmware_store.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

namespace otahub::storage {
namespace {

namespace fs = std::filesystem;

class FirmwareStoreTest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ =
            fs::temp_directory_path() / ("otahub-store-" + std::to_string(std::random_device{}()));
        fs::create_directories(dir_ / "tmp");
    }
    void TearDown() override { fs::remove_all(dir_); }

    fs::path source(const std::string& name, const std::string& content) {
        auto path = dir_ / "tmp" / name;
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out << content;
        return path;
    }

    fs::path dir_;
};

std::string read_all(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::size_t entries(const fs::path& dir) {
    return static_cast<std::size_t>(
        std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

TEST(FirmwareKey, IsNerveshubsLayout) {
    EXPECT_EQ(firmware_key(42, "b880ed2c-f90d-5c40-79b0-4fef802439b4"),
              "42/b880ed2c-f90d-5c40-79b0-4fef802439b4.fw");
}

TEST(FirmwareKey, ValidatesUuids) {
    EXPECT_TRUE(valid_firmware_uuid("b880ed2c-f90d-5c40-79b0-4fef802439b4"));
    EXPECT_FALSE(valid_firmware_uuid("B880ED2C-F90D-5C40-79B0-4FEF802439B4"));
    EXPECT_FALSE(valid_firmware_uuid("b880ed2c-f90d-5c40-79b0-4fef802439b"));
    EXPECT_FALSE(valid_firmware_uuid("b880ed2c-f90d-5c40-79b0x4fef802439b4"));
    EXPECT_FALSE(valid_firmware_uuid("../../../../etc/passwd/../../../../x"));
    EXPECT_FALSE(valid_firmware_uuid(""));
}

TEST_F(FirmwareStoreTest, PutPublishesAtomicallyAndKeepsTheSource) {
    LocalFirmwareStore store{dir_ / "firmware"};
    auto src = source("upload", "version one");
    auto object = store.put("7/a.fw", src);
    auto path = store.local_path("7/a.fw");
    ASSERT_TRUE(path);
    EXPECT_EQ(*path, dir_ / "firmware" / "7" / "a.fw");
    EXPECT_EQ(read_all(*path), "version one");
    EXPECT_TRUE(fs::exists(src));
    // No staging files are left next to the object.
    EXPECT_EQ(entries(dir_ / "firmware" / "7"), 1U);

    // Replacing: a reader holding the old file keeps reading the old bytes.
    std::ifstream old_reader(*path, std::ios::binary);
    auto replacement = store.put("7/a.fw", source("upload2", "version two"));
    EXPECT_NE(replacement.inode, object.inode);
    EXPECT_EQ(read_all(*path), "version two");
    std::string old{std::istreambuf_iterator<char>(old_reader), std::istreambuf_iterator<char>()};
    EXPECT_EQ(old, "version one");
    EXPECT_EQ(entries(dir_ / "firmware" / "7"), 1U);
}

TEST_F(FirmwareStoreTest, PuttingTheSameSourceTwiceLeavesNoStagingFile) {
    LocalFirmwareStore store{dir_ / "firmware"};
    auto src = source("upload", "bytes");
    store.put("1/x.fw", src);
    store.put("1/x.fw", src);
    EXPECT_EQ(entries(dir_ / "firmware" / "1"), 1U);
}

TEST_F(FirmwareStoreTest, RemoveIfSameSparesAReplacement) {
    LocalFirmwareStore store{dir_ / "firmware"};
    auto first = store.put("1/x.fw", source("a", "first"));
    store.put("1/x.fw", source("b", "second"));
    EXPECT_FALSE(store.remove_if_same("1/x.fw", first));
    EXPECT_EQ(read_all(dir_ / "firmware" / "1" / "x.fw"), "second");
    auto third = store.put("1/x.fw", source("c", "third"));
    EXPECT_TRUE(store.remove_if_same("1/x.fw", third));
    EXPECT_FALSE(fs::exists(dir_ / "firmware" / "1" / "x.fw"));
    EXPECT_FALSE(store.remove("1/x.fw"));
    EXPECT_FALSE(store.remove_if_same("1/x.fw", third));
}

TEST_F(FirmwareStoreTest, RefusesKeysThatLeaveTheRoot) {
    LocalFirmwareStore store{dir_ / "firmware"};
    auto src = source("upload", "x");
    for (const char* key : {"../escape.fw", "/abs.fw", "1/../../x.fw", "", "./x"}) {
        EXPECT_THROW(store.put(key, src), std::invalid_argument) << key;
        EXPECT_THROW(store.remove(key), std::invalid_argument) << key;
    }
    EXPECT_FALSE(fs::exists(dir_ / "escape.fw"));
}

TEST_F(FirmwareStoreTest, MissingSourceIsAnIoError) {
    LocalFirmwareStore store{dir_ / "firmware"};
    EXPECT_THROW(store.put("1/x.fw", dir_ / "missing"), std::system_error);
    EXPECT_EQ(entries(dir_ / "firmware" / "1"), 0U);
}

TEST_F(FirmwareStoreTest, ScopedFileRemovesUnlessReleased) {
    auto a = source("a", "x");
    auto b = source("b", "y");
    {
        ScopedFile scoped{a};
        ScopedFile kept{b};
        kept.release();
        ScopedFile moved = std::move(scoped);
        EXPECT_TRUE(scoped.path().empty());
        EXPECT_EQ(moved.path(), a);
    }
    EXPECT_FALSE(fs::exists(a));
    EXPECT_TRUE(fs::exists(b));
}

}  // namespace
}  // namespace otahub::storage
