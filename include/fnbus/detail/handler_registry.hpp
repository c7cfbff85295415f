#pragma once

// Per-bus map from event type to the handlers subscribed to it.

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"

#include "fnbus/detail/retry_delivery.hpp"
#include "fnbus/detail/thread_activity.hpp"
#include "fnbus/detail/type_slot.hpp"
#include "fnbus/event.hpp"
#include "fnbus/options.hpp"
#include "fnbus/resilience/outcome.hpp"

namespace fnbus::detail {

// Calls a handler (through its pipeline, if it has one) on a type-erased
// event. kFailed comes with the reason in `failure`; the other outcomes
// leave it alone. (The out-parameter keeps the hot path free of Status
// construction and destruction.)
using ErasedHandler =
    absl::AnyInvocable<Outcome(const void*, Context&, absl::Status& failure)>;

// HandlerEntry::cancelled values.
inline constexpr std::uint8_t kSubscribed = 0;
// Cancelled by a thread not running the handler: that canceller waits for
// the running calls and destroys the callable.
inline constexpr std::uint8_t kCancelledOutside = 1;
// Cancelled from inside the handler: nobody waits, and the thread whose
// call of it returns last destroys the callable
// (HandlerRegistry::after_cancelled_call()).
inline constexpr std::uint8_t kCancelledInside = 2;

// One subscription. Owned by its HandlerRegistry; its address is the
// handler's identity in ThreadRecord::running.
// FunctionOptions::on_error.
using ErrorCallback = std::function<void(const HandlerError&)>;

struct HandlerEntry {
  HandlerEntry(TypeSlot type_slot, std::string function_name,
               std::uint32_t metrics_id, std::uint64_t subscription_serial,
               ErasedHandler function, ErrorCallback error_callback = {},
               const EventOps* type_ops = nullptr,
               const resilience::RetryPolicy* retry_policy = nullptr,
               std::shared_ptr<SlotLimit> concurrency_limit = nullptr)
      : slot(type_slot),
        name(std::move(function_name)),
        function_id(metrics_id),
        serial(subscription_serial),
        on_error(std::move(error_callback)),
        ops(type_ops),
        retry(retry_policy),
        concurrency(std::move(concurrency_limit)),
        fn(std::move(function)) {}

  // kSubscribed until HandlerRegistry::cancel() sets one of the cancelled
  // values, once; read by every dispatch before it calls fn (see
  // DispatchScope::begin_handler) and after (see after_cancelled_call()).
  std::atomic<std::uint8_t> cancelled{kSubscribed};
  const TypeSlot slot;
  const std::string name;
  const std::uint32_t function_id;  // index of its metrics series
  const std::uint64_t serial;       // the subscription's, never reused
  const ErrorCallback on_error;     // may be empty
  // Its event type's, for the EventRefs of its failures and dead letters
  // (so that OwnedEvent::Copy can copy them); may be null.
  const EventOps* const ops;
  // The function's retry policy (FunctionOptions::retry), owned by the
  // pipeline inside `fn` and valid while it is; null without retries.
  const resilience::RetryPolicy* const retry;
  // The function's concurrency limit (FunctionOptions::max_concurrency),
  // also held by `fn` and by the calls waiting for it; null without one.
  const std::shared_ptr<SlotLimit> concurrency;
  ErasedHandler fn;
};

// An immutable snapshot of the handlers of one type, replaced as a whole
// (copy-on-write) by subscribe and cancel.
struct HandlerList {
  std::vector<HandlerEntry*> entries;
};

// Copy-on-write registry: readers (dispatch) take no lock and write nothing
// shared but their own hazard pointer; writers (add, cancel) serialise on a
// mutex and free a replaced list once no dispatch reads it.
//
// Reclamation bound: after each add() or cancel() the registry keeps only
// the retired lists that some dispatch still reads (at most one per thread
// and nesting level that is inside a dispatch of this bus) and the
// cancelled entries that such a list contains. A handler that runs for
// hours holds back only the one list its dispatch read; dispatches of
// other buses hold back nothing here.
//
// Thread safety: all methods may be called from any thread, including from
// inside handlers. find() needs the caller's DispatchScope.
class HandlerRegistry {
 public:
  HandlerRegistry() = default;
  ~HandlerRegistry();
  HandlerRegistry(const HandlerRegistry&) = delete;
  HandlerRegistry& operator=(const HandlerRegistry&) = delete;

