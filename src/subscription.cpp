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
}

}  // namespace fnbus
