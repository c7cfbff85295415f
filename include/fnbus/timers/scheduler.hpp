#pragma once

// A thread-safe scheduler of one-shot and periodic tasks on the bus Clock:
// the seam behind publish_after/publish_at, periodic publishes and waiting
// retries. A TimerWheel orders the timers; its payload is the TimerId of a
// slot in the scheduler's own table, which holds the task. The shape is
// folly's HHWheelTimer: every task hears why it runs (TimerFate: due, or
// the scheduler shutting down), and the timer thread sleeps until the
// wheel's next wake-up instead of ticking.
//
//   auto scheduler = *fnbus::timers::Scheduler::Create({.tick = 1ms}, clock);
//   scheduler->start();  // or call run_due() yourself (Execution::kManual)
//   auto id = scheduler->schedule_after(30s, [](TimerFate fate) && { ... });
//   scheduler->cancel(*id);
//
// Guarantees:
// - A task runs at most once per due time, never before it: at the first
//   wake-up (or run_due()) at or after its due time rounded up to the tick.
//   A due time in the past runs at the next tick.
// - Tasks run one at a time, on the timer thread or in run_due()'s caller,
//   never under the scheduler's internal mutex: a task may schedule and
//   cancel timers, including itself.
// - Every task ends exactly once: it runs with kDue (one-shot), it is
//   cancelled (a cancel() that returned true; destroyed without running),
//   or it runs with kShutdown during shutdown(). A periodic task runs with
//   kDue any number of times, then ends by cancel() or by one kShutdown.
// - A periodic timer runs at first + k * period (no drift). If the thread
//   fell behind (a stalled machine, a manual clock moved by several
//   periods), it runs once for the missed periods and skips to the first
//   first + k * period later than the clock: no back-to-back catch-up.
// - When cancel(id) returns, the task of `id` is not running and will not
//   start again, and a task it cancelled has been destroyed -- unless
//   cancel() is called from inside that task's own call (then it returns
//   at once, and the task is not called again).
// - Once shutdown() begins, no task starts with kDue and scheduling fails
//   with FailedPrecondition.
//
// Not guaranteed: the order of tasks due in the same tick; how late a task
// runs when the thread is busy with other tasks (one slow task delays the
// rest: the bus's tasks only hand work to its queue).
//
// Lifetime: tasks must not destroy the scheduler, nor call shutdown() or
// run_due(). The Clock must be thread-safe (every Clock is).

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/timers/timer_wheel.hpp"

namespace fnbus::timers {

// Why a task is called.
enum class TimerFate {
  kDue,       // its due time came
  kShutdown,  // the scheduler is shutting down before it came
};

// A one-shot task: called once, with kDue or kShutdown; it may move from
// what it captured.
using TimerTask = absl::AnyInvocable<void(TimerFate) &&>;
// A periodic task: called with kDue at each period, and once with
// kShutdown if the scheduler shuts down before it is cancelled.
using PeriodicTask = absl::AnyInvocable<void(TimerFate)>;

struct SchedulerOptions {
  // The resolution (> 0, at most 1 hour): due times round up to it.
  Duration tick = std::chrono::milliseconds(1);
  // Receives an InternalError when a task throws (the task counts as run;
  // a periodic one keeps its schedule). Called on the thread that ran the
  // task; must not throw (an exception is swallowed). Empty: ignored.
  std::function<void(const absl::Status&)> error_sink;
};

class Scheduler {
 public:
  // InvalidArgument for a tick out of range or a null clock. Time zero
  // of the wheel is clock->now(). Does not start a thread (see start()).
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(
      SchedulerOptions options, std::shared_ptr<Clock> clock);
  ~Scheduler();  // shutdown()

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Runs `task` once at `due` (in the past: at the next tick).
  // Returns: its id (the scheduler's own, stale once the timer ended);
  // InvalidArgument for an empty task; FailedPrecondition once
  // shutdown() has begun.
  // Thread safety: any thread, also from inside a task.
  // Memory ordering: actions before schedule_at() are visible to the task.
  absl::StatusOr<TimerId> schedule_at(TimePoint due, TimerTask task);
  // As schedule_at(clock->now() + delay). A delay of 0 runs at the next
  // tick. Returns: also InvalidArgument for a negative delay.
  // Thread safety: any thread, also from inside a task.
  absl::StatusOr<TimerId> schedule_after(Duration delay, TimerTask task);
  // Runs `task` at first, first + period, first + 2 * period, ... (see
  // the class comment for a thread that falls behind) until cancelled;
  // one id for all its runs.
  // Returns: its id; InvalidArgument for a period <= 0 or an empty task;
  // FailedPrecondition once shutdown() has begun.
  // Thread safety: any thread, also from inside a task.
  absl::StatusOr<TimerId> schedule_every(TimePoint first, Duration period,
                                         PeriodicTask task);

  // Ends the timer without running it again; the task is destroyed (a
  // task running right now is destroyed when its call returns).
  // Returns: true if it was pending -- a one-shot task not yet started, a
  // periodic task not yet cancelled nor shut down; false for a stale or
  // unknown id.
  // Blocks: while the task of `id` runs on another thread, until it
  // returns (see the class comment). Do not cancel a task from a thread
  // that the task waits for.
  // Thread safety: any thread, also from inside a task (any task).
  bool cancel(TimerId id);

  // Starts the timer thread: it sleeps on the Clock until the next timer
  // is due (indefinitely while none is), runs the due tasks and sleeps
  // again; scheduling an earlier timer wakes it. Does nothing if the
  // thread already runs or shutdown() has begun.
  // Thread safety: any thread.
  void start();

