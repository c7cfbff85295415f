#include "fnbus/detail/thread_activity.hpp"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <random>
#include <thread>

#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace fnbus::detail {

std::atomic<bool> g_readers_fence{true};

namespace {

bool register_membarrier() noexcept {
  const long supported = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if (supported < 0 || (supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) {
    return false;
  }
  return syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0,
                 0) == 0;
}

// Orders for the record list: seq_cst under TSan, so that a thread that
// registers during a writer's scan is covered by the seq_cst argument of
// that build (membarrier and fences cover it otherwise).
constexpr std::memory_order kListLoadOrder =
    kThreadSanitizer ? std::memory_order_seq_cst : std::memory_order_acquire;
constexpr std::memory_order kListPublishOrder =
    kThreadSanitizer ? std::memory_order_seq_cst : std::memory_order_release;

// The process-wide list of records. Leaked: threads may exit after main().
class RecordRegistry {
 public:
  RecordRegistry() : membarrier_(!kThreadSanitizer && register_membarrier()) {
    // relaxed: this constructor runs (under the static-init guard) before
    // any thread holds a record, and every reader reaches the flag only
    // after claiming a record through this object.
    g_readers_fence.store(!membarrier_, std::memory_order_relaxed);
  }

  ThreadRecord& claim() {
    // acquire: pairs with the release in publish(), so a record's fields
    // are initialised before we use it.
    for (ThreadRecord* r = head_.load(kListLoadOrder); r != nullptr;
         r = r->next) {
      bool expected = false;
      // acquire: pairs with the release in release(); the previous owner's
      // last writes to the record happen before our first.
      if (!r->in_use.load(std::memory_order_relaxed) &&
          r->in_use.compare_exchange_strong(expected, true,
                                            std::memory_order_acquire,
                                            std::memory_order_relaxed)) {
        return *r;
      }
    }
    auto* record = new ThreadRecord;
    // relaxed: the record is not yet shared; publish() releases it.
    record->in_use.store(true, std::memory_order_relaxed);
    // relaxed: only makes the indices distinct; publish() releases them.
    record->index = next_index_.fetch_add(1, std::memory_order_relaxed);
    publish(record);
    return *record;
  }

  static void release(ThreadRecord& record) noexcept {
    // release: pairs with the acquire CAS in claim().
    record.in_use.store(false, std::memory_order_release);
  }

  template <typename Visit>
  void for_each(Visit visit) const {
    // acquire: pairs with the release in publish().
    for (const ThreadRecord* r = head_.load(kListLoadOrder); r != nullptr;
         r = r->next) {
      visit(*r);
    }
  }

  void heavy_barrier() const noexcept {
    if constexpr (kThreadSanitizer) return;  // seq_cst operations instead
    if (membarrier_) {
      // Readers only stop the compiler: without the barrier the handshake
      // is unsound, so a failure here cannot be papered over.
      const long result =
          syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
      FNBUS_ASSERT(result == 0, "membarrier(PRIVATE_EXPEDITED) failed");
      return;
    }
    // No membarrier: readers fence too (g_readers_fence), so a seq_cst
    // fence on each side gives the Dekker guarantee.
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }

 private:
  void publish(ThreadRecord* record) {
    // relaxed load: the CAS below validates it.
    ThreadRecord* head = head_.load(std::memory_order_relaxed);
    do {
      record->next = head;
      // release: publishes the record's initialised fields and `next` to
      // the acquire loads in claim() and for_each().
    } while (!head_.compare_exchange_weak(head, record, kListPublishOrder,
                                          std::memory_order_relaxed));
  }

