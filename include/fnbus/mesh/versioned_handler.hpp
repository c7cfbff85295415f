#pragma once

// A versioned function as a bus handler: a VersionedFunction (a weighted,
// optionally sticky canary split with automatic rollback) together with
// each version's handler, composed into one callable for subscribe() or,
// with a reply type, serve().
//
//   auto orders = fnbus::mesh::VersionedHandler<OrderPlaced>::Create(
//       "v1", pack_v1, {.canary = {.max_failure_rate_margin = 0.05},
//                       .on_rollback = [](const RollbackReport& r) {...}});
//   auto sub = bus->subscribe<OrderPlaced>(*orders, {.name = "pack"});
//   orders->deploy_canary("v2", pack_v2, 0.1);  // 10% of events
//   orders->promote();                          // or rollback()
//
//   // Request/reply: the handlers return absl::StatusOr<Quote>.
//   auto quotes = VersionedHandler<QuoteRequest,
//                                  absl::StatusOr<Quote>>::Create(...);
//   auto service = bus->serve(*quotes);
//
// Each call routes once (on one published table of the split), runs the
// routed version's handler once, and records its outcome (ok or not,
// and its latency read on `clock` before and after the handler) to the
// function's judge, which may roll the canary back by itself: the
// canary leaves the live snapshot before `on_rollback` is called, so no
// call starting after that reaches it. Calls route on an immutable
// snapshot of the split's table and the handlers of its versions, taken
// once per call and replaced after each change (manual: before the
// change returns). A change never loses or repeats a call: one running
// while it is made finishes on the version it was routed to, whose
// handler its snapshot keeps alive, even if that version has left the
// table.
//
// A handler is `Result(const E&, Context&)` or `Result(const E&)`; for
// Result = absl::Status (events) it may also return void, for
// absl::StatusOr<Reply> (requests) a Reply. A call fails when the handler
// returns an error or throws (rethrown, for the bus to count).
//
// VersionedHandler is a handle: copies share one function (subscribe()
// takes a copy; keep another to deploy).
// Thread safety: every method from any thread; the call operator on any
// number of threads. A call takes two short mutexes (the live snapshot's
// and the judge's); the changes are serialised by a third.
// Metrics: stats() has each version's calls and failures by id and label
// (VersionedFunction::Stats); prometheus_text() renders them.

#include <atomic>
#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/event.hpp"
#include "fnbus/mesh/canary_rule.hpp"
#include "fnbus/mesh/version_split.hpp"
#include "fnbus/mesh/versioned_function.hpp"

namespace fnbus::detail {
// 64 uniform bits from a counter value (splitmix64's output function).
[[nodiscard]] std::uint64_t versioned_draw(std::uint64_t counter) noexcept;
// The Status of a call whose key extractor threw (inside a catch block).
[[nodiscard]] absl::Status key_extractor_threw();

template <typename T>
struct IsStdFunction : std::false_type {};
template <typename S>
struct IsStdFunction<std::function<S>> : std::true_type {};
}  // namespace fnbus::detail

namespace fnbus::mesh {

// Prometheus text exposition lines for one versioned function's stats:
// per version (labels function, version = its label, version_id)
// fnbus_version_calls_total and fnbus_version_failures_total; per
// function fnbus_version_changes_total{kind=deploy|promote|rollback|
// automatic_rollback} and the gauge fnbus_version_canary_weight. The
// # HELP / # TYPE lines are included once per call: render one function
// per scrape section, or concatenate and drop the repeats.
[[nodiscard]] std::string prometheus_text(
    std::string_view function, const VersionedFunction::Stats& stats);

template <Event E, typename Result = absl::Status>
requires std::same_as<Result, absl::Status> ||
    std::same_as<Result, absl::StatusOr<typename Result::value_type>>
class VersionedHandler {
 public:
  // One version's handler, as stored.
  using Handler = std::function<Result(const E&, Context&)>;
  // Sticky routing: the key of an event (same key, same version while the
  // table is unchanged). If it throws, the call fails (Internal, saying
  // so) without running any version and without being recorded.
  using KeyOf = std::function<std::string(const E&)>;

