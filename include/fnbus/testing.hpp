#pragma once

// Umbrella header of the handler testing kit (namespace fnbus::testing).
// Header-only apart from ManualClock, which is in the fnbus library; it
// uses no test framework, so it works with Catch2, GoogleTest or doctest.
//
// - EventRecorder<E>: subscribes to E and keeps copies of the events and
//   their trace ids; wait_for() for the thread pool.
// - ErrorRecorder, DeadLetterRecorder, UnhandledRecorder: plug into
//   BusConfig's sinks and keep owned copies of what the bus reports.
// - ManualClock: a Clock for BusConfig::clock that moves only when the
//   test advances it.
// - WaitResult: what the wait_for() methods return; converts to bool and
//   prints why it failed.
//
// Together with BusConfig::execution = Execution::kInline (handlers run
// inside publish()) or Execution::kManual (handlers run when the test calls
// run_one() / run_until_idle()), a handler can be tested without threads.
// examples/testing_handlers/ shows the whole kit on a small shop.

#include "fnbus/testing/event_recorder.hpp"
#include "fnbus/testing/manual_clock.hpp"
#include "fnbus/testing/recording_sinks.hpp"
#include "fnbus/testing/wait_result.hpp"
