// The per-invocation cost of a function's stages (FunctionOptions::when,
// breaker, fallback) on the success path. Each BM_Stages_* times
// EventBus::trigger to one handler doing the same relaxed counter work as
// BM_Trigger_Handlers/1 (run_trigger() in support.hpp), subscribed
// with other options; BM_Stages_None (a plain subscribe) is the baseline,
// and the CPU time of a variant minus that of BM_Stages_None is the
// per-invocation cost of its stages.
// Target (issue 12): the success path with stages configured costs
// <= 25 ns more per invocation than none.
//
// BM_StagesPart_* time the pieces of the breaker stage alone, to say where
// its time goes: one Clock::now() through the bus's Clock interface (the
// default SteadyClock, a virtual call to steady_clock::now()); one
// try_acquire() + on_success() of a closed CircuitBreaker at a fixed
// instant (lock-free since issue 12's fast path: a relaxed state load, the
// permit count's fetch_add and the newest slice's; before it, two
// lock/unlock pairs and the health window's record); two lock/unlock
// pairs of an uncontended std::mutex alone (the old cycle's floor). And
// the pieces of the fast path: a CLOCK_MONOTONIC_COARSE read (the
// pipeline's one clock read per call with the default clock) and one
// relaxed fetch_add.
//
// BM_Stages_Deadline: a deadline (FunctionOptions::deadline) that is never
// reached; BM_StagesPart_DeadlineWatch times its watch alone: one
// DeadlineWatch::begin() and end() (the slot's stores and the handshake's
// load), without the stage's clock reads.
//
// BM_Stages_Retry: retries (FunctionOptions::retry, the default
// RetryOptions), which the success path never asks. And
// BM_Stages_RetryBreakerDeadline: retries, a breaker and a deadline
// together, the combination issue 12's target names.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <memory>
#include <mutex>

#include "support.hpp"
#include <benchmark/benchmark.h>

#include "fnbus/clock.hpp"
#include "fnbus/options.hpp"
#include "fnbus/resilience/circuit_breaker.hpp"
#include "fnbus/resilience/deadline_watch.hpp"
#include "fnbus/resilience/retry.hpp"

