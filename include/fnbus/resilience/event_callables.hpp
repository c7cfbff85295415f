#pragma once

// The typed callables of FunctionOptions -- the trigger condition
// (`when`), the idempotency key and the fallback -- each erased to one
// event type that it remembers, so that FunctionOptions stays one plain
// struct for every event type and subscribe() can check that they take
// the event the function handles:
//
//   bus->subscribe(
//       [](const OrderPlaced& order) { review(order); },
//       {.name = "fraud-review",
//        .when = [](const OrderPlaced& o) { return o.total_cents > 100'000;
//        }});
//
// The event type is read off the callable's first parameter, as
// subscribe(handler) does; for a generic lambda name it:
// `fnbus::Condition::For<OrderPlaced>([](const auto& o) { ... })`.
//
// Copyable (FunctionOptions is): copies share the callable.

#include <concepts>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"

#include "fnbus/detail/call_handler.hpp"
#include "fnbus/detail/handler_traits.hpp"
#include "fnbus/detail/type_slot.hpp"
#include "fnbus/event.hpp"
#include "fnbus/resilience/outcome.hpp"

namespace fnbus {

namespace detail {
// The event type of a callable's first parameter, or void if it has no
// single signature (a generic lambda) or no parameter.
template <typename F>
struct DeducedEvent {
  using type = void;
};
template <typename F>
requires HasOneSignature<F>
struct DeducedEvent<F> {
  using type = std::conditional_t<HandlerTraits<F>::kHasParam,
                                  typename HandlerTraits<F>::EventType, void>;
};

// The event type an erased callable takes: checked by subscribe().
class ErasedFor {
 public:
  [[nodiscard]] TypeSlot event_slot() const noexcept { return slot_; }
  [[nodiscard]] std::string_view event_type() const noexcept { return type_; }

 protected:
  ErasedFor() = default;
  template <typename E>
  void take_type() noexcept {
    slot_ = type_slot<E>();
    type_ = event_type_name<E>();
  }

 private:
  TypeSlot slot_ = kNoTypeSlot;
  std::string_view type_;
};

template <typename F, typename Self>
concept NotSelf = !std::same_as<std::remove_cvref_t<F>, Self>;
}  // namespace detail

// FunctionOptions::when: whether the function runs for an event. Runs on
// the dispatching thread before the handler; an event it turns down is
// counted as filtered (not a failure, not unhandled). Must not throw
// (a throw counts as a failure of the function).
class Condition : public detail::ErasedFor {
 public:
  Condition() = default;
  // `predicate(const E&)` returning something convertible to bool.
  template <typename F>
  requires detail::NotSelf<F, Condition> Condition(
      F predicate) {  // NOLINT: implicit, for designated initialisers
    using E = typename detail::DeducedEvent<F>::type;
    static_assert(Event<E>,
                  "a condition takes the event as its first parameter (const "
                  "E&); for a generic lambda write "
                  "fnbus::Condition::For<E>(predicate)");
    if constexpr (Event<E>) *this = For<E>(std::move(predicate));
  }
  template <Event E, typename F>
  static Condition For(F predicate) {
    static_assert(std::is_invocable_r_v<bool, F&, const E&>,
                  "a condition is called as predicate(const E&) and returns "
                  "bool");
    Condition condition;
    condition.take_type<E>();
    condition.fn_ = [predicate = std::move(predicate)](const void* event) {
      return static_cast<bool>(predicate(*static_cast<const E*>(event)));
    };
    return condition;
  }

  explicit operator bool() const noexcept { return static_cast<bool>(fn_); }
  // Precondition: set, and `event` is of its event type.
  [[nodiscard]] bool operator()(const void* event) const { return fn_(event); }

 private:
  std::function<bool(const void*)> fn_;
};

// FunctionOptions::idempotency_key: the key under which an event counts as
// seen (an order id, a payment id), as a std::string.
class KeyOf : public detail::ErasedFor {
 public:
  KeyOf() = default;
  // `key(const E&)` returning something std::string can be built from.
  template <typename F>
  requires detail::NotSelf<F, KeyOf> KeyOf(
      F key) {  // NOLINT: implicit, for designated initialisers
    using E = typename detail::DeducedEvent<F>::type;
    static_assert(Event<E>,
                  "an idempotency key takes the event as its first parameter "
                  "(const E&); for a generic lambda write "
                  "fnbus::KeyOf::For<E>(key)");
    if constexpr (Event<E>) *this = For<E>(std::move(key));
  }
  template <Event E, typename F>
  static KeyOf For(F key) {
    static_assert(std::is_constructible_v<std::string,
                                          std::invoke_result_t<F&, const E&>>,
                  "an idempotency key is called as key(const E&) and returns "
                  "a string (std::string, std::string_view, const char*)");
    KeyOf key_of;
    key_of.take_type<E>();
    key_of.fn_ = [key = std::move(key)](const void* event) {
      return std::string(key(*static_cast<const E*>(event)));
    };
    return key_of;
  }

  explicit operator bool() const noexcept { return static_cast<bool>(fn_); }
  // Precondition: set, and `event` is of its event type.
  [[nodiscard]] std::string operator()(const void* event) const {
    return fn_(event);
  }

 private:
  std::function<std::string(const void*)> fn_;
};

// FunctionOptions::fallback: a second handler of the same event, called
// instead while the circuit breaker is open and after the handler fails.
// Same forms as a handler: (const E&) or (const E&, Context&), returning
// void or absl::Status.
class Fallback : public detail::ErasedFor {
 public:
  Fallback() = default;
  template <typename F>
  requires detail::NotSelf<F, Fallback> Fallback(
      F handler) {  // NOLINT: implicit, for designated initialisers
    using E = typename detail::DeducedEvent<F>::type;
    static_assert(Event<E>,
                  "a fallback takes the event as its first parameter (const "
                  "E&); for a generic lambda write "
                  "fnbus::Fallback::For<E>(handler)");
    if constexpr (Event<E>) *this = For<E>(std::move(handler));
  }
  template <Event E, typename F>
  static Fallback For(F handler) {
    static_assert(HandlerFor<F, E>,
                  "a fallback is called as handler(const E&) or "
                  "handler(const E&, Context&) and returns void or "
                  "absl::Status");
    Fallback fallback;
    fallback.take_type<E>();
    // Shared: std::function copies its target, and a fallback may hold
    // what cannot be copied twice meaningfully (a client, a counter).
    auto fn = std::make_shared<F>(std::move(handler));
    fallback.fn_ = [fn](const void* event, Context& context,
                        absl::Status& failure) {
      const E& typed = *static_cast<const E*>(event);
      if constexpr (std::invocable<F&, const E&, Context&>) {
        return detail::call_handler(*fn, failure, typed, context);
      } else {
        return detail::call_handler(*fn, failure, typed);
      }
    };
    return fallback;
  }

  explicit operator bool() const noexcept { return static_cast<bool>(fn_); }
  // kDelivered, or kFailed with the Status in `failure`; may throw what
  // the fallback throws. Precondition: set, `event` of its event type.
  Outcome operator()(const void* event, Context& context,
                     absl::Status& failure) const {
    return fn_(event, context, failure);
  }

 private:
  std::function<Outcome(const void*, Context&, absl::Status&)> fn_;
};

}  // namespace fnbus