  // Runs every task due at clock->now(), in the calling thread; returns
  // how many ran. For a scheduler without a thread (a bus with
  // Execution::kManual, tests); with one, it just runs the due tasks
  // sooner. 0 once shutdown() has begun.
  // Thread safety: any thread but from inside a task; calls are
  // serialised with each other and with the timer thread.
  std::size_t run_due();

  // Refuses new timers, stops and joins the timer thread (after the task
  // it is running, if any), then calls every pending task once with
  // kShutdown (a periodic one too), in no set order. Timers cancelled by
  // those calls end as cancelled. Idempotent; the destructor calls it.
  // Thread safety: any thread but from inside a task; concurrent calls
  // return when the first has finished.
  void shutdown();

  // Timers whose last call has not started and that are not cancelled.
  // Thread safety: any thread.
  [[nodiscard]] std::size_t pending() const;
  // When the timer thread next wakes up: the earliest due time rounded up
  // to the tick, or a lower bound when that lies over 256 ticks ahead
  // (TimerWheel::next_wake()); nullopt when nothing is pending. For
  // run_due() callers: call it then, and ask again.
  // Thread safety: any thread.
  [[nodiscard]] std::optional<TimePoint> next_wake() const;

 private:
  enum class SlotState : std::uint8_t {
    kFree,
    kPending,  // on the wheel
    kDue,      // fired by the wheel, waiting for its turn to run
    kRunning,  // its task is being called (moved out of the slot)
  };
  // One timer: its task and where it stands. Indexed by the low 32 bits
  // of its TimerId, which also carries `generation`.
  struct Slot {
    std::uint32_t generation = 1;  // bumped when freed; never 0
    SlotState state = SlotState::kFree;
    bool last_call = false;  // kRunning: no call after this one
    TimerId wheel_timer;     // kPending: its timer on the wheel
    TimePoint due;           // this run's due time
    Duration period{0};      // 0: one-shot
    TimerTask once;
    PeriodicTask every;
  };
  // A task taken out of its slot to be called.
  struct Claim {
    TimerTask once;
    PeriodicTask every;
    TimePoint due;
    Duration period{0};
  };

  Scheduler(SchedulerOptions options, std::shared_ptr<Clock> clock,
            TimerWheel wheel)
      : options_(std::move(options)),
        clock_(std::move(clock)),
        wheel_(std::move(wheel)) {}

  absl::StatusOr<TimerId> add(TimePoint due, Duration period, TimerTask once,
                              PeriodicTask every);
  // Puts slot `index` on the wheel for slot.due, waking the thread if it
  // now has to wake earlier. Needs mutex_.
  void arm_locked(std::uint32_t index);
  [[nodiscard]] Slot* find_locked(TimerId id);
  // Frees a slot; returns its tasks, to be destroyed outside the lock.
  Claim free_locked(std::uint32_t index);

  void run();
  // The deadline and stop token of the thread's next sleep; nullopt when
  // shutdown() has begun.
  std::optional<std::pair<TimePoint, std::stop_token>> prepare_sleep();
  void sleep(TimePoint deadline, std::stop_token wake);
  std::size_t fire_due();
  void fire_shutdown();
  // Claims the task of `id`, calls it with `fate` and gives it back or
  // ends it. False if `id` was not claimable (cancelled, stale, or kDue
  // after shutdown began).
  bool run_one(TimerId id, TimerFate fate);
  bool claim(TimerId id, TimerFate fate, Claim& claim);
  void invoke(Claim& claim, TimerId id, TimerFate fate) noexcept;
  void give_back(TimerId id, TimerFate fate, Claim& claim);
  // Ends the current call: wakes cancel() calls waiting for it.
  void finish_running();
  [[nodiscard]] bool on_task_thread() const;

  const SchedulerOptions options_;
  const std::shared_ptr<Clock> clock_;

  // Guards everything below it except where a comment says otherwise.
  mutable std::mutex mutex_;
  // Signalled when a running task's call has returned (for cancel()).
  std::condition_variable finished_;
  std::size_t cancel_waiters_ = 0;  // cancel() calls waiting on finished_
  TimerWheel wheel_;
  std::vector<Slot> slots_;
  std::vector<std::uint32_t> free_;  // indices of kFree slots
  std::size_t pending_ = 0;          // see pending()
  TimerId running_;                  // the task being called, if any
  std::thread::id running_thread_;   // and the thread calling it
  bool shutting_down_ = false;       // shutdown() has begun
  bool shut_down_ = false;           // shutdown() has finished
  bool started_ = false;             // start() created thread_
  // The current sleep of the timer thread: until when, and the source
  // whose stop request wakes it early (a request on a sleep that already
  // ended is harmless: the thread recomputes its deadline after waking).
  std::optional<TimePoint> sleeping_until_;
  std::stop_source wake_;

  // Serialises the callers of tasks (the timer thread, run_due(), the
  // shutdown pass): one task runs at a time. Held while tasks run; never
  // taken while holding mutex_.
  std::mutex fire_mutex_;
  std::vector<std::uint64_t> firing_;  // guarded by fire_mutex_: ids
  std::mutex shutdown_mutex_;          // serialises shutdown()
  // The timer thread. Assigned under mutex_ by start() before
  // shutting_down_ is set; joined by shutdown() after (so never both).
  std::thread thread_;
};

}  // namespace fnbus::timers
