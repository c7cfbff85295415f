#include "fnbus/detail/type_slot.hpp"

#include <atomic>

namespace fnbus::detail {

TypeSlot next_type_slot() noexcept {
  // Ids are handed out once per type and process. relaxed: uniqueness
  // comes from the RMW; the id is published by the static-init guard.
  static std::atomic<TypeSlot> next{0};
  return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace fnbus::detail
