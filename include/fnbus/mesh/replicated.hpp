#pragma once

// A function with N replicas of a stateful handler -- each built by a
// factory, e.g. each with its own connection -- as one handler for
// EventBus::subscribe() or serve(). Each event goes to one replica picked
// by the ReplicaSet's balancer (round-robin, or power-of-two-choices by
// calls in flight); a replica failing `consecutive_failures` calls in a
// row is ejected for a cool-down (at most max_ejected_share of them), and
// its events go to the others. The function's FunctionOptions (retries,
// breaker, deadline, fallback) wrap the replicated handler as a whole: a
// retry is a new pick (by then the failing replica may be ejected).
//
//   auto gateway = fnbus::mesh::Replicated<ChargeCard, PaymentClient>::Create(
//       3, [](std::size_t i) { return PaymentClient(endpoint(i)); },
//       bus->clock());
//   auto charging = bus->subscribe(*gateway, {.name = "charge"});
//
// A replica is called as instance(event) or instance(event, context) and
// returns void, absl::Status, absl::StatusOr<R> or R; the handler returns
// absl::Status (void, Status) or absl::StatusOr<R> (StatusOr<R>, R), so a
// replicated function can serve() calls. An error Status or a throw is a
// failure of its replica (the throw is passed on).
//
// Serialised replicas (the default): a replica runs one call at a time
// (an instance owning a connection need not be thread-safe); a call
// picked for a busy replica waits for it, holding its worker -- P2C picks
// the replica with fewer calls in flight, so that is rare while others
// are free. ReplicatedOptions::serialize = false lets a thread-safe
// instance take concurrent calls.
//
// Thread safety: the handler is called from any thread. Copies share one
// set of replicas.

#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/event.hpp"
#include "fnbus/mesh/replica_set.hpp"
#include "fnbus/random.hpp"

namespace fnbus::mesh {

struct ReplicatedOptions {
  // Balancing and outlier ejection (validated by ReplicaSet::Create).
  ReplicaSetOptions replicas = {};
  // One call at a time per replica (see the file comment).
  bool serialize = true;
};

}  // namespace fnbus::mesh

namespace fnbus::detail {
template <typename T>
struct IsStatusOr : std::false_type {};
template <typename T>
struct IsStatusOr<absl::StatusOr<T>> : std::true_type {};

// What a replica returns, and what the replicated handler returns for it.
template <typename Instance, typename E>
struct ReplicaResult {
  static constexpr bool kTakesContext =
      std::is_invocable_v<Instance&, const E&, Context&>;
  using Raw = std::remove_cvref_t<typename std::conditional_t<
      kTakesContext, std::invoke_result<Instance&, const E&, Context&>,
      std::invoke_result<Instance&, const E&>>::type>;
  using Handler = std::conditional_t<
      std::is_void_v<Raw> || std::is_same_v<Raw, absl::Status>, absl::Status,
      std::conditional_t<IsStatusOr<Raw>::value, Raw, absl::StatusOr<Raw>>>;
};

// A failure's status, for the lease; OK for success.
template <typename R>
absl::Status status_of(const R& result) {
  if constexpr (std::is_same_v<R, absl::Status>) {
    return result;
  } else {
    return result.status();
  }
}
}  // namespace fnbus::detail

namespace fnbus::mesh {

template <Event E, typename Instance>
class Replicated {
 public:
  using Result = typename fnbus::detail::ReplicaResult<Instance, E>::Handler;

  // `replicas` instances, instance i made by factory(i) (in order, on the
  // calling thread). `clock` (the bus's) times ejection cool-downs and
  // must outlive the handler. InvalidArgument for 0 or more than
  // kMaxReplicas replicas or bad options; what the factory throws is
  // passed on.
  template <typename Factory>
  static absl::StatusOr<Replicated> Create(std::size_t replicas,
                                           Factory&& factory, Clock& clock,
                                           ReplicatedOptions options = {}) {
    static_assert(std::is_invocable_r_v<Instance, Factory&, std::size_t>,
                  "a replica factory is called as factory(std::size_t index) "
                  "and returns the instance");
    absl::StatusOr<std::unique_ptr<ReplicaSet>> set =
        ReplicaSet::Create(replicas, std::move(options.replicas));
    if (!set.ok()) return set.status();
    auto shared =
        std::make_shared<Shared>(clock, *std::move(set), options.serialize);
    shared->instances.reserve(replicas);
    for (std::size_t i = 0; i < replicas; ++i) {
      shared->instances.push_back(std::make_unique<Slot>(factory(i)));
    }
    return Replicated(std::move(shared));
  }

  // Calls one replica with `event`.
  Result operator()(const E& event, Context& context) const {
    Shared& shared = *shared_;
    absl::StatusOr<ReplicaSet::Lease> lease =
        shared.set->pick(shared.clock.now(), fnbus::detail::thread_random());
    if (!lease.ok()) return Result(lease.status());
    Slot& slot = *shared.instances[lease->replica()];
    try {
      Result result = shared.serialize ? call_locked(slot, event, context)
                                       : call(slot, event, context);
      if (fnbus::detail::status_of(result).ok()) {
        lease->on_success();
      } else {
        lease->on_failure(shared.clock.now());
      }
      return result;
    } catch (...) {
      lease->on_failure(shared.clock.now());
      throw;
    }
  }

  // The replicas (gauges, ejections).
  [[nodiscard]] const ReplicaSet& replicas() const noexcept {
    return *shared_->set;
  }
  // Replica `i`'s instance (e.g. to inspect it in a test). Precondition:
  // i < replicas().size(); not while it runs.
  [[nodiscard]] Instance& instance(std::size_t i) const {
    return shared_->instances.at(i)->instance;
  }

 private:
  struct Slot {
    explicit Slot(Instance made) : instance(std::move(made)) {}
    Instance instance;
    std::mutex mutex;  // held by a call when the replicas are serialised
  };
  struct Shared {
    Shared(Clock& the_clock, std::unique_ptr<ReplicaSet> the_set,
           bool serialise)
        : clock(the_clock), set(std::move(the_set)), serialize(serialise) {}
    Clock& clock;
    std::unique_ptr<ReplicaSet> set;
    const bool serialize;
    std::vector<std::unique_ptr<Slot>> instances;
  };

  explicit Replicated(std::shared_ptr<Shared> shared)
      : shared_(std::move(shared)) {}

  static Result call(Slot& slot, const E& event, Context& context) {
    using Traits = fnbus::detail::ReplicaResult<Instance, E>;
    if constexpr (std::is_void_v<typename Traits::Raw>) {
      if constexpr (Traits::kTakesContext) {
        slot.instance(event, context);
      } else {
        slot.instance(event);
      }
      return absl::OkStatus();
    } else if constexpr (Traits::kTakesContext) {
      return Result(slot.instance(event, context));
    } else {
      return Result(slot.instance(event));
    }
  }
  static Result call_locked(Slot& slot, const E& event, Context& context) {
    std::lock_guard lock(slot.mutex);
    return call(slot, event, context);
  }

  std::shared_ptr<Shared> shared_;
};

}  // namespace fnbus::mesh