  // Most distinct event types one process may subscribe to.
  static constexpr std::size_t kMaxTypes = std::size_t{1} << 16;

  // The handlers of `slot` now, or nullptr if none ever subscribed;
  // protected by `scope` until it ends.
  // Thread safety: any thread. Never blocks.
  [[nodiscard]] const HandlerList* find(TypeSlot slot,
                                        DispatchScope& scope) const noexcept {
    if (slot >= kMaxTypes) return nullptr;
    // acquire: pairs with the release in chunk_for(); the chunk's lists are
    // initialised before we read them.
    const Chunk* chunk =
        chunks_[slot >> kChunkBits].load(std::memory_order_acquire);
    if (chunk == nullptr) return nullptr;
    return scope.protect(chunk->lists[slot & kChunkMask]);
  }

  // Adds a handler. Precondition: slot < kMaxTypes.
  HandlerEntry* add(TypeSlot slot, std::string name, std::uint32_t function_id,
                    ErasedHandler fn, ErrorCallback on_error = {},
                    const EventOps* ops = nullptr,
                    const resilience::RetryPolicy* retry = nullptr,
                    std::shared_ptr<SlotLimit> concurrency = nullptr);

  // Cancels subscription `serial`, whose entry is (or was) at address
  // `handler`. When this returns, no handler of it starts any more, and no
  // other thread runs it -- unless the calling thread runs it, which waits
  // for nobody (its callable is destroyed when the last call returns).
  // Concurrent calls for one serial all give that guarantee; the first
  // does the work. Idempotent; a serial that is gone (the bus removed all)
  // only waits. `handler` is compared, never dereferenced.
  void cancel(std::uint64_t serial, const void* handler) noexcept;

  // Called by a dispatch after a call of `entry` (or its skipping) has
  // ended on this thread, and DispatchScope::end_handler() or the next
  // begin_handler() has said so, when `entry` is cancelled: destroys the
  // callable of a handler cancelled from inside once no call of it runs.
  void after_cancelled_call(HandlerEntry& entry) noexcept;

  // Cancels every handler (the bus is going away).
  void remove_all() noexcept;

  // Retired lists and entries not yet freed. For tests of the bound.
  [[nodiscard]] std::size_t retired_count();

 private:
  static constexpr unsigned kChunkBits = 6;
  static constexpr std::size_t kChunkSize = std::size_t{1} << kChunkBits;
  static constexpr std::size_t kChunkMask = kChunkSize - 1;
  static constexpr std::size_t kChunks = kMaxTypes / kChunkSize;

  struct Chunk {
    // The current list of each slot; replaced under mutex_, read by
    // dispatch without a lock.
    std::atomic<const HandlerList*> lists[kChunkSize] = {};
  };

  // What a reclamation frees, outside mutex_ (an entry's callable is user
  // code).
  struct Reclaimed {
    std::vector<std::unique_ptr<const HandlerList>> lists;
    std::vector<std::unique_ptr<HandlerEntry>> entries;
  };

  // Each requires mutex_.
  Chunk& chunk_for(TypeSlot slot);
  const HandlerList* find_locked(TypeSlot slot) const noexcept;
  static std::unique_ptr<HandlerList> without(const HandlerList* list,
                                              const HandlerEntry* entry);
  // Installs `list` for `slot` (whose chunk exists) and retires the list it
  // replaces.
  void publish_list(TypeSlot slot, std::unique_ptr<HandlerList> list) noexcept;
  // Takes `entry` out of live_ and unpublishes it, marking it `how`.
  void retract(HandlerEntry& entry, std::uint8_t how) noexcept;
  void retire_entry(HandlerEntry* entry) noexcept;
  Reclaimed take_reclaimable() noexcept;

  std::atomic<Chunk*> chunks_[kChunks] = {};
  std::mutex mutex_;
  // Guarded by mutex_:
  absl::flat_hash_map<std::uint64_t, HandlerEntry*> live_;  // by serial
  std::uint64_t next_serial_ = 1;
  std::vector<std::unique_ptr<const HandlerList>> retired_lists_;
  std::vector<std::unique_ptr<HandlerEntry>> retired_entries_;
};

}  // namespace fnbus::detail
