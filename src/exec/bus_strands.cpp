// EventBus's strands (PublishOptions::key; exec/strands.hpp): a keyed
// event waits in its key's strand and one detail::StrandTurn per keyed
// event is queued instead, so that the queue's bound, overflow policy,
// follow-up headroom, drain and cancel apply to keyed events unchanged.
// handle() hands a turn to run_strand(), which handles the strand's
// events through handle() again: each is counted, timed (queue wait from
// its publish) and dead-lettered like an unkeyed event.
//
// Retries keep their place: a keyed event's call that is kept for later
// (a retry, a wait for a concurrency slot: detail::RetryDelivery) holds
// the key's strand (Strands::hold()) until it has run or will not run
// (release_strand(), from run_queued_call() and retry_lost()), so the
// key's next events wait for it. A kept call that keeps the next one
// holds again before it releases. The release that resumes a strand
// queues its turn; with the queue full, the turn is owed and posted by
// whoever next finds the queue empty (repay_and_pop()).

#include <cstdint>
#include <utility>

#include "fnbus/event_bus.hpp"

namespace fnbus {
namespace {

// The bus's queue as a place for turns: `priority`'s lane.
struct Lane {
  PriorityLanes<detail::Envelope>& lanes;
  Priority priority;
  template <typename... Args>
  bool try_emplace(Args&&... args) noexcept {
    return lanes.try_emplace(priority, std::forward<Args>(args)...);
  }
};

// Puts a turn of `strand` into `target` (a queue lane, or a follow-up
// buffer: both build an envelope from these arguments); false if full.
template <typename Target>
bool post_turn(Target& target, std::size_t strand, Priority priority,
               detail::TypeSlot turn_slot) noexcept {
  return target.try_emplace(
      detail::InPlace<detail::StrandTurn>{},
      detail::StrandTurn{static_cast<std::uint32_t>(strand), priority},
      turn_slot, detail::EnvelopeMeta{});
}

// Appends make()'s event to `key`'s strand with its turn put into
// `target`; false when the target or the strand is full.
template <typename Target>
bool push_with_turn(Strands<detail::Envelope>& strands, OrderingKey key,
                    Priority priority, Target& target,
                    detail::TypeSlot turn_slot,
                    absl::FunctionRef<detail::Envelope()> make) noexcept {
  const std::size_t strand = strands.index_of(key);
  auto post = [&]() noexcept {
    return post_turn(target, strand, priority, turn_slot);
  };
  return strands.push(strand, post, make) == StrandPush::kPushed;
}

}  // namespace

bool EventBus::push_keyed(OrderingKey key, Priority priority,
                          absl::FunctionRef<detail::Envelope()> make) noexcept {
  Lane lane{queue_, priority};
  return push_with_turn(strands_, key, priority, lane, strand_turn_slot_, make);
}

bool EventBus::keep_keyed(OrderingKey key, Priority priority,
                          detail::FollowUpBuffer& buffer,
                          absl::FunctionRef<detail::Envelope()> make) noexcept {
  return push_with_turn(strands_, key, priority, buffer, strand_turn_slot_,
                        make);
}

void EventBus::run_strand(const detail::Envelope& turn,
                          detail::WorkerShard& shard) noexcept {
  const auto& token = *static_cast<const detail::StrandTurn*>(turn.event());
  const std::uint32_t strand = token.strand;
  detail::ThreadRecord& record = detail::this_thread_record();
  // The fate is read per event: a drain may time out between two. The
  // record says which strand the event's dispatch (the next level) runs
  // for, so that a retry it schedules holds the strand.
  auto run = [&](detail::Envelope& event) noexcept {
    const detail::ThreadRecord::KeyedDispatch outer = record.keyed;
    record.keyed = {.bus = this,
                    .strand = strand,
                    .level = static_cast<std::uint32_t>(record.depth)};
    handle(event, shard, lifecycle_.fate());
    record.keyed = outer;
  };
  // A busy key hands a turn back after Strands::kTurnBudget events, so
  // that it does not keep this worker (and its follow-ups) to itself.
  auto repost = [&]() noexcept {
    Lane lane{queue_, token.priority};
    if (!post_turn(lane, strand, token.priority, strand_turn_slot_)) {
      return false;
    }
    if (pool_) pool_->notify_work();
    return true;
  };
  (void)strands_.run_turn(strand, run, repost);
}

std::uint32_t EventBus::hold_strand_for(const Context& context) noexcept {
  std::uint32_t strand = detail::kNoStrand;
  if (const detail::RetryState* call = detail::ContextAccess::retry(context)) {
    strand = call->held_strand;  // a kept call's: the next one holds it too
  } else {
    // A first call: held if it is a keyed event's, in that event's own
    // dispatch (not a trigger() nested in its handlers).
    const detail::ThreadRecord& record = detail::this_thread_record();
    if (record.keyed.bus == this && record.depth == record.keyed.level + 1) {
      strand = record.keyed.strand;
    }
  }
  if (strand != detail::kNoStrand) strands_.hold(strand);
  return strand;
}

void EventBus::release_strand(std::uint32_t strand) noexcept {
  if (strand == detail::kNoStrand) return;
  // The resumed key's turn is queued at normal priority: the class of the
  // event that held it is not kept.
  Lane lane{queue_, Priority::kNormal};
  auto post = [&]() noexcept {
    return post_turn(lane, strand, Priority::kNormal, strand_turn_slot_);
  };
  const StrandRelease released = strands_.release(strand, post);
  // A turn queued, or owed (has_work() says so): wake a worker for it.
  const bool work =
      released == StrandRelease::kPosted || released == StrandRelease::kOwed;
  if (work && pool_) pool_->notify_work();
}

bool EventBus::repay_and_pop(detail::Envelope& envelope,
                             LaneCursor& cursor) noexcept {
  Lane lane{queue_, Priority::kNormal};
  auto post = [&](std::size_t strand) noexcept {
    return post_turn(lane, strand, Priority::kNormal, strand_turn_slot_);
  };
  return strands_.repay_owed(post) && queue_.try_pop(envelope, cursor);
}

}  // namespace fnbus
