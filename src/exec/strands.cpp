#include "fnbus/exec/strands.hpp"

#include <bit>

#include "fmt/format.h"

namespace fnbus::detail {
namespace {

constexpr std::size_t kMaxStrands = std::size_t{1} << 16;
constexpr std::size_t kMaxCapacityPerStrand = std::size_t{1} << 25;

}  // namespace

absl::Status check_strands_options(const StrandsOptions& options) {
  if (options.strands < 1 || options.strands > kMaxStrands ||
      !std::has_single_bit(options.strands)) {
    return absl::InvalidArgumentError(fmt::format(
        "StrandsOptions::strands is {}; use a power of two from 1 to {} "
        "(1024 is the default)",
        options.strands, kMaxStrands));
  }
  if (options.capacity_per_strand < 1 ||
      options.capacity_per_strand > kMaxCapacityPerStrand) {
    return absl::InvalidArgumentError(
        fmt::format("StrandsOptions::capacity_per_strand is {}; use 1 to {}",
                    options.capacity_per_strand, kMaxCapacityPerStrand));
  }
  return absl::OkStatus();
}

std::size_t strand_index(std::uint64_t hash, std::size_t strands) noexcept {
  // splitmix64's finaliser: consecutive ids (1, 2, 3...) and string hashes
  // alike spread over the table; the mask keeps the low bits.
  hash ^= hash >> 30;
  hash *= 0xbf58476d1ce4e5b9ULL;
  hash ^= hash >> 27;
  hash *= 0x94d049bb133111ebULL;
  hash ^= hash >> 31;
  return static_cast<std::size_t>(hash) & (strands - 1);
}

}  // namespace fnbus::detail
