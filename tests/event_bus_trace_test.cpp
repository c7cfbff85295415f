// Tests of EventBus's trace context: event ids, correlation and parent ids,
// inheritance through handlers (also across buses), PublishOptions::trace,
// and TraceHooks (ambient, on_handler_start, on_handler_end), and the
// traces carried by HandlerError and DeadLetter.
//
// Rules followed throughout: no Catch2 assertion runs off the test thread
// (handlers record into mutex-guarded state the test reads after a join,
// a shutdown or a bounded wait); no sleep orders threads. State that
// handlers use is declared before the bus, so the bus (which drains) is
// destroyed first.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "support/bus_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"

namespace fnbus_trace_test {

using fnbus::BusConfig;
using fnbus::Context;
using fnbus::DeadLetter;
using fnbus::EventBus;
using fnbus::EventTrace;
using fnbus::Execution;
using fnbus::HandlerError;
using fnbus::ShutdownMode;
using fnbus::TraceContext;
using fnbus::testing_support::IdEvent;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::NamedEvent;
using fnbus::testing_support::wait_until;

// ---------------------------------------------------------------------------
// Events. This namespace keeps them apart from other test files' events.

using Request = IdEvent<"trace.Request">;
using Charge = NamedEvent<"trace.Charge">;
using Audit = NamedEvent<"trace.Audit">;
using Mail = NamedEvent<"trace.Mail">;
using Job = IdEvent<"trace.Job">;

// The traces handlers saw, by a label the test chooses. Thread-safe.
class TraceLog {
 public:
  void add(const std::string& label, const Context& context) {
    std::lock_guard lock(mutex_);
    traces_.emplace(label, context.event_trace());
    // Context's accessors must agree with event_trace().
    if (context.trace() != context.event_trace().context ||
        context.correlation_id() != context.trace().correlation_id ||
        context.parent_id() != context.trace().parent_id ||
        context.event_id() != context.event_trace().event_id) {
      ++inconsistent_;
    }
  }
  [[nodiscard]] std::size_t size() const {
    std::lock_guard lock(mutex_);
    return traces_.size();
  }
  // The trace recorded under `label`; fails the test if there is not
  // exactly one. Call on the test thread.
  [[nodiscard]] EventTrace get(const std::string& label) const {
    std::lock_guard lock(mutex_);
    INFO("label " << label);
    REQUIRE(traces_.count(label) == 1);
    return traces_.find(label)->second;
  }
  [[nodiscard]] int inconsistent() const {
    std::lock_guard lock(mutex_);
    return inconsistent_;
  }

