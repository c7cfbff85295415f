#pragma once

// Which replica of a function gets the next call (the shape of Envoy's
// LoadBalancer::chooseHost): a pick over the replicas available now.
//
//   auto balancer = fnbus::mesh::make_balancer(Balancing::kLeastOutstanding);
//   std::optional<std::size_t> replica = balancer->pick(
//       {.available = detector.available(), .loads = loads, .random = random});
//
// Two balancers:
//   kRoundRobin:       each available replica in turn (one shared counter);
//                      blind to how long calls take.
//   kLeastOutstanding: power of two choices (Mitzenmacher, "The Power of
//                      Two Choices in Randomized Load Balancing", 2001; as
//                      in Envoy's least_request_lb): two distinct random
//                      available replicas, the one with fewer calls in
//                      flight wins, a tie goes to the first drawn. A slow
//                      replica keeps its calls longer, so it is picked less.
//
// One balancer per function, shared by every worker: round-robin's only
// state is an atomic counter, and the Random is the caller's (one per
// worker, so no generator is shared and a seed replays every draw).
//
// Thread safety: pick() from any thread, lock-free; never allocates.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "fnbus/detail/config.hpp"
#include "fnbus/mesh/replica_loads.hpp"
#include "fnbus/mesh/replica_mask.hpp"
#include "fnbus/random.hpp"

namespace fnbus::mesh {

enum class Balancing { kRoundRobin, kLeastOutstanding };

std::string_view to_string(Balancing balancing) noexcept;

// What one pick chooses from.
struct PickContext {
  // The replicas that may be picked: a snapshot (OutlierDetector's
  // available(), less any the caller avoids).
  ReplicaMask available = 0;
  // Calls in flight per replica (read by kLeastOutstanding).
  const ReplicaLoads& loads;
  // The caller's own generator (drawn by kLeastOutstanding).
  Random& random;
};

class LoadBalancer {
 public:
  virtual ~LoadBalancer() = default;

  // A replica in context.available; nullopt when that set is empty.
  // Thread safety: any thread, lock-free; never allocates.
  [[nodiscard]] virtual std::optional<std::size_t> pick(
      const PickContext& context) noexcept = 0;
  [[nodiscard]] virtual Balancing balancing() const noexcept = 0;
};

// Pick k (k = 0, 1, 2, ... counted across all callers) is the
// (k mod n)-th available replica, n the available count: with every
// replica available, 0, 1, ..., N-1, 0, ...; an ejected one is skipped.
// Not guaranteed: strict turns while the available set changes, or when
// picks of several threads interleave (each gets a distinct k).
class RoundRobinBalancer final : public LoadBalancer {
 public:
  [[nodiscard]] std::optional<std::size_t> pick(
      const PickContext& context) noexcept override;
  [[nodiscard]] Balancing balancing() const noexcept override {
    return Balancing::kRoundRobin;
  }

 private:
  // The next pick's k. Relaxed: each caller needs a distinct k, which the
  // read-modify-write gives; nothing is published through it. Alone on its
  // line: every pick writes it.
  alignas(detail::kCacheLineSize) std::atomic<std::uint64_t> next_{0};
};

// Power of two choices over ReplicaLoads::in_flight(). The two draws come
// from one 64-bit number (32 bits each, multiply-shift: a bias below
// 2^-26, which no balance can show). With one replica available it is
// picked without a draw.
class LeastOutstandingBalancer final : public LoadBalancer {
 public:
  [[nodiscard]] std::optional<std::size_t> pick(
      const PickContext& context) noexcept override;
  [[nodiscard]] Balancing balancing() const noexcept override {
    return Balancing::kLeastOutstanding;
  }
};

// A new balancer of the given kind (an unknown value gives
// kLeastOutstanding; ReplicaSet::Create refuses one).
[[nodiscard]] std::unique_ptr<LoadBalancer> make_balancer(Balancing balancing);

}  // namespace fnbus::mesh
