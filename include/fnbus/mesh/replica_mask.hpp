#pragma once

// A set of replicas of one function as one 64-bit word: bit i set means
// replica i is in the set. The outlier detector keeps the set of
// available (not ejected) replicas in one atomic word of this kind, so
// that every pick reads a consistent snapshot of it with a single load;
// hence at most kMaxReplicas replicas per function.

#include <bit>
#include <cstddef>
#include <cstdint>

namespace fnbus::mesh {

using ReplicaMask = std::uint64_t;

// The most replicas one function may have: the bits of a ReplicaMask.
inline constexpr std::size_t kMaxReplicas = 64;

// The set {0, 1, ..., replicas - 1}; replicas <= kMaxReplicas.
[[nodiscard]] constexpr ReplicaMask all_replicas(
    std::size_t replicas) noexcept {
  return replicas >= kMaxReplicas ? ~ReplicaMask{0}
                                  : (ReplicaMask{1} << replicas) - 1;
}

[[nodiscard]] constexpr ReplicaMask replica_bit(std::size_t replica) noexcept {
  return ReplicaMask{1} << replica;
}

[[nodiscard]] constexpr std::size_t count(ReplicaMask mask) noexcept {
  return static_cast<std::size_t>(std::popcount(mask));
}

// The index of the n-th (0-based, from the lowest) replica in `mask`.
// Precondition: n < count(mask).
[[nodiscard]] constexpr std::size_t nth_replica(ReplicaMask mask,
                                                std::size_t n) noexcept {
  for (; n > 0; --n) mask &= mask - 1;  // drops the lowest set bit
  return static_cast<std::size_t>(std::countr_zero(mask));
}

}  // namespace fnbus::mesh