  struct Options {
    CanaryOptions canary = {};
    // Hears each automatic rollback, on the thread whose call fired it,
    // after the canary stopped taking calls; must not throw.
    RollbackObserver on_rollback = nullptr;
    // Times the handlers for the latency rule: pass the bus's clock
    // (&bus.clock()); it must outlive this function. Null:
    // SteadyClock::instance().
    Clock* clock = nullptr;
    // Null: a random split (a counter hashed; `seed` offsets it).
    KeyOf key = nullptr;
    std::uint64_t seed = 0;
  };

  // InvalidArgument for an empty label or handler, or bad options.canary.
  template <typename F>
  static absl::StatusOr<VersionedHandler> Create(std::string_view stable_label,
                                                 F&& stable,
                                                 Options options = {}) {
    std::optional<Handler> handler = adapt(std::forward<F>(stable));
    if (!handler) return empty_handler_error("Create");
    auto state = std::make_shared<State>(std::move(options));
    State* raw = state.get();
    absl::StatusOr<std::unique_ptr<VersionedFunction>> fn =
        VersionedFunction::Create(stable_label, state->options.canary,
                                  [raw](const RollbackReport& report) {
                                    // The canary leaves the live snapshot
                                    // before anyone hears.
                                    {
                                      std::lock_guard lock(raw->changes);
                                      raw->refresh();
                                    }
                                    if (raw->options.on_rollback)
                                      raw->options.on_rollback(report);
                                  });
    if (!fn.ok()) return fn.status();
    state->function = *std::move(fn);
    state->handlers.push_back(
        std::make_shared<const Handler>(*std::move(handler)));
    {
      std::lock_guard lock(state->changes);
      state->refresh();
    }
    return VersionedHandler(std::move(state));
  }

  // Deploys `canary` as version `label` with `weight` of the calls (as
  // VersionedFunction::deploy_canary; InvalidArgument for an empty
  // handler). Its handler is live before any call can be routed to it.
  template <typename F>
  absl::StatusOr<VersionId> deploy_canary(std::string_view label, F&& canary,
                                          double weight) {
    std::optional<Handler> handler = adapt(std::forward<F>(canary));
    if (!handler) return empty_handler_error("deploy_canary");
    State& s = *state_;
    std::lock_guard lock(s.changes);
    s.handlers.resize(s.function->split().next_version());
    s.handlers.back() = std::make_shared<const Handler>(*std::move(handler));
    absl::StatusOr<VersionId> id = s.function->deploy_canary(label, weight);
    if (!id.ok()) s.handlers.back() = nullptr;
    s.refresh();
    return id;
  }
  absl::Status set_weight(double weight) {
    return change([&](VersionedFunction& fn) { return fn.set_weight(weight); });
  }
  absl::Status promote() {
    return change([](VersionedFunction& fn) { return fn.promote(); });
  }
  absl::Status rollback() {
    return change([](VersionedFunction& fn) { return fn.rollback(); });
  }

  // The handler: routes `event`, runs the routed version's handler and
  // records the outcome (which may roll the canary back).
  Result operator()(const E& event, Context& context) const {
    const State& s = *state_;
    const std::shared_ptr<const Live> live = s.snapshot();
    Route route;
    if (s.options.key) {
      std::string key;
      try {
        key = s.options.key(event);
      } catch (...) {
        return detail::key_extractor_threw();
      }
      route = live->table.route_key(key);
    } else {
      // Relaxed: the counter only has to give each call its own value.
      route = live->table.route(detail::versioned_draw(
          s.draws.fetch_add(1, std::memory_order_relaxed) + s.options.seed));
    }
    const Handler& handler = route.canary ? *live->canary : *live->stable;
    Clock& clock = *s.options.clock;
    const TimePoint start = clock.now();
    try {
      Result result = handler(event, context);
      s.function->record(route, result.ok(), clock.now() - start);
      return result;
    } catch (...) {
      s.function->record(route, false, clock.now() - start);
      throw;
    }
  }

