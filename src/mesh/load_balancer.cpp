#include "fnbus/mesh/load_balancer.hpp"

namespace fnbus::mesh {
namespace {

// The n-th replica of `mask`; without a loop when the set is 0..count-1
// (every replica available, the common case).
std::size_t nth(ReplicaMask mask, std::size_t n) noexcept {
  if ((mask & (mask + 1)) == 0) return n;  // a prefix: bit n is the n-th
  return nth_replica(mask, n);
}

// floor(bits * bound / 2^32): uniform in [0, bound) for bits uniform in
// [0, 2^32) (Lemire's multiply-shift, without the rejection step).
std::size_t scale(std::uint64_t bits, std::size_t bound) noexcept {
  return static_cast<std::size_t>((bits * bound) >> 32);
}

}  // namespace

std::string_view to_string(Balancing balancing) noexcept {
  switch (balancing) {
    case Balancing::kRoundRobin:
      return "round_robin";
    case Balancing::kLeastOutstanding:
      return "least_outstanding";
  }
  return "unknown";
}

std::optional<std::size_t> RoundRobinBalancer::pick(
    const PickContext& context) noexcept {
  const std::size_t available = count(context.available);
  if (available == 0) return std::nullopt;
  // relaxed: see next_.
  const std::uint64_t k = next_.fetch_add(1, std::memory_order_relaxed);
  return nth(context.available, static_cast<std::size_t>(k % available));
}

std::optional<std::size_t> LeastOutstandingBalancer::pick(
    const PickContext& context) noexcept {
  const std::size_t available = count(context.available);
  if (available == 0) return std::nullopt;
  if (available == 1) {
    return static_cast<std::size_t>(std::countr_zero(context.available));
  }
  const std::uint64_t bits = context.random.next();
  const std::size_t a = scale(bits >> 32, available);
  std::size_t b = scale(bits & 0xffff'ffffU, available - 1);
  if (b >= a) ++b;  // distinct from a, and still uniform over the others
  const std::size_t first = nth(context.available, a);
  const std::size_t second = nth(context.available, b);
  return context.loads.in_flight(second) < context.loads.in_flight(first)
             ? second
             : first;
}

std::unique_ptr<LoadBalancer> make_balancer(Balancing balancing) {
  if (balancing == Balancing::kRoundRobin) {
    return std::make_unique<RoundRobinBalancer>();
  }
  return std::make_unique<LeastOutstandingBalancer>();
}

}  // namespace fnbus::mesh
