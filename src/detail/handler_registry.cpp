#include "fnbus/detail/handler_registry.hpp"

#include <algorithm>
#include <iterator>
#include <new>
#include <utility>

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
  for (HandlerEntry* entry : live_) delete entry;
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
                                   std::uint32_t function_id,
                                   ErasedHandler fn) {
  FNBUS_ASSERT(slot < kMaxTypes, "more than 65536 event types subscribed");
  auto entry = std::make_unique<HandlerEntry>(slot, std::move(name),
                                              function_id, std::move(fn));
  std::vector<Retired> reclaim;
  std::lock_guard lock(mutex_);
  // Everything that can throw comes before the entry is shared: an
  // allocation failure leaves the registry as it was.
  chunk_for(slot);
  auto list = std::make_unique<HandlerList>();
  if (const HandlerList* old = find_locked(slot)) list->entries = old->entries;
  list->entries.push_back(entry.get());
  live_.insert(entry.get());
  HandlerEntry* added = entry.release();
  publish_list(slot, std::move(list), nullptr);
  reclaim = take_reclaimable();
  return added;
}

void HandlerRegistry::remove(HandlerEntry* entry) noexcept {
  std::vector<Retired> reclaim;
  {
    std::lock_guard lock(mutex_);
    if (!live_.contains(entry)) return;  // already removed
    live_.erase(entry);
    // Retract (the writer's half of the handshake in thread_activity.hpp):
    // ordered before the scan in wait_until_not_running() by its heavy
    // barrier; a dispatch that announced too late to be seen there sees this.
    entry->cancelled.store(true, kAnnounceOrder);
    publish_list(entry->slot, without(find_locked(entry->slot), entry),
                 nullptr);
    reclaim = take_reclaimable();
  }
  ErasedHandler doomed;
  if (running_on_this_thread(entry)) {
    // A self-cancel waits for nobody: other invocations of this handler on
    // other threads may be cancelling it too, each waiting for the other.
    // The callable lives until every dispatch that may run it has ended
    // (the entry's grace period).
  } else {
    // Not under mutex_: the handler we wait for may itself subscribe.
    wait_until_not_running(entry);
    // Nobody can be calling it any more: destroy its captures now, outside
    // the lock.
    doomed = std::move(entry->fn);
  }
  std::lock_guard lock(mutex_);
  retire(nullptr, std::unique_ptr<HandlerEntry>(entry));
}

void HandlerRegistry::remove_all() noexcept {
  std::vector<HandlerEntry*> entries;
  {
    std::lock_guard lock(mutex_);
    entries.assign(live_.begin(), live_.end());
  }
  for (HandlerEntry* entry : entries) remove(entry);
  // Free what no dispatch can still read (Subscriptions that outlive the
  // bus keep the registry itself alive).
  std::vector<Retired> reclaim;
  std::lock_guard lock(mutex_);
  reclaim = take_reclaimable();
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
  std::copy_if(list->entries.begin(), list->entries.end(),
               std::back_inserter(result->entries),
               [entry](const HandlerEntry* e) { return e != entry; });
  return result;
}

void HandlerRegistry::publish_list(
    TypeSlot slot, std::unique_ptr<HandlerList> list,
    std::unique_ptr<HandlerEntry> entry) noexcept {
  // chunk_for() does not allocate here: every caller made the chunk first.
  auto& list_slot = chunk_for(slot).lists[slot & kChunkMask];
  // release: the list's contents are visible to the dispatch that loads it
  // (kObserveOrder in find()); seq_cst under TSan for the grace handshake.
  std::unique_ptr<const HandlerList> old(list_slot.exchange(
      list.release(), kThreadSanitizer ? std::memory_order_seq_cst
                                       : std::memory_order_acq_rel));
  retire(std::move(old), std::move(entry));
}

void HandlerRegistry::retire(std::unique_ptr<const HandlerList> list,
                             std::unique_ptr<HandlerEntry> entry) noexcept {
  try {
    retired_.push_back({GraceSnapshot::take(), std::move(list), nullptr});
    retired_.back().entry = std::move(entry);
  } catch (const std::bad_alloc&) {
    // Out of memory: leak what a dispatch may still read rather than free
    // it early.
    (void)list.release();
    (void)entry.release();
  }
}

std::vector<HandlerRegistry::Retired>
HandlerRegistry::take_reclaimable() noexcept {
  // Oldest first, stopping at the first still in its grace period: a
  // long dispatch somewhere holds back everything retired after it, and
  // checking costs O(1) while it lasts.
  const auto pending =
      std::find_if(retired_.begin(), retired_.end(),
                   [](const Retired& r) { return !r.grace.elapsed(); });
  std::vector<Retired> ready;
  try {
    ready.assign(std::make_move_iterator(retired_.begin()),
                 std::make_move_iterator(pending));
  } catch (const std::bad_alloc&) {
    return {};  // reclaim later
  }
  retired_.erase(retired_.begin(), pending);
  return ready;
}

}  // namespace fnbus::detail