  const bool membarrier_;
  // The index of the next record created.
  std::atomic<std::uint32_t> next_index_{0};
  // Newest record first; records are never unlinked.
  std::atomic<ThreadRecord*> head_{nullptr};
};

RecordRegistry& registry() {
  static RecordRegistry* const instance = new RecordRegistry;
  return *instance;
}

// Gives the record back when its thread exits.
struct RecordReleaser {
  ThreadRecord* record = nullptr;
  ~RecordReleaser() {
    if (record != nullptr) {
      tls_thread_record = nullptr;
      RecordRegistry::release(*record);
    }
  }
};

// Waits for `done()` with a back-off: spin briefly, then yield, then sleep.
// Used only on rare writer paths (cancel, shutdown), never by dispatch.
template <typename Done>
void wait_until(Done done) {
  for (int round = 0; !done(); ++round) {
    if (round < 64) {
      cpu_relax();
    } else if (round < 256) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

// The nesting levels of `record` that may hold an announcement.
std::uint32_t levels_used(const ThreadRecord& record) noexcept {
  // Observe: stored before any announcement at a new level (see
  // DispatchScope), so a scan after the heavy barrier covers it.
  return record.levels_used.load(kObserveOrder);
}

bool is_running(const ThreadRecord& record, const void* handler) noexcept {
  const std::uint32_t levels = levels_used(record);
  for (std::uint32_t i = 0; i < levels; ++i) {
    // acquire: pairs with the release stores in DispatchScope (begin_handler
    // and the destructor), which also make the announcements seen here.
    if (record.running[i].load(kObserveOrder) == handler) return true;
  }
  return false;
}

}  // namespace

namespace {
// A random start for a thread's event ids (see next_event_id()).
std::uint64_t random_id_seed(const ThreadRecord& record) noexcept {
  try {
    std::random_device entropy;
    return (std::uint64_t{entropy()} << 32) ^ entropy();
  } catch (...) {
    // No entropy source: distinct per record and per start, at least.
    const auto now = std::chrono::steady_clock::now().time_since_epoch();
    return reinterpret_cast<std::uintptr_t>(&record) ^
           (static_cast<std::uint64_t>(now.count()) << 16);
  }
}
// A child made by fork() would continue its parent thread's id sequence;
// give the (only) thread of the child a fresh start.
void reseed_ids_after_fork() noexcept {
  static std::once_flag once;
  std::call_once(once, [] {
    (void)pthread_atfork(nullptr, nullptr, [] {
      if (ThreadRecord* record = tls_thread_record) {
        record->id_state = random_id_seed(*record);
      }
    });
  });
}
}  // namespace

ThreadRecord& register_this_thread() {
  thread_local RecordReleaser releaser;
  ThreadRecord& record = registry().claim();
  record.id_state = random_id_seed(record);
  record.follow_ups_bus = nullptr;  // a recycled record serves no bus yet
  record.follow_ups = nullptr;
  reseed_ids_after_fork();
  releaser.record = &record;
  tls_thread_record = &record;
  return record;
}

void heavy_barrier() noexcept { registry().heavy_barrier(); }

void wait_until_not_running(const void* handler) noexcept {
  ThreadRecord* self = tls_thread_record;
  // seq_cst: ordered before the heavy barrier's scan like an announcement,
  // so of two threads waiting for each other at least one sees the other.
  if (self != nullptr)
    self->waiting_for.store(handler, std::memory_order_seq_cst);
  heavy_barrier();
  registry().for_each([&](const ThreadRecord& record) {
    if (&record == self) return;
    wait_until([&] {
      if (!is_running(record, handler)) return true;
      // seq_cst: pairs with the seq_cst store above, in the other thread.
      const void* theirs = record.waiting_for.load(std::memory_order_seq_cst);
      FNBUS_ASSERT(
          theirs == nullptr || self == nullptr || !is_running(*self, theirs),
          "two handlers are cancelling each other's subscriptions "
          "while both run, so each would wait for the other forever; "
          "cancel one of them from outside the handlers");
      return false;
    });
  });
  // release: clears the marker; nothing else to publish.
  if (self != nullptr)
    self->waiting_for.store(nullptr, std::memory_order_release);
}

bool running_on_this_thread(const void* handler) noexcept {
  const ThreadRecord* self = tls_thread_record;
  return self != nullptr && is_running(*self, handler);
}

bool running_anywhere(const void* handler) noexcept {
  heavy_barrier();
  bool found = false;
  registry().for_each([&](const ThreadRecord& record) {
    found = found || is_running(record, handler);
  });
  return found;
}

void wait_for_publishers(const void* bus) noexcept {
  heavy_barrier();
  const ThreadRecord* self = tls_thread_record;
  registry().for_each([&](const ThreadRecord& record) {
    if (&record == self) return;
    // acquire: pairs with the release in ~PublishScope.
    wait_until([&] { return record.publishing_to.load(kObserveOrder) != bus; });
  });
}

HazardSet HazardSet::take() {
  heavy_barrier();
  HazardSet set;
  registry().for_each([&](const ThreadRecord& record) {
    const std::uint32_t levels = levels_used(record);
    for (std::uint32_t i = 0; i < levels; ++i) {
      // acquire: pairs with the release in ~DispatchScope, so a reader's
      // last use of an object happens before we free it.
      if (const void* object = record.reading[i].load(kObserveOrder)) {
        set.sorted_.push_back(object);
      }
    }
  });
  std::sort(set.sorted_.begin(), set.sorted_.end());
  return set;
}

bool HazardSet::contains(const void* object) const noexcept {
  return std::binary_search(sorted_.begin(), sorted_.end(), object);
}

}  // namespace fnbus::detail