 private:
  mutable std::mutex mutex_;
  std::multimap<std::string, EventTrace> traces_;
  int inconsistent_ = 0;
};

// A root event's trace: a new correlation named after itself.
void check_root(const EventTrace& trace) {
  CHECK(trace.event_id != 0);
  CHECK(trace.context.correlation_id == trace.event_id);
  CHECK(trace.context.parent_id == 0);
}

// `child` was published or triggered by a handler of `parent`.
void check_child(const EventTrace& child, const EventTrace& parent) {
  CHECK(child.event_id != 0);
  CHECK(child.event_id != parent.event_id);
  CHECK(child.context.correlation_id == parent.context.correlation_id);
  CHECK(child.context.parent_id == parent.event_id);
}

// Runs everything published so far to completion, whatever the mode.
void settle(EventBus& bus, Execution mode) {
  if (mode == Execution::kManual) {
    CHECK(bus.run_until_idle() > 0);
  } else if (mode == Execution::kThreadPool) {
    REQUIRE(bus.shutdown().ok());
  }
}

// ---------------------------------------------------------------------------

TEST_CASE("trace: a root event's correlation id is its own event id",
          "[trace]") {
  TraceLog log;
  auto bus = make_bus({.workers = 1});
  auto sub = bus->subscribe<Request>([&](const Request& r, Context& ctx) {
    log.add("request " + std::to_string(r.id), ctx);
  });

  REQUIRE(bus->publish(Request{.id = 1}).ok());
  REQUIRE(bus->publish(Request{.id = 2}).ok());
  bus->trigger(Request{.id = 3});
  REQUIRE(bus->shutdown().ok());

  REQUIRE(log.size() == 3);
  CHECK(log.inconsistent() == 0);
  const EventTrace one = log.get("request 1");
  const EventTrace two = log.get("request 2");
  const EventTrace three = log.get("request 3");
  check_root(one);
  check_root(two);
  check_root(three);
  CHECK(one.event_id != two.event_id);
  CHECK(one.event_id != three.event_id);
  CHECK(two.event_id != three.event_id);
}

TEST_CASE("trace: every event gets a distinct nonzero id", "[trace]") {
  constexpr int kPerThread = 2'000;
  std::mutex mutex;
  std::vector<EventTrace> seen;
  auto bus = make_bus({.queue_capacity = 1024,
                       .workers = 2,
                       .overflow = fnbus::OverflowPolicy::kBlock,
                       .block_timeout = std::chrono::seconds(30)});
  auto sub = bus->subscribe<Job>([&](const Job&, Context& ctx) {
    std::lock_guard lock(mutex);
    seen.push_back(ctx.event_trace());
  });
  std::atomic<int> publish_errors{0};
  {
    std::vector<std::jthread> publishers;
    for (int t = 0; t < 2; ++t) {
      publishers.emplace_back([&] {
        for (int i = 0; i < kPerThread; ++i) {
          if (!bus->publish(Job{i}).ok()) publish_errors.fetch_add(1);
        }
      });
    }
  }  // joins
  REQUIRE(bus->shutdown().ok());
  CHECK(publish_errors.load() == 0);

  std::lock_guard lock(mutex);
  REQUIRE(seen.size() == 2 * kPerThread);
  std::set<std::uint64_t> ids;
  int bad_roots = 0;
  for (const EventTrace& t : seen) {
    ids.insert(t.event_id);
    if (t.event_id == 0 || t.context.correlation_id != t.event_id ||
        t.context.parent_id != 0) {
      ++bad_roots;
    }
  }
  CHECK(ids.size() == seen.size());
  CHECK(ids.count(0) == 0);
  CHECK(bad_roots == 0);
}

TEST_CASE(
    "trace: events published or triggered by a handler inherit its "
    "correlation and take its event as parent",
    "[trace]") {
  const Execution mode =
      GENERATE(Execution::kThreadPool, Execution::kInline, Execution::kManual);
  INFO("execution " << static_cast<int>(mode));
  TraceLog log;
  std::atomic<int> publish_errors{0};
  EventBus* raw = nullptr;
  auto bus = make_bus({.workers = 2, .execution = mode});
  raw = bus.get();
  // Request -> publish Charge, trigger Audit; Charge -> publish Mail.
  auto request = bus->subscribe<Request>([&](const Request&, Context& ctx) {
    log.add("request", ctx);
    if (!raw->publish(Charge{}).ok()) publish_errors.fetch_add(1);
    raw->trigger(Audit{});
  });
  auto charge = bus->subscribe<Charge>([&](const Charge&, Context& ctx) {
    log.add("charge", ctx);
    if (!raw->publish(Mail{}).ok()) publish_errors.fetch_add(1);
  });
  auto audit = bus->subscribe<Audit>(
      [&](const Audit&, Context& ctx) { log.add("audit", ctx); });
  auto mail = bus->subscribe<Mail>(
      [&](const Mail&, Context& ctx) { log.add("mail", ctx); });

  REQUIRE(bus->publish(Request{}).ok());
  settle(*bus, mode);

  CHECK(publish_errors.load() == 0);
  REQUIRE(log.size() == 4);
  CHECK(log.inconsistent() == 0);
  const EventTrace root = log.get("request");
  check_root(root);
  check_child(log.get("charge"), root);
  check_child(log.get("audit"), root);
  check_child(log.get("mail"), log.get("charge"));
  CHECK(log.get("mail").context.correlation_id == root.event_id);
}

TEST_CASE("trace: inheritance crosses buses", "[trace]") {
  TraceLog log;
  std::atomic<int> publish_errors{0};
  auto downstream = make_bus({.workers = 1});
  auto inline_bus = make_bus({.execution = Execution::kInline});
  auto upstream = make_bus({.workers = 1});
  EventBus* down_raw = downstream.get();
  EventBus* inline_raw = inline_bus.get();
  auto on_request =
      upstream->subscribe<Request>([&](const Request&, Context& ctx) {
        log.add("upstream request", ctx);
        if (!down_raw->publish(Charge{}).ok()) publish_errors.fetch_add(1);
        down_raw->trigger(Audit{});
        if (!inline_raw->publish(Mail{}).ok()) publish_errors.fetch_add(1);
      });
  auto on_charge = downstream->subscribe<Charge>(
      [&](const Charge&, Context& ctx) { log.add("downstream charge", ctx); });
  auto on_audit = downstream->subscribe<Audit>(
      [&](const Audit&, Context& ctx) { log.add("downstream audit", ctx); });
  auto on_mail = inline_bus->subscribe<Mail>(
      [&](const Mail&, Context& ctx) { log.add("inline mail", ctx); });

  REQUIRE(upstream->publish(Request{}).ok());
  REQUIRE(upstream->shutdown().ok());
  REQUIRE(downstream->shutdown().ok());

  CHECK(publish_errors.load() == 0);
  REQUIRE(log.size() == 4);
  const EventTrace root = log.get("upstream request");
  check_root(root);
  check_child(log.get("downstream charge"), root);
  check_child(log.get("downstream audit"), root);
  check_child(log.get("inline mail"), root);
}

TEST_CASE(
    "trace: PublishOptions::trace overrides the inherited and the ambient "
    "trace",
    "[trace]") {
  TraceLog log;
  std::atomic<int> ambient_calls{0};
  EventBus* raw = nullptr;
  BusConfig config{.workers = 1};
  config.trace.ambient = [&]() -> std::optional<TraceContext> {
    ambient_calls.fetch_add(1);
    return TraceContext{.correlation_id = 111, .parent_id = 222};
  };
  auto bus = make_bus(std::move(config));
  raw = bus.get();
  auto request = bus->subscribe<Request>([&](const Request& r, Context& ctx) {
    log.add("request " + std::to_string(r.id), ctx);
    if (r.id == 1) {
      // Inside a handler an explicit context wins over inheritance.
      (void)raw->publish(
          Charge{},
          {.trace = TraceContext{.correlation_id = 5555, .parent_id = 0}});
      // A zero correlation id starts a new correlation, even here.
      (void)raw->publish(Audit{}, {.trace = TraceContext{}});
    }
  });
  auto charge = bus->subscribe<Charge>(
      [&](const Charge&, Context& ctx) { log.add("charge", ctx); });
  auto audit = bus->subscribe<Audit>(
      [&](const Audit&, Context& ctx) { log.add("audit", ctx); });

  REQUIRE(bus->publish(Request{.id = 1},
                       {.trace = TraceContext{.correlation_id = 1234,
                                              .parent_id = 99}})
              .ok());
  REQUIRE(bus->publish(Request{.id = 2}, {.trace = TraceContext{}}).ok());
  REQUIRE(bus->shutdown().ok());

  CHECK(ambient_calls.load() == 0);  // an explicit trace skips the hook
  REQUIRE(log.size() == 4);
  const EventTrace one = log.get("request 1");
  CHECK(one.context.correlation_id == 1234);
  CHECK(one.context.parent_id == 99);
  CHECK(one.event_id != 0);
  check_root(log.get("request 2"));
  const EventTrace charged = log.get("charge");
  CHECK(charged.context.correlation_id == 5555);
  CHECK(charged.context.parent_id == 0);
  CHECK(charged.event_id != 0);
  check_root(log.get("audit"));
}

TEST_CASE("trace: TraceHooks::ambient is adopted outside handlers", "[trace]") {
  TraceLog log;
  std::atomic<int> ambient_calls{0};
  EventBus* raw = nullptr;
  BusConfig config{.workers = 1};
  config.trace.ambient = [&]() -> std::optional<TraceContext> {
    ambient_calls.fetch_add(1);
    return TraceContext{.correlation_id = 777, .parent_id = 888};
  };
  auto bus = make_bus(std::move(config));
  raw = bus.get();
  auto request = bus->subscribe<Request>([&](const Request& r, Context& ctx) {
    log.add("request " + std::to_string(r.id), ctx);
    // Inside a handler the handler's trace is inherited: no ambient call.
    if (r.id == 1) {
      (void)raw->publish(Charge{});
      raw->trigger(Audit{});
    }
  });
  auto charge = bus->subscribe<Charge>(
      [&](const Charge&, Context& ctx) { log.add("charge", ctx); });
  auto audit = bus->subscribe<Audit>(
      [&](const Audit&, Context& ctx) { log.add("audit", ctx); });

  REQUIRE(bus->publish(Request{.id = 1}).ok());
  bus->trigger(Request{.id = 2});
  REQUIRE(bus->shutdown().ok());

  CHECK(ambient_calls.load() == 2);  // the publish and the trigger
  REQUIRE(log.size() == 4);
  const EventTrace one = log.get("request 1");
  CHECK(one.context.correlation_id == 777);
  CHECK(one.context.parent_id == 888);
  CHECK(one.event_id != 0);
  const EventTrace two = log.get("request 2");
  CHECK(two.context == TraceContext{.correlation_id = 777, .parent_id = 888});
  CHECK(two.event_id != one.event_id);
  check_child(log.get("charge"), one);
  check_child(log.get("audit"), one);
}

TEST_CASE(
    "trace: an ambient hook returning nullopt or throwing starts a new "
    "correlation and loses nothing",
    "[trace]") {
  const bool throws = GENERATE(false, true);
  INFO((throws ? "throwing hook" : "nullopt hook"));
  TraceLog log;
  std::atomic<int> ambient_calls{0};
  BusConfig config{.workers = 1};
  config.trace.ambient = [&, throws]() -> std::optional<TraceContext> {
    ambient_calls.fetch_add(1);
    if (throws) throw std::runtime_error("tracing backend down");
    return std::nullopt;
  };
  auto bus = make_bus(std::move(config));
  auto request = bus->subscribe<Request>([&](const Request& r, Context& ctx) {
    log.add("request " + std::to_string(r.id), ctx);
  });

  REQUIRE(bus->publish(Request{.id = 1}).ok());
  bus->trigger(Request{.id = 2});
  REQUIRE(bus->shutdown().ok());

  CHECK(ambient_calls.load() == 2);
  REQUIRE(log.size() == 2);
  check_root(log.get("request 1"));
  check_root(log.get("request 2"));
  CHECK(bus->stats().dispatched == 1);
  CHECK(bus->stats().rejected == 0);
}

TEST_CASE(
    "trace: on_handler_start and on_handler_end surround each handler call, "
    "also a failing one",
    "[trace]") {
  struct Call {
    std::string what;  // "start f", "call f", "end f"
    std::uint64_t event_id;
    std::thread::id thread;
  };
  std::mutex mutex;
  std::vector<Call> calls;
  auto record = [&](std::string what, const Context& ctx) {
    std::lock_guard lock(mutex);
    calls.push_back(
        {std::move(what), ctx.event_id(), std::this_thread::get_id()});
  };
  BusConfig config{.workers = 1};
  config.trace.on_handler_start = [&](const Context& ctx) {
    record("start " + std::string(ctx.function_name()), ctx);
  };
  config.trace.on_handler_end = [&](const Context& ctx) {
    record("end " + std::string(ctx.function_name()), ctx);
  };
  auto bus = make_bus(std::move(config));
  auto ok = bus->subscribe<Request>(
      [&](const Request&, Context& ctx) { record("call ok", ctx); },
      {.name = "ok"});
  auto throws = bus->subscribe<Request>(
      [&](const Request&, Context& ctx) {
        record("call throws", ctx);
        throw std::runtime_error("boom");
      },
      {.name = "throws"});
  auto fails = bus->subscribe<Request>(
      [&](const Request&, Context& ctx) {
        record("call fails", ctx);
        return absl::InternalError("nope");
      },
      {.name = "fails"});

  const std::vector<std::string> one_event = {
      "start ok",   "call ok",     "end ok",     "start throws", "call throws",
      "end throws", "start fails", "call fails", "end fails"};

  SECTION("publish: on the worker that runs the handlers") {
    REQUIRE(bus->publish(Request{.id = 1}).ok());
    REQUIRE(bus->publish(Request{.id = 2}).ok());
    REQUIRE(bus->shutdown().ok());
    std::lock_guard lock(mutex);
    REQUIRE(calls.size() == 2 * one_event.size());
    for (std::size_t i = 0; i < calls.size(); ++i) {
      INFO("call " << i);
      CHECK(calls[i].what == one_event[i % one_event.size()]);
      // One event per group, all on one worker thread (not this one).
      CHECK(calls[i].event_id == calls[i - i % one_event.size()].event_id);
      CHECK(calls[i].thread == calls[0].thread);
    }
    CHECK(calls[0].thread != std::this_thread::get_id());
    CHECK(calls[0].event_id != calls[one_event.size()].event_id);
  }
  SECTION("trigger: on the calling thread") {
    bus->trigger(Request{.id = 1});
    std::lock_guard lock(mutex);
    REQUIRE(calls.size() == one_event.size());
    for (std::size_t i = 0; i < calls.size(); ++i) {
      INFO("call " << i);
      CHECK(calls[i].what == one_event[i]);
      CHECK(calls[i].event_id == calls[0].event_id);
      CHECK(calls[i].thread == std::this_thread::get_id());
    }
  }
}

TEST_CASE("trace: HandlerError carries the event's trace", "[trace]") {
  struct Failure {
    std::string function;
    EventTrace trace;
  };
  std::mutex mutex;
  std::vector<Failure> failures;
  TraceLog log;
  BusConfig config{.workers = 1};
  config.error_sink = [&](const HandlerError& e) {
    std::lock_guard lock(mutex);
    failures.push_back({std::string(e.function_name), e.trace});
  };
  auto bus = make_bus(std::move(config));
  auto throws = bus->subscribe<Request>(
      [&](const Request& r, Context& ctx) {
        log.add("throws " + std::to_string(r.id), ctx);
        throw std::runtime_error("boom");
      },
      {.name = "throws"});
  auto fails = bus->subscribe<Charge>(
      [&](const Charge&, Context& ctx) {
        log.add("fails", ctx);
        return absl::UnavailableError("down");
      },
      {.name = "fails"});

  REQUIRE(bus->publish(
                 Request{.id = 1},
                 {.trace = TraceContext{.correlation_id = 42, .parent_id = 7}})
              .ok());
  REQUIRE(bus->publish(Charge{}).ok());
  bus->trigger(Request{.id = 2});
  REQUIRE(bus->shutdown().ok());

  std::lock_guard lock(mutex);
  REQUIRE(failures.size() == 3);
  std::map<std::string, int> by_function;
  for (const Failure& f : failures) ++by_function[f.function];
  CHECK(by_function["throws"] == 2);
  CHECK(by_function["fails"] == 1);
  const EventTrace one = log.get("throws 1");
  const EventTrace two = log.get("throws 2");
  const EventTrace charge = log.get("fails");
  CHECK(one.context == TraceContext{.correlation_id = 42, .parent_id = 7});
  check_root(two);
  check_root(charge);
  int matched = 0;
  for (const Failure& f : failures) {
    if (f.trace == one || f.trace == two || f.trace == charge) ++matched;
  }
  CHECK(matched == 3);
  // Each failure carries its own event's trace, not another's.
  for (const Failure& f : failures) {
    if (f.function == "fails") CHECK(f.trace == charge);
  }
}

TEST_CASE("trace: DeadLetter carries the event's trace", "[trace]") {
  std::vector<EventTrace> dead;  // kManual: the sink runs on this thread
  std::vector<int> dead_ids;
  TraceLog log;
  auto bus = make_bus({.queue_capacity = 8,
                       .execution = Execution::kManual,
                       .dead_letter_sink = [&](const DeadLetter& dl) {
                         dead.push_back(dl.trace);
                         if (const auto* j = dl.event.get<Job>()) {
                           dead_ids.push_back(j->id);
                         }
                       }});
  auto sub = bus->subscribe<Job>(
      [&](const Job& j, Context& ctx) { log.add(std::to_string(j.id), ctx); });

  REQUIRE(bus->publish(Job{1}).ok());
  REQUIRE(bus->publish(Job{2}, {.trace = TraceContext{.correlation_id = 31,
                                                      .parent_id = 32}})
              .ok());
  REQUIRE(bus->publish(Job{3}).ok());
  CHECK(bus->run_one());  // Job 1 runs

  REQUIRE(bus->shutdown(ShutdownMode::kCancelPending).ok());
  REQUIRE(log.size() == 1);
  REQUIRE(dead.size() == 2);
  CHECK(dead_ids == std::vector<int>{2, 3});
  CHECK(dead[0].context == TraceContext{.correlation_id = 31, .parent_id = 32});
  CHECK(dead[0].event_id != 0);
  check_root(dead[1]);
  const EventTrace ran = log.get("1");
  check_root(ran);
  CHECK(ran.event_id != dead[0].event_id);
  CHECK(ran.event_id != dead[1].event_id);
  CHECK(dead[0].event_id != dead[1].event_id);
}

TEST_CASE(
    "trace: an ambient hook that shuts the bus down loses no accepted event",
    "[trace]") {
  EventBus* raw = nullptr;
  absl::Status from_hook = absl::UnknownError("hook not called");
  BusConfig config;
  config.trace.ambient = [&]() -> std::optional<TraceContext> {
    from_hook = raw->shutdown();
    return std::nullopt;
  };
  auto bus = make_bus(std::move(config));
  raw = bus.get();
  const absl::Status status = bus->publish(Job{1});
  CHECK(from_hook.ok());
  // The hook ran before the bus decided whether to accept the event.
  CHECK(status.code() == absl::StatusCode::kFailedPrecondition);
  const fnbus::BusStats stats = bus->stats();
  CHECK(stats.published == 0);
  CHECK(stats.rejected == 1);
  CHECK(stats.queue_depth == 0);
}

TEST_CASE("trace: a Context copied out of its handler keeps its trace",
          "[trace]") {
  std::optional<Context> kept;
  EventTrace seen;
  auto bus = make_bus({.execution = Execution::kManual});
  auto sub = bus->subscribe<Job>([&](const Job&, Context& context) {
    kept = context;
    seen = context.event_trace();
  });
  REQUIRE(bus->publish(Job{1}).ok());
  REQUIRE(bus->run_one());
  REQUIRE(kept.has_value());
  CHECK(seen.event_id != 0);
  CHECK(kept->event_trace() == seen);  // the envelope it came from is gone
}

}  // namespace fnbus_trace_test
