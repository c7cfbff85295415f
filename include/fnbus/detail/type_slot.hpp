#pragma once

// Dense per-type ids: the index of an event type in per-bus tables. No RTTI
// and no hashing on the hot path.

#include <cstdint>
#include <string_view>

namespace fnbus::detail {

using TypeSlot = std::uint32_t;
// No type has this slot (slots are assigned densely from 0).
inline constexpr TypeSlot kNoTypeSlot = ~TypeSlot{0};

class ContextAccess;

// Hands out the next id; defined in src/. Thread safety: any thread.
TypeSlot next_type_slot() noexcept;

template <typename E>
struct TypeSlotHolder {
  // Dynamic initialisation of a function-local static is thread-safe; after
  // it, reading the id is one load plus the guard check.
  static TypeSlot get() noexcept {
    static const TypeSlot slot = next_type_slot();
    return slot;
  }
};

template <typename E>
[[nodiscard]] inline TypeSlot type_slot() noexcept {
  return TypeSlotHolder<E>::get();
}

// The type's spelling, cut out of the compiler's function signature:
//   GCC:   "... compiler_type_name() [with E = shop::Order; std::string_view
//           = std::basic_string_view<char>]"
//   Clang: "... compiler_type_name() [E = shop::Order]"
// A type's spelling may contain ']' (array bounds) and, in GCC's spelling of
// string template arguments, "; ": so cut at GCC's trailing note, else at the
// last ']'.
template <typename E>
[[nodiscard]] constexpr std::string_view compiler_type_name() noexcept {
  std::string_view name = __PRETTY_FUNCTION__;
  const auto start = name.find("E = ");
  if (start == std::string_view::npos) return name;
  name.remove_prefix(start + 4);
  auto end = name.rfind("; std::string_view = ");
  if (end == std::string_view::npos) end = name.rfind(']');
  return end == std::string_view::npos ? name : name.substr(0, end);
}

}  // namespace fnbus::detail
