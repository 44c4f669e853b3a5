#pragma once

#include <memory>

#include "server/app/config.hpp"
#include "server/domain/storage/firmware_store.hpp"

namespace otahub::api {

/// The firmware store of this hub: a local directory `OTAHUB_DATA_DIR/firmware` (objects
/// `<org_id>/<uuid>.fw`). Uploads are spooled to `OTAHUB_DATA_DIR/tmp`, on the same file system,
/// so publishing is a hard link and a rename.
std::shared_ptr<storage::FirmwareStore> open_firmware_store(const Config& config);

}  // namespace otahub::api
