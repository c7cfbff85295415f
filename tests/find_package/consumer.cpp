// Consumer of an installed fnbus, built twice: with find_package (this
// folder's CMakeLists.txt and check.cmake) and with pkg-config only
// (../pkg_config/check.cmake). Subscribes, publishes, triggers and shuts
// down, then checks that every handler call happened. Exits non-zero on any
// problem. Does not compile unless fnbus/version.hpp has the package's
// version (EXPECTED_VERSION_*, from CMakeLists.txt or passed with -D).

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <string_view>

#include "fnbus/fnbus.hpp"

#define CONSUMER_STR(x) #x
#define CONSUMER_XSTR(x) CONSUMER_STR(x)
static_assert(FNBUS_VERSION_MAJOR == EXPECTED_VERSION_MAJOR);
static_assert(FNBUS_VERSION_MINOR == EXPECTED_VERSION_MINOR);
static_assert(FNBUS_VERSION_PATCH == EXPECTED_VERSION_PATCH);
static_assert(FNBUS_VERSION == EXPECTED_VERSION_MAJOR * 10000 +
                                   EXPECTED_VERSION_MINOR * 100 +
                                   EXPECTED_VERSION_PATCH);
static_assert(
    std::string_view(FNBUS_VERSION_STRING) ==
    CONSUMER_XSTR(EXPECTED_VERSION_MAJOR) "." CONSUMER_XSTR(
        EXPECTED_VERSION_MINOR) "." CONSUMER_XSTR(EXPECTED_VERSION_PATCH));
#if FNBUS_VERSION != EXPECTED_VERSION_MAJOR * 10000 + \
                         EXPECTED_VERSION_MINOR * 100 + EXPECTED_VERSION_PATCH
#error "FNBUS_VERSION (in #if) is not the expected version"
#endif

namespace {

struct Ping {
  std::int64_t id = 0;
};

}  // namespace

int main() {
  constexpr int kPublished = 100;
  std::atomic<int> calls{0};
  std::atomic<int> errors{0};  // failures, dead letters, unhandled events
  auto bus = fnbus::EventBus::Create({
      .workers = 2,
      .error_sink = [&errors](const fnbus::HandlerError&) { ++errors; },
      .dead_letter_sink = [&errors](const fnbus::DeadLetter&) { ++errors; },
      .unhandled_sink = [&errors](const fnbus::EventRef&) { ++errors; },
  });
  if (!bus.ok()) {
    std::fprintf(stderr, "Create: %s\n", bus.status().ToString().c_str());
    return 1;
  }
  fnbus::Subscription subscription = (*bus)->subscribe<Ping>(
      [&calls](const Ping&) { calls.fetch_add(1, std::memory_order_relaxed); },
      {.name = "count_pings"});

  (*bus)->trigger(Ping{.id = 0});  // runs the handler here, now
  for (int i = 1; i <= kPublished; ++i) {
    if (absl::Status status = (*bus)->publish(Ping{.id = i}); !status.ok()) {
      std::fprintf(stderr, "publish: %s\n", status.ToString().c_str());
      return 1;
    }
  }
  if (absl::Status status = (*bus)->shutdown(fnbus::ShutdownMode::kDrain);
      !status.ok()) {
    std::fprintf(stderr, "shutdown: %s\n", status.ToString().c_str());
    return 1;
  }

  const fnbus::BusStats stats = (*bus)->stats();
  const int expected = kPublished + 1;  // the publishes and the trigger
  if (calls.load() != expected || errors.load() != 0 ||
      stats.published != kPublished || stats.delivered != kPublished) {
    std::fprintf(stderr,
                 "consumer: %d handler calls (want %d), %d errors, "
                 "published=%llu delivered=%llu (want %d)\n",
                 calls.load(), expected, errors.load(),
                 static_cast<unsigned long long>(stats.published),
                 static_cast<unsigned long long>(stats.delivered), kPublished);
    return 1;
  }
  std::printf("consumer: %d handler calls through an installed fnbus %s\n",
              calls.load(), FNBUS_VERSION_STRING);
  return 0;
}