namespace fnbus_bench {
namespace {

// See run_trigger() on why each file declares its own event type.
struct Tick {
  std::int64_t value;
};

// Always true (every Tick has value 1), but not known to the compiler.
bool positive(const Tick& tick) noexcept { return tick.value > 0; }

// Never called: the handler always succeeds and the breaker stays closed.
void ignore(const Tick&) noexcept {}

void BM_Stages_None(benchmark::State& state) {
  run_trigger<Tick>(state, 1, {.name = "add"});
}

void BM_Stages_When(benchmark::State& state) {
  run_trigger<Tick>(state, 1, {.name = "add", .when = &positive});
}

void BM_Stages_Breaker(benchmark::State& state) {
  run_trigger<Tick>(
      state, 1,
      {.name = "add", .breaker = fnbus::resilience::BreakerOptions{}});
}

void BM_Stages_BreakerWhenFallback(benchmark::State& state) {
  run_trigger<Tick>(state, 1,
                    {.name = "add",
                     .when = &positive,
                     .breaker = fnbus::resilience::BreakerOptions{},
                     .fallback = &ignore});
}

void BM_Stages_Deadline(benchmark::State& state) {
  using namespace std::chrono_literals;
  run_trigger<Tick>(state, 1, {.name = "add", .deadline = 1h});
}

void BM_Stages_Retry(benchmark::State& state) {
  run_trigger<Tick>(
      state, 1, {.name = "add", .retry = fnbus::resilience::RetryOptions{}});
}

void BM_Stages_RetryBreakerDeadline(benchmark::State& state) {
  using namespace std::chrono_literals;
  run_trigger<Tick>(state, 1,
                    {.name = "add",
                     .breaker = fnbus::resilience::BreakerOptions{},
                     .deadline = 1h,
                     .retry = fnbus::resilience::RetryOptions{}});
}

void BM_StagesPart_ClockNow(benchmark::State& state) {
  fnbus::Clock& clock = fnbus::SteadyClock::instance();
  // Through a pointer the compiler cannot see through, as the pipeline
  // holds it.
  fnbus::Clock* volatile opaque = &clock;
  for (auto _ : state) {
    benchmark::DoNotOptimize(opaque->now());
  }
}

void BM_StagesPart_BreakerCycle(benchmark::State& state) {
  auto breaker = fnbus::resilience::CircuitBreaker::Create({});
  if (!breaker.ok()) {
    state.SkipWithError(breaker.status().ToString().c_str());
    return;
  }
  const fnbus::TimePoint now = fnbus::SteadyClock::instance().now();
  for (auto _ : state) {
    auto permit = (*breaker)->try_acquire(now);
    if (permit) permit.on_success(now);
  }
  if ((*breaker)->stats().successes !=
      static_cast<std::uint64_t>(state.iterations())) {
    state.SkipWithError("the breaker refused calls");
  }
}

void BM_StagesPart_DeadlineWatch(benchmark::State& state) {
  using namespace std::chrono_literals;
  fnbus::resilience::DeadlineWatch watch;
  const fnbus::TimePoint deadline = fnbus::SteadyClock::instance().now() + 1h;
  for (auto _ : state) {
    fnbus::resilience::DeadlineWatch::Invocation call =
        watch.begin(deadline, 1h);
    benchmark::DoNotOptimize(&call.state());
  }
}

void BM_StagesPart_TwoLockUnlock(benchmark::State& state) {
  std::mutex mutex;
  for (auto _ : state) {
    mutex.lock();
    benchmark::ClobberMemory();
    mutex.unlock();
    mutex.lock();
    benchmark::ClobberMemory();
    mutex.unlock();
  }
}

void BM_StagesPart_CoarseClockNow(benchmark::State& state) {
  for (auto _ : state) {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    benchmark::DoNotOptimize(now);
  }
}

void BM_StagesPart_RelaxedFetchAdd(benchmark::State& state) {
  std::atomic<std::uint64_t> count{0};
  for (auto _ : state) {
    // relaxed: a count, read by nobody while the benchmark runs.
    count.fetch_add(1, std::memory_order_relaxed);
  }
  benchmark::DoNotOptimize(&count);
}

}  // namespace

void register_stages_benchmarks() {
  benchmark::RegisterBenchmark("BM_Stages_None", BM_Stages_None);
  benchmark::RegisterBenchmark("BM_Stages_When", BM_Stages_When);
  benchmark::RegisterBenchmark("BM_Stages_Breaker", BM_Stages_Breaker);
  benchmark::RegisterBenchmark("BM_Stages_BreakerWhenFallback",
                               BM_Stages_BreakerWhenFallback);
  benchmark::RegisterBenchmark("BM_Stages_Deadline", BM_Stages_Deadline);
  benchmark::RegisterBenchmark("BM_Stages_Retry", BM_Stages_Retry);
  benchmark::RegisterBenchmark("BM_Stages_RetryBreakerDeadline",
                               BM_Stages_RetryBreakerDeadline);
  benchmark::RegisterBenchmark("BM_StagesPart_ClockNow",
                               BM_StagesPart_ClockNow);
  benchmark::RegisterBenchmark("BM_StagesPart_BreakerCycle",
                               BM_StagesPart_BreakerCycle);
  benchmark::RegisterBenchmark("BM_StagesPart_DeadlineWatch",
                               BM_StagesPart_DeadlineWatch);
  benchmark::RegisterBenchmark("BM_StagesPart_TwoLockUnlock",
                               BM_StagesPart_TwoLockUnlock);
  benchmark::RegisterBenchmark("BM_StagesPart_CoarseClockNow",
                               BM_StagesPart_CoarseClockNow);
  benchmark::RegisterBenchmark("BM_StagesPart_RelaxedFetchAdd",
                               BM_StagesPart_RelaxedFetchAdd);
}

}  // namespace fnbus_bench