  // Counters per version (labelled), the table and the changes.
  [[nodiscard]] VersionedFunction::Stats stats() const {
    return state_->function->stats();
  }
  [[nodiscard]] const VersionedFunction& function() const noexcept {
    return *state_->function;
  }

 private:
  // An immutable snapshot of what a call needs: the table and the
  // handlers of its versions (canary null without one).
  struct Live {
    SplitTable table;
    std::shared_ptr<const Handler> stable;
    std::shared_ptr<const Handler> canary;
  };

  struct State {
    explicit State(Options o) : options(std::move(o)) {
      if (options.clock == nullptr) options.clock = &SteadyClock::instance();
    }
    // Under `changes`: publishes the function's current table with its
    // handlers; drops the handlers of versions that left it (calls in
    // flight keep theirs).
    void refresh() {
      const SplitTable table = function->split().table();
      auto next = std::make_shared<Live>();
      next->table = table;
      next->stable = handlers[table.stable - 1];
      if (table.canary != kNoVersion) next->canary = handlers[table.canary - 1];
      for (VersionId id = 1; id <= handlers.size(); ++id) {
        if (id != table.stable && id != table.canary)
          handlers[id - 1] = nullptr;
      }
      std::lock_guard live_lock(live_mutex);
      live = std::move(next);
    }
    [[nodiscard]] std::shared_ptr<const Live> snapshot() const {
      std::lock_guard lock(live_mutex);
      return live;
    }

    Options options;
    std::unique_ptr<VersionedFunction> function;
    // Serialises the changes with their refresh() (an automatic rollback
    // refreshes from the observer, after the function's mutex is released:
    // so this is never taken inside it); guards `handlers`.
    std::mutex changes;
    // handlers[id - 1]: version id's handler while it is live, else null.
    std::vector<std::shared_ptr<const Handler>> handlers;
    // Guards `live` only (a pointer copy per call).
    mutable std::mutex live_mutex;
    std::shared_ptr<const Live> live;
    // Counts random draws; no ordering with anything else.
    mutable std::atomic<std::uint64_t> draws{0};
  };

  explicit VersionedHandler(std::shared_ptr<State> state)
      : state_(std::move(state)) {}

  template <typename Change>
  absl::Status change(Change&& change) {
    State& s = *state_;
    std::lock_guard lock(s.changes);
    absl::Status status = change(*s.function);
    s.refresh();
    return status;
  }

  static absl::Status empty_handler_error(std::string_view what) {
    return absl::InvalidArgumentError(
        std::string("VersionedHandler::") + std::string(what) +
        ": the handler is empty; pass a callable taking (const E&) or "
        "(const E&, Context&)");
  }

  // The handler as stored, or nullopt for an empty one.
  template <typename F>
  static std::optional<Handler> adapt(F&& f) {
    using D = std::decay_t<F>;
    if constexpr (std::is_pointer_v<D> || detail::IsStdFunction<D>::value) {
      if (f == nullptr) return std::nullopt;
    }
    constexpr bool kTakesContext = std::invocable<D&, const E&, Context&>;
    static_assert(kTakesContext || std::invocable<D&, const E&>,
                  "a version's handler takes (const E&) or "
                  "(const E&, Context&)");
    return Handler([f = D(std::forward<F>(f))](
                       const E& event, Context& context) mutable -> Result {
      auto call = [&]() -> decltype(auto) {
        if constexpr (kTakesContext) {
          return f(event, context);
        } else {
          return f(event);
        }
      };
      if constexpr (std::is_void_v<decltype(call())>) {
        static_assert(std::same_as<Result, absl::Status>,
                      "a request's handler returns a Reply or "
                      "absl::StatusOr<Reply>");
        call();
        return absl::OkStatus();
      } else {
        return Result(call());
      }
    });
  }

  std::shared_ptr<State> state_;
};

}  // namespace fnbus::mesh
