#pragma once

// OrderingKey: what PublishOptions::key holds -- the key whose events a
// function handles one at a time, in publish order (see exec/strands.hpp).

#include <concepts>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace fnbus {

// A per-key ordering key: an integer or a string (an order id, a user
// id), kept as a 64-bit hash. Keys are compared by that hash only, and
// events are serialised by the strand the hash picks (Strands::index_of):
// two keys with one hash, or whose hashes pick one strand, are ordered
// together -- never the reverse (one key is never split).
//
// Thread safety: a value; any thread.
class OrderingKey {
 public:
  // Integers, e.g. `.key = order.id` (bool is not a key).
  template <std::integral I>
  requires(!std::same_as<I, bool>) constexpr OrderingKey(I value) noexcept
      : hash_(static_cast<std::uint64_t>(value)) {}
  // Strings, hashed with std::hash<std::string_view> (so one process
  // agrees with itself; the hash is not stable across builds).
  OrderingKey(std::string_view value) noexcept
      : hash_(std::hash<std::string_view>{}(value)) {}
  OrderingKey(const std::string& value) noexcept
      : OrderingKey(std::string_view(value)) {}
  OrderingKey(const char* value) noexcept
      : OrderingKey(std::string_view(value)) {}

  // The key's hash: the integer itself, or the string's hash.
  [[nodiscard]] constexpr std::uint64_t hash() const noexcept { return hash_; }

  friend constexpr bool operator==(OrderingKey, OrderingKey) = default;

 private:
  std::uint64_t hash_;
};

}  // namespace fnbus
