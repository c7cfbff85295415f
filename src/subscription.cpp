#include "fnbus/subscription.hpp"

#include "fnbus/detail/handler_registry.hpp"

namespace fnbus {

void Subscription::cancel() noexcept {
  if (serial_ == 0) return;  // empty, released or moved from
  // acq_rel: a statistic for active() (acquire there); the registry orders
  // the cancellation itself under its lock.
  (void)entry_.exchange(nullptr, std::memory_order_acq_rel);
  // Every caller goes to the registry, not only the first: a later caller
  // must wait until the first has retracted the handler and it has
  // stopped, which the registry's lock orders.
  registry_->cancel(serial_, id_);
  for (const Member& member : more_)
    registry_->cancel(member.serial, member.id);
}

void Subscription::absorb(Subscription&& other) {
  more_.reserve(more_.size() + 1 + other.more_.size());
  more_.push_back({other.serial_, other.id_});
  more_.insert(more_.end(), other.more_.begin(), other.more_.end());
  other.release();  // ours to cancel now
}

}  // namespace fnbus
