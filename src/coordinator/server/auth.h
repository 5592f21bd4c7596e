// API-key checks for `serve --api-key` (the peer's rule: "Authorization: Bearer KEY", or the
// key alone in "X-Api-Key"), in constant time: the comparison touches every byte of both the
// candidate and each configured key whatever they hold, so response timing tells an attacker
// neither a key's length nor how long a matching prefix is.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace expertmesh::coordinator::server {

// True when a and b are equal. Time depends only on max(a.size(), b.size()), not on where or
// whether they differ.
bool constant_time_equal(std::string_view a, std::string_view b);

// True when `keys` is empty (no authentication), or when the Authorization header is
// "Bearer <k>" or the X-Api-Key header is "<k>" for some configured k. Every key is compared
// (no early exit on the first match).
bool api_key_accepted(const std::vector<std::string>& keys, std::string_view authorization, std::string_view x_api_key);

// Keys of --api-key-file: one per line, surrounding whitespace trimmed, empty lines skipped
// (the peer's format). Errors name the file; a file with no key is an error.
Result<std::vector<std::string>> read_api_key_file(const std::string& path);

}  // namespace expertmesh::coordinator::server
