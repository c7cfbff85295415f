#pragma once

// What EventBus::subscribe(handler) deduces from a handler: the event type,
// from the type of its first parameter.

#include <type_traits>

namespace fnbus::detail {

// The parameter list of a function type, a function pointer, or a pointer
// to a (call) member function, whatever its qualifiers.
template <typename T>
struct Signature;
template <typename R, typename... A>
struct Signature<R(A...)> {
  template <template <typename...> class List>
  using params = List<A...>;
};
template <typename R, typename... A>
struct Signature<R(A...) noexcept> : Signature<R(A...)> {};
template <typename R, typename... A>
struct Signature<R (*)(A...)> : Signature<R(A...)> {};
template <typename R, typename... A>
struct Signature<R (*)(A...) noexcept> : Signature<R(A...)> {};
// Pointers to member functions: every cv-, ref- and noexcept-qualifier.
#define FNBUS_DETAIL_MEMBER_SIGNATURE(QUALIFIERS)  \
  template <typename C, typename R, typename... A> \
  struct Signature<R (C::*)(A...) QUALIFIERS> : Signature<R(A...)> {};
FNBUS_DETAIL_MEMBER_SIGNATURE()
FNBUS_DETAIL_MEMBER_SIGNATURE(const)
FNBUS_DETAIL_MEMBER_SIGNATURE(&)
FNBUS_DETAIL_MEMBER_SIGNATURE(const&)
FNBUS_DETAIL_MEMBER_SIGNATURE(&&)
FNBUS_DETAIL_MEMBER_SIGNATURE(noexcept)
FNBUS_DETAIL_MEMBER_SIGNATURE(const noexcept)
FNBUS_DETAIL_MEMBER_SIGNATURE(&noexcept)
FNBUS_DETAIL_MEMBER_SIGNATURE(const& noexcept)
FNBUS_DETAIL_MEMBER_SIGNATURE(&&noexcept)
#undef FNBUS_DETAIL_MEMBER_SIGNATURE

template <typename... A>
struct FirstParam {
  static constexpr bool kHas = false;
  using type = void;
};
template <typename First, typename... Rest>
struct FirstParam<First, Rest...> {
  static constexpr bool kHas = true;
  using type = First;
};

// A callable with exactly one call signature: a function, a function
// pointer, or a class with one non-template operator() (a lambda with
// typed parameters). Generic lambdas and overload sets have none.
template <typename F>
concept HasOneSignature =
    std::is_function_v<std::remove_pointer_t<std::decay_t<F>>> || requires {
  &std::decay_t<F>::operator();
};

// The type whose Signature a callable has: its operator()'s for a class.
template <typename C, bool = std::is_class_v<C>>
struct CallType {
  using type = C;
};
template <typename C>
struct CallType<C, true> {
  using type = decltype(&C::operator());
};

template <typename F>
struct HandlerTraits {
  using Callable = std::decay_t<F>;
  using Sig = typename CallType<Callable>::type;
  using First = typename Signature<Sig>::template params<FirstParam>;
  static constexpr bool kHasParam = First::kHas;
  using Param = typename First::type;
  // The parameter as written: `const E&`, `E` or (refused) `E&`.
  static constexpr bool kNonConstRef =
      std::is_lvalue_reference_v<Param> &&
      !std::is_const_v<std::remove_reference_t<Param>>;
  using EventType = std::remove_cvref_t<Param>;
};

}  // namespace fnbus::detail
