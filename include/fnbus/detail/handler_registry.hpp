#pragma once

// Per-bus map from event type to the handlers subscribed to it.

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"

#include "fnbus/detail/thread_activity.hpp"
#include "fnbus/detail/type_slot.hpp"
#include "fnbus/event.hpp"

namespace fnbus::detail {

// Calls a handler on a type-erased event. Returns false, with the reason in
// `failure`, when a Status-returning handler reports an error. (A bool keeps
// the hot path free of Status construction and destruction.)
using ErasedHandler =
    absl::AnyInvocable<bool(const void*, Context&, absl::Status& failure)>;

// One subscription. Owned by its HandlerRegistry; its address is the
// handler's identity in ThreadRecord::running.
struct HandlerEntry {
  HandlerEntry(TypeSlot type_slot, std::string function_name,
               std::uint32_t metrics_id, ErasedHandler function)
      : slot(type_slot),
        name(std::move(function_name)),
        function_id(metrics_id),
        fn(std::move(function)) {}

  // Set once by HandlerRegistry::remove(); read by every dispatch before it
  // calls fn (see DispatchScope::begin_handler).
  std::atomic<bool> cancelled{false};
  const TypeSlot slot;
  const std::string name;
  const std::uint32_t function_id;  // index of its metrics series
  ErasedHandler fn;
};

// An immutable snapshot of the handlers of one type, replaced as a whole
// (copy-on-write) by subscribe and cancel.
struct HandlerList {
  std::vector<HandlerEntry*> entries;
};

// Copy-on-write registry: readers (dispatch) take no lock and write nothing
// shared; writers (add, remove) serialise on a mutex and retire replaced
// lists until every dispatch that could see them has finished.
//
// Thread safety: all methods may be called from any thread, including from
// inside handlers. find() must be called inside a DispatchScope.
class HandlerRegistry {
 public:
  HandlerRegistry() = default;
  ~HandlerRegistry();
  HandlerRegistry(const HandlerRegistry&) = delete;
  HandlerRegistry& operator=(const HandlerRegistry&) = delete;

  // Most distinct event types one process may subscribe to.
  static constexpr std::size_t kMaxTypes = std::size_t{1} << 16;

  // The handlers of `slot` now, or nullptr if none ever subscribed.
  // Thread safety: any thread, inside a DispatchScope. Never blocks.
  [[nodiscard]] const HandlerList* find(TypeSlot slot) const noexcept {
    if (slot >= kMaxTypes) return nullptr;
    // acquire: pairs with the release in chunk_for(); the chunk's lists are
    // initialised before we read them.
    const Chunk* chunk =
        chunks_[slot >> kChunkBits].load(std::memory_order_acquire);
    if (chunk == nullptr) return nullptr;
    // Observe: pairs with the release store in publish_list(), so the
    // list's contents are visible; ordered after the DispatchScope
    // announcement by its light barrier (see thread_activity.hpp).
    return chunk->lists[slot & kChunkMask].load(kObserveOrder);
  }

  // Adds a handler. Precondition: slot < kMaxTypes.
  HandlerEntry* add(TypeSlot slot, std::string name, std::uint32_t function_id,
                    ErasedHandler fn);

  // Removes `entry`: when this returns, no other thread runs it and none
  // will start it; if the calling thread is running it, its callable is
  // destroyed once that call returns. Idempotent.
  void remove(HandlerEntry* entry) noexcept;

  // Removes every handler (the bus is going away).
  void remove_all() noexcept;

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

  // Memory that a dispatch may still be reading.
  struct Retired {
    GraceSnapshot grace;
    std::unique_ptr<const HandlerList> list;
    std::unique_ptr<HandlerEntry> entry;
  };

  // Each requires mutex_.
  Chunk& chunk_for(TypeSlot slot);
  const HandlerList* find_locked(TypeSlot slot) const noexcept;
  static std::unique_ptr<HandlerList> without(const HandlerList* list,
                                              const HandlerEntry* entry);
  // Installs `list` for `slot` (whose chunk exists) and retires the list it
  // replaces, with `retired_entry` if given.
  void publish_list(TypeSlot slot, std::unique_ptr<HandlerList> list,
                    std::unique_ptr<HandlerEntry> retired_entry) noexcept;
  void retire(std::unique_ptr<const HandlerList> list,
              std::unique_ptr<HandlerEntry> entry) noexcept;
  std::vector<Retired> take_reclaimable() noexcept;

  std::atomic<Chunk*> chunks_[kChunks] = {};
  std::mutex mutex_;
  absl::flat_hash_set<HandlerEntry*> live_;  // guarded by mutex_
  std::vector<Retired> retired_;             // guarded by mutex_
};

}  // namespace fnbus::detail
