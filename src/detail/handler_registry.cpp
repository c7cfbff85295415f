#include "fnbus/detail/handler_registry.hpp"

#include <algorithm>
#include <iterator>
#include <new>
#include <utility>

#include "absl/container/flat_hash_set.h"

namespace fnbus::detail {

HandlerRegistry::~HandlerRegistry() {
  // No dispatch can run any more: the bus is gone and so is every
  // Subscription (each held a reference to us).
  for (auto& chunk_slot : chunks_) {
    // relaxed: single-threaded destruction.
    std::unique_ptr<Chunk> chunk(chunk_slot.load(std::memory_order_relaxed));
    if (!chunk) continue;
    for (auto& list : chunk->lists) {
      // relaxed: single-threaded destruction.
      delete list.load(std::memory_order_relaxed);
    }
  }
  for (auto& [serial, entry] : live_) delete entry;
}

HandlerRegistry::Chunk& HandlerRegistry::chunk_for(TypeSlot slot) {
  auto& chunk_slot = chunks_[slot >> kChunkBits];
  // relaxed: writers are serialised by mutex_.
  Chunk* chunk = chunk_slot.load(std::memory_order_relaxed);
  if (chunk == nullptr) {
    chunk = new Chunk;
    // release: pairs with the acquire load in find().
    chunk_slot.store(chunk, std::memory_order_release);
  }
  return *chunk;
}

HandlerEntry* HandlerRegistry::add(TypeSlot slot, std::string name,
                                   std::uint32_t function_id, ErasedHandler fn,
                                   ErrorCallback on_error, const EventOps* ops,
                                   const resilience::RetryPolicy* retry,
                                   std::shared_ptr<SlotLimit> concurrency) {
  FNBUS_ASSERT(slot < kMaxTypes, "more than 65536 event types subscribed");
  Reclaimed reclaim;  // destroyed after the lock is released
  std::lock_guard lock(mutex_);
  // Everything that can throw comes before the entry is shared: an
  // allocation failure leaves the registry as it was.
  auto entry = std::make_unique<HandlerEntry>(
      slot, std::move(name), function_id, next_serial_, std::move(fn),
      std::move(on_error), ops, retry, std::move(concurrency));
  chunk_for(slot);
  auto list = std::make_unique<HandlerList>();
  if (const HandlerList* old = find_locked(slot)) list->entries = old->entries;
  list->entries.push_back(entry.get());
  live_.emplace(entry->serial, entry.get());
  ++next_serial_;
  HandlerEntry* added = entry.release();
  publish_list(slot, std::move(list));
  reclaim = take_reclaimable();
  return added;
}

void HandlerRegistry::retract(HandlerEntry& entry, std::uint8_t how) noexcept {
  live_.erase(entry.serial);
  // Retract (the writer's half of the handshake in thread_activity.hpp):
  // ordered before the scan in wait_until_not_running() or
  // running_anywhere() by its heavy barrier; a dispatch that announced too
  // late to be seen there sees this.
  entry.cancelled.store(how, kAnnounceOrder);
  std::unique_ptr<HandlerList> rest;
  try {
    rest = without(find_locked(entry.slot), &entry);
  } catch (const std::bad_alloc&) {
    // Out of memory for the shorter list: the flag alone keeps the handler
    // from running; the current list keeps pointing at the entry, which is
    // then never freed (see retire_entry()).
    return;
  }
  publish_list(entry.slot, std::move(rest));
}

void HandlerRegistry::cancel(std::uint64_t serial,
                             const void* handler) noexcept {
  HandlerEntry* entry = nullptr;
  bool inside = false;
  Reclaimed reclaim;  // destroyed after the lock is released
  {
    std::lock_guard lock(mutex_);
    if (auto it = live_.find(serial); it != live_.end()) {
      entry = it->second;
      inside = running_on_this_thread(entry);
      retract(*entry, inside ? kCancelledInside : kCancelledOutside);
      if (inside) {
        // Nobody waits: other calls of this handler on other threads may be
        // cancelling it too, each waiting for the other. The last call to
        // return destroys the callable (after_cancelled_call()).
        retire_entry(entry);
        reclaim = take_reclaimable();
        return;
      }
    }
  }
  if (entry == nullptr) {
    // Retracted already, by a concurrent cancel() that took the lock first
    // (or remove_all()): the retraction happened before our lock, so once
    // no call runs, none starts. Wait as the winner does -- except inside
    // the handler, where nobody waits.
    if (!running_on_this_thread(handler)) wait_until_not_running(handler);
    return;
  }
  // Not under mutex_: the handler we wait for may itself subscribe.
  wait_until_not_running(entry);
  // Nobody calls it any more: destroy its captures now, outside the lock.
  ErasedHandler doomed;
  std::lock_guard lock(mutex_);
  doomed = std::move(entry->fn);
  retire_entry(entry);
  reclaim = take_reclaimable();
}

void HandlerRegistry::after_cancelled_call(HandlerEntry& entry) noexcept {
  // relaxed: written once under mutex_ before any call could see it; a
  // stale kSubscribed cannot be read here (the caller saw it cancelled).
  if (entry.cancelled.load(std::memory_order_relaxed) != kCancelledInside) {
    return;  // the canceller destroys the callable itself
  }
  // Our end_handler() (retract) and this scan pair with every other
  // caller's: of two calls ending together, at least one sees the other
  // gone, so the last one destroys the callable.
  if (running_anywhere(&entry)) return;
  ErasedHandler doomed;  // destroyed after the lock is released
  std::lock_guard lock(mutex_);
  doomed = std::move(entry.fn);
}

void HandlerRegistry::remove_all() noexcept {
  std::vector<std::pair<std::uint64_t, const void*>> subscriptions;
  {
    std::lock_guard lock(mutex_);
    try {
      for (const auto& [serial, entry] : live_) {
        subscriptions.emplace_back(serial, entry);
      }
    } catch (const std::bad_alloc&) {
      // The destructor frees what is left.
    }
  }
  for (const auto& [serial, entry] : subscriptions) cancel(serial, entry);
  Reclaimed reclaim;  // destroyed after the lock is released
  std::lock_guard lock(mutex_);
  reclaim = take_reclaimable();
}

std::size_t HandlerRegistry::retired_count() {
  std::lock_guard lock(mutex_);
  return retired_lists_.size() + retired_entries_.size();
}

const HandlerList* HandlerRegistry::find_locked(TypeSlot slot) const noexcept {
  // relaxed: writers are serialised by mutex_, which we hold.
  const Chunk* chunk =
      chunks_[slot >> kChunkBits].load(std::memory_order_relaxed);
  // relaxed: as above.
  return chunk == nullptr
             ? nullptr
             : chunk->lists[slot & kChunkMask].load(std::memory_order_relaxed);
}

std::unique_ptr<HandlerList> HandlerRegistry::without(
    const HandlerList* list, const HandlerEntry* entry) {
  auto result = std::make_unique<HandlerList>();
  if (list == nullptr) return result;
  result->entries.reserve(list->entries.size());
  std::copy_if(list->entries.begin(), list->entries.end(),
               std::back_inserter(result->entries),
               [entry](const HandlerEntry* e) { return e != entry; });
  return result;
}

void HandlerRegistry::publish_list(TypeSlot slot,
                                   std::unique_ptr<HandlerList> list) noexcept {
  // chunk_for() does not allocate here: every caller made the chunk first.
  auto& list_slot = chunk_for(slot).lists[slot & kChunkMask];
  // release: the list's contents are visible to the dispatch that loads it
  // (kObserveOrder in DispatchScope::protect()); seq_cst under TSan for
  // the hazard handshake.
  std::unique_ptr<const HandlerList> old(list_slot.exchange(
      list.release(), kThreadSanitizer ? std::memory_order_seq_cst
                                       : std::memory_order_acq_rel));
  if (old == nullptr) return;
  try {
    retired_lists_.push_back(std::move(old));
  } catch (const std::bad_alloc&) {
    // Out of memory: leak what a dispatch may still read rather than free
    // it early.
    (void)old.release();
  }
}

void HandlerRegistry::retire_entry(HandlerEntry* entry) noexcept {
  // An entry still in the current list (retract() ran out of memory) is
  // never freed: dispatches keep reading it.
  if (const HandlerList* current = find_locked(entry->slot);
      current != nullptr &&
      std::find(current->entries.begin(), current->entries.end(), entry) !=
          current->entries.end()) {
    return;
  }
  try {
    retired_entries_.emplace_back(entry);
  } catch (const std::bad_alloc&) {
    // Out of memory: leak it rather than free it early.
  }
}

HandlerRegistry::Reclaimed HandlerRegistry::take_reclaimable() noexcept {
  Reclaimed out;
  if (retired_lists_.empty() && retired_entries_.empty()) return out;
  try {
    // Every list retired so far was unpublished before this barrier: a
    // dispatch that does not announce it now will never read it.
    const HazardSet hazards = HazardSet::take();
    auto held = std::stable_partition(
        retired_lists_.begin(), retired_lists_.end(),
        [&](const auto& list) { return hazards.contains(list.get()); });
    // Entries reachable from a list still read must stay too: the reader
    // may be about to call one of them.
    absl::flat_hash_set<const HandlerEntry*> reachable;
    for (auto it = retired_lists_.begin(); it != held; ++it) {
      reachable.insert((*it)->entries.begin(), (*it)->entries.end());
    }
    out.lists.reserve(static_cast<std::size_t>(retired_lists_.end() - held));
    out.entries.reserve(retired_entries_.size());
    std::move(held, retired_lists_.end(), std::back_inserter(out.lists));
    retired_lists_.erase(held, retired_lists_.end());
    auto kept = std::stable_partition(
        retired_entries_.begin(), retired_entries_.end(),
        [&](const auto& entry) { return reachable.contains(entry.get()); });
    std::move(kept, retired_entries_.end(), std::back_inserter(out.entries));
    retired_entries_.erase(kept, retired_entries_.end());
  } catch (const std::bad_alloc&) {
    // Reclaim later; keeping memory longer is always safe.
  }
  return out;
}

}  // namespace fnbus::detail
