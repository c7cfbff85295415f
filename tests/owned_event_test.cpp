// Tests of fnbus::OwnedEvent: inline and heap events, get<E>, copies
// (clone, Copy from an EventRef) and their errors, moves and lifetimes;
// and EventBus::publish of an OwnedEvent.

#include "fnbus/owned_event.hpp"

#include <array>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "support/bus_support.hpp"
#include "support/test_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"

// Copyable to std::is_copy_constructible, but its copy does not compile.
struct Crate {
  static constexpr std::string_view kEventName = "owned.Crate";
  std::vector<std::unique_ptr<int>> items;
};
template <>
inline constexpr bool fnbus::kCopyableEvent<Crate> = false;

namespace {

using fnbus::EventRef;
using fnbus::OwnedEvent;
using fnbus::testing_support::contains;
using fnbus::testing_support::Counted;
using fnbus::testing_support::counts;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::message_of;

struct Small {  // stored inline
  static constexpr std::string_view kEventName = "owned.Small";
  int id = 0;
};
struct Big {  // over 48 bytes: stored on the heap
  static constexpr std::string_view kEventName = "owned.Big";
  std::array<long, 8> values{};
  std::string name;
};
struct MoveOnly {  // not copyable
  static constexpr std::string_view kEventName = "owned.MoveOnly";
  std::unique_ptr<int> value;
};
struct CountedEvent {
  static constexpr std::string_view kEventName = "owned.Counted";
  Counted counted;
};
struct BigCounted {
  static constexpr std::string_view kEventName = "owned.BigCounted";
  Counted counted;
  std::array<long, 8> padding{};
};
struct ThrowsOnCopy {
  static constexpr std::string_view kEventName = "owned.ThrowsOnCopy";
  ThrowsOnCopy() = default;
  ThrowsOnCopy(ThrowsOnCopy&&) noexcept = default;
  ThrowsOnCopy(const ThrowsOnCopy&) { throw std::runtime_error("no copies"); }
};

static_assert(fnbus::detail::kStoredInline<Small>);
static_assert(!fnbus::detail::kStoredInline<Big>);
static_assert(!std::is_copy_constructible_v<OwnedEvent>);
static_assert(std::is_nothrow_move_constructible_v<OwnedEvent>);

TEST_CASE("owned_event: holds an inline event and reads it back as its type",
          "[owned_event]") {
  const OwnedEvent event = OwnedEvent::Of(Small{.id = 7});
  REQUIRE_FALSE(event.empty());
  CHECK(event.type_name() == "owned.Small");
  REQUIRE(event.get<Small>() != nullptr);
  CHECK(event.get<Small>()->id == 7);
  CHECK(event.get<Big>() == nullptr);
  const EventRef ref = event.ref();
  CHECK(ref.type_name() == "owned.Small");
  CHECK(ref.get<Small>() == event.get<Small>());
  CHECK(event.copyable());
}

TEST_CASE("owned_event: holds a heap event and reads it back as its type",
          "[owned_event]") {
  const OwnedEvent event =
      OwnedEvent::Of(Big{.values = {1, 2, 3, 4, 5, 6, 7, 8}, .name = "big"});
  CHECK(event.type_name() == "owned.Big");
  const Big* big = event.get<Big>();
  REQUIRE(big != nullptr);
  CHECK(big->values[7] == 8);
  CHECK(big->name == "big");
  CHECK(event.get<Small>() == nullptr);
}

TEST_CASE("owned_event: an empty one has no type and no event",
          "[owned_event]") {
  const OwnedEvent empty;
  CHECK(empty.empty());
  CHECK(empty.type_name().empty());
  CHECK(empty.get<Small>() == nullptr);
  CHECK(empty.ref().get<Small>() == nullptr);
  CHECK(empty.copyable());
  absl::StatusOr<OwnedEvent> copy = empty.clone();
  REQUIRE(copy.ok());
  CHECK(copy->empty());
}

TEST_CASE("owned_event: clone copies inline and heap events independently",
          "[owned_event]") {
  const OwnedEvent small = OwnedEvent::Of(Small{.id = 3});
  absl::StatusOr<OwnedEvent> small_copy = small.clone();
  REQUIRE(small_copy.ok());
  REQUIRE(small_copy->get<Small>() != nullptr);
  CHECK(small_copy->get<Small>()->id == 3);
  CHECK(small_copy->get<Small>() != small.get<Small>());

  const OwnedEvent big = OwnedEvent::Of(Big{.values = {}, .name = "b"});
  absl::StatusOr<OwnedEvent> big_copy = big.clone();
  REQUIRE(big_copy.ok());
  REQUIRE(big_copy->get<Big>() != nullptr);
  CHECK(big_copy->get<Big>()->name == "b");
  CHECK(big_copy->get<Big>() != big.get<Big>());
}

TEST_CASE("owned_event: a non-copyable event moves but does not clone",
          "[owned_event]") {
  OwnedEvent event = OwnedEvent::Of(MoveOnly{std::make_unique<int>(5)});
  CHECK_FALSE(event.copyable());
  const absl::StatusOr<OwnedEvent> copy = event.clone();
  REQUIRE_FALSE(copy.ok());
  CHECK(copy.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(contains(message_of(copy.status()), "owned.MoveOnly"));
  CHECK(contains(message_of(copy.status()), "copy constructor"));

  OwnedEvent moved = std::move(event);
  CHECK(event.empty());  // NOLINT(bugprone-use-after-move): moved from
  REQUIRE(moved.get<MoveOnly>() != nullptr);
  CHECK(*moved.get<MoveOnly>()->value == 5);
}

TEST_CASE("owned_event: kCopyableEvent false keeps an event uncopied",
          "[owned_event]") {
  STATIC_REQUIRE(std::is_copy_constructible_v<Crate>);
  Crate crate;
  crate.items.push_back(std::make_unique<int>(3));
  const OwnedEvent event = OwnedEvent::Of(std::move(crate));
  CHECK_FALSE(event.copyable());
  const absl::StatusOr<OwnedEvent> copy = event.clone();
  CHECK(copy.status().code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE(event.get<Crate>() != nullptr);
  CHECK(*event.get<Crate>()->items.at(0) == 3);
}

TEST_CASE("owned_event: a copy constructor that throws is an error status",
          "[owned_event]") {
  const OwnedEvent event = OwnedEvent::Of(ThrowsOnCopy{});
  CHECK(event.copyable());
  const absl::StatusOr<OwnedEvent> copy = event.clone();
  REQUIRE_FALSE(copy.ok());
  CHECK(copy.status().code() == absl::StatusCode::kUnknown);
  CHECK(contains(message_of(copy.status()), "no copies"));
}

TEST_CASE("owned_event: Copy needs an EventRef that knows how to copy",
          "[owned_event]") {
  const Small small{.id = 1};
  const EventRef bare(fnbus::detail::type_slot<Small>(), "owned.Small", &small);
  const absl::StatusOr<OwnedEvent> from_bare = OwnedEvent::Copy(bare);
  REQUIRE_FALSE(from_bare.ok());
  CHECK(from_bare.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(contains(message_of(from_bare.status()), "owned.Small"));

  const absl::StatusOr<OwnedEvent> from_none = OwnedEvent::Copy(EventRef());
  REQUIRE_FALSE(from_none.ok());
  CHECK(from_none.status().code() == absl::StatusCode::kInvalidArgument);

  const OwnedEvent owned = OwnedEvent::Of(Small{.id = 9});
  const absl::StatusOr<OwnedEvent> from_owned = OwnedEvent::Copy(owned.ref());
  REQUIRE(from_owned.ok());
  REQUIRE(from_owned->get<Small>() != nullptr);
  CHECK(from_owned->get<Small>()->id == 9);
}

TEST_CASE("owned_event: moves, copies and destroys each event exactly once",
          "[owned_event]") {
  counts = {};
  {
    OwnedEvent inline_event = OwnedEvent::Of(CountedEvent{Counted(1)});
    OwnedEvent heap_event = OwnedEvent::Of(BigCounted{Counted(2), {}});
    absl::StatusOr<OwnedEvent> inline_copy = inline_event.clone();
    absl::StatusOr<OwnedEvent> heap_copy = heap_event.clone();
    REQUIRE(inline_copy.ok());
    REQUIRE(heap_copy.ok());
    OwnedEvent moved_inline = std::move(inline_event);
    OwnedEvent moved_heap;
    moved_heap = std::move(heap_event);
    REQUIRE(moved_inline.get<CountedEvent>() != nullptr);
    CHECK(moved_inline.get<CountedEvent>()->counted.value() == 1);
    REQUIRE(moved_heap.get<BigCounted>() != nullptr);
    CHECK(moved_heap.get<BigCounted>()->counted.value() == 2);
    CHECK(heap_copy->get<BigCounted>()->counted.value() == 2);
  }
  CHECK(counts.constructed == counts.destroyed);
  CHECK(counts.bad_destroys == 0);
  CHECK(counts.bad_moves == 0);
}

TEST_CASE("owned_event: the bus publishes an OwnedEvent as its own type",
          "[owned_event][event_bus]") {
  auto bus = make_bus({.execution = fnbus::Execution::kManual});
  std::vector<int> small_ids;
  std::vector<std::string> big_names;
  auto small_sub =
      bus->subscribe([&](const Small& s) { small_ids.push_back(s.id); });
  auto big_sub =
      bus->subscribe([&](const Big& b) { big_names.push_back(b.name); });

  REQUIRE(bus->publish(OwnedEvent::Of(Small{.id = 42})).ok());
  REQUIRE(bus->publish(OwnedEvent::Of(Big{.values = {}, .name = "x"})).ok());
  CHECK(bus->stats().published == 2);
  CHECK(bus->run_all() == 2);
  CHECK(small_ids == std::vector<int>{42});
  CHECK(big_names == std::vector<std::string>{"x"});
  const fnbus::BusStats stats = bus->stats();
  CHECK(stats.dispatched == 2);
  CHECK(stats.delivered == 2);
  // Counted under the event's own type.
  const fnbus::metrics::MetricsSnapshot metrics = bus->metrics();
  bool small_counted = false;
  for (const fnbus::metrics::EventTypeMetrics& type : metrics.events) {
    if (type.event == "owned.Small") small_counted = type.published == 1;
  }
  CHECK(small_counted);
}

TEST_CASE(
    "owned_event: publish keeps the given trace, try_publish keeps "
    "a refused event",
    "[owned_event][event_bus]") {
  auto bus =
      make_bus({.queue_capacity = 2, .execution = fnbus::Execution::kManual});
  std::vector<fnbus::EventTrace> traces;
  auto sub = bus->subscribe([&](const Small&, fnbus::Context& context) {
    traces.push_back(context.event_trace());
  });
  const fnbus::TraceContext given{.correlation_id = 77, .parent_id = 5};
  REQUIRE(bus->publish(OwnedEvent::Of(Small{.id = 1}), {.trace = given}).ok());
  REQUIRE(bus->publish(OwnedEvent::Of(Small{.id = 2})).ok());
  // The queue is full: refused, and the event stays with the caller.
  OwnedEvent third = OwnedEvent::Of(Small{.id = 3});
  const absl::Status refused = bus->try_publish(third);
  CHECK(refused.code() == absl::StatusCode::kResourceExhausted);
  REQUIRE(third.get<Small>() != nullptr);
  CHECK(third.get<Small>()->id == 3);
  CHECK(bus->stats().rejected == 1);

  CHECK(bus->run_all() == 2);
  REQUIRE(traces.size() == 2);
  CHECK(traces[0].context == given);
  CHECK(traces[1].context.correlation_id != 77);  // a new correlation
  REQUIRE(bus->try_publish(third).ok());
  CHECK(third.empty());
  CHECK(bus->run_all() == 1);
  CHECK(traces.size() == 3);
}

TEST_CASE("owned_event: publishing an empty OwnedEvent is InvalidArgument",
          "[owned_event][event_bus]") {
  auto bus = make_bus({.execution = fnbus::Execution::kManual});
  const absl::Status status = bus->publish(OwnedEvent());
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(contains(message_of(status), "OwnedEvent"));
  CHECK(bus->stats().published == 0);
}

TEST_CASE("owned_event: the dead-letter sink's event can be copied",
          "[owned_event][event_bus]") {
  auto bus = make_bus({.execution = fnbus::Execution::kManual});
  std::vector<OwnedEvent> kept;
  std::vector<absl::Status> errors;
  bus->set_dead_letter_sink([&](const fnbus::DeadLetter& letter) {
    absl::StatusOr<OwnedEvent> copy = OwnedEvent::Copy(letter.event);
    if (copy.ok()) {
      kept.push_back(*std::move(copy));
    } else {
      errors.push_back(copy.status());
    }
  });
  REQUIRE(bus->publish(Small{.id = 11}).ok());
  REQUIRE(bus->publish(Big{.values = {}, .name = "late"}).ok());
  REQUIRE(bus->publish(MoveOnly{}).ok());
  REQUIRE(bus->shutdown(fnbus::ShutdownMode::kCancelPending).ok());
  REQUIRE(kept.size() == 2);
  REQUIRE(kept[0].get<Small>() != nullptr);
  CHECK(kept[0].get<Small>()->id == 11);
  REQUIRE(kept[1].get<Big>() != nullptr);
  CHECK(kept[1].get<Big>()->name == "late");
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("owned_event: the error sink's event can be copied",
          "[owned_event][event_bus]") {
  auto bus = make_bus({.execution = fnbus::Execution::kManual});
  std::vector<OwnedEvent> kept;
  bus->set_error_sink([&](const fnbus::HandlerError& error) {
    absl::StatusOr<OwnedEvent> copy = OwnedEvent::Copy(error.event);
    if (copy.ok()) kept.push_back(*std::move(copy));
  });
  auto sub = bus->subscribe(
      [](const Small&) { return absl::InternalError("broken"); });
  REQUIRE(bus->publish(Small{.id = 5}).ok());
  CHECK(bus->run_all() == 1);
  REQUIRE(kept.size() == 1);
  REQUIRE(kept[0].get<Small>() != nullptr);
  CHECK(kept[0].get<Small>()->id == 5);
}

}  // namespace
